"""What every distilled detector of the plugin shares (DistillRCNN, DistillRetinaNet): frozen
teachers kept out of checkpoints, the loss weights and warm-up, the finiteness checks."""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.utils.events import get_event_storage
from torch import nn

from luminet_det.config import logit_loss_kwargs
from luminet_det.losses import LogitLoss, build_logit_loss

from ..precision import check_dtype, teacher_precision
from .crosskd import CrossKD
from .reviewkd import ReviewKD
from .teacher import build_teachers, freeze

__all__ = [
    "Distiller",
    "ensure_finite",
    "check_finite",
    "LOG_PERIOD",
    "float32_losses",
    "distillation_from_config",
    "student_state_dict",
    "STUDENT_EXCLUDED_PREFIXES",
]

_TEACHER_PREFIXES = ("teacher.", "extra_teachers.")
#: detectron2's DefaultTrainer writes its metrics every 20 iterations (PeriodicWriter)
LOG_PERIOD = 20
#: Prefixes of a distilled detector's state-dict keys that are not part of the student
#: ("logit_loss_modules." is how checkpoints written before version 0.2 named "logit_losses.").
STUDENT_EXCLUDED_PREFIXES = _TEACHER_PREFIXES + (
    "feature_losses.",
    "logit_losses.",
    "logit_loss_modules.",
)


def student_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The keys of a distilled detector's (or training checkpoint's) state dict that form the
    student: exactly the keys of the stock detector (GeneralizedRCNN, RetinaNet) with the
    same config."""
    return {k: v for k, v in state_dict.items() if not k.startswith(STUDENT_EXCLUDED_PREFIXES)}


def distillation_from_config(
    cfg,
    backbone: nn.Module,
    logit_losses: Sequence[str],
    num_logits: int,
    registry_name: Callable[[str], str] = lambda name: name,
) -> Dict[str, object]:
    """The keyword arguments of :meth:`Distiller._init_distillation` from a config's
    ``MODEL.DISTILL`` (the only place that reads it): the teachers (built, checked, loaded,
    frozen), the logit losses (built by name through ``build_logit_loss``), ReviewKD, the
    weights and the warm-up.

    Args:
        cfg (CfgNode): the student's config, already checked (``check_distill_config``).
        backbone (nn.Module): the student's backbone (ReviewKD's input shapes).
        logit_losses (sequence[str]): the names of MODEL.DISTILL.LOSSES that are logit losses
            for this student.
        num_logits (int): the logit columns C of the student's classifier.
        registry_name (callable): config name -> registered loss name (e.g. the sigmoid form
            ``"luminet" -> "luminet_sigmoid"`` of a one-stage student).
    """
    d = cfg.MODEL.DISTILL
    teacher, *extra_teachers = build_teachers(cfg)
    feature_losses = {}
    if "crosskd" in d.LOSSES:
        c = d.CROSSKD
        feature_losses["crosskd"] = CrossKD(
            reused_head_index=c.REUSED_HEAD_INDEX,
            beta=c.BETA,
            cls_weight=c.CLS_WEIGHT,
            reg_weight=c.REG_WEIGHT,
        )
    if "reviewkd" in d.LOSSES:
        feature_losses["reviewkd"] = ReviewKD(
            student_shapes=backbone.output_shape(),
            teacher_shapes=teacher.backbone.output_shape(),
            mid_channels=d.REVIEWKD.MID_CHANNELS,
            pool_levels=tuple(d.REVIEWKD.POOL_LEVELS),
        )
    return dict(
        teacher=teacher,
        extra_teachers=extra_teachers,
        logit_losses={
            name: build_logit_loss(
                registry_name(name), num_classes=num_logits, **logit_loss_kwargs(cfg, name)
            )
            for name in d.LOSSES
            if name in logit_losses
        },
        feature_losses=feature_losses,
        loss_weights={name: d[name.upper()].WEIGHT for name in d.LOSSES},
        warmup_iters=d.WARMUP_ITERS,
        teacher_dtype=d.TEACHER_DTYPE,
    )


class Distiller(nn.Module):
    """Mixin of a student detector trained against frozen teachers; listed before the stock
    meta-architecture (``class DistillRCNN(Distiller, GeneralizedRCNN)``).

    The subclass calls :meth:`_init_distillation` at the end of its ``__init__`` and defines
    the three steps of :meth:`forward` in training: ``forward_student(batched_inputs) ->
    (losses, record)`` (the stock forward, through :meth:`_stock_forward`),
    ``teacher_outputs(batched_inputs, record) -> TeacherOutputs`` and
    ``distillation_losses(record, teacher) -> dict``, which ends with :meth:`_finish_losses`
    on its unweighted terms. The teachers stay frozen and in eval mode whatever ``train()`` is
    called with, and are not part of ``state_dict()`` (they are rebuilt from their own configs
    and weights).
    """

    def _init_distillation(
        self,
        *,
        teacher: nn.Module,
        extra_teachers: Sequence[nn.Module],
        logit_losses: Optional[Mapping[str, LogitLoss]],
        feature_losses: Optional[Mapping[str, nn.Module]],
        loss_weights: Optional[Mapping[str, float]],
        warmup_iters: int,
        teacher_dtype: str = "float32",
    ) -> None:
        """
        Args:
            teacher (nn.Module): the teacher detector with its weights loaded; frozen here.
            extra_teachers (sequence[nn.Module]): further teachers of an ensemble (paper A.2),
                whose logits are averaged with the first's; frozen like it.
            logit_losses (dict[str, LogitLoss]): name -> unweighted logit loss.
            feature_losses (dict[str, nn.Module]): name -> ``module(student_features,
                teacher_features)`` on the backbone outputs.
            loss_weights (dict[str, float]): name -> weight >= 0, one per loss above.
            warmup_iters (int): >= 0; weights ramp as ``min(iter / warmup_iters, 1)``.
            teacher_dtype (str): the dtype of the teachers' forward, one of
                :data:`~luminet_det.precision.DTYPES` (:meth:`teacher_precision`).
        """
        logit_losses, feature_losses = dict(logit_losses or {}), dict(feature_losses or {})
        loss_weights = dict(loss_weights or {})
        assert not set(logit_losses) & set(feature_losses), f"{logit_losses} / {feature_losses}"
        assert set(loss_weights) == set(logit_losses) | set(feature_losses), f"{loss_weights}"
        self.teacher = freeze(teacher)
        self.extra_teachers = nn.ModuleList(freeze(t) for t in extra_teachers)
        # modules, so that a loss's state (e.g. LumiNet's running statistics) is checkpointed
        self.logit_losses = nn.ModuleDict(logit_losses)
        for loss in self.logit_losses.values():
            # the rows' targets come from detectron2's ROI sampler / anchor matcher, in range
            # by construction: checking their values would wait for the device every step
            loss.check_targets = False
        self.feature_losses = nn.ModuleDict(feature_losses)
        self.loss_weights = {k: float(v) for k, v in loss_weights.items()}
        self.warmup_iters = warmup_iters
        check_dtype(teacher_dtype, self.device.type, "MODEL.DISTILL.TEACHER_DTYPE")
        self.teacher_dtype = teacher_dtype
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_pre_hook(_rename_old_loss_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    @property
    def teachers(self) -> List[nn.Module]:
        """The teacher, then the ensemble's further teachers."""
        return [self.teacher, *self.extra_teachers]

    @property
    def distilling(self) -> bool:
        """Whether any distillation loss is configured."""
        return bool(self.logit_losses or self.feature_losses)

    def teacher_precision(self):
        """The context of the teachers' forward: no gradient, autocast in ``teacher_dtype``
        (off for float32); an operator without a kernel for that dtype becomes a ValueError
        naming MODEL.DISTILL.TEACHER_DTYPE. Convert what leaves it with ``to_float32``."""
        return teacher_precision(
            self.teacher_dtype, self.device.type, "MODEL.DISTILL.TEACHER_DTYPE"
        )

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Student losses plus ``loss_<name>`` per distillation loss in training; the
        student's predictions (those of the stock model) in inference. A training step is
        three calls, each public for code that needs the intermediate values::

            losses, record = self.forward_student(batched_inputs)   # the stock forward
            teacher = self.teacher_outputs(batched_inputs, record)  # frozen, no_grad
            losses.update(self.distillation_losses(record, teacher))
        """
        if not self.training or not self.distilling:
            return self._stock_forward(batched_inputs)
        losses, record = self.forward_student(batched_inputs)
        teacher = self.teacher_outputs(batched_inputs, record)
        losses.update(self.distillation_losses(record, teacher))
        return losses

    def _stock_forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """The stock meta-architecture's forward (the class after Distiller in the MRO)."""
        return super().forward(batched_inputs)

    def train(self, mode: bool = True):
        """Switch the student's mode; the teachers always stay in eval mode."""
        super().train(mode)
        for t in self.teachers:
            t.eval()
        return self

    def _finish_losses(
        self,
        terms: Mapping[str, torch.Tensor],
        per_stage: Optional[Mapping[str, List[torch.Tensor]]] = None,
        inputs: Sequence[Tuple[str, torch.Tensor]] = (),
    ) -> Dict[str, torch.Tensor]:
        """``loss_<name>``: each unweighted term times its weight and the warm-up factor, all
        checked finite together with ``inputs`` (what, tensor) such as the teacher's logits,
        in **one** host synchronisation (:func:`ensure_finite`); logs the warm-up factor and,
        for terms computed per stage (``per_stage``, more than one), each stage's weighted
        value on the iterations detectron2's writers log (every :data:`LOG_PERIOD`th), so
        that other iterations wait for nothing.

        Raises:
            FloatingPointError: NaN or Inf in a term or an input (before the optimizer step,
                naming it and the iteration).
        """
        storage = current_storage()
        iteration = storage.iter if storage is not None else None
        factor = self._warmup_factor(iteration)
        if storage is not None and self.warmup_iters > 0:
            storage.put_scalar("distill_warmup_factor", factor)
        if storage is not None and (iteration + 1) % LOG_PERIOD == 0:
            for name, values in (per_stage or {}).items():
                if len(values) > 1:
                    weight = self.loss_weights[name] * factor
                    for k, value in enumerate(values):
                        storage.put_scalar(f"loss_{name}_stage{k}", float(value.detach()) * weight)
        losses = {
            f"loss_{name}": value * (self.loss_weights[name] * factor)
            for name, value in terms.items()
        }
        ensure_finite([*inputs, *losses.items()], iteration)
        return losses

    def _warmup_factor(self, iteration: Optional[int]) -> float:
        """``min(iteration / warmup_iters, 1)``; 1 without warm-up or outside a trainer."""
        if self.warmup_iters <= 0 or iteration is None:
            return 1.0
        return min(iteration / self.warmup_iters, 1.0)


def float32_losses(like: torch.Tensor):
    """A context in which the distillation losses are computed in float32 even inside the
    student's mixed-precision region (detectron2's AMPTrainer): autocast off on the device of
    ``like``; the losses upcast half-precision logits and features themselves."""
    device = like.device.type if like is not None else "cpu"
    return torch.autocast(device_type=device, enabled=False)


def current_storage():
    """The trainer's EventStorage, or None outside a trainer."""
    try:
        return get_event_storage()
    except AssertionError:  # not inside a trainer (EventStorage context)
        return None


def check_finite(what: str, value: torch.Tensor, iteration: Optional[int]) -> torch.Tensor:
    """``value``, or FloatingPointError naming ``what`` if it holds a NaN or Inf (one host
    synchronisation; :func:`ensure_finite` checks several tensors with one)."""
    ensure_finite([(what, value)], iteration)
    return value


def ensure_finite(items: Sequence[Tuple[str, torch.Tensor]], iteration: Optional[int]) -> None:
    """Raise FloatingPointError naming the first of ``items`` (what, tensor) that holds a NaN
    or Inf. The tensors are checked on their device and the verdicts combined, so the host
    waits for the device once, however many there are; only when one fails are they looked
    at one by one, to name it."""
    items = [(what, value) for what, value in items if value is not None]
    if not items:
        return
    flags = torch.stack([torch.isfinite(value).all() for _, value in items])
    if bool(flags.all()):  # the one synchronisation
        return
    bad = next(what for (what, _), ok in zip(items, flags.tolist()) if not ok)
    at = f"iteration {iteration}" if iteration is not None else "this step"
    raise FloatingPointError(
        f"{bad} became NaN or Inf at {at}; stopping before the optimizer step so that no "
        "corrupt checkpoint is written. Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, "
        "or check the teacher's weights, then resume from the last checkpoint (--resume)."
    )


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
