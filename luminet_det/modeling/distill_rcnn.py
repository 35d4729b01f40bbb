"""DistillRCNN: a GeneralizedRCNN student trained against a frozen teacher detector."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Callable, Dict, List, Mapping, Optional

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage
from torch import nn

from luminet_det.config import FEATURE_LOSSES, LOGIT_LOSSES
from luminet_det.losses import dkd_loss, kd_loss
from luminet_det.stats import LuminetLoss

from .reviewkd import ReviewKD
from .teacher import build_teacher, freeze, load_teacher_cfg

__all__ = ["DistillRCNN", "box_logits", "student_state_dict", "STUDENT_EXCLUDED_PREFIXES"]

logger = logging.getLogger(__name__)

#: Prefixes of DistillRCNN state-dict keys that are not part of the student detector.
STUDENT_EXCLUDED_PREFIXES = (
    "teacher.",
    "extra_teachers.",
    "feature_losses.",
    "logit_loss_modules.",
)

#: A logit loss term: (student logits (R, K+1), teacher logits (R, K+1), gt classes (R,)) -> scalar
LogitLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _kd(s, t, gt_classes, *, temperature: float):
    return kd_loss(s, t, temperature=temperature)


def _dkd(s, t, gt_classes, *, alpha: float, beta: float, temperature: float):
    return dkd_loss(s, t, gt_classes, alpha=alpha, beta=beta, temperature=temperature)


# name -> builder taking (the MODEL.DISTILL node, number of logit columns K+1); the only place
# loss names meet the config.
_LOGIT_LOSS_BUILDERS: Dict[str, Callable[..., LogitLoss]] = {
    "luminet": lambda d, c: LuminetLoss(
        temperature=d.LUMINET.TEMPERATURE, eps=d.LUMINET.EPS, stats=d.LUMINET.STATS, num_classes=c
    ),
    "kd": lambda d, c: functools.partial(_kd, temperature=d.KD.TEMPERATURE),
    "dkd": lambda d, c: functools.partial(
        _dkd, alpha=d.DKD.ALPHA, beta=d.DKD.BETA, temperature=d.DKD.TEMPERATURE
    ),
}
assert set(_LOGIT_LOSS_BUILDERS) == set(LOGIT_LOSSES), f"{_LOGIT_LOSS_BUILDERS} vs {LOGIT_LOSSES}"


def student_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The keys of a DistillRCNN (or training checkpoint) state dict that form the student
    detector: exactly the keys of a GeneralizedRCNN with the same config."""
    return {k: v for k, v in state_dict.items() if not k.startswith(STUDENT_EXCLUDED_PREFIXES)}


def _check_weight(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"MODEL.DISTILL.{name.upper()}.WEIGHT must be >= 0, got {value!r}.")
    return float(value)


@META_ARCH_REGISTRY.register()
class DistillRCNN(GeneralizedRCNN):
    """A Faster R-CNN student distilled from a frozen teacher Faster R-CNN.

    In training, the student runs exactly as a :class:`GeneralizedRCNN`; its backbone features,
    sampled ROIs (with their ``gt_classes``) and box-classification logits are captured with
    forward hooks. The teacher then runs, frozen and under ``no_grad``, on the same images
    (its own pixel normalisation and channel order) and its box head runs on the **student's
    sampled proposals**, so that teacher and student logits ``(R, K+1)`` align row by row.
    Each configured distillation term is added to the student's losses as ``loss_<name>``,
    multiplied by its weight and by the linear warm-up factor.

    In inference the student runs alone: the output equals that of a GeneralizedRCNN with
    the same weights. The teacher is not part of ``state_dict()``: checkpoints hold the
    student (and any feature-distillation adapters) only.
    """

    @configurable
    def __init__(
        self,
        *,
        teacher: GeneralizedRCNN,
        logit_losses: Optional[Dict[str, LogitLoss]] = None,
        feature_losses: Optional[Dict[str, nn.Module]] = None,
        loss_weights: Optional[Dict[str, float]] = None,
        warmup_iters: int = 0,
        extra_teachers: Optional[List[GeneralizedRCNN]] = None,
        **kwargs,
    ):
        """
        Args:
            teacher (GeneralizedRCNN): the teacher detector with its weights loaded; it is
                frozen here (eval mode, ``requires_grad=False``) and kept in eval mode.
            logit_losses (dict[str, callable]): name -> ``fn(student_logits, teacher_logits,
                gt_classes)`` on the sampled ROIs, returning an unweighted scalar.
            feature_losses (dict[str, nn.Module]): name -> module called as
                ``module(student_features, teacher_features)`` on the backbone outputs.
            loss_weights (dict[str, float]): name -> weight (>= 0), one per loss above.
            warmup_iters (int): >= 0; weights ramp as ``min(iter / warmup_iters, 1)``.
            extra_teachers (list[GeneralizedRCNN]): more teachers for an ensemble (paper A.2):
                the ROI logits of all teachers on the student's proposals are averaged before
                any logit loss; feature losses use ``teacher``'s features. Frozen like it.
            kwargs: the arguments of :class:`GeneralizedRCNN`.
        """
        super().__init__(**kwargs)
        if not isinstance(teacher, GeneralizedRCNN):
            raise ValueError(
                f"DistillRCNN needs a GeneralizedRCNN teacher, got {type(teacher).__name__}. Set "
                "MODEL.DISTILL.TEACHER_CONFIG and MODEL.DISTILL.TEACHER_WEIGHTS."
            )
        logit_losses = dict(logit_losses or {})
        feature_losses = dict(feature_losses or {})
        loss_weights = dict(loss_weights or {})
        names = set(logit_losses) | set(feature_losses)
        if set(logit_losses) & set(feature_losses):
            raise ValueError(f"Loss names used twice: {set(logit_losses) & set(feature_losses)}")
        if set(loss_weights) != names:
            raise ValueError(
                f"loss_weights must have one weight per loss {sorted(names)}, got "
                f"{sorted(loss_weights)}."
            )
        if not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(
                f"MODEL.DISTILL.WARMUP_ITERS must be an int >= 0, got {warmup_iters!r}"
            )

        extra_teachers = list(extra_teachers or [])
        for t in [teacher] + extra_teachers:
            self._check_compatible(t)
        self.teacher = freeze(teacher)
        self.extra_teachers = nn.ModuleList(freeze(t) for t in extra_teachers)
        self.logit_losses = logit_losses
        # losses with state (e.g. LumiNet's running teacher statistics) are saved in checkpoints
        self.logit_loss_modules = nn.ModuleDict(
            {k: v for k, v in logit_losses.items() if isinstance(v, nn.Module)}
        )
        self.feature_losses = nn.ModuleDict(feature_losses)
        self.loss_weights = {k: _check_weight(k, v) for k, v in loss_weights.items()}
        self.warmup_iters = warmup_iters
        # The teacher is rebuilt from its own config and weights: keep it out of checkpoints.
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    def _check_compatible(self, teacher: GeneralizedRCNN) -> None:
        s_heads, t_heads = self.roi_heads, teacher.roi_heads
        for role, heads in (("student", s_heads), ("teacher", t_heads)):
            if not all(hasattr(heads, a) for a in ("box_pooler", "box_head", "box_predictor")):
                raise ValueError(
                    f"The {role}'s ROI heads ({type(heads).__name__}) have no StandardROIHeads-"
                    "style box branch (box_pooler, box_head, box_predictor)."
                )
        if s_heads.num_classes != t_heads.num_classes:
            raise ValueError(
                f"Teacher and student class counts differ: teacher MODEL.ROI_HEADS.NUM_CLASSES="
                f"{t_heads.num_classes}, student {s_heads.num_classes}. Their box logits must "
                "cover the same classes: use a teacher trained on the student's dataset (or set "
                "MODEL.DISTILL.TEACHER_OPTS to match)."
            )
        if getattr(s_heads, "train_on_pred_boxes", False):
            raise ValueError(
                "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES=True replaces the sampled proposals in "
                "place, so teacher and student ROIs would no longer align; set it to False."
            )
        formats = {self.input_format, teacher.input_format}
        if len(formats) == 2 and formats != {"RGB", "BGR"}:
            raise ValueError(
                f"Student INPUT.FORMAT {self.input_format!r} and teacher INPUT.FORMAT "
                f"{teacher.input_format!r} differ and only RGB<->BGR can be converted."
            )

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        d = cfg.MODEL.DISTILL
        losses = list(d.LOSSES)
        allowed = LOGIT_LOSSES + FEATURE_LOSSES
        unknown = [n for n in losses if n not in allowed]
        if unknown:
            raise ValueError(
                f"Unknown MODEL.DISTILL.LOSSES {unknown}; allowed: {list(allowed)} "
                "(or [] for the student alone)."
            )
        if len(set(losses)) != len(losses):
            raise ValueError(f"MODEL.DISTILL.LOSSES lists a loss twice: {losses}")

        teacher_cfg = load_teacher_cfg(d.TEACHER_CONFIG, d.TEACHER_OPTS, cfg.MODEL.DEVICE)
        s_classes, t_classes = (
            cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            teacher_cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
        if s_classes != t_classes:  # checked before loading weights: the clearer message
            raise ValueError(
                f"Teacher and student class counts differ: the teacher config "
                f"{d.TEACHER_CONFIG!r} has MODEL.ROI_HEADS.NUM_CLASSES={t_classes}, the student "
                f"{s_classes}. Use a teacher trained on the student's dataset (or set "
                "MODEL.DISTILL.TEACHER_OPTS ['MODEL.ROI_HEADS.NUM_CLASSES', N] for a teacher "
                "checkpoint with N classes)."
            )
        teacher = build_teacher(teacher_cfg, d.TEACHER_WEIGHTS, d.TEACHER_CONFIG)
        extra_teachers = []
        if len(d.ENSEMBLE_CONFIGS) != len(d.ENSEMBLE_WEIGHTS):
            raise ValueError(
                f"MODEL.DISTILL.ENSEMBLE_CONFIGS ({len(d.ENSEMBLE_CONFIGS)} items) and "
                f"ENSEMBLE_WEIGHTS ({len(d.ENSEMBLE_WEIGHTS)} items) must pair up one to one."
            )
        for config, weights in zip(d.ENSEMBLE_CONFIGS, d.ENSEMBLE_WEIGHTS):
            ecfg = load_teacher_cfg(config, [], cfg.MODEL.DEVICE)
            if ecfg.MODEL.ROI_HEADS.NUM_CLASSES != s_classes:
                raise ValueError(
                    f"Ensemble teacher {config!r} has NUM_CLASSES="
                    f"{ecfg.MODEL.ROI_HEADS.NUM_CLASSES}, the student {s_classes}."
                )
            extra_teachers.append(build_teacher(ecfg, weights, config))
        feature_losses = {}
        if "reviewkd" in losses:
            feature_losses["reviewkd"] = ReviewKD(
                student_shapes=ret["backbone"].output_shape(),
                teacher_shapes=teacher.backbone.output_shape(),
                mid_channels=d.REVIEWKD.MID_CHANNELS,
                pool_levels=tuple(d.REVIEWKD.POOL_LEVELS),
            )
        ret.update(
            teacher=teacher,
            logit_losses={
                n: _LOGIT_LOSS_BUILDERS[n](d, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)
                for n in losses
                if n in LOGIT_LOSSES
            },
            feature_losses=feature_losses,
            loss_weights={n: d[n.upper()].WEIGHT for n in losses},
            warmup_iters=d.WARMUP_ITERS,
            extra_teachers=extra_teachers,
        )
        return ret

    def train(self, mode: bool = True):
        """Switch the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        self.extra_teachers.eval()
        return self

    # ------------------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Student losses plus ``loss_<name>`` per distillation loss in training; the
        student's predictions (as GeneralizedRCNN) in inference."""
        if not self.training or not (self.logit_losses or self.feature_losses):
            return super().forward(batched_inputs)

        captured: Dict[str, object] = {}
        with self._capture_student(captured):
            losses = super().forward(batched_inputs)
        proposals = captured["proposals"]
        teacher_features, teacher_logits = self._teacher_forward(
            batched_inputs, proposals, need_logits=bool(self.logit_losses)
        )
        storage = _current_storage()
        iteration = storage.iter if storage is not None else None
        factor = self._warmup_factor(iteration)
        if storage is not None and self.warmup_iters > 0:
            storage.put_scalar("distill_warmup_factor", factor)

        if self.logit_losses:
            student_logits = captured["logits"]
            assert student_logits.shape == teacher_logits.shape, (
                f"student ROI logits {tuple(student_logits.shape)} and teacher ROI logits "
                f"{tuple(teacher_logits.shape)} do not align"
            )
            _check_finite("the teacher's ROI logits", teacher_logits, iteration)
            gt_classes = torch.cat([p.gt_classes for p in proposals])
            for name, fn in self.logit_losses.items():
                value = fn(student_logits, teacher_logits, gt_classes)
                losses[f"loss_{name}"] = _check_finite(
                    f"loss_{name}", value * (self.loss_weights[name] * factor), iteration
                )
        for name, module in self.feature_losses.items():
            value = module(captured["features"], teacher_features)
            losses[f"loss_{name}"] = _check_finite(
                f"loss_{name}", value * (self.loss_weights[name] * factor), iteration
            )
        return losses

    @contextlib.contextmanager
    def _capture_student(self, captured: Dict[str, object]):
        """Record the student's backbone features, sampled proposals and box logits."""

        def hook(key, index=None):
            def fn(module, inputs, output):
                captured[key] = output if index is None else output[index]

            return fn

        handles = [
            self.backbone.register_forward_hook(hook("features")),
            # StandardROIHeads.forward returns (sampled proposals, losses) in training
            self.roi_heads.register_forward_hook(hook("proposals", 0)),
            # FastRCNNOutputLayers returns (class scores (R, K+1), box deltas)
            self.roi_heads.box_predictor.register_forward_hook(hook("logits", 0)),
        ]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def _teacher_forward(self, batched_inputs, proposals, need_logits: bool):
        """The (first) teacher's FPN features, and the ROI logits on the student's sampled
        proposals, averaged over the ensemble when there are extra teachers."""
        features, logits = _run_teacher(
            self.teacher, self.input_format, batched_inputs, proposals, need_logits
        )
        if need_logits and len(self.extra_teachers):
            others = [
                _run_teacher(t, self.input_format, batched_inputs, proposals, True)[1]
                for t in self.extra_teachers
            ]
            logits = torch.stack([logits] + others).mean(0)
        return features, logits

    def _warmup_factor(self, iteration: Optional[int]) -> float:
        """``min(iteration / warmup_iters, 1)``; 1 without warm-up or outside a trainer."""
        if self.warmup_iters <= 0 or iteration is None:
            return 1.0
        return min(iteration / self.warmup_iters, 1.0)


def box_logits(detector: GeneralizedRCNN, features: Dict[str, torch.Tensor], proposal_boxes):
    """Box-classification logits (R, K+1) of ``detector``'s box head on the given proposal
    boxes (a list of Boxes, one per image), from its FPN ``features``."""
    heads = detector.roi_heads
    box_features = heads.box_pooler([features[f] for f in heads.box_in_features], proposal_boxes)
    return heads.box_predictor(heads.box_head(box_features))[0]


def _run_teacher(teacher, student_format, batched_inputs, proposals, need_logits: bool):
    if teacher.input_format != student_format:  # RGB <-> BGR (checked in __init__)
        batched_inputs = [dict(x, image=x["image"].flip(0)) for x in batched_inputs]
    images = teacher.preprocess_image(batched_inputs)
    features = teacher.backbone(images.tensor)
    logits = (
        box_logits(teacher, features, [p.proposal_boxes for p in proposals])
        if need_logits
        else None
    )
    return features, logits


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


_TEACHER_PREFIXES = ("teacher.", "extra_teachers.")


def _drop_teacher_keys(module, state_dict, prefix, local_metadata):
    for key in [
        k for k in state_dict if k.startswith(tuple(prefix + p for p in _TEACHER_PREFIXES))
    ]:
        del state_dict[key]


def _ignore_missing_teacher_keys(module, incompatible_keys):
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith(_TEACHER_PREFIXES)]
