"""DistillRCNN: a GeneralizedRCNN student trained against a frozen teacher detector.

One training step::

    losses, record = model.forward_student(batched_inputs)   # GeneralizedRCNN's own forward
    teacher = model.teacher_outputs(batched_inputs, record)  # teacher on the student's ROIs
    losses.update(model.distillation_losses(record, teacher))
"""

from __future__ import annotations

import contextlib
import logging
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from torch import nn

from luminet_det.config import CASCADE_COMBINE, LOGIT_LOSSES, check_distill_config
from luminet_det.losses import LogitLoss

from ..precision import to_float32
from .distiller import (
    STUDENT_EXCLUDED_PREFIXES,
    Distiller,
    distillation_from_config,
    float32_losses,
    student_state_dict,
)
from .records import Stage, StudentRecord, TeacherOutputs
from .roi import num_box_stages, require_box_branch
from .teacher import run_teacher, teacher_box_logits, teacher_images

__all__ = ["DistillRCNN", "student_state_dict", "STUDENT_EXCLUDED_PREFIXES"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class DistillRCNN(Distiller, GeneralizedRCNN):
    """A Faster R-CNN student distilled from a frozen teacher Faster R-CNN.

    In training, the student runs exactly as a :class:`GeneralizedRCNN`
    (:meth:`forward_student`); the teacher then runs, frozen and under ``no_grad``, on the same
    images (its own pixel normalisation and channel order) and its box head on the **student's
    sampled proposals** (:meth:`teacher_outputs`), so that teacher and student logits
    ``(R, K+1)`` align row by row. Each configured distillation term is added to the student's
    losses as ``loss_<name>``, multiplied by its weight and by the linear warm-up factor
    (:meth:`distillation_losses`).

    In inference the student runs alone: the output equals that of a GeneralizedRCNN with
    the same weights. The teachers are not part of ``state_dict()``: checkpoints hold the
    student, the distillation adapters and the losses' state only.
    """

    @configurable
    def __init__(
        self,
        *,
        teacher: GeneralizedRCNN,
        extra_teachers: Sequence[GeneralizedRCNN] = (),
        logit_losses: Optional[Mapping[str, LogitLoss]] = None,
        feature_losses: Optional[Mapping[str, nn.Module]] = None,
        loss_weights: Optional[Mapping[str, float]] = None,
        warmup_iters: int = 0,
        teacher_dtype: str = "float32",
        cascade_combine: str = "mean_logits",
        **kwargs,
    ):
        """
        Args:
            teacher (GeneralizedRCNN): the teacher detector with its weights loaded (see
                :func:`~luminet_det.modeling.teacher.build_teachers`); frozen here and kept in
                eval mode.
            extra_teachers (sequence[GeneralizedRCNN]): further teachers of an ensemble (paper
                A.2): the ROI logits of all teachers are averaged before any logit loss;
                feature losses use ``teacher``'s features. Frozen like it.
            logit_losses (dict[str, LogitLoss]): name -> loss on the sampled ROIs, called as
                ``loss(student_logits, teacher_logits, gt_classes)``, unweighted.
            feature_losses (dict[str, nn.Module]): name -> module called as
                ``module(student_features, teacher_features)`` on the backbone outputs.
            loss_weights (dict[str, float]): name -> weight >= 0, one per loss above.
            warmup_iters (int): >= 0; weights ramp as ``min(iter / warmup_iters, 1)``.
            teacher_dtype (str): "float32", "bfloat16" or "float16": the dtype of the teachers'
                forward (luminet_det/precision.py).
            cascade_combine (str): a Cascade teacher of a single-stage student: how its
                stages' logits become one target per ROI, one of ``CASCADE_COMBINE``
                (``"mean_logits"``, ``"mean_probs"``; see
                :func:`~luminet_det.modeling.roi.box_logits`).
            kwargs: the arguments of :class:`GeneralizedRCNN`.
        """
        if cascade_combine not in CASCADE_COMBINE:
            raise ValueError(
                f"cascade_combine must be one of {list(CASCADE_COMBINE)}, got {cascade_combine!r}."
            )
        super().__init__(**kwargs)
        self.cascade_combine = cascade_combine
        require_box_branch(self.roi_heads, "student")
        self._init_distillation(
            teacher=teacher,
            extra_teachers=extra_teachers,
            logit_losses=logit_losses,
            feature_losses=feature_losses,
            loss_weights=loss_weights,
            warmup_iters=warmup_iters,
            teacher_dtype=teacher_dtype,
        )
        for t in self.teachers:
            assert t.roi_heads.num_classes == self.roi_heads.num_classes, (
                f"teacher has {t.roi_heads.num_classes} classes, the student "
                f"{self.roi_heads.num_classes}"
            )

    @classmethod
    def from_config(cls, cfg):
        check_distill_config(cfg)
        ret = super().from_config(cfg)
        num_logits = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1  # with background
        ret.update(distillation_from_config(cfg, ret["backbone"], LOGIT_LOSSES, num_logits))
        ret["cascade_combine"] = cfg.MODEL.DISTILL.CASCADE_COMBINE
        return ret

    # ------------------------------------------------------------------------------ forward
    def forward_student(
        self, batched_inputs: List[Dict[str, torch.Tensor]]
    ) -> Tuple[Dict[str, torch.Tensor], StudentRecord]:
        """The student's training forward, exactly GeneralizedRCNN's, and what distillation
        needs of it.

        Returns:
            (dict[str, Tensor], StudentRecord): the student's detection losses, and its
            features, sampled proposals and box logits.
        """
        assert self.training, "forward_student is the training forward: call model.train()"
        with self._recording() as recorded:
            losses = self._stock_forward(batched_inputs)
        stages = [
            Stage(recorded["proposals"][k], recorded["logits"][k]) for k in range(self._stages)
        ]
        return losses, StudentRecord(recorded["features"], stages, recorded.get("images"))

    @torch.no_grad()
    def teacher_outputs(
        self, batched_inputs: List[Dict[str, torch.Tensor]], record: StudentRecord
    ) -> TeacherOutputs:
        """The first teacher's backbone features and, when logit losses are configured, the
        teachers' mean box logits on each of the student's stages' ROIs (see
        :func:`~luminet_det.modeling.teacher.run_teacher` for which teacher head scores which
        stage)."""
        boxes = [stage.boxes for stage in record.stages] if self.logit_losses else None
        with self.teacher_precision():
            outputs = [
                run_teacher(
                    t,
                    self.input_format,
                    batched_inputs,
                    boxes,
                    self.cascade_combine,
                    record.images,
                    self.backbone,
                )
                for t in (self.teachers if boxes is not None else [self.teacher])
            ]
        outputs = to_float32(outputs)  # the losses see float32 whatever the teacher's dtype
        logits = None
        if boxes is not None:
            logits = [
                torch.stack([out[1][k] for out in outputs]).mean(0) for k in range(len(boxes))
            ]
        return TeacherOutputs(features=outputs[0][0], stage_logits=logits)

    @torch.no_grad()
    def teacher_logits_on_sampled_rois(
        self, batched_inputs: List[Dict[str, torch.Tensor]]
    ) -> torch.Tensor:
        """The teachers' mean box logits (R, K+1) on ROIs sampled as in training, from the
        first teacher's own RPN proposals instead of the student's: what the statistics of
        ``LUMINET.STATS "global"`` are computed from before step 0, when the student's RPN is
        still untrained and would propose boxes unlike those it samples later in training.
        The student's ROI sampler picks the rows (BATCH_SIZE_PER_IMAGE per image,
        POSITIVE_FRACTION foreground, ground truth appended), so they mix foreground and
        background as the training rows do. Needs an EventStorage (the sampler logs to it)."""
        images = teacher_images(self.teacher, self.input_format, batched_inputs)
        features = self.teacher.backbone(images.tensor)
        proposals, _ = self.teacher.proposal_generator(images, features, None)
        targets = [x["instances"].to(self.device) for x in batched_inputs]
        sampled = self.roi_heads.label_and_sample_proposals(proposals, targets)
        boxes = [[p.proposal_boxes for p in sampled]]  # one stage
        # the first teacher's features are at hand; the ensemble's others run in full
        logits = teacher_box_logits(self.teacher, features, boxes, self.cascade_combine)
        logits += [
            run_teacher(t, self.input_format, batched_inputs, boxes, self.cascade_combine)[1][0]
            for t in self.extra_teachers
        ]
        return torch.stack(logits).mean(0)

    def distillation_losses(
        self, record: StudentRecord, teacher: TeacherOutputs
    ) -> Dict[str, torch.Tensor]:
        """``loss_<name>`` for every configured loss, weighted and warmed up.

        Raises:
            FloatingPointError: NaN or Inf in the teacher's logits or in a loss (before the
                optimizer step, naming the term and the iteration).
        """
        terms, per_stage, inputs = {}, {}, []
        with float32_losses(record.logits):
            if self.logit_losses:
                pairs = list(zip(record.stages, teacher.stage_logits))
                for k, (stage, t_logits) in enumerate(pairs):
                    assert stage.logits.shape == t_logits.shape, (
                        f"student ROI logits {tuple(stage.logits.shape)} and teacher ROI logits "
                        f"{tuple(t_logits.shape)} do not align"
                    )
                    stage_name = f" (stage {k})" if len(pairs) > 1 else ""
                    inputs.append((f"the teacher's ROI logits{stage_name}", t_logits))
                for name, loss in self.logit_losses.items():
                    per_stage[name] = [loss(s.logits, t, s.gt_classes) for s, t in pairs]
                    terms[name] = torch.stack(per_stage[name]).mean()  # one stage: its value
            for name, module in self.feature_losses.items():
                terms[name] = module(to_float32(record.features), teacher.features)
        return self._finish_losses(terms, per_stage, inputs)

    @property
    def _stages(self) -> int:
        return num_box_stages(self.roi_heads)

    @contextlib.contextmanager
    def _recording(self) -> Iterator[Dict[str, object]]:
        """Record, during one student forward, what a :class:`StudentRecord` holds: the
        preprocessed images and the backbone features (the model's ``preprocess_image``,
        wrapped on this instance for the duration, and a forward hook), the first stage's
        sampled proposals (the heads' ``label_and_sample_proposals``, wrapped likewise), each
        stage's logits (hooks on the box predictors) and, for Cascade heads,
        the proposals each later stage matched and labelled (the heads'
        ``_match_and_label_boxes``, wrapped on this instance for the duration)."""
        heads = self.roi_heads
        recorded: Dict[str, object] = {"proposals": {}, "logits": {}}

        def keep(key, index=None, stage=None):
            def hook(module, inputs, output):
                value = output if index is None else output[index]
                if stage is None:
                    recorded[key] = value
                else:
                    recorded[key][stage] = value

            return hook

        predictors = heads.box_predictor if self._stages > 1 else [heads.box_predictor]
        handles = [self.backbone.register_forward_hook(keep("features"))]
        # the first stage's ROIs: what the heads' sampler returns (Standard, Cascade and
        # Res5ROIHeads all sample through label_and_sample_proposals in training)
        sample = heads.label_and_sample_proposals

        def sampled(proposals, targets):
            recorded["proposals"][0] = out = sample(proposals, targets)
            return out

        heads.label_and_sample_proposals = sampled
        # FastRCNNOutputLayers returns (class scores (R, K+1), box deltas)
        handles += [
            p.register_forward_hook(keep("logits", 0, stage=k)) for k, p in enumerate(predictors)
        ]
        preprocess = self.preprocess_image

        def preprocessed(batched_inputs):
            recorded["images"] = images = preprocess(batched_inputs)
            return images

        self.preprocess_image = preprocessed
        if self._stages > 1:
            match = heads._match_and_label_boxes

            def labelled(proposals, stage, targets):
                recorded["proposals"][stage] = out = match(proposals, stage, targets)
                return out

            heads._match_and_label_boxes = labelled
        try:
            yield recorded
        finally:
            for h in handles:
                h.remove()
            heads.__dict__.pop("_match_and_label_boxes", None)
            heads.__dict__.pop("label_and_sample_proposals", None)
            self.__dict__.pop("preprocess_image", None)
        want = set(range(self._stages))
        assert set(recorded["logits"]) == set(recorded["proposals"]) == want, f"{recorded.keys()}"
        assert "features" in recorded, "the backbone's features were not recorded"
