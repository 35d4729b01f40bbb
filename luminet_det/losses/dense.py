"""Logit losses for dense, sigmoid classifiers (one-stage detectors such as RetinaNet).

A one-stage head scores every anchor with C independent sigmoids (focal loss), not with a
softmax over C+1 classes, so the softmax KL of :mod:`.functional` does not apply as is. Here:

* rows are anchors (every anchor of the batch that enters the loss), columns the C classes
  (no background column: an anchor is background when every sigmoid is low);
* the divergence is the **per-class binary KL** between the teacher's and the student's
  Bernoulli probabilities at temperature T::

      p = sigmoid(x / T),   KL(p_T || p_S) = p_T log(p_T / p_S) + (1 - p_T) log((1 - p_T) / (1 - p_S))

* the sum over rows is divided by the batch's **foreground rows** (targets < C), at least 1.
  (detectron2's focal loss divides by an exponential moving average of that count,
  ``RetinaNet.loss_normalizer``; after its first few dozen iterations the two are close.)

How the classes are reduced differs, on purpose:

* ``sigmoid_luminet_loss`` first standardises each class column over the rows (LumiNet's
  :func:`~luminet_det.losses.perception`, teacher and student each with their own statistics)
  and takes the **mean over the C columns**: after standardisation every column contributes
  about the same, so a sum would grow with C (8x from 10 to 80 classes) and a weight chosen
  on one data set would mean something else on another. With the mean, a weight means the
  same whatever the class count.
* ``sigmoid_kd_loss`` uses the raw logits, **sums over the classes** as focal loss does, and
  multiplies by T² as Hinton's KD does: a column that both models score near zero (most of
  them, for most anchors) contributes almost nothing, so the sum follows the classes present,
  not C.

Conventions as in :mod:`.functional`: fp32 maths for half inputs, the teacher detached, an
empty batch gives a zero connected to the student's graph.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ._checks import _as_float, _check_pair, _check_positive, _check_reduction, _empty_loss
from .functional import _dist_from_probabilities, _perception_over_t

__all__ = [
    "binary_kl",
    "sigmoid_kd_loss",
    "sigmoid_luminet_loss",
    "sigmoid_dist_loss",
    "foreground_count",
]


def binary_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Element-wise ``KL(Bernoulli(sigmoid(t)) || Bernoulli(sigmoid(s)))``, computed from
    log-sigmoids (finite for any finite logits). Same shape as the inputs."""
    log_p_t, log_q_t = F.logsigmoid(teacher_logits), F.logsigmoid(-teacher_logits)
    log_p_s, log_q_s = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    return log_p_t.exp() * (log_p_t - log_p_s) + log_q_t.exp() * (log_q_t - log_q_s)


def foreground_count(targets: torch.Tensor, num_classes: int) -> int:
    """The normaliser of the sigmoid losses: the number of rows whose target is a class
    (0 <= target < C), at least 1.

    Args:
        targets (Tensor): (N,) integer targets in [0, C]; C marks a background row.
        num_classes (int): C.

    Raises:
        ValueError: targets that are not a 1-D integer tensor, or values outside [0, C] (drop
            ignored anchors, label -1, before calling).
    """
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1:
        raise ValueError(
            f"targets must be a 1-D tensor (N,), got {getattr(targets, 'shape', targets)}."
        )
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"targets must hold integer classes, got dtype {targets.dtype}.")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) > num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes}] ({num_classes} = background), got values in "
            f"[{int(targets.min())}, {int(targets.max())}]; drop ignored anchors (-1) first."
        )
    return max(int((targets < num_classes).sum()), 1)


def _check_rows(student_logits, teacher_logits, targets, check_targets=True) -> torch.Tensor:
    """Check the shapes (and, with ``check_targets``, the target values, which waits for the
    device); return the foreground normaliser as a float tensor."""
    _check_pair(student_logits, teacher_logits)
    if targets.shape[:1] != student_logits.shape[:1]:
        raise ValueError(
            f"targets must have one entry per row: logits {tuple(student_logits.shape)}, "
            f"targets {tuple(targets.shape)}."
        )
    if check_targets:
        foreground_count(targets, student_logits.shape[1])  # validates the values
    return (targets < student_logits.shape[1]).sum().clamp_min(1).float()


def sigmoid_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    *,
    check_targets: bool = True,
) -> torch.Tensor:
    """KD for sigmoid classifiers::

        loss = T**2 * sum_{i,c} KL(sigmoid(t[i,c] / T) || sigmoid(s[i,c] / T)) / max(1, #fg)

    Args:
        student_logits (Tensor): (N, C) per-anchor class logits of the student.
        teacher_logits (Tensor): (N, C) of the teacher, same rows; detached.
        targets (Tensor): (N,) each row's class in [0, C], C = background (only counted).
        temperature (float): T > 0.
        check_targets (bool): check that the targets lie in [0, C] (waits for the device;
            skipped by callers whose targets come from an anchor matcher).

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0.
    """
    _check_positive("temperature", temperature)
    normaliser = _check_rows(student_logits, teacher_logits, targets, check_targets)
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    s = _as_float(student_logits)
    t = _as_float(teacher_logits.detach()).to(s.dtype)
    return binary_kl(t / temperature, s / temperature).sum() * temperature**2 / normaliser.to(s)


def sigmoid_luminet_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    eps: float = 1e-5,
    *,
    student_moments: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    teacher_moments: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    reduction: str = "mean",
    check_targets: bool = True,
) -> torch.Tensor:
    """LumiNet for sigmoid classifiers: each class column standardised over the rows (teacher
    and student each with their own statistics, :func:`~luminet_det.losses.perception`),
    then the per-class binary KL at temperature T, averaged over the C classes and divided by
    the foreground rows::

        h_T = perception(t), h_S = perception(s)
        loss = sum_i mean_c KL(sigmoid(h_T[i,c] / T) || sigmoid(h_S[i,c] / T)) / max(1, #fg)

    The mean over classes keeps the term's size independent of C (module docstring); it is
    1 / C times the sum over classes that this function computed before version 0.2, so a
    weight w of that version is the weight C * w now. No T² factor and no weight, as
    :func:`~luminet_det.losses.luminet_loss`.

    Args:
        student_logits (Tensor): (N, C) per-anchor class logits of the student.
        teacher_logits (Tensor): (N, C) of the teacher, same rows; detached.
        targets (Tensor): (N,) each row's class in [0, C], C = background (only counted).
        temperature (float): T > 0.
        eps (float): > 0, variance epsilon of the perception.
        student_moments, teacher_moments ((Tensor, Tensor), optional): (mean, biased var),
            each (C,), instead of each side's batch statistics.
        reduction (str): "mean" (divided by the foreground rows, as above) or "sum" (the sum
            over the rows of the per-row class mean, for a caller that divides by another
            count, e.g. the foreground rows of all processes).
        check_targets (bool): as :func:`sigmoid_kd_loss`.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0, and for
        N = 1 with batch statistics (both perceptions are all zeros).
    """
    _check_positive("temperature", temperature)
    _check_positive("eps", eps)
    _check_reduction(reduction)
    normaliser = _check_rows(student_logits, teacher_logits, targets, check_targets)
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)

    h_s = _perception_over_t(_as_float(student_logits), eps, temperature, student_moments)
    with torch.no_grad():
        t = _as_float(teacher_logits.detach()).to(h_s.dtype)
        t_moments = None if teacher_moments is None else tuple(m.detach() for m in teacher_moments)
        h_t = _perception_over_t(t, eps, temperature, t_moments)
    total = binary_kl(h_t, h_s).sum() / student_logits.shape[1]
    return total / normaliser.to(total) if reduction == "mean" else total


def sigmoid_dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> torch.Tensor:
    """DIST for sigmoid classifiers: the relations of :func:`~luminet_det.losses.dist_loss`
    between the per-class **sigmoid** probabilities, no temperature, as the authors' detection
    code does for RetinaNet (``hunto/MasKD``, ``mmrazor/mmrazor/models/losses/dist_kd.py``,
    ``use_sigmoid=True``; its RetinaNet config ``dist_retinanet_x101-retinanet-r50_coco.py``:
    beta 1, gamma 1, weight 1)::

        p = sigmoid(z)
        loss = beta * (1 - mean_i pearson(p_S[i], p_T[i]))
             + gamma * (1 - mean_c pearson(p_S[:, c], p_T[:, c]))

    The rows are whatever the caller passes: DistillRetinaNet passes the anchors chosen by
    ``MODEL.DISTILL.DENSE.ANCHORS`` with their C classes as columns. The authors' code takes
    every position of each FPN level as a row, with the A x C scores of its anchors as the
    columns, and sums the levels (docs/recipes.md).

    Args:
        student_logits (Tensor): (N, C) per-anchor class logits of the student.
        teacher_logits (Tensor): (N, C) of the teacher; detached.
        beta (float): >= 0, weight of the relation within each row.
        gamma (float): >= 0, weight of the relation within each class column.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0.
    """
    _check_pair(student_logits, teacher_logits)
    for name, value in (("beta", beta), ("gamma", gamma)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    s = _as_float(student_logits)
    t = _as_float(teacher_logits.detach()).to(s.dtype)
    return _dist_from_probabilities(torch.sigmoid(s), torch.sigmoid(t), beta, gamma, 1.0)
