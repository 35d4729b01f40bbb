"""Plots: the perception of a batch of logits (paper Figure 1 d-e) and training curves of runs.

Pure numpy / torch / matplotlib (the detector's logits are collected by
tools/visualize_perception.py). Each function returns the numbers it drew so that they can be
checked.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..losses import perception
from ..runio import read_metrics

__all__ = ["perception_figure", "plot_metrics"]


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def perception_figure(
    logits: torch.Tensor,
    row: int,
    path: str,
    class_names: Optional[Sequence[str]] = None,
    temperature: float = 4.0,
    target: Optional[int] = None,
    title: str = "",
) -> Dict[str, np.ndarray]:
    """Draw, for sample ``row`` of a batch of logits (N, C): raw logits vs perception logits,
    softmax(z / T) vs softmax(h / T), and the relation among its top-10 classes (pairwise
    differences z_i - z_j, raw vs perception), as one PNG (the paper's Figure 1 d-e).

    Returns:
        dict: ``raw`` (C,), ``perception`` (C,), ``softmax_raw`` (C,), ``softmax_perception``
        (C,), ``top10`` (10,) class indices, ``relation_raw`` and ``relation_perception``
        (10, 10).
    """
    if logits.dim() != 2 or not 0 <= row < logits.shape[0]:
        raise ValueError(
            f"logits must be (N, C) and 0 <= row < N, got {tuple(logits.shape)}, {row}"
        )
    if logits.shape[0] < 2:
        raise ValueError("perception needs a batch of at least 2 rows (N = 1 gives all zeros).")
    z = logits.detach().float()
    h = perception(z)
    raw, per = z[row].numpy(), h[row].numpy()
    sm_raw = torch.softmax(z[row] / temperature, 0).numpy()
    sm_per = torch.softmax(h[row] / temperature, 0).numpy()
    c = z.shape[1]
    k = min(10, c)
    top = np.argsort(-raw)[:k]
    rel_raw = raw[top][:, None] - raw[top][None, :]
    rel_per = per[top][:, None] - per[top][None, :]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    target = int(np.argmax(raw)) if target is None else target

    plt = pyplot()
    fig, axes = plt.subplots(3, 2, figsize=(11, 10))
    colors = ["#c44e52" if i == target else "#4c72b0" for i in range(c)]
    for ax, values, label in (
        (axes[0, 0], raw, "raw logits z"),
        (axes[0, 1], per, "perception logits h"),
    ):
        ax.bar(range(c), values, color=colors)
        ax.set_title(label)
    for ax, values, label in (
        (axes[1, 0], sm_raw, f"softmax(z / {temperature:g})"),
        (axes[1, 1], sm_per, f"softmax(h / {temperature:g})"),
    ):
        ax.bar(range(c), values, color=colors)
        ax.set_title(label)
        ax.set_ylim(0, max(1e-3, float(max(sm_raw.max(), sm_per.max()))) * 1.1)
    for ax in axes[:2].ravel():
        ax.set_xticks(range(c), names if c <= 30 else [""] * c, rotation=90, fontsize=7)
    for ax, rel, label in (
        (axes[2, 0], rel_raw, "top-10 classes: z_i - z_j"),
        (axes[2, 1], rel_per, "top-10 classes: h_i - h_j"),
    ):
        lim = float(np.abs(rel).max()) or 1.0
        im = ax.imshow(rel, cmap="coolwarm", vmin=-lim, vmax=lim)
        ax.set_xticks(range(k), [names[i] for i in top], rotation=90, fontsize=7)
        ax.set_yticks(range(k), [names[i] for i in top], fontsize=7)
        ax.set_title(label)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title or f"sample {row} of a batch of {z.shape[0]} (red: class {names[target]})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {
        "raw": raw,
        "perception": per,
        "softmax_raw": sm_raw,
        "softmax_perception": sm_per,
        "top10": top,
        "relation_raw": rel_raw,
        "relation_perception": rel_per,
    }


def plot_metrics(runs: Dict[str, str], path: str) -> Dict[str, Dict[str, List]]:
    """Loss terms (left) and AP / accuracy (right) over iterations or epochs, runs overlaid.

    Args:
        runs (dict): label -> metrics.json path (or its directory).
        path (str): output PNG.

    Returns:
        dict: label -> {series name: [(x, y), ...]} as plotted.
    """
    plt = pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(13, 4.5))
    plotted: Dict[str, Dict[str, List]] = {}
    styles = ["-", "--", ":", "-."]
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors: Dict[str, str] = {}  # one colour per series, one line style per run
    for n, (label, p) in enumerate(runs.items()):
        rows = read_metrics(p)
        xkey = "iteration" if any("iteration" in r for r in rows) else "epoch"
        series: Dict[str, List] = {}
        for r in rows:
            if xkey not in r:
                continue
            for key, value in r.items():
                is_loss = key.startswith("loss") or key == "total_loss"
                is_acc = key in ("bbox/AP", "bbox/AP50", "top1")
                if (is_loss or is_acc) and isinstance(value, (int, float)):
                    series.setdefault(key, []).append((r[xkey], float(value)))
        plotted[label] = series
        for key, pts in sorted(series.items()):
            xs, ys = zip(*pts)
            is_acc = key in ("bbox/AP", "bbox/AP50", "top1")
            ax = ax_acc if is_acc else ax_loss
            color = colors.setdefault(key, palette[len(colors) % len(palette)])
            ax.plot(
                xs,
                ys,
                styles[n % len(styles)],
                color=color,
                marker="o" if is_acc else None,
                markersize=5,
                label=f"{label}: {key}",
            )
        ax_loss.set_xlabel(xkey)
        ax_acc.set_xlabel(xkey)
    ax_loss.set_title("losses")
    ax_loss.set_yscale("log")
    ax_acc.set_title("AP / top-1 accuracy")
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return plotted
