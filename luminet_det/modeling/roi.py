"""The box branch of a Faster R-CNN: which ROI heads have one (or one per Cascade stage), and
its logits on given boxes."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes
from torch import nn

from luminet_det.config import CASCADE_COMBINE

__all__ = [
    "BOX_BRANCH",
    "RES5_BRANCH",
    "SUPPORTED",
    "is_res5_heads",
    "require_box_branch",
    "num_box_stages",
    "box_logits",
]

#: the attributes of a StandardROIHeads-style box branch
BOX_BRANCH = ("box_pooler", "box_head", "box_predictor")
#: the attributes of a Res5ROIHeads-style (C4) box branch: a pooler on res4, the res5 stage
#: shared with the mask head, then the predictor on the spatially averaged features
RES5_BRANCH = ("pooler", "res5", "box_predictor", "in_features")
#: what DistillRCNN supports, for the error messages
SUPPORTED = (
    "MODEL.ROI_HEADS.NAME 'StandardROIHeads' (Faster R-CNN, and Mask R-CNN with MODEL.MASK_ON), "
    "'CascadeROIHeads' (Cascade R-CNN) or 'Res5ROIHeads' (the C4 models), or any ROI heads "
    "with a box_pooler and a box_head / box_predictor per stage"
)


def is_res5_heads(heads: nn.Module) -> bool:
    """Whether ``heads`` have a C4 (Res5ROIHeads-style) box branch."""
    return all(hasattr(heads, a) for a in RES5_BRANCH) and not hasattr(heads, "box_head")


def num_box_stages(heads: nn.Module) -> int:
    """1 for a single box branch, the number of stages for Cascade R-CNN's ModuleLists."""
    predictor = heads.box_predictor
    return len(predictor) if isinstance(predictor, nn.ModuleList) else 1


def require_box_branch(heads: nn.Module, role: str) -> None:
    """Raise ValueError unless ``heads`` (the ``roi_heads`` of the ``role`` detector, "student"
    or "teacher") have a StandardROIHeads-style box branch, or one per Cascade stage."""
    if is_res5_heads(heads):
        return
    missing = [a for a in BOX_BRANCH if not hasattr(heads, a)]
    stacked = [isinstance(getattr(heads, a, None), nn.ModuleList) for a in BOX_BRANCH[1:]]
    uneven = stacked[0] != stacked[1] or (
        all(stacked) and len(heads.box_head) != len(heads.box_predictor)
    )
    if missing or uneven:
        what = f"no {missing}" if missing else "box heads and predictors that do not pair up"
        raise ValueError(
            f"The {role}'s ROI heads ({type(heads).__name__}) have {what}. DistillRCNN "
            f"supports {SUPPORTED}."
        )


def _mean_logits(logits: List[torch.Tensor]) -> torch.Tensor:
    return torch.stack(logits).mean(0)


def _mean_probs(logits: List[torch.Tensor]) -> torch.Tensor:
    # log(mean_k p_k) = logsumexp_k(log p_k) - log(stages): finite where a p_k underflows
    log_probs = torch.stack([torch.log_softmax(z, dim=1) for z in logits])
    combined = torch.logsumexp(log_probs, dim=0) - math.log(len(logits))
    return combined - combined.mean(dim=1, keepdim=True)


#: MODEL.DISTILL.CASCADE_COMBINE -> how the stages' logits (list of (R, K+1)) become one target
_COMBINE = {"mean_logits": _mean_logits, "mean_probs": _mean_probs}
assert set(_COMBINE) == set(CASCADE_COMBINE), "CASCADE_COMBINE and _COMBINE differ"


def box_logits(
    detector: GeneralizedRCNN,
    features: Dict[str, torch.Tensor],
    proposal_boxes: List[Boxes],
    stage: Optional[int] = None,
    combine: str = "mean_logits",
) -> torch.Tensor:
    """Box-classification logits (R, K+1) of ``detector``'s box head on the given boxes.

    For Cascade R-CNN heads: the head of ``stage``; with ``stage=None``, the stages combined
    as ``combine`` says: ``"mean_logits"``, the mean of the stages' logits; ``"mean_probs"``,
    the log of the mean of their softmax probabilities (as detectron2's cascade inference
    scores boxes) minus its mean over classes (logits whose softmax is that mean, centred
    per row). A single box branch ignores ``stage`` and ``combine``.

    Args:
        detector (GeneralizedRCNN): a detector with a box branch (see :func:`require_box_branch`).
        features (dict[str, Tensor]): its backbone (FPN) outputs, name -> (N, C, H, W).
        proposal_boxes (list[Boxes]): N lists of boxes, R in total.
        stage (int, optional): the Cascade stage whose head scores the boxes.
        combine (str): one of ``CASCADE_COMBINE`` (``MODEL.DISTILL.CASCADE_COMBINE``).
    """
    if combine not in _COMBINE:
        raise ValueError(f"combine must be one of {list(_COMBINE)}, got {combine!r}.")
    heads = detector.roi_heads
    if is_res5_heads(heads):  # C4: pooled from res4, through res5, averaged (Res5ROIHeads)
        x = heads._shared_roi_transform([features[f] for f in heads.in_features], proposal_boxes)
        return heads.box_predictor(x.mean(dim=[2, 3]))[0]
    box_features = heads.box_pooler([features[f] for f in heads.box_in_features], proposal_boxes)
    stages = num_box_stages(heads)
    if stages == 1:
        return heads.box_predictor(heads.box_head(box_features))[0]
    if stage is not None:
        assert 0 <= stage < stages, f"stage {stage} of {stages}"
        return heads.box_predictor[stage](heads.box_head[stage](box_features))[0]
    logits = [heads.box_predictor[k](heads.box_head[k](box_features))[0] for k in range(stages)]
    return _COMBINE[combine](logits)
