"""Reports of what distillation does to a classifier: reliability diagrams with ECE / MCE /
FPR95 (paper Table 10) and the teacher's worst classes (paper Table 8), as Markdown tables.

Pure numpy / torch / matplotlib.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ..metrics import calibration_bins, classification_report
from .plots import pyplot

__all__ = ["calibration_report", "confirmation_bias_report", "per_class_error"]


def calibration_report(models: Dict[str, "tuple"], png: str, n_bins: int = 15) -> str:
    """Reliability diagrams side by side and a Markdown table of top-1 / ECE / MCE / FPR95.

    Args:
        models (dict): name -> (logits (N, C) tensor, labels (N,) tensor).
        png (str): output PNG with one reliability diagram per model.

    Returns:
        str: the Markdown table.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 4), squeeze=False)
    lines = ["| model | top-1 (%) | ECE (%) | MCE (%) | FPR95 (%) |", "|---|---|---|---|---|"]
    edges = np.linspace(0, 1, n_bins + 1)
    for ax, (name, (logits, labels)) in zip(axes[0], models.items()):
        rep = classification_report(logits, labels, n_bins)
        probs = torch.softmax(logits.float(), 1).numpy()
        counts, acc, conf = calibration_bins(probs, labels.numpy(), n_bins)
        centers = (edges[:-1] + edges[1:]) / 2
        ax.bar(centers, acc, width=1 / n_bins, edgecolor="k", color="#4c72b0", label="accuracy")
        ax.bar(
            centers,
            conf - acc,
            bottom=acc,
            width=1 / n_bins,
            color="#c44e52",
            alpha=0.4,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1), ax.set_ylim(0, 1)
        ax.set_title(f"{name}\nECE {rep['ece']:.2f}  MCE {rep['mce']:.2f}")
        ax.set_xlabel("confidence")
        ax.legend(fontsize=7, loc="upper left")
        lines.append(
            f"| {name} | {rep['top1']:.2f} | {rep['ece']:.2f} | {rep['mce']:.2f} | "
            f"{rep['fpr95']:.2f} |"
        )
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return "\n".join(lines)


def per_class_error(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Per-class top-1 error in percent (NaN for classes absent from ``labels``)."""
    pred = logits.argmax(1).numpy()
    y = labels.numpy()
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = y == c
        if mask.any():
            out[c] = 100.0 * float((pred[mask] != c).mean())
    return out


def confirmation_bias_report(
    teacher: "tuple",
    students: Dict[str, "tuple"],
    n_worst: int = 5,
    class_names: Optional[Sequence[str]] = None,
) -> str:
    """The teacher's ``n_worst`` classes (highest error) and each student's error on them, as
    a Markdown table (the paper's Table 8).

    Args:
        teacher: (logits (N, C), labels (N,)).
        students: name -> (logits, labels) on the same samples.
    """
    t_logits, labels = teacher
    c = t_logits.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    t_err = per_class_error(t_logits, labels, c)
    order = [i for i in np.argsort(-np.nan_to_num(t_err, nan=-1.0)) if not np.isnan(t_err[i])]
    worst = order[:n_worst]
    errs = {name: per_class_error(lg, lb, c) for name, (lg, lb) in students.items()}
    header = "| class | teacher error (%) | " + " | ".join(f"{n} error (%)" for n in errs) + " |"
    lines = [header, "|" + "---|" * (2 + len(errs))]
    for i in worst:
        lines.append(
            f"| {names[i]} | {t_err[i]:.1f} | "
            + " | ".join(f"{e[i]:.1f}" for e in errs.values())
            + " |"
        )
    means = " | ".join(f"{np.mean([e[i] for i in worst]):.1f}" for e in errs.values())
    lines.append(f"| mean of these | {np.mean([t_err[i] for i in worst]):.1f} | {means} |")
    return "\n".join(lines)
