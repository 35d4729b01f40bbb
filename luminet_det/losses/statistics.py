"""Where LumiNet's perception statistics come from (``MODEL.DISTILL.LUMINET.STATS`` and
``METHOD.STATS`` of luminet_det.cls).

* ``"batch"`` (the paper): mean and biased variance of each class column over the rows of
  the local batch, teacher and student each with their own.
* ``"sync"``: the same moments over the *global* batch of all processes, merged from each
  process's row count, mean and centred sum of squares (Chan et al.'s parallel algorithm, so
  a column with a large mean and a small spread keeps its precision in float32). The
  student's all-reduce is differentiable, as in SyncBatchNorm, and each process divides its
  sum over rows by the global row count over the number of processes (not by its own count),
  so under DistributedDataParallel (which averages the processes' gradients) the gradients
  equal those of one process holding the concatenated batch, whatever the row count of each
  process. With one process it equals ``"batch"``.
* ``"global"`` (the paper's "Ours++", appendix A.13): the teacher's moments *precomputed over
  the training set* by a pass of the frozen teacher before step 0, then applied unchanged; kept
  in the checkpoint (never recomputed on resume). The student keeps its batch moments.
* ``"running"``: the teacher's moments accumulated over every batch seen so far in training
  (exact running moments, all processes), kept in the checkpoint; the student keeps its batch
  moments (its logits move during training, so old statistics would be stale).

Pure torch; ``torch.distributed`` is only used when it is initialised.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "STATS_MODES",
    "Moments",
    "batch_moments",
    "global_moments",
    "sync_moments",
    "RunningMoments",
]

STATS_MODES = ("batch", "sync", "global", "running")
Moments = Tuple[torch.Tensor, torch.Tensor]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def batch_moments(z: torch.Tensor) -> Moments:
    """Column mean and biased variance of a (N, C) batch, float32 for half inputs."""
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    return z.mean(0), z.var(0, unbiased=False)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose gradient is the sum of the processes' gradients (the
    gradient of a sum shared by every process), as inside SyncBatchNorm."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes (differentiable when ``t`` requires grad); ``t`` itself when not
    distributed."""
    if not _distributed():
        return t
    if t.requires_grad:
        return _AllReduceSum.apply(t)
    t = t.clone()
    dist.all_reduce(t)
    return t


def global_moments(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row count (scalar), column mean (C,) and column centred sum of squares (C,) of the rows
    of ``z`` (N, C) on all processes (N may differ per process, and be 0).

    Each process computes its own mean and centred sum of squares in two passes; they are
    merged as ``M2 = sum_i [M2_i + n_i (mean_i - mean)^2]`` (Chan, Golub and LeVeque), never as
    ``E[z^2] - E[z]^2``, which loses the variance of a column whose mean is large compared
    with its spread. Two all-reduces, differentiable when ``z`` requires grad.
    """
    c = z.shape[1]
    n_local = torch.full((1,), float(z.shape[0]), dtype=z.dtype, device=z.device)
    if z.shape[0]:
        mean_local = z.mean(0)
        m2_local = ((z - mean_local) ** 2).sum(0)
    else:  # zeros still connected to the graph of z
        mean_local = m2_local = z.sum(0) * 0.0
    packed = _all_reduce_sum(torch.cat([mean_local * n_local, n_local]))
    n = packed[-1]
    mean = packed[:c] / n.clamp_min(1.0)
    spread = m2_local + n_local * (mean_local - mean) ** 2 if z.shape[0] else m2_local
    return n, mean, _all_reduce_sum(spread)


def sync_moments(z: torch.Tensor) -> Moments:
    """Column mean and biased variance over the rows of all processes (N may differ per
    process), merged as in :func:`global_moments`. Differentiable through the all-reduce when
    ``z`` requires grad."""
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    if not _distributed():
        return batch_moments(z)
    n, mean, m2 = global_moments(z)
    return mean, m2 / n.clamp_min(1.0)


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
        (Chan et al.'s parallel update, in float64). Every process must call it (with N = 0
        when it has no rows); a batch with no rows on any process changes nothing. Written
        without a branch on the count, so it never waits for the device."""
        n, b_mean, b_m2 = global_moments(z.detach().double())
        total = self.count + n
        share = n / total.clamp_min(1.0)  # 0 when no rows have been seen at all
        delta = b_mean - self.mean
        self.mean += delta * share
        self.m2 += b_m2 + delta * delta * self.count * share
        self.count.copy_(total)

    def moments(self) -> Moments:
        """(mean, biased variance) as float32 tensors of shape (C,); zeros before any row was
        seen (check :attr:`seen`)."""
        return self.mean.float(), (self.m2 / self.count.clamp_min(1.0)).float()

    @property
    def seen(self) -> torch.Tensor:
        """A 0-dim bool tensor: whether any row has been merged."""
        return self.count > 0

    def forward(self) -> Moments:
        """(mean, biased variance) as float32 tensors of shape (C,).

        Raises:
            RuntimeError: no row has been merged yet.
        """
        if self.count.item() == 0:
            raise RuntimeError("RunningMoments has seen no rows yet; call update() first.")
        return self.moments()
