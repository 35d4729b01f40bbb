"""What one training step of a distilled detector passes between its parts: the student's record and
the teachers' outputs (typed, so that code outside DistillRCNN needs no knowledge of hooks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from detectron2.structures import Boxes, ImageList, Instances

__all__ = ["Stage", "StudentRecord", "DenseRecord", "TeacherOutputs"]


@dataclass
class Stage:
    """One box stage of the student's training forward (one for Faster R-CNN, one per stage
    for Cascade R-CNN).

    Attributes:
        proposals (list[Instances]): per image, the ROIs this stage was trained on, with
            ``proposal_boxes`` and ``gt_classes`` (background = K); R rows in total.
        logits (Tensor): (R, K+1) the stage's box-classification logits on those ROIs.
    """

    proposals: List[Instances]
    logits: torch.Tensor

    @property
    def gt_classes(self) -> torch.Tensor:
        """(R,) the matched class of every ROI, background included."""
        return torch.cat([p.gt_classes for p in self.proposals])

    @property
    def boxes(self) -> List[Boxes]:
        """The ROIs' boxes, one Boxes per image."""
        return [p.proposal_boxes for p in self.proposals]


@dataclass
class StudentRecord:
    """What the student's training forward hands to distillation.

    Attributes:
        features (dict[str, Tensor]): the backbone (FPN) outputs, name -> (N, C, H, W).
        stages (list[Stage]): the box stages, in order; ``proposals``, ``logits`` and
            ``gt_classes`` are those of the first.
        images (ImageList, optional): the student's preprocessed, padded images (their padded
            size and image sizes let the teacher skip computing them again).
    """

    features: Dict[str, torch.Tensor]
    stages: List[Stage]
    images: Optional[ImageList] = None

    @property
    def proposals(self) -> List[Instances]:
        return self.stages[0].proposals

    @property
    def logits(self) -> torch.Tensor:
        return self.stages[0].logits

    @property
    def gt_classes(self) -> torch.Tensor:
        return self.stages[0].gt_classes


@dataclass
class DenseRecord:
    """What a one-stage student's (DistillRetinaNet) training forward hands to distillation.

    Attributes:
        features (dict[str, Tensor]): the backbone (FPN) outputs, name -> (N, C, H, W).
        logits (Tensor): (N, R, K) class logits of every anchor (R anchors per image over all
            levels, in detectron2's order: level, then position, then cell anchor).
        labels (Tensor): (N, R) each anchor's label from the student's anchor matcher: a class
            in [0, K), K = background, -1 = ignored.
        images (ImageList, optional): the student's preprocessed, padded images.
        hold (dict, optional): CrossKD: "cls" and "box" -> per level, the head subnets'
            features after the reused convolution (before its activation).
    """

    features: Dict[str, torch.Tensor]
    logits: torch.Tensor
    labels: torch.Tensor
    images: Optional[ImageList] = None
    hold: Optional[Dict[str, List[torch.Tensor]]] = None

    def rows(
        self,
        anchors: str,
        teacher_logits: Optional[torch.Tensor] = None,
        score_thresh: float = 0.05,
    ) -> torch.Tensor:
        """(N, R) bool: the anchors that enter the logit losses. ``"valid"``: every anchor the
        focal loss trains on (label >= 0); ``"foreground"``: anchors matched to a box;
        ``"relevant"``: the foreground anchors and the valid anchors the teacher scores at
        least ``score_thresh`` for some class (those it would report at inference, hard
        negatives included), which needs ``teacher_logits`` (N, R, K)."""
        valid = self.labels >= 0
        foreground = valid & (self.labels < self.logits.shape[-1])
        if anchors == "valid":
            return valid
        if anchors == "foreground":
            return foreground
        assert anchors == "relevant", f"unknown anchors {anchors!r}"
        assert teacher_logits is not None, "anchors 'relevant' needs the teacher's logits"
        confident = teacher_logits.max(dim=-1).values.sigmoid() >= score_thresh
        return foreground | (valid & confident)


@dataclass
class TeacherOutputs:
    """What the teachers compute on a student's step.

    Attributes:
        features (dict[str, Tensor]): the first teacher's backbone (FPN) outputs.
        stage_logits (list[Tensor] or None): per student stage, (R_k, K+1) box logits on that
            stage's ROIs, averaged over the ensemble; for a one-stage student one entry, the
            (N, R, K) logits of every anchor. None when no logit loss is configured.
            ``logits`` is the first.
        deltas (Tensor, optional): a one-stage teacher's (N, R, 4) box deltas (CrossKD).
        hold (dict, optional): a one-stage teacher's head features where CrossKD enters it.
    """

    features: Dict[str, torch.Tensor]
    stage_logits: Optional[List[torch.Tensor]]
    deltas: Optional[torch.Tensor] = None
    hold: Optional[Dict[str, List[torch.Tensor]]] = None

    @property
    def logits(self) -> Optional[torch.Tensor]:
        return None if self.stage_logits is None else self.stage_logits[0]
