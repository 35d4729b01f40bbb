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

__all__ = ["STATS_MODES", "Moments", "batch_moments", "sync_moments", "RunningMoments"]

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
