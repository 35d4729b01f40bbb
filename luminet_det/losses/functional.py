"""The distillation losses as pure functions: LumiNet's perception and loss, KD, DKD and
ReviewKD's hierarchical context loss.

Pure torch. The modules of :mod:`luminet_det.losses.modules` (built by name with
:func:`~luminet_det.losses.build_logit_loss`) wrap these functions for the detector and the
classifier alike; the numbers are computed here and nowhere else.

Common conventions of every loss here:

* ``student_logits`` and ``teacher_logits`` are ``(N, C)`` float tensors: N rows (images in
  classification, sampled ROIs in detection) and C classes (K+1 with background in detection).
* Losses are averaged over the N rows and carry **no weight**: the caller multiplies by the
  configured weight (and warm-up factor).
* No gradient ever flows into the teacher logits (they are detached).
* Half-precision inputs (fp16 / bf16) are computed in float32; the result is float32.
* An empty batch (N = 0) returns ``0.0`` that is still connected to the student's graph, so
  ``loss.backward()`` works and gives zero gradients.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ._checks import (
    _as_float,
    _check_logits,
    _check_pair,
    _check_positive,
    _check_reduction,
    _empty_loss,
)

__all__ = [
    "perception",
    "luminet_loss",
    "kd_loss",
    "logit_std_kd_loss",
    "dkd_loss",
    "dist_loss",
    "pearson_relation",
    "hcl_loss",
]


def _kl_rows(teacher_log_prob: torch.Tensor, student_log_prob: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``KL(p_T || p_S)`` from log-probabilities, shape (N, C) -> scalar."""
    return (
        F.kl_div(student_log_prob, teacher_log_prob, reduction="none", log_target=True)
        .sum(dim=1)
        .mean()
    )


def _standardize_columns(z: torch.Tensor, eps: float, scale: float = 1.0) -> torch.Tensor:
    """``scale * (z - mean) / sqrt(var + eps)`` per column over the rows (biased variance), as
    one fused operation forward and backward: ``F.batch_norm`` with batch statistics is exactly
    this standardisation (the columns are its channels). On CPU at ROI and ImageNet batch sizes
    the per-operation overhead of the plain formula dominates the cost of the loss."""
    if z.shape[0] == 1:  # one row: every column equals its mean (batch_norm refuses N = 1)
        return z * 0.0
    weight = None if scale == 1.0 else z.new_full((z.shape[1],), scale)
    return F.batch_norm(z, None, None, weight, None, True, 0.0, eps)


def _perception_over_t(
    z: torch.Tensor,
    eps: float,
    temperature: float,
    moments: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> torch.Tensor:
    """``perception(z) / T`` of float logits (N >= 1, C): with the batch's own statistics in one
    fused operation, or with the given (mean, biased var) moments (detached if they are the
    teacher's, by the caller)."""
    if moments is None:
        return _standardize_columns(z, eps, 1.0 / temperature)
    return perception(z, eps, mean=moments[0], var=moments[1]) / temperature


def perception(
    logits: torch.Tensor,
    eps: float = 1e-5,
    *,
    mean: Optional[torch.Tensor] = None,
    var: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The "perception" of a batch of logits (LumiNet, Hossain et al., section 3.2, Eq. 1).

    Each class column is standardized over the N rows of the batch::

        h[i, j] = (z[i, j] - mean_j) / sqrt(var_j + eps)

    with the *biased* variance ``var_j = mean_i (z[i, j] - mean_j) ** 2``.

    Args:
        logits (Tensor): (N, C) logits z.
        eps (float): > 0, added to the variance; keeps a zero-variance column finite.
        mean (Tensor, optional): (C,) column means to use instead of the batch's own
            (e.g. statistics synchronised across processes or accumulated over a data set).
        var (Tensor, optional): (C,) biased column variances; given together with ``mean``.

    Returns:
        Tensor: (N, C) perception logits h, float32 for half-precision input.

    Edge cases: a column whose rows are all equal (zero variance) becomes all zeros; with
    N = 1 every column has zero variance, so the result is all zeros (a uniform softmax);
    with N = 0 the result is an empty (0, C) tensor.
    """
    _check_logits("logits", logits)
    _check_positive("eps", eps)
    if (mean is None) != (var is None):
        raise ValueError("perception() takes `mean` and `var` together, or neither.")
    z = _as_float(logits)
    if mean is None:
        if z.shape[0] == 0:
            return z.clone()
        return _standardize_columns(z, eps)
    else:
        if mean.shape != (z.shape[1],) or var.shape != (z.shape[1],):
            raise ValueError(
                f"mean and var must have shape ({z.shape[1]},), got {tuple(mean.shape)} and "
                f"{tuple(var.shape)}."
            )
        mean, var = mean.to(z.dtype), var.to(z.dtype)
    return (z - mean) * torch.rsqrt(var + eps)


def luminet_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    eps: float = 1e-5,
    *,
    student_moments: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    teacher_moments: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """LumiNet distillation loss (Hossain et al., "LumiNet: Perception-Driven Knowledge
    Distillation via Statistical Logit Calibration", section 3.2, Eq. 2)::

        h_T = perception(teacher_logits), h_S = perception(student_logits)
        loss = mean_i KL(softmax(h_T[i] / T) || softmax(h_S[i] / T))

    Teacher and student are each normalized with their own batch statistics. No ``T**2``
    factor and no weight are applied here: the official recipes multiply the KL by a weight
    (e.g. ``alpha**2``), which callers do.

    Args:
        student_logits (Tensor): (N, C) student logits.
        teacher_logits (Tensor): (N, C) teacher logits; detached (receives no gradient).
        temperature (float): T > 0.
        eps (float): > 0, variance epsilon of :func:`perception`.
        student_moments, teacher_moments ((Tensor, Tensor), optional): (mean, biased var),
            each (C,), to use instead of each side's own batch statistics (see
            :mod:`luminet_det.losses.statistics`: statistics over all processes or over the data
            set).
        reduction (str): "mean" (the paper: the mean over the N rows) or "sum" (the sum over
            the rows, for a caller that divides by another count, e.g. the rows of all
            processes).

    Returns:
        Tensor: scalar float loss. ``0.0`` (connected to the student graph) for N = 0; also
        exactly ``0.0`` for N = 1 with batch statistics, where both perceptions are all zeros.
    """
    _check_pair(student_logits, teacher_logits)
    _check_positive("temperature", temperature)
    _check_positive("eps", eps)
    _check_reduction(reduction)
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    h_s = _perception_over_t(_as_float(student_logits), eps, temperature, student_moments)
    with torch.no_grad():  # the teacher's side is a constant of the loss
        t = _as_float(teacher_logits.detach()).to(h_s.dtype)
        h_t = _perception_over_t(t, eps, temperature, teacher_moments)
        log_p_t = F.log_softmax(h_t, dim=1)
    kl = F.kl_div(F.log_softmax(h_s, dim=1), log_p_t, reduction="sum", log_target=True)
    return kl / student_logits.shape[0] if reduction == "mean" else kl


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """Knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural
    Network", 2015)::

        loss = mean_i KL(softmax(t[i] / T) || softmax(s[i] / T)) * T**2

    Args:
        student_logits (Tensor): (N, C) student logits.
        teacher_logits (Tensor): (N, C) teacher logits; detached.
        temperature (float): T > 0.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0.
    """
    _check_pair(student_logits, teacher_logits)
    _check_positive("temperature", temperature)
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    s = _as_float(student_logits)
    t = _as_float(teacher_logits.detach()).to(s.dtype)
    kl = _kl_rows(F.log_softmax(t / temperature, dim=1), F.log_softmax(s / temperature, dim=1))
    return kl * temperature**2


def logit_std_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    eps: float = 1e-7,
) -> torch.Tensor:
    """KD on standardised logits (Sun et al., "Logit Standardization in Knowledge
    Distillation", CVPR 2024)::

        z(x)[i] = (x[i] - mean_c x[i]) / (eps + std_c x[i])     (unbiased std over classes)
        loss = mean_i KL(softmax(z(t)[i] / T) || softmax(z(s)[i] / T)) * T**2

    Each *row* is standardised over its classes, where LumiNet's :func:`perception`
    standardises each class *column* over the rows of the batch. The formula of the authors'
    code (``mdistiller/distillers/KD.py``, ``normalize``) and of torchdistill's
    ``LogitStdKDLoss``.

    Args:
        student_logits (Tensor): (N, C) student logits, C >= 2.
        teacher_logits (Tensor): (N, C) teacher logits; detached.
        temperature (float): T > 0 (the authors' "base temperature").
        eps (float): > 0, added to the standard deviation.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0.
    """
    _check_pair(student_logits, teacher_logits)
    _check_positive("temperature", temperature)
    _check_positive("eps", eps)
    if student_logits.shape[1] < 2:
        raise ValueError(
            f"logit_std_kd_loss needs at least 2 classes, got C={student_logits.shape[1]}."
        )
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)

    def standardise(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        return centred / (eps + x.std(dim=1, keepdim=True))

    s = standardise(_as_float(student_logits))
    t = standardise(_as_float(teacher_logits.detach()).to(s.dtype))
    kl = _kl_rows(F.log_softmax(t / temperature, dim=1), F.log_softmax(s / temperature, dim=1))
    return kl * temperature**2


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    *,
    check_targets: bool = True,
) -> torch.Tensor:
    """Decoupled knowledge distillation (Zhao et al., "Decoupled Knowledge Distillation",
    CVPR 2022)::

        loss = alpha * TCKD + beta * NCKD

    * TCKD: mean over rows of the KL between the binary distributions
      ``[p_target, 1 - p_target]`` of teacher and student (softmax at temperature T);
    * NCKD: mean over rows of the KL between teacher and student distributions over the
      non-target classes only (softmax at temperature T restricted to the other classes);

    each multiplied by ``T**2``. Computed in log space (no ``-1000`` masking trick), so it stays
    exact and finite for large logits.

    Args:
        student_logits (Tensor): (N, C) student logits, C >= 2.
        teacher_logits (Tensor): (N, C) teacher logits; detached.
        target (Tensor): (N,) integer class index of each row, in [0, C). In detection the
            ROI's matched class, background included (index K).
        alpha (float): >= 0, weight of TCKD.
        beta (float): >= 0, weight of NCKD.
        temperature (float): T > 0.
        check_targets (bool): check that every target lies in [0, C) (a ValueError naming the
            range found). Reading the range back from the tensor waits for the device; callers
            whose targets are in range by construction (a detector's ROI sampler) skip it.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0.
    """
    _check_pair(student_logits, teacher_logits)
    _check_positive("temperature", temperature)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    n, c = student_logits.shape
    if not isinstance(target, torch.Tensor) or target.dim() != 1 or target.shape[0] != n:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be a 1-D tensor of length N={n}, got {shape}.")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}.")
    if c < 2:
        raise ValueError(f"dkd_loss needs at least 2 classes, got C={c}.")
    if n == 0:
        return _empty_loss(student_logits)
    if check_targets and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(
            f"target values must lie in [0, {c - 1}] (C={c} classes), got values in "
            f"[{int(target.min())}, {int(target.max())}]."
        )

    s = _as_float(student_logits) / temperature
    t = _as_float(teacher_logits.detach()).to(s.dtype) / temperature
    # the target column of each row (F.one_hot would read the targets' range back from the
    # device to check it)
    gt_mask = torch.zeros_like(s, dtype=torch.bool).scatter_(1, target.long()[:, None], True)

    def split(logits: torch.Tensor):
        """log p_target, log(1 - p_target), and log-probabilities over non-target classes."""
        lse_all = torch.logsumexp(logits, dim=1)
        lse_other = torch.logsumexp(logits.masked_fill(gt_mask, float("-inf")), dim=1)
        z_gt = logits.gather(1, target.long()[:, None])[:, 0]
        log_p_gt = z_gt - lse_all
        log_p_not_gt = lse_other - lse_all
        # Entries at the target column are finite but meaningless; masked out below.
        log_q_other = logits - lse_other[:, None]
        return log_p_gt, log_p_not_gt, log_q_other

    s_gt, s_not, s_other = split(s)
    t_gt, t_not, t_other = split(t)
    tckd = (t_gt.exp() * (t_gt - s_gt) + t_not.exp() * (t_not - s_not)).mean()
    # the target column's entries are zeroed before exp: there t_other is the target's logit
    # over the other classes' log-sum-exp, whose exp overflows for a confident teacher, and a
    # masked inf would still give NaN gradients through torch.where
    t_other = t_other.masked_fill(gt_mask, 0.0)
    s_other = s_other.masked_fill(gt_mask, 0.0)
    nckd = (t_other.exp() * (t_other - s_other)).masked_fill(gt_mask, 0.0).sum(dim=1).mean()
    return (alpha * tckd + beta * nckd) * temperature**2


def pearson_relation(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - mean_i pearson(a[i], b[i])``: one minus the mean over rows of the Pearson
    correlation of each row of ``a`` with the same row of ``b`` (cosine similarity of the rows
    centred over their columns, ``eps`` added to the product of the norms). A constant row
    has correlation 0 (relation 1). Shapes (N, C) -> scalar."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    cosine = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 1.0 - cosine.mean()


def _dist_from_probabilities(p_s, p_t, beta, gamma, scale):
    inter = pearson_relation(p_s, p_t)  # each row's classes
    intra = pearson_relation(p_s.t(), p_t.t())  # each class column over the rows
    return scale * (beta * inter + gamma * intra)


def dist_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    tau: float = 1.0,
) -> torch.Tensor:
    """DIST (Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022):
    relations of the softmax probabilities at temperature ``tau`` instead of their values::

        p = softmax(z / tau)
        inter = 1 - mean_i pearson(p_S[i, :], p_T[i, :])    (each row over its classes)
        intra = 1 - mean_c pearson(p_S[:, c], p_T[:, c])    (each class column over the rows)
        loss = tau**2 * (beta * inter + gamma * intra)

    the formula of the authors' code (``hunto/image_classification_sota``,
    ``lib/models/losses/dist_kd.py``, lines 1-34: ``cosine_similarity`` with ``eps`` 1e-8
    added to the product of the norms, ``pearson_correlation``, ``inter_class_relation``,
    ``intra_class_relation``, ``DIST.forward``). The intra-class term is LumiNet's nearest
    relative: both look at each class column across the batch.

    Args:
        student_logits (Tensor): (N, C) student logits.
        teacher_logits (Tensor): (N, C) teacher logits; detached.
        beta (float): >= 0, weight of the inter-class relation.
        gamma (float): >= 0, weight of the intra-class relation.
        tau (float): temperature > 0.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph for N = 0. With one
        row (or constant columns) the intra-class correlation is 0: that term is ``gamma``
        (times tau**2), finite.
    """
    _check_pair(student_logits, teacher_logits)
    _check_positive("tau", tau)
    for name, value in (("beta", beta), ("gamma", gamma)):
        if not (isinstance(value, (int, float)) and value >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    if student_logits.shape[0] == 0:
        return _empty_loss(student_logits)
    s = _as_float(student_logits)
    t = _as_float(teacher_logits.detach()).to(s.dtype)
    p_s, p_t = F.softmax(s / tau, dim=1), F.softmax(t / tau, dim=1)
    return _dist_from_probabilities(p_s, p_t, beta, gamma, tau**2)


def hcl_loss(
    student_features: Sequence[torch.Tensor],
    teacher_features: Sequence[torch.Tensor],
    pool_levels: Sequence[int] = (4, 2, 1),
) -> torch.Tensor:
    """Hierarchical context loss of ReviewKD (Chen et al., "Distilling Knowledge via Knowledge
    Review", CVPR 2021, section 3.3), summed over feature levels::

        level loss = (MSE(fs, ft) + sum_k 2^-k MSE(pool_k(fs), pool_k(ft))) / (1 + sum_k 2^-k)

    where ``pool_k`` is adaptive average pooling to ``l x l`` for the k-th ``l`` of
    ``pool_levels`` (k = 1, 2, ...), skipped when ``l >= H`` of that level.

    Args:
        student_features (sequence of Tensor): L tensors (N, C_l, H_l, W_l), the student's
            (fused) features.
        teacher_features (sequence of Tensor): L tensors of the same shapes; detached.
        pool_levels (sequence of int): positive output sizes of the pyramid pooling.

    Returns:
        Tensor: scalar float loss; ``0.0`` connected to the student graph when N = 0.
    """
    if len(student_features) != len(teacher_features) or not student_features:
        raise ValueError(
            f"hcl_loss needs the same non-zero number of student and teacher feature levels, got "
            f"{len(student_features)} and {len(teacher_features)}."
        )
    if any(not isinstance(p, int) or p <= 0 for p in pool_levels):
        raise ValueError(f"pool_levels must be positive ints, got {list(pool_levels)}.")
    for i, (fs, ft) in enumerate(zip(student_features, teacher_features)):
        if fs.dim() != 4 or fs.shape != ft.shape:
            raise ValueError(
                f"Feature level {i}: student {tuple(fs.shape)} and teacher {tuple(ft.shape)} must "
                "be equal (N, C, H, W) shapes."
            )
    if student_features[0].shape[0] == 0:
        return sum(_empty_loss(fs.flatten(1)) for fs in student_features)
    total = 0.0
    for fs, ft in zip(student_features, teacher_features):
        fs, ft = _as_float(fs), _as_float(ft.detach()).to(_as_float(fs).dtype)
        loss = F.mse_loss(fs, ft)
        weight, weight_sum = 1.0, 1.0
        for size in pool_levels:
            if size >= fs.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(
                F.adaptive_avg_pool2d(fs, size), F.adaptive_avg_pool2d(ft, size)
            )
            weight_sum += weight
        total = total + loss / weight_sum
    return total
