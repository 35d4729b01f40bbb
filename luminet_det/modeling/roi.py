"""The box branch of a Faster R-CNN: which ROI heads have one, and its logits on given boxes."""

from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes
from torch import nn

__all__ = ["BOX_BRANCH", "require_box_branch", "box_logits"]

#: the attributes of a StandardROIHeads-style box branch
BOX_BRANCH = ("box_pooler", "box_head", "box_predictor")


#: what DistillRCNN supports, for the error messages
SUPPORTED = (
    "MODEL.ROI_HEADS.NAME 'StandardROIHeads' (Faster R-CNN, and Mask R-CNN with MODEL.MASK_ON), "
    "or any ROI heads with one box_pooler / box_head / box_predictor"
)


def require_box_branch(heads: nn.Module, role: str) -> None:
    """Raise ValueError unless ``heads`` (the ``roi_heads`` of the ``role`` detector, "student"
    or "teacher") have one StandardROIHeads-style box branch."""
    missing = [a for a in BOX_BRANCH if not hasattr(heads, a)]
    if missing:
        raise ValueError(
            f"The {role}'s ROI heads ({type(heads).__name__}) have no {missing}. DistillRCNN "
            f"supports {SUPPORTED}."
        )
    if isinstance(heads.box_predictor, nn.ModuleList):  # one box branch per stage
        raise ValueError(
            f"The {role}'s ROI heads ({type(heads).__name__}) have {len(heads.box_predictor)} "
            f"box stages (Cascade R-CNN), which DistillRCNN does not distil yet. It supports "
            f"{SUPPORTED}."
        )


def box_logits(
    detector: GeneralizedRCNN, features: Dict[str, torch.Tensor], proposal_boxes: List[Boxes]
) -> torch.Tensor:
    """Box-classification logits (R, K+1) of ``detector``'s box head on the given boxes.

    Args:
        detector (GeneralizedRCNN): a detector with a StandardROIHeads-style box branch.
        features (dict[str, Tensor]): its backbone (FPN) outputs, name -> (N, C, H, W).
        proposal_boxes (list[Boxes]): N lists of boxes, R in total.
    """
    heads = detector.roi_heads
    box_features = heads.box_pooler([features[f] for f in heads.box_in_features], proposal_boxes)
    return heads.box_predictor(heads.box_head(box_features))[0]
