"""Classification metrics of the LumiNet paper (Table 10, appendix A.9.1): top-k accuracy,
ECE and MCE with equal-width confidence bins, and FPR at 95 % TPR per class (one vs rest),
averaged over classes. Pure numpy/torch."""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np
import torch

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


def classification_report(
    logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15
) -> Dict[str, float]:
    """top1, top5, ece, mce, fpr95 (all percent) of a set of logits."""
    acc = topk_accuracy(logits, labels, (1, 5))
    probs = torch.softmax(logits.float(), 1).cpu().numpy()
    y = labels.cpu().numpy()
    ece, mce = ece_mce(probs, y, n_bins)
    return {
        "top1": acc[1],
        "top5": acc[5],
        "ece": ece,
        "mce": mce,
        "fpr95": fpr_at_95_tpr(probs, y),
    }
