"""The logit losses as modules, built by name: the one interface of the detector and the
classifier.

Every logit loss is a :class:`LogitLoss`, called as ``loss(student_logits, teacher_logits,
targets)`` on ``(N, C)`` logits and ``(N,)`` integer targets (the labels in classification,
the sampled ROIs' matched classes in detection), and returns an unweighted scalar: callers
multiply by their configured weight and warm-up factor. Adding a method is one class here and
one ``@register_logit_loss("name")`` line; both :class:`~luminet_det.modeling.DistillRCNN` and
:mod:`luminet_det.cls` then accept the name.

    >>> loss = build_logit_loss("luminet", temperature=4.0)
    >>> loss(student_logits, teacher_logits, targets)
"""

from __future__ import annotations

import inspect
from typing import Callable, Dict, List, Optional, Type

import torch
from torch import nn

from ._checks import _check_positive
from .dense import sigmoid_kd_loss, sigmoid_luminet_loss
from .functional import dkd_loss, kd_loss, logit_std_kd_loss, luminet_loss
from .statistics import STATS_MODES, Moments, RunningMoments, _distributed, sync_moments

__all__ = [
    "LogitLoss",
    "KDLoss",
    "LogitStdKDLoss",
    "DKDLoss",
    "LuminetLoss",
    "SigmoidKDLoss",
    "SigmoidLuminetLoss",
    "register_logit_loss",
    "build_logit_loss",
    "logit_loss_names",
]

_REGISTRY: Dict[str, Type["LogitLoss"]] = {}


def register_logit_loss(name: str) -> Callable[[Type["LogitLoss"]], Type["LogitLoss"]]:
    """Class decorator: make a :class:`LogitLoss` buildable as ``build_logit_loss(name)``."""

    def deco(cls: Type[LogitLoss]) -> Type[LogitLoss]:
        assert issubclass(cls, LogitLoss), f"{cls.__name__} must subclass LogitLoss"
        assert name not in _REGISTRY, f"logit loss {name!r} registered twice"
        _REGISTRY[name] = cls
        return cls

    return deco


def logit_loss_names() -> List[str]:
    """The names :func:`build_logit_loss` accepts, in registration order."""
    return list(_REGISTRY)


def build_logit_loss(name: str, **kwargs) -> "LogitLoss":
    """Build the logit loss registered as ``name`` with its keyword arguments.

    Args:
        name (str): one of :func:`logit_loss_names` ("kd", "dkd", "luminet", ...).
        kwargs: the loss's own arguments (e.g. ``temperature``), plus ``num_classes`` (C), which
            every loss accepts: logits with another number of columns are then refused.

    Raises:
        ValueError: an unknown name (the valid ones are listed), an argument the loss does not
            take (its arguments are listed), or an invalid value.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown logit loss {name!r}; valid names: {logit_loss_names()}.")
    cls = _REGISTRY[name]
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"The {name!r} loss takes no argument {unknown}; it takes {params}.")
    return cls(**kwargs)


class LogitLoss(nn.Module):
    """Base of the logit losses: ``forward(student_logits (N, C), teacher_logits (N, C),
    targets (N,) or None) -> scalar``. Subclasses implement :meth:`compute`.

    Args:
        num_classes (int, optional): C, the number of logit columns; when given, logits with
            another number of columns raise ValueError.
    """

    #: whether :meth:`compute` reads ``targets`` (forward then refuses ``None``)
    needs_targets = False

    def __init__(self, *, num_classes: Optional[int] = None):
        super().__init__()
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}.")
        self.num_classes = num_classes

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if self.num_classes is not None and student_logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_classes} logit columns, got "
                f"logits of shape {tuple(student_logits.shape)}."
            )
        if self.needs_targets and targets is None:
            raise ValueError(f"{type(self).__name__} needs the targets (N,) of the rows.")
        return self.compute(student_logits, teacher_logits, targets)

    def compute(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        targets: Optional[torch.Tensor],
    ) -> torch.Tensor:
        raise NotImplementedError


@register_logit_loss("kd")
class KDLoss(LogitLoss):
    """Hinton's KD, :func:`~luminet_det.losses.kd_loss` (scaled by T²).

    Args:
        temperature (float): T > 0.
    """

    def __init__(self, *, temperature: float = 4.0, num_classes: Optional[int] = None):
        super().__init__(num_classes=num_classes)
        _check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def compute(self, student_logits, teacher_logits, targets):
        return kd_loss(student_logits, teacher_logits, self.temperature)


@register_logit_loss("logitstd")
class LogitStdKDLoss(LogitLoss):
    """KD on logits standardised per row (Sun et al., CVPR 2024),
    :func:`~luminet_det.losses.logit_std_kd_loss` (scaled by T²).

    Args:
        temperature (float): T > 0.
        eps (float): > 0, added to each row's standard deviation.
    """

    def __init__(
        self, *, temperature: float = 2.0, eps: float = 1e-7, num_classes: Optional[int] = None
    ):
        super().__init__(num_classes=num_classes)
        _check_positive("temperature", temperature)
        _check_positive("eps", eps)
        self.temperature, self.eps = float(temperature), float(eps)

    def compute(self, student_logits, teacher_logits, targets):
        return logit_std_kd_loss(student_logits, teacher_logits, self.temperature, self.eps)


@register_logit_loss("dkd")
class DKDLoss(LogitLoss):
    """Decoupled KD, :func:`~luminet_det.losses.dkd_loss`: ``alpha * TCKD + beta * NCKD``
    (scaled by T²); needs the targets.

    Args:
        alpha (float): >= 0, weight of the target-class term.
        beta (float): >= 0, weight of the non-target-class term.
        temperature (float): T > 0.
    """

    needs_targets = True

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        num_classes: Optional[int] = None,
    ):
        super().__init__(num_classes=num_classes)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"DKD {name} must be a number >= 0, got {value!r}.")
        _check_positive("temperature", temperature)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)

    def compute(self, student_logits, teacher_logits, targets):
        return dkd_loss(
            student_logits, teacher_logits, targets, self.alpha, self.beta, self.temperature
        )


@register_logit_loss("luminet")
class LuminetLoss(LogitLoss):
    """LumiNet, :func:`~luminet_det.losses.luminet_loss`, with its perception statistics taken
    per ``stats`` mode (see :mod:`luminet_det.losses.statistics`). Unweighted, no T².

    With ``stats="global"`` the teacher's statistics must be filled before training with
    :meth:`accumulate_teacher_stats` (one call per batch of the training set, on every
    process); they are then applied unchanged. With ``stats="running"`` they accumulate during
    training. Both live in the buffers of ``self.running`` (checkpointed).

    Args:
        temperature (float): T > 0.
        eps (float): > 0, variance epsilon.
        stats (str): "batch", "sync", "global" or "running".
        num_classes (int): C; required by "global" and "running".
    """

    def __init__(
        self,
        *,
        temperature: float = 4.0,
        eps: float = 1e-5,
        stats: str = "batch",
        num_classes: Optional[int] = None,
    ):
        super().__init__(num_classes=num_classes)
        if stats not in STATS_MODES:
            raise ValueError(f"LumiNet STATS must be one of {list(STATS_MODES)}, got {stats!r}.")
        if stats in ("global", "running") and num_classes is None:
            raise ValueError(f"LumiNet STATS {stats!r} needs num_classes (the logit columns C).")
        _check_positive("temperature", temperature)
        _check_positive("eps", eps)
        self.temperature, self.eps, self.stats = float(temperature), float(eps), stats
        self.running = RunningMoments(num_classes) if stats in ("global", "running") else None
        self._student_moments = sync_moments if stats == "sync" else None
        self._teacher_moments = {
            "batch": None,
            "sync": sync_moments,
            "global": self._precomputed,
            "running": self._running,
        }[stats]

    @property
    def needs_teacher_stats(self) -> bool:
        """True while ``stats="global"`` statistics have not been computed."""
        return self.stats == "global" and self.running.count.item() == 0

    def accumulate_teacher_stats(self, teacher_logits: torch.Tensor) -> None:
        """Add rows (N, C) of the teacher's logits to the ``"global"`` statistics (all
        processes; every process must call it, with N = 0 if it has no rows)."""
        assert (
            self.stats == "global"
        ), f"accumulate_teacher_stats is for STATS 'global', not {self.stats!r}"
        self.running.update(teacher_logits)

    def _precomputed(self, teacher_logits: torch.Tensor) -> Moments:
        if self.needs_teacher_stats:
            raise RuntimeError(
                "LumiNet STATS 'global' applies the teacher's statistics over the training set, "
                "but none were computed. tools/train_net.py and luminet_det.cls compute them "
                "before the first step; elsewhere call accumulate_teacher_stats() on the "
                "teacher's logits of the training set first (or use STATS 'running')."
            )
        return self.running()

    def _running(self, teacher_logits: torch.Tensor) -> Moments:
        if self.training:
            self.running.update(teacher_logits)
        return self.running()

    def compute(self, student_logits, teacher_logits, targets):
        s_m, t_m = None, None
        local = (student_logits.shape[0] == 0 and self.stats not in ("sync", "running")) or (
            self.stats == "sync" and not _distributed()  # one process: exactly "batch"
        )
        if not local:
            s_m = self._student_moments(student_logits) if self._student_moments else None
            t_m = self._teacher_moments(teacher_logits.detach()) if self._teacher_moments else None
        loss = self._loss(student_logits, teacher_logits, targets, s_m, t_m)
        if s_m is not None:
            # every process must take part in the all-reduce's backward, even one whose loss
            # does not depend on the moments (no rows): keep them in the graph
            loss = loss + 0.0 * (s_m[0].sum() + s_m[1].sum())
        return loss

    def _loss(self, student_logits, teacher_logits, targets, student_moments, teacher_moments):
        """The loss given the moments of each side (None: its batch statistics)."""
        return luminet_loss(
            student_logits,
            teacher_logits,
            self.temperature,
            self.eps,
            student_moments=student_moments,
            teacher_moments=teacher_moments,
        )


# ------------------------------------------------------------ dense (sigmoid) classifiers
@register_logit_loss("kd_sigmoid")
class SigmoidKDLoss(LogitLoss):
    """KD for sigmoid classifiers (one-stage detectors),
    :func:`~luminet_det.losses.sigmoid_kd_loss`: per-class binary KL at temperature T, scaled
    by T², normalised by the foreground rows; needs the targets (N,) in [0, C], C = background.

    Args:
        temperature (float): T > 0.
    """

    needs_targets = True

    def __init__(self, *, temperature: float = 1.0, num_classes: Optional[int] = None):
        super().__init__(num_classes=num_classes)
        _check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def compute(self, student_logits, teacher_logits, targets):
        return sigmoid_kd_loss(student_logits, teacher_logits, targets, self.temperature)


@register_logit_loss("luminet_sigmoid")
class SigmoidLuminetLoss(LuminetLoss):
    """LumiNet for sigmoid classifiers (one-stage detectors),
    :func:`~luminet_det.losses.sigmoid_luminet_loss`: columns standardised over the rows, then
    per-class binary KL at temperature T, normalised by the foreground rows; needs the targets
    (N,) in [0, C], C = background. Statistics per ``stats`` as :class:`LuminetLoss`.

    Args: those of :class:`LuminetLoss`.
    """

    needs_targets = True

    def _loss(self, student_logits, teacher_logits, targets, student_moments, teacher_moments):
        return sigmoid_luminet_loss(
            student_logits,
            teacher_logits,
            targets,
            self.temperature,
            self.eps,
            student_moments=student_moments,
            teacher_moments=teacher_moments,
        )
