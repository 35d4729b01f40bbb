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
import torch.distributed as dist
from torch import nn

from ._checks import _as_float, _check_positive
from .dense import sigmoid_dist_loss, sigmoid_kd_loss, sigmoid_luminet_loss
from .functional import dist_loss, dkd_loss, kd_loss, logit_std_kd_loss, luminet_loss
from .statistics import STATS_MODES, RunningMoments, _all_reduce_sum, _distributed, global_moments

__all__ = [
    "LogitLoss",
    "KDLoss",
    "LogitStdKDLoss",
    "DKDLoss",
    "DISTLoss",
    "SigmoidDISTLoss",
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
    #: whether a loss that reads targets checks their values (a ValueError for a class out of
    #: range). Reading them back waits for the device; a caller whose targets are in range by
    #: construction (the detectors' ROI sampler and anchor matcher) sets it to False.
    check_targets = True

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
            student_logits,
            teacher_logits,
            targets,
            self.alpha,
            self.beta,
            self.temperature,
            check_targets=self.check_targets,
        )


def _check_relation_weights(beta, gamma) -> None:
    for name, value in (("beta", beta), ("gamma", gamma)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"DIST {name} must be a number >= 0, got {value!r}.")


@register_logit_loss("dist")
class DISTLoss(LogitLoss):
    """DIST (Huang et al., NeurIPS 2022), :func:`~luminet_det.losses.dist_loss`: inter- and
    intra-class Pearson relations of the softmax probabilities at ``tau``, times tau².

    Args:
        beta (float): >= 0, weight of the inter-class relation.
        gamma (float): >= 0, weight of the intra-class relation.
        tau (float): temperature > 0.
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        gamma: float = 1.0,
        tau: float = 1.0,
        num_classes: Optional[int] = None,
    ):
        super().__init__(num_classes=num_classes)
        _check_relation_weights(beta, gamma)
        _check_positive("tau", tau)
        self.beta, self.gamma, self.tau = float(beta), float(gamma), float(tau)

    def compute(self, student_logits, teacher_logits, targets):
        return dist_loss(student_logits, teacher_logits, self.beta, self.gamma, self.tau)


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
        self._stats_ready = False
        self.register_load_state_dict_pre_hook(_forget_stats_ready)

    @property
    def needs_teacher_stats(self) -> bool:
        """True while ``stats="global"`` statistics have not been computed. Once they have,
        the answer is remembered (the count is read back from the device once, not at every
        step); loading a state dict forgets it."""
        if self.stats != "global" or self._stats_ready:
            return False
        self._stats_ready = bool(self.running.count.item() > 0)
        return not self._stats_ready

    def accumulate_teacher_stats(self, teacher_logits: torch.Tensor) -> None:
        """Add rows (N, C) of the teacher's logits to the ``"global"`` statistics (all
        processes; every process must call it, with N = 0 if it has no rows)."""
        assert (
            self.stats == "global"
        ), f"accumulate_teacher_stats is for STATS 'global', not {self.stats!r}"
        self.running.update(teacher_logits)

    def compute(self, student_logits, teacher_logits, targets):
        teacher_logits = teacher_logits.detach()
        if self.stats == "sync" and _distributed():
            return self._synced(student_logits, teacher_logits, targets)
        if self.stats in ("batch", "sync"):  # "sync" in one process is exactly "batch"
            return self._loss(student_logits, teacher_logits, targets, None, None, "mean")
        if self.stats == "running" and self.training:
            self.running.update(teacher_logits)  # every process, with or without rows
        elif self.stats == "global" and self.needs_teacher_stats:
            raise RuntimeError(
                "LumiNet STATS 'global' applies the teacher's statistics over the training set, "
                "but none were computed. tools/train_net.py and luminet_det.cls compute them "
                "before the first step; elsewhere call accumulate_teacher_stats() on the "
                "teacher's logits of the training set first (or use STATS 'running')."
            )
        moments = self.running.moments()
        loss = self._loss(student_logits, teacher_logits, targets, None, moments, "mean")
        # "running" before any row was seen (e.g. the first batches have no rows on any
        # process): no statistics yet, so the term contributes zero
        return loss * self.running.seen if self.stats == "running" else loss

    def _synced(self, student_logits, teacher_logits, targets):
        """``"sync"`` under several processes: both sides' moments over all processes' rows,
        and this process's sum over its rows divided by the global normaliser over the
        number of processes, so that the mean of the processes' losses (and, under
        DistributedDataParallel, of their gradients) is the loss of one process holding the
        concatenated batch, whatever each process's row count."""
        n, s_mean, s_m2 = global_moments(_as_float(student_logits))
        _, t_mean, t_m2 = global_moments(_as_float(teacher_logits))
        count = n.clamp_min(1.0)
        s_m, t_m = (s_mean, s_m2 / count), (t_mean, t_m2 / count)
        total = self._loss(student_logits, teacher_logits, targets, s_m, t_m, "sum")
        normaliser = self._global_normaliser(n, targets, student_logits.shape[1])
        loss = total * dist.get_world_size() / normaliser
        # every process must take part in the all-reduce's backward, even one whose loss
        # does not depend on the moments (no rows): keep them in the graph
        return loss + 0.0 * (s_m[0].sum() + s_m[1].sum())

    def _global_normaliser(self, rows: torch.Tensor, targets, columns: int) -> torch.Tensor:
        """What the "mean" reduction divides by, over all processes: the rows (>= 1)."""
        return rows.clamp_min(1.0)

    def _loss(self, student_logits, teacher_logits, targets, student_moments, teacher_moments, red):
        """The loss given the moments of each side (None: its batch statistics) and the
        reduction ``red`` ("mean" or "sum")."""
        return luminet_loss(
            student_logits,
            teacher_logits,
            self.temperature,
            self.eps,
            student_moments=student_moments,
            teacher_moments=teacher_moments,
            reduction=red,
        )


def _forget_stats_ready(module, *args) -> None:
    module._stats_ready = False


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
        return sigmoid_kd_loss(
            student_logits,
            teacher_logits,
            targets,
            self.temperature,
            check_targets=self.check_targets,
        )


@register_logit_loss("luminet_sigmoid")
class SigmoidLuminetLoss(LuminetLoss):
    """LumiNet for sigmoid classifiers (one-stage detectors),
    :func:`~luminet_det.losses.sigmoid_luminet_loss`: columns standardised over the rows, then
    per-class binary KL at temperature T, averaged over the classes and divided by the
    foreground rows (so a weight means the same whatever C); needs the targets
    (N,) in [0, C], C = background. Statistics per ``stats`` as :class:`LuminetLoss`.

    Args: those of :class:`LuminetLoss`.
    """

    needs_targets = True

    def _global_normaliser(self, rows: torch.Tensor, targets, columns: int) -> torch.Tensor:
        """The foreground rows (targets < C) of all processes (>= 1)."""
        foreground = (targets < columns).sum().to(rows)
        return _all_reduce_sum(foreground).clamp_min(1.0)

    def _loss(self, student_logits, teacher_logits, targets, student_moments, teacher_moments, red):
        return sigmoid_luminet_loss(
            student_logits,
            teacher_logits,
            targets,
            self.temperature,
            self.eps,
            student_moments=student_moments,
            teacher_moments=teacher_moments,
            reduction=red,
            check_targets=self.check_targets,
        )


@register_logit_loss("dist_sigmoid")
class SigmoidDISTLoss(LogitLoss):
    """DIST for sigmoid classifiers (one-stage detectors),
    :func:`~luminet_det.losses.sigmoid_dist_loss`: the relations of the per-class sigmoid
    probabilities (the authors' RetinaNet form has no temperature: ``tau`` must be 1).

    Args:
        beta (float): >= 0, weight of the relation within each row.
        gamma (float): >= 0, weight of the relation within each class column.
        tau (float): 1 (accepted so that one config node serves both forms).
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        gamma: float = 1.0,
        tau: float = 1.0,
        num_classes: Optional[int] = None,
    ):
        super().__init__(num_classes=num_classes)
        _check_relation_weights(beta, gamma)
        if tau != 1.0:
            raise ValueError(
                f"DIST's sigmoid form (RetinaNet) takes no temperature: tau must be 1.0, got "
                f"{tau!r} (the authors' detection code applies the sigmoid to the raw logits)."
            )
        self.beta, self.gamma = float(beta), float(gamma)

    def compute(self, student_logits, teacher_logits, targets):
        return sigmoid_dist_loss(student_logits, teacher_logits, self.beta, self.gamma)
