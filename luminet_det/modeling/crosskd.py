"""CrossKD for RetinaNet students (Wang et al., "CrossKD: Cross-Head Knowledge Distillation for
Object Detection", CVPR 2024).

The student's classification (and box) subnet features after its ``k``-th convolution (before
that layer's activation) are rescaled per channel to the teacher's statistics at the same
point, activated, and run through the teacher's *remaining* head layers: those "cross-head"
predictions are matched to the teacher's own. The teacher's layers stay frozen; the gradient
reaches the student through them. What the authors' code does
(``jbwang1997/CrossKD``, ``mmdet/models/detectors/crosskd_retinanet.py``:
``forward_crosskd_single``, ``reuse_teacher_head``, ``align_scale``,
``pred_mimicking_loss_single``; ``mmdet/models/losses/kd_loss.py``: ``kd_quality_focal_loss``;
configs ``configs/crosskd/crosskd_r18_retinanet_r50_fpn_1x_coco.py``: ``reused_teacher_head_idx
3``, ``KDQualityFocalLoss`` beta 1 weight 1, ``GIoULoss`` weight 1):

* classification: the quality focal loss of the cross logits against the teacher's sigmoid
  probabilities, ``BCE(x, sigmoid(t)) * |sigmoid(x) - sigmoid(t)|^beta``, over every anchor the
  focal loss trains on (not ignored);
* boxes: the GIoU loss between the boxes decoded from the cross deltas and from the teacher's
  deltas (the same anchors), each anchor weighted by the sigmoid of the teacher's largest class
  logit;
* both summed and divided by the batch's foreground anchors.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from fvcore.nn import giou_loss
from torch import nn

__all__ = ["CrossKD", "kd_quality_focal_loss", "align_scale", "subnet_split"]


def kd_quality_focal_loss(
    pred: torch.Tensor, teacher: torch.Tensor, beta: float = 1.0
) -> torch.Tensor:
    """Element-wise ``BCE(pred, sigmoid(teacher)) * |sigmoid(pred) - sigmoid(teacher)|^beta``
    (logits in, same shape out; the teacher detached)."""
    target = teacher.detach().sigmoid()
    loss = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
    return loss * (pred.sigmoid() - target).abs().pow(beta)


def align_scale(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The student's feature map (N, C, H, W) standardised per channel over (N, H, W) and given
    the teacher's per-channel mean and (unbiased) std; 1e-6 added to the student's std."""
    n, c, h, w = student.shape
    s = student.permute(1, 0, 2, 3).reshape(c, -1)
    t = teacher.detach().permute(1, 0, 2, 3).reshape(c, -1)
    s = (s - s.mean(dim=1, keepdim=True)) / (s.std(dim=1, keepdim=True) + 1e-6)
    s = s * t.std(dim=1, keepdim=True) + t.mean(dim=1, keepdim=True)
    return s.reshape(c, n, h, w).permute(1, 0, 2, 3)


def subnet_split(subnet: nn.Sequential, k: int) -> Tuple[int, nn.Sequential]:
    """(index of the activation that follows the ``k``-th convolution, the layers after it) of a
    RetinaNetHead subnet ``[conv, (norm), ReLU] * n``; ``k`` counts convolutions from 1."""
    relus = [i for i, m in enumerate(subnet) if isinstance(m, nn.ReLU)]
    convs = sum(isinstance(m, nn.Conv2d) for m in subnet)
    if not 1 <= k < convs + 1 or len(relus) != convs:
        raise ValueError(
            f"MODEL.DISTILL.CROSSKD.REUSED_HEAD_INDEX must be in [1, {convs}] for a head of "
            f"{convs} convolutions (MODEL.RETINANET.NUM_CONVS), got {k}."
        )
    index = relus[k - 1]
    return index, subnet[index + 1 :]


class CrossKD(nn.Module):
    """The cross-head losses of a RetinaNet student and teacher.

    Args:
        reused_head_index (int): k >= 1: the student's subnet features after its k-th
            convolution enter the teacher's head from there (the authors' default: 3 of 4).
        beta (float): exponent of the quality focal loss (1).
        cls_weight (float): weight of the classification term (1).
        reg_weight (float): weight of the box term (1).
    """

    def __init__(
        self,
        *,
        reused_head_index: int = 3,
        beta: float = 1.0,
        cls_weight: float = 1.0,
        reg_weight: float = 1.0,
    ):
        super().__init__()
        if not isinstance(reused_head_index, int) or reused_head_index < 1:
            raise ValueError(
                f"MODEL.DISTILL.CROSSKD.REUSED_HEAD_INDEX must be an int >= 1, got "
                f"{reused_head_index!r}."
            )
        for name, value in (("BETA", beta), ("CLS_WEIGHT", cls_weight), ("REG_WEIGHT", reg_weight)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"MODEL.DISTILL.CROSSKD.{name} must be >= 0, got {value!r}.")
        self.k = reused_head_index
        self.beta, self.cls_weight, self.reg_weight = (
            float(beta),
            float(cls_weight),
            float(reg_weight),
        )

    def check_heads(self, student_head: nn.Module, teacher_head: nn.Module) -> None:
        """ValueError unless the teacher's remaining layers can take the student's features:
        the same subnet layout up to the reused layer and the same width; and no BatchNorm in
        the head (RetinaNet's per-level BatchNorm counts its calls)."""
        for branch in ("cls_subnet", "bbox_subnet"):
            s, t = getattr(student_head, branch), getattr(teacher_head, branch)
            s_index, _ = subnet_split(s, self.k)
            t_index, _ = subnet_split(t, self.k)
            s_width = [m.out_channels for m in s if isinstance(m, nn.Conv2d)][self.k - 1]
            t_width = [m.out_channels for m in t if isinstance(m, nn.Conv2d)][self.k - 1]
            if s_width != t_width:
                raise ValueError(
                    f"CrossKD feeds the student's {branch} features ({s_width} channels after "
                    f"convolution {self.k}) into the teacher's head, which expects {t_width}: "
                    "give the student the teacher's head width (MODEL.FPN.OUT_CHANNELS, the "
                    "RetinaNet head's input width) or use another loss."
                )
            if any("BatchNorm" in type(m).__name__ for m in list(s) + list(t)):
                raise ValueError(
                    f"CrossKD does not support BatchNorm in the RetinaNet head ({branch}): its "
                    "per-level BatchNorm counts calls. Use MODEL.RETINANET.NORM 'GN' or ''."
                )

    def forward(
        self,
        student_hold: Dict[str, List[torch.Tensor]],
        teacher_hold: Dict[str, List[torch.Tensor]],
        teacher_head: nn.Module,
        teacher_logits: torch.Tensor,
        teacher_deltas: torch.Tensor,
        anchors: torch.Tensor,
        valid: torch.Tensor,
        normaliser: torch.Tensor,
        box2box_transform,
        num_classes: int,
    ) -> torch.Tensor:
        """The weighted CrossKD term.

        Args:
            student_hold, teacher_hold (dict): "cls" and "box" -> per FPN level, the subnet's
                features after the reused convolution (before its activation), (N, C, H, W).
            teacher_head (RetinaNetHead): the frozen teacher head whose remaining layers run.
            teacher_logits (Tensor): (N, R, K) the teacher's class logits of every anchor.
            teacher_deltas (Tensor): (N, R, 4) its box deltas.
            anchors (Tensor): (R, 4) every anchor, in the same order.
            valid (Tensor): (N, R) bool, the anchors the focal loss trains on.
            normaliser (Tensor): the batch's foreground anchors (>= 1).
            box2box_transform: the student's delta encoding (RetinaNet's).
            num_classes (int): K.
        """
        from detectron2.layers import cat
        from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K

        _, cls_rest = subnet_split(teacher_head.cls_subnet, self.k)
        _, box_rest = subnet_split(teacher_head.bbox_subnet, self.k)
        cross_logits, cross_deltas = [], []
        for s_cls, t_cls, s_box, t_box in zip(
            student_hold["cls"], teacher_hold["cls"], student_hold["box"], teacher_hold["box"]
        ):
            x = F.relu(align_scale(s_cls, t_cls))
            cross_logits.append(teacher_head.cls_score(cls_rest(x)))
            y = F.relu(align_scale(s_box, t_box))
            cross_deltas.append(teacher_head.bbox_pred(box_rest(y)))
        logits = cat([permute_to_N_HWA_K(x, num_classes) for x in cross_logits], dim=1)
        deltas = cat([permute_to_N_HWA_K(x, 4) for x in cross_deltas], dim=1)
        weight = valid.to(logits.dtype)
        qfl = kd_quality_focal_loss(logits, teacher_logits, self.beta).sum(dim=-1)
        loss_cls = (qfl * weight).sum() / normaliser
        n = logits.shape[0]
        t_boxes = box2box_transform.apply_deltas(
            teacher_deltas.reshape(-1, 4), anchors.repeat(n, 1)
        )
        c_boxes = box2box_transform.apply_deltas(deltas.reshape(-1, 4), anchors.repeat(n, 1))
        reg_weight = teacher_logits.detach().max(dim=-1).values.sigmoid() * weight
        giou = giou_loss(c_boxes, t_boxes.detach(), reduction="none")
        loss_reg = (giou * reg_weight.reshape(-1)).sum() / normaliser
        return self.cls_weight * loss_cls + self.reg_weight * loss_reg
