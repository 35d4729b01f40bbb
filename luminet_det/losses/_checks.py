"""Argument checks and dtype handling shared by every loss function (:mod:`.functional`,
:mod:`.dense`) and the loss modules: the ``ValueError`` messages a user sees for bad logits or
hyper-parameters, and the conventions of an empty batch and of half precision."""

from __future__ import annotations

import torch


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32; keep float32/float64 as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}.")
    if logits.dim() != 2:
        raise ValueError(
            f"{name} must have shape (N, C) (rank 2), got rank {logits.dim()} with shape "
            f"{tuple(logits.shape)}. Flatten extra dimensions into N first."
        )
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got dtype {logits.dtype}.")


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape (N, C), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}. In detection "
            "both must come from the same sampled proposals and the same number of classes."
        )


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and value > 0 and value == value):
        raise ValueError(f"{name} must be a number > 0, got {value!r}.")


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}.")


def _empty_loss(student_logits: torch.Tensor) -> torch.Tensor:
    """A float32 zero connected to the student's graph (gradients are zeros)."""
    return _as_float(student_logits).sum() * 0.0
