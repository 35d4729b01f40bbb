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
from detectron2.utils.events import get_event_storage
from torch import nn

from luminet_det.config import LOGIT_LOSSES, check_distill_config, logit_loss_kwargs
from luminet_det.losses import LogitLoss, build_logit_loss

from .records import Stage, StudentRecord, TeacherOutputs
from .reviewkd import ReviewKD
from .roi import num_box_stages, require_box_branch
from .teacher import build_teachers, freeze, run_teacher, teacher_box_logits, teacher_images

__all__ = ["DistillRCNN", "student_state_dict", "STUDENT_EXCLUDED_PREFIXES"]

logger = logging.getLogger(__name__)

_TEACHER_PREFIXES = ("teacher.", "extra_teachers.")
#: Prefixes of DistillRCNN state-dict keys that are not part of the student detector
#: ("logit_loss_modules." is how checkpoints written before version 0.2 named "logit_losses.").
STUDENT_EXCLUDED_PREFIXES = _TEACHER_PREFIXES + (
    "feature_losses.",
    "logit_losses.",
    "logit_loss_modules.",
)


def student_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The keys of a DistillRCNN (or training checkpoint) state dict that form the student
    detector: exactly the keys of a GeneralizedRCNN with the same config."""
    return {k: v for k, v in state_dict.items() if not k.startswith(STUDENT_EXCLUDED_PREFIXES)}


@META_ARCH_REGISTRY.register()
class DistillRCNN(GeneralizedRCNN):
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
            kwargs: the arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        require_box_branch(self.roi_heads, "student")
        logit_losses, feature_losses = dict(logit_losses or {}), dict(feature_losses or {})
        loss_weights = dict(loss_weights or {})
        assert not set(logit_losses) & set(feature_losses), f"{logit_losses} / {feature_losses}"
        assert set(loss_weights) == set(logit_losses) | set(feature_losses), f"{loss_weights}"
        self.teacher = freeze(teacher)
        self.extra_teachers = nn.ModuleList(freeze(t) for t in extra_teachers)
        for t in self.teachers:
            assert t.roi_heads.num_classes == self.roi_heads.num_classes, (
                f"teacher has {t.roi_heads.num_classes} classes, the student "
                f"{self.roi_heads.num_classes}"
            )
        # modules, so that a loss's state (e.g. LumiNet's running statistics) is checkpointed
        self.logit_losses = nn.ModuleDict(logit_losses)
        self.feature_losses = nn.ModuleDict(feature_losses)
        self.loss_weights = {k: float(v) for k, v in loss_weights.items()}
        self.warmup_iters = warmup_iters
        # The teachers are rebuilt from their own configs and weights: keep them out of
        # checkpoints (and read checkpoints that predate the "logit_losses" name).
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_pre_hook(_rename_old_loss_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    @classmethod
    def from_config(cls, cfg):
        check_distill_config(cfg)
        ret = super().from_config(cfg)
        d = cfg.MODEL.DISTILL
        teacher, *extra_teachers = build_teachers(cfg)
        num_logits = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
        feature_losses = {}
        if "reviewkd" in d.LOSSES:
            feature_losses["reviewkd"] = ReviewKD(
                student_shapes=ret["backbone"].output_shape(),
                teacher_shapes=teacher.backbone.output_shape(),
                mid_channels=d.REVIEWKD.MID_CHANNELS,
                pool_levels=tuple(d.REVIEWKD.POOL_LEVELS),
            )
        ret.update(
            teacher=teacher,
            extra_teachers=extra_teachers,
            logit_losses={
                name: build_logit_loss(name, num_classes=num_logits, **logit_loss_kwargs(cfg, name))
                for name in d.LOSSES
                if name in LOGIT_LOSSES
            },
            feature_losses=feature_losses,
            loss_weights={name: d[name.upper()].WEIGHT for name in d.LOSSES},
            warmup_iters=d.WARMUP_ITERS,
        )
        return ret

    @property
    def teachers(self) -> List[GeneralizedRCNN]:
        """The teacher, then the ensemble's further teachers."""
        return [self.teacher, *self.extra_teachers]

    def train(self, mode: bool = True):
        """Switch the student's mode; the teachers always stay in eval mode."""
        super().train(mode)
        for t in self.teachers:
            t.eval()
        return self

    # ------------------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Student losses plus ``loss_<name>`` per distillation loss in training; the
        student's predictions (as GeneralizedRCNN) in inference."""
        if not self.training or not (self.logit_losses or self.feature_losses):
            return super().forward(batched_inputs)
        losses, record = self.forward_student(batched_inputs)
        teacher = self.teacher_outputs(batched_inputs, record)
        losses.update(self.distillation_losses(record, teacher))
        return losses

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
            losses = super().forward(batched_inputs)
        stages = [
            Stage(recorded["proposals"][k], recorded["logits"][k]) for k in range(self._stages)
        ]
        return losses, StudentRecord(recorded["features"], stages)

    @torch.no_grad()
    def teacher_outputs(
        self, batched_inputs: List[Dict[str, torch.Tensor]], record: StudentRecord
    ) -> TeacherOutputs:
        """The first teacher's backbone features and, when logit losses are configured, the
        teachers' mean box logits on each of the student's stages' ROIs (see
        :func:`~luminet_det.modeling.teacher.run_teacher` for which teacher head scores which
        stage)."""
        boxes = [stage.boxes for stage in record.stages] if self.logit_losses else None
        outputs = [
            run_teacher(t, self.input_format, batched_inputs, boxes)
            for t in (self.teachers if boxes is not None else [self.teacher])
        ]
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
        logits = teacher_box_logits(self.teacher, features, boxes)
        logits += [
            run_teacher(t, self.input_format, batched_inputs, boxes)[1][0]
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
        storage = _current_storage()
        iteration = storage.iter if storage is not None else None
        factor = self._warmup_factor(iteration)
        if storage is not None and self.warmup_iters > 0:
            storage.put_scalar("distill_warmup_factor", factor)
        terms = {}
        if self.logit_losses:
            pairs = list(zip(record.stages, teacher.stage_logits))
            for stage, t_logits in pairs:
                assert stage.logits.shape == t_logits.shape, (
                    f"student ROI logits {tuple(stage.logits.shape)} and teacher ROI logits "
                    f"{tuple(t_logits.shape)} do not align"
                )
                _check_finite("the teacher's ROI logits", t_logits, iteration)
            for name, loss in self.logit_losses.items():
                per_stage = [loss(s.logits, t, s.gt_classes) for s, t in pairs]
                terms[name] = torch.stack(per_stage).mean()  # one stage: that stage's value
                if storage is not None and len(per_stage) > 1:
                    weight = self.loss_weights[name] * factor
                    for k, value in enumerate(per_stage):
                        storage.put_scalar(f"loss_{name}_stage{k}", value.detach().item() * weight)
        for name, module in self.feature_losses.items():
            terms[name] = module(record.features, teacher.features)
        return {
            f"loss_{name}": _check_finite(
                f"loss_{name}", value * (self.loss_weights[name] * factor), iteration
            )
            for name, value in terms.items()
        }

    @property
    def _stages(self) -> int:
        return num_box_stages(self.roi_heads)

    @contextlib.contextmanager
    def _recording(self) -> Iterator[Dict[str, object]]:
        """Record, during one student forward, what a :class:`StudentRecord` holds: the
        backbone features (a forward hook), the first stage's sampled proposals (the ROI heads
        return them), each stage's logits (hooks on the box predictors) and, for Cascade heads,
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
        handles = [
            self.backbone.register_forward_hook(keep("features")),
            # StandardROIHeads.forward returns (sampled proposals, losses) in training
            heads.register_forward_hook(keep("proposals", 0, stage=0)),
        ]
        # FastRCNNOutputLayers returns (class scores (R, K+1), box deltas)
        handles += [
            p.register_forward_hook(keep("logits", 0, stage=k)) for k, p in enumerate(predictors)
        ]
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
        want = set(range(self._stages))
        assert set(recorded["logits"]) == set(recorded["proposals"]) == want, f"{recorded.keys()}"
        assert "features" in recorded, "the backbone's features were not recorded"

    def _warmup_factor(self, iteration: Optional[int]) -> float:
        """``min(iteration / warmup_iters, 1)``; 1 without warm-up or outside a trainer."""
        if self.warmup_iters <= 0 or iteration is None:
            return 1.0
        return min(iteration / self.warmup_iters, 1.0)


def _current_storage():
    try:
        return get_event_storage()
    except AssertionError:  # not inside a trainer (EventStorage context)
        return None


def _check_finite(what: str, value: torch.Tensor, iteration: Optional[int]) -> torch.Tensor:
    if not torch.isfinite(value).all():
        at = f"iteration {iteration}" if iteration is not None else "this step"
        raise FloatingPointError(
            f"{what} became NaN or Inf at {at}; stopping before the optimizer step so that no "
            "corrupt checkpoint is written. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, "
            "or check the teacher's weights, then resume from the last checkpoint (--resume)."
        )
    return value


def _drop_teacher_keys(module, state_dict, prefix, local_metadata):
    for key in [
        k for k in state_dict if k.startswith(tuple(prefix + p for p in _TEACHER_PREFIXES))
    ]:
        del state_dict[key]


def _rename_old_loss_keys(module, state_dict, prefix, *args):
    old, new = prefix + "logit_loss_modules.", prefix + "logit_losses."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[new + key[len(old) :]] = state_dict.pop(key)


def _ignore_missing_teacher_keys(module, incompatible_keys):
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith(_TEACHER_PREFIXES)]
