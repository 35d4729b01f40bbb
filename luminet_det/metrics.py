"""Classification metrics of the LumiNet paper (Table 10, appendix A.9.1): top-k accuracy,
ECE and MCE with equal-width confidence bins, and FPR at 95 % TPR per class (one vs rest),
averaged over classes. Pure numpy/torch.

:func:`classification_report` also evaluates a data set split over processes
(``distributed=True``): each process holds the logits of its own shard, and the report is
computed from sums (hits, bin counts, negatives above each class's threshold) all-reduced
over the processes, plus one all-gather of each row's label and its probability for that
label (what the FPR-at-95 %-TPR thresholds need) — the same numbers as one process holding
every row, without moving the (N, C) logits.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["topk_accuracy", "calibration_bins", "ece_mce", "fpr_at_95_tpr", "classification_report"]


def _check(probs: np.ndarray, labels: np.ndarray) -> None:
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(
            f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}].")


def topk_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> Dict[int, float]:
    """Percentage of rows whose label is among the k highest logits, for each k (k is capped
    at the number of classes)."""
    if logits.shape[0] == 0:
        return {k: float("nan") for k in ks}
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices
    hit = top.eq(labels.view(-1, 1))
    return {k: 100.0 * hit[:, : min(k, maxk)].any(1).float().mean().item() for k in ks}


def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """Equal-width bins over the max-probability (confidence) in (0, 1].

    Returns:
        (counts, accuracy, confidence): arrays of length ``n_bins``; accuracy and confidence
        are the means within each bin (0 for empty bins). Bin b holds confidences in
        ``(b / n_bins, (b + 1) / n_bins]``.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    _check(probs, labels)
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    acc = np.bincount(idx, weights=correct, minlength=n_bins)
    cnf = np.bincount(idx, weights=conf, minlength=n_bins)
    nonzero = counts > 0
    acc[nonzero] /= counts[nonzero]
    cnf[nonzero] /= counts[nonzero]
    return counts, acc, cnf


def ece_mce(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15):
    """(ECE, MCE) in percent: the count-weighted mean and the maximum of |accuracy -
    confidence| over the non-empty bins."""
    counts, acc, cnf = calibration_bins(probs, labels, n_bins)
    if counts.sum() == 0:
        return float("nan"), float("nan")
    gap = np.abs(acc - cnf)
    nonzero = counts > 0
    return 100.0 * float((counts * gap).sum() / counts.sum()), 100.0 * float(gap[nonzero].max())


def fpr_at_95_tpr(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the false positive rate at the smallest threshold on that class's
    probability that reaches a true positive rate of at least 95 % (one vs rest), in percent.
    Classes without positives or without negatives are skipped."""
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
    _check(probs, labels)
    fprs = []
    for c in range(probs.shape[1]):
        pos, neg = probs[labels == c, c], probs[labels != c, c]
        if len(pos) == 0 or len(neg) == 0:
            continue
        # the threshold keeping ceil(0.95 * P) positives above or at it
        k = int(np.ceil(0.95 * len(pos)))
        threshold = np.sort(pos)[::-1][k - 1]
        fprs.append(float((neg >= threshold).mean()))
    return 100.0 * float(np.mean(fprs)) if fprs else float("nan")


def _all_reduce(t: torch.Tensor, distributed: bool) -> torch.Tensor:
    if distributed:
        dist.all_reduce(t)
    return t


def _all_gather_rows(t: torch.Tensor, distributed: bool) -> torch.Tensor:
    """Concatenate each process's rows of ``t`` (any count, also 0), in rank order."""
    if not distributed:
        return t
    counts = [torch.zeros(1, dtype=torch.long) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([t.shape[0]]))
    size = int(max(c.item() for c in counts))
    padded = torch.zeros((size,) + tuple(t.shape[1:]), dtype=t.dtype)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)])


def classification_report(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, *, distributed: bool = False
) -> Dict[str, float]:
    """top1, top5, ece, mce, fpr95 and confidence (the mean top probability: above top1 an
    over-confident model, below it an under-confident one; all percent) of a set of logits.

    Args:
        logits (Tensor): (N, C) logits (on the CPU; moved there otherwise).
        labels (Tensor): (N,) integer labels in [0, C).
        n_bins (int): equal-width confidence bins of ECE / MCE.
        distributed (bool): every process of the initialised process group calls this with
            the rows of its own shard (N may differ, and be 0); all get the report of the
            union of the shards. The backend must handle CPU tensors (gloo; with NCCL, create
            the group with both backends, e.g. ``"cpu:gloo,cuda:nccl"``).
    """
    logits, labels = logits.detach().float().cpu(), labels.detach().cpu().long()
    probs = torch.softmax(logits, 1).double()
    c = logits.shape[1]
    _check(probs.numpy(), labels.numpy())
    # top-k hits and calibration bins: sums
    maxk = min(5, c)
    hit = logits.topk(maxk, dim=1).indices.eq(labels.view(-1, 1)) if len(labels) else None
    conf, pred = probs.max(1) if len(labels) else (probs.new_zeros(0), labels)
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    sums = torch.zeros(3 + 3 * n_bins, dtype=torch.float64)
    sums[0] = len(labels)
    if hit is not None:
        sums[1] = hit[:, :1].any(1).sum()
        sums[2] = hit.any(1).sum()
    sums[3 : 3 + n_bins] = torch.bincount(idx, minlength=n_bins).double()
    sums[3 + n_bins : 3 + 2 * n_bins] = torch.bincount(
        idx, weights=(pred == labels).double(), minlength=n_bins
    )
    sums[3 + 2 * n_bins :] = torch.bincount(idx, weights=conf, minlength=n_bins)
    # FPR at 95 % TPR: each class's threshold from the probabilities of its positives (one per
    # row: gathered), then the negatives at or above it (counted per shard)
    positives = _all_gather_rows(
        (
            torch.stack([labels.double(), probs.gather(1, labels.view(-1, 1))[:, 0]], 1)
            if len(labels)
            else torch.zeros(0, 2, dtype=torch.float64)
        ),
        distributed,
    )
    thresholds = torch.full((c,), float("nan"), dtype=torch.float64)
    pos_count = torch.bincount(positives[:, 0].long(), minlength=c)
    for k in torch.nonzero(pos_count).flatten().tolist():
        scores = positives[positives[:, 0] == k, 1].sort(descending=True).values
        thresholds[k] = scores[int(np.ceil(0.95 * len(scores))) - 1]
    negative = labels.view(-1, 1) != torch.arange(c).view(1, -1)
    above = ((probs >= thresholds.view(1, -1)) & negative).sum(0).double()
    sums = _all_reduce(torch.cat([sums, above]), distributed)
    sums, above = sums[: 3 + 3 * n_bins], sums[3 + 3 * n_bins :]
    n = sums[0].item()
    if n == 0:
        nan = float("nan")
        return {"top1": nan, "top5": nan, "ece": nan, "mce": nan, "fpr95": nan, "confidence": nan}
    counts = sums[3 : 3 + n_bins]
    nonzero = counts > 0
    acc = torch.where(nonzero, sums[3 + n_bins : 3 + 2 * n_bins] / counts.clamp_min(1), 0.0)
    cnf = torch.where(nonzero, sums[3 + 2 * n_bins :] / counts.clamp_min(1), 0.0)
    gap = (acc - cnf).abs()
    negatives = n - pos_count.double()
    scored = (pos_count > 0) & (negatives > 0)
    fprs = above[scored] / negatives[scored]
    return {
        "top1": 100.0 * sums[1].item() / n,
        "top5": 100.0 * sums[2].item() / n,
        "ece": 100.0 * float((counts * gap).sum() / counts.sum()),
        "mce": 100.0 * float(gap[nonzero].max()),
        "fpr95": 100.0 * float(fprs.mean()) if len(fprs) else float("nan"),
        "confidence": 100.0 * float(sums[3 + 2 * n_bins :].sum()) / n,
    }
