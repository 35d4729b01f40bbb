"""Calibration losses that replace the student's cross-entropy with the labels (the paper's
Table 5 baselines "KD + FL" and "KD + DFL"): pure functions of logits and class indices.

Both follow their authors' code per sample; the batch is reduced by the mean, as the
cross-entropy they replace is here (the sources sum both the cross-entropy and these losses
over the batch, so the ratio between them is the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import _as_float, _check_logits, _empty_loss

__all__ = ["HARD_LOSSES", "softmax_focal_loss", "dual_focal_loss", "hard_label_loss"]

#: the student's term with the labels, by the name ``METHOD.HARD_LOSS`` takes
HARD_LOSSES = ("ce", "focal", "dual_focal")


def _check_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    _check_logits("logits", logits)
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1:
        what = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"targets must be a rank-1 tensor of class indices (N,), got {what}.")
    if targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets has {targets.shape[0]} rows but logits has {logits.shape[0]} (shape "
            f"{tuple(logits.shape)})."
        )


def _check_gamma(gamma: float) -> None:
    if not (isinstance(gamma, (int, float)) and gamma >= 0):
        raise ValueError(f"gamma must be a number >= 0, got {gamma!r}.")


def softmax_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 3.0):
    """Focal loss for calibration (Mukhoti et al., "Calibrating Deep Neural Networks using
    Focal Loss", NeurIPS 2020), per sample as ``torrvision/focal_calibration``,
    ``Losses/focal_loss.py`` (``FocalLoss.forward``)::

        loss_i = -(1 - p_i,y)**gamma * log p_i,y        p = softmax(z)

    the factor not detached (as there). ``gamma`` 3 is the paper's FL-3; 0 is the
    cross-entropy.

    Args:
        logits (Tensor): (N, C) float logits.
        targets (Tensor): (N,) class indices in [0, C).
        gamma (float): >= 0, the focusing exponent.

    Returns:
        Tensor: scalar float, the mean over the N rows; ``0.0`` connected to the graph for N = 0.
    """
    _check_targets(logits, targets)
    _check_gamma(gamma)
    if logits.shape[0] == 0:
        return _empty_loss(logits)
    log_p = F.log_softmax(_as_float(logits), dim=1).gather(1, targets[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


def dual_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 5.0):
    """Dual focal loss (Tao, Dong, Xu, "Dual Focal Loss for Calibration", ICML 2023), per
    sample as ``Linwei94/ICML2023-DualFocalLoss``, ``Losses/dual_focal_loss.py``
    (``DualFocalLoss.forward``)::

        loss_i = -(1 - p_i,y + p_i,j)**gamma * log p_i,y

    where ``p_i,j`` is the largest probability of row i strictly below the label's (the class
    ranked right after the label; 0 when there is none), gradients through both
    probabilities (as there).

    Args:
        logits (Tensor): (N, C) float logits.
        targets (Tensor): (N,) class indices in [0, C).
        gamma (float): >= 0, the focusing exponent.

    Returns:
        Tensor: scalar float, the mean over the N rows; ``0.0`` connected to the graph for N = 0.
    """
    _check_targets(logits, targets)
    _check_gamma(gamma)
    if logits.shape[0] == 0:
        return _empty_loss(logits)
    log_probs = F.log_softmax(_as_float(logits), dim=1)
    probs = log_probs.exp()
    log_p = log_probs.gather(1, targets[:, None]).squeeze(1)
    p = log_p.exp()
    below = probs * (probs < p[:, None])
    p_next = below.max(dim=1).values
    return (-((1 - p + p_next) ** gamma) * log_p).mean()


def hard_label_loss(
    name: str, logits: torch.Tensor, targets: torch.Tensor, gamma: float
) -> torch.Tensor:
    """The student's term with the labels by ``name`` (one of :data:`HARD_LOSSES`): "ce"
    (``F.cross_entropy``, ``gamma`` unused), "focal" (:func:`softmax_focal_loss`) or
    "dual_focal" (:func:`dual_focal_loss`); mean over rows."""
    if name == "ce":
        return F.cross_entropy(_as_float(logits), targets)
    if name == "focal":
        return softmax_focal_loss(logits, targets, gamma)
    if name == "dual_focal":
        return dual_focal_loss(logits, targets, gamma)
    raise ValueError(f"Unknown hard-label loss {name!r}; choose one of {list(HARD_LOSSES)}.")
