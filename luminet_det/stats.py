"""Where LumiNet's perception statistics come from (``MODEL.DISTILL.LUMINET.STATS`` and
``METHOD.STATS`` of luminet_det.cls).

* ``"batch"`` (the paper): mean and biased variance of each class column over the rows of
  the local batch, teacher and student each with their own.
* ``"sync"``: the same moments over the *global* batch of all processes (sum, sum of squares
  and row count all-reduced). The student's all-reduce is differentiable, as in
  SyncBatchNorm, so under DistributedDataParallel the gradients equal those of one process
  holding the concatenated batch. With one process it equals ``"batch"``.
* ``"global"`` (the paper's "Ours++", appendix A.13): the teacher's moments accumulated over
  every batch seen so far (exact running moments, all processes), kept in the checkpoint; the
  student keeps its batch moments (its logits move during training, so old statistics would
  be stale).

Pure torch; ``torch.distributed`` is only used when it is initialised.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
from torch import nn

from .losses import luminet_loss

__all__ = ["STATS_MODES", "batch_moments", "sync_moments", "RunningMoments", "LuminetLoss"]

STATS_MODES = ("batch", "sync", "global")
Moments = Tuple[torch.Tensor, torch.Tensor]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def batch_moments(z: torch.Tensor) -> Moments:
    """Column mean and biased variance of a (N, C) batch, float32 for half inputs."""
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    return z.mean(0), z.var(0, unbiased=False)


def _global_sums(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Column sums (C,), column sums of squares (C,) and the row count (scalar) of ``z``
    (N, C), summed over all processes when distributed. Differentiable through the
    all-reduce when ``z`` requires grad."""
    n = torch.tensor([float(z.shape[0])], dtype=z.dtype, device=z.device)
    packed = torch.cat([z.sum(0), (z * z).sum(0), n])
    if _distributed():
        if z.requires_grad:
            from torch.distributed.nn.functional import all_reduce

            packed = all_reduce(packed)
        else:
            dist.all_reduce(packed)  # in place: ``packed`` is a new tensor
    c = z.shape[1]
    return packed[:c], packed[c : 2 * c], packed[-1]


def sync_moments(z: torch.Tensor) -> Moments:
    """Column mean and biased variance over the rows of all processes (N may differ per
    process). Differentiable through the all-reduce when ``z`` requires grad."""
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    if not _distributed():
        return batch_moments(z)
    s, sq, n = _global_sums(z)
    total = n.clamp_min(1.0)
    mean = s / total
    var = (sq / total - mean * mean).clamp_min(0.0)
    return mean, var


class RunningMoments(nn.Module):
    """Exact running mean and biased variance of class columns over all rows seen (all
    processes), stored as buffers so that checkpoints save and restore them.

    Args:
        num_classes (int): C.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(num_classes, dtype=torch.float64))

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """Merge the rows of ``z`` (N, C) (of every process) into the running moments
        (Chan et al.'s parallel update)."""
        s, sq, n = _global_sums(z.detach().double())
        if n.item() == 0:
            return
        b_mean = s / n
        b_m2 = sq - n * b_mean * b_mean
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * (n / total)
        self.m2 += b_m2 + delta * delta * self.count * n / total
        self.count.copy_(total)

    def forward(self) -> Moments:
        """(mean, biased variance) as float32 tensors of shape (C,)."""
        if self.count.item() == 0:
            raise RuntimeError("RunningMoments has seen no rows yet; call update() first.")
        return self.mean.float(), (self.m2 / self.count).float()


class LuminetLoss(nn.Module):
    """:func:`~luminet_det.losses.luminet_loss` with its statistics taken per ``stats`` mode
    (one of :data:`STATS_MODES`, see the module docstring). Unweighted.

    Args:
        temperature (float): > 0.
        eps (float): > 0, variance epsilon.
        stats (str): "batch", "sync" or "global".
        num_classes (int): C, needed by "global" (the running teacher moments).
    """

    def __init__(
        self,
        *,
        temperature: float = 4.0,
        eps: float = 1e-5,
        stats: str = "batch",
        num_classes: int = 0,
    ):
        super().__init__()
        if stats not in STATS_MODES:
            raise ValueError(f"LumiNet STATS must be one of {list(STATS_MODES)}, got {stats!r}.")
        if stats == "global" and num_classes <= 0:
            raise ValueError("STATS 'global' needs the number of logit columns (num_classes > 0).")
        self.temperature, self.eps, self.stats = temperature, eps, stats
        self.running = RunningMoments(num_classes) if stats == "global" else None
        moments = {"batch": None, "sync": sync_moments, "global": self._running_moments}
        self._student_moments = sync_moments if stats == "sync" else None
        self._teacher_moments = moments[stats]

    def _running_moments(self, teacher_logits: torch.Tensor) -> Moments:
        if self.training:
            self.running.update(teacher_logits)
        return self.running()

    def forward(self, student_logits, teacher_logits, target=None) -> torch.Tensor:
        """(N, C) student and teacher logits -> scalar; ``target`` is ignored."""
        if student_logits.shape[0] == 0 and self.stats != "sync":
            return luminet_loss(student_logits, teacher_logits, self.temperature, self.eps)
        s_m = self._student_moments(student_logits) if self._student_moments else None
        t_m = self._teacher_moments(teacher_logits.detach()) if self._teacher_moments else None
        loss = luminet_loss(
            student_logits,
            teacher_logits,
            self.temperature,
            self.eps,
            student_moments=s_m,
            teacher_moments=t_m,
        )
        if s_m is not None:
            # every process must take part in the all-reduce's backward, even one whose loss
            # does not depend on the moments (no rows): keep them in the graph
            loss = loss + 0.0 * (s_m[0].sum() + s_m[1].sum())
        return loss
