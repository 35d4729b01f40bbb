"""Cost of the losses alone: forward + backward on ROI-sized and ImageNet-sized logits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List

import torch

from .common import fmt, summary

SHAPES = ((1024, 81), (512, 1000))
#: the target ratio luminet_loss / kd_loss per shape
TARGET = {"1024x81": 2.0, "512x1000": 2.75}


@dataclass
class LossCost:
    """rows: one per (shape, loss): ``shape``, ``loss``, ``ms`` and ``vs_kd`` summaries."""

    rows: List[Dict]

    def markdown(self) -> List[str]:
        lines = [
            "## Cost of the losses alone (forward + backward, CPU)",
            "",
            "median [q1, q3] over interleaved repeats; the ratio is computed per round.",
            "",
            "| logits | loss | time (ms) | ÷ kd_loss |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['shape']} | {r['loss']} | {fmt(r['ms'], 1e3)} | {fmt(r['vs_kd'])} |"
            for r in self.rows
        ]
        lumi = {r["shape"]: r["vs_kd"]["median"] for r in self.rows if r["loss"] == "luminet"}
        verdicts = ", ".join(
            f"{k}: {v:.2f}× (target ≤ {TARGET[k]}×: {'met' if v <= TARGET[k] else 'NOT met'})"
            for k, v in lumi.items()
        )
        return lines + ["", f"`luminet_loss` ÷ `kd_loss`: {verdicts}", ""]


def run(repeats: int) -> LossCost:
    """Time kd / dkd / luminet forward + backward, interleaved, ``repeats`` rounds per shape."""
    from luminet_det.losses import dist_loss, dkd_loss, kd_loss, logit_std_kd_loss, luminet_loss

    rows = []
    for n, c in SHAPES:
        g = torch.Generator().manual_seed(0)
        s = torch.randn(n, c, generator=g, requires_grad=True)
        t = torch.randn(n, c, generator=g) * 3
        y = torch.randint(0, c, (n,), generator=g)
        fns = {
            "kd": lambda: kd_loss(s, t, 4.0),
            "dkd": lambda: dkd_loss(s, t, y, 1.0, 8.0, 4.0),
            "logitstd": lambda: logit_std_kd_loss(s, t, 4.0),
            "dist": lambda: dist_loss(s, t, tau=4.0),
            "luminet": lambda: luminet_loss(s, t, 4.0),
        }
        times = {k: [] for k in fns}
        for _ in range(5):  # warm-up
            for fn in fns.values():
                fn().backward()
        for _ in range(repeats):
            for k, fn in fns.items():
                s.grad = None
                t0 = time.perf_counter()
                fn().backward()
                times[k].append(time.perf_counter() - t0)
        for k in fns:
            ratio = summary([a / b for a, b in zip(times[k], times["kd"])])
            rows.append({"shape": f"{n}x{c}", "loss": k, "ms": summary(times[k]), "vs_kd": ratio})
    return LossCost(rows)
