"""Optimizer and learning-rate schedule of luminet_det.cls (``SOLVER``).

Two recipes are supported:

* the CNN recipe of the paper's CIFAR-100 / ImageNet tables (mdistiller's): SGD with momentum,
  weight decay on every parameter, the LR multiplied by ``GAMMA`` at ``LR_STEPS`` epochs;
* the vision-transformer recipe of its Table 7 (Li et al. 2022b, lkhl/tiny-transformers
  ``pycls/core/optimizer.py``): AdamW (betas 0.9, 0.999), no weight decay on biases, 1-D
  parameters (norms) and the class token / position embeddings (``NO_DECAY_NORM_BIAS``), and a
  cosine schedule with a linear warm-up, per epoch, as timm's ``CosineLRScheduler(t_initial=
  EPOCHS, lr_min=MIN_LR, warmup_t=LR_WARMUP_EPOCHS, warmup_lr_init=LR_WARMUP_FACTOR * LR)``
  stepped once per epoch sets it (:func:`cosine_lr` equals it, ``tests/test_vit.py``).
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn

__all__ = ["OPTIMIZERS", "SCHEDULES", "build_optimizer", "build_scheduler", "cosine_lr"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine")


#: parameters without weight decay under NO_DECAY_NORM_BIAS, by name (the source's skip list)
_TOKENS = ("cls_token", "pos_embed", "distill_token")


def _param_groups(model: nn.Module, skip_norm_bias: bool) -> List[Dict]:
    if not skip_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(t in name for t in _TOKENS):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay}]


def build_optimizer(solver, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` over ``model``'s trainable parameters.

    Args:
        solver (CfgNode): the ``SOLVER`` node (LR, WEIGHT_DECAY, MOMENTUM, NO_DECAY_NORM_BIAS).
        model (nn.Module): the student; with NO_DECAY_NORM_BIAS its biases, 1-D parameters
            and class tokens / position embeddings (by name) get no weight decay.
    """
    groups = _param_groups(model, solver.NO_DECAY_NORM_BIAS)
    if solver.OPTIMIZER == "sgd":
        return torch.optim.SGD(
            groups, lr=solver.LR, momentum=solver.MOMENTUM, weight_decay=solver.WEIGHT_DECAY
        )
    if solver.OPTIMIZER == "adamw":
        return torch.optim.AdamW(groups, lr=solver.LR, weight_decay=solver.WEIGHT_DECAY)
    raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {solver.OPTIMIZER!r}")


def cosine_lr(
    epoch: int, *, base: float, epochs: int, min_lr: float, warmup: int, factor: float
) -> float:
    """The LR of epoch ``epoch`` (0 = the first) under the cosine schedule with warm-up.

    Args:
        epoch (int): epochs finished (>= 0).
        base (float): the LR after warm-up, at the cosine's start.
        epochs (int): the cosine's period (SOLVER.EPOCHS).
        min_lr (float): the LR the cosine ends at.
        warmup (int): warm-up epochs: the LR rises linearly from ``factor * base``.
        factor (float): the warm-up's starting fraction of ``base``.
    """
    if epoch < warmup:
        start = factor * base
        return start + epoch * (base - start) / warmup
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


def build_scheduler(solver, optimizer: torch.optim.Optimizer):
    """The epoch-wise LR schedule of ``SOLVER.LR_SCHEDULE`` (``step()`` once per epoch)."""
    if solver.LR_SCHEDULE == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(solver.LR_STEPS), solver.GAMMA)
    if solver.LR_SCHEDULE == "cosine":
        args = dict(
            base=solver.LR,
            epochs=solver.EPOCHS,
            min_lr=solver.MIN_LR,
            warmup=solver.LR_WARMUP_EPOCHS,
            factor=solver.LR_WARMUP_FACTOR,
        )
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: cosine_lr(epoch, **args) / solver.LR
        )
    raise ValueError(f"SOLVER.LR_SCHEDULE must be one of {SCHEDULES}, got {solver.LR_SCHEDULE!r}")
