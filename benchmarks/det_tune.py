"""LumiNet against DKD at equal tuning on the built-in Faster R-CNN pair (R-50-FPN → R-18-FPN).

The paper gives no detection values for LumiNet (the configs shipped T 1, weight 1, DKD's
detection T and weight), while DKD's (α 1, β 0.25, T 1) are those its authors tuned for COCO
(mdistiller's detection config), so an untuned comparison favours DKD. Here each method gets the
same number of trial runs:

1. Tuning, seed 0 only: a grid over two values of each method, the same points per axis for
   both. LumiNet: the temperature and the weight (``MODEL.DISTILL.LUMINET``). DKD: β and the
   temperature (``MODEL.DISTILL.DKD``) at α 1 — every recipe of DKD's authors (mdistiller)
   keeps α (the target-class term) at 1 and changes β and T (CIFAR-100: β 2 to 8 by pair, T 4;
   ImageNet: β 0.5 or 2, T 1; COCO: β 0.25, T 1). Three points per axis (LumiNet's T and
   weight 1, 2, 4; DKD's β 0.25, 0.5, 1 and T 1, 2, 4) give nine trials each; two points take
   the ends (four trials each). The highest seed-0 box AP is chosen.
2. Fresh seeds (1, 2, ...): LumiNet and DKD at their chosen values, and LumiNet at the shipped
   values (the built-in config's defaults change only if the chosen values beat them here),
   seed k giving every run the same initialisation and data order.

The first run (2026-12-02-dettune, two points) chose LumiNet's weight 4, which won on every
fresh seed: ``luminet_R50_R18.yaml`` has shipped it since (it shipped weight 1 before).

A run of the shipped values is the ``det`` section's run of the same config and seed (the same
command and output folder), so either section reuses the other's finished runs. Every run is
kept (``run_records``) with its command and the teacher's recipe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .common import (
    TEACHER_CONFIG,
    detector_record,
    final_metrics,
    mean_std,
    paired_lines,
    train_detector,
)
from .det_paired import GROUPS, group_teacher

Point = Tuple[float, float]


@dataclass(frozen=True)
class Tuned:
    """A method and the two values tuned.

    Attributes:
        name (str): its label in the tables.
        config (str): its config in configs/Digits-Detection/.
        keys (tuple[str, str]): the config keys of the two values.
        axes (tuple[str, str]): their names in the tables.
        values (tuple[tuple[float, ...], tuple[float, ...]]): the three values tried of each
            (low, middle, high); two points per axis take the low and the high.
        shipped (tuple[float, float]): the config's own values.
    """

    name: str
    config: str
    keys: Tuple[str, str]
    axes: Tuple[str, str]
    values: Tuple[Tuple[float, ...], Tuple[float, ...]]
    shipped: Point

    def grid(self, points: int) -> List[Point]:
        """The trials: ``points`` (2 or 3) values of each axis, every combination."""
        if points not in (2, 3):
            raise ValueError(f"points={points}: 2 (the ends of each axis) or 3 are allowed")
        first, second = ((v[0], v[-1]) if points == 2 else v for v in self.values)
        return [(a, b) for a in first for b in second]

    def label(self, point: Point) -> str:
        """The values as the tables print them, e.g. "T 4, weight 1"."""
        return ", ".join(f"{axis} {v:g}" for axis, v in zip(self.axes, point))

    def overrides(self, point: Point) -> List[str]:
        """tools/train_net.py KEY VALUE pairs of ``point`` (none for the shipped values)."""
        if point == self.shipped:
            return []
        return [x for key, v in zip(self.keys, point) for x in (key, str(float(v)))]

    def folder(self, work: str, point: Point, seed: int) -> str:
        """The run's output folder: the ``det`` section's for the shipped values."""
        stem = self.config.replace(".yaml", "")
        if point == self.shipped:
            return os.path.join(work, "det", stem, f"seed{seed}")
        # e.g. temperature4_weight1
        values = "_".join(f"{k.split('.')[-1].lower()}{v:g}" for k, v in zip(self.keys, point))
        return os.path.join(work, "det_tune", stem, values, f"seed{seed}")


METHODS: Tuple[Tuned, ...] = (
    Tuned(
        "LumiNet",
        "luminet_R50_R18.yaml",
        ("MODEL.DISTILL.LUMINET.TEMPERATURE", "MODEL.DISTILL.LUMINET.WEIGHT"),
        ("T", "weight"),
        ((1.0, 2.0, 4.0), (1.0, 2.0, 4.0)),
        (1.0, 4.0),  # weight 1 until 2026-12-02-dettune chose 4
    ),
    Tuned(
        "DKD",
        "dkd_R50_R18.yaml",
        ("MODEL.DISTILL.DKD.BETA", "MODEL.DISTILL.DKD.TEMPERATURE"),
        ("β", "T"),
        ((0.25, 0.5, 1.0), (1.0, 2.0, 4.0)),
        (0.25, 1.0),
    ),
)


def choose(aps: Dict[Point, float], shipped: Point) -> Point:
    """The trial of ``aps`` (point -> seed-0 box AP, in trial order) with the highest AP; a tie
    goes to the shipped values, then to the earlier trial."""
    order = list(aps)
    return max(order, key=lambda p: (aps[p], p == shipped, -order.index(p)))


def marks(method: Tuned, point: Point, chosen: Point) -> str:
    """ " (shipped)", " (chosen)", " (shipped, chosen)" or "" for ``point``."""
    names = [m for m, p in (("shipped", method.shipped), ("chosen", chosen)) if p == point]
    return f" ({', '.join(names)})" if names else ""


def row_name(method: Tuned, point: Point, chosen: Point) -> str:
    """A fresh-seed row: e.g. "LumiNet, T 4, weight 1 (chosen)"."""
    return f"{method.name}, {method.label(point)}" + marks(method, point, chosen)


@dataclass
class DetTuning:
    """grids: method name -> point -> seed-0 box AP; chosen: method name -> point; fresh: row
    name -> box AP per fresh seed (the chosen LumiNet row first); teacher: its metrics;
    run_records: one per run; provenance: "config: recipe" of the teacher
    (det_paired.group_teacher)."""

    grids: Dict[str, Dict[Point, float]]
    chosen: Dict[str, Point]
    fresh: Dict[str, List[float]]
    teacher: Dict[str, float]
    run_records: List[Dict] = field(default_factory=list)
    provenance: str = ""

    def markdown(self) -> List[str]:
        trials = {len(g) for g in self.grids.values()}
        lines = [
            "## LumiNet vs DKD at equal tuning: built-in detection set, Faster R-CNN "
            "R-50-FPN → R-18-FPN",
            "",
            f"Each method got the same budget: {' and '.join(map(str, sorted(trials)))} trial "
            "runs on seed 0 only (two values, a grid), chosen by box AP; then the chosen values "
            "(and LumiNet's shipped ones) on fresh seeds, seed k giving every run the same "
            "initialisation and data order. DKD's α stays 1 as in every recipe of its authors.",
            "",
            f"Teacher ({TEACHER_CONFIG}): box AP {self.teacher.get('bbox/AP', float('nan')):.1f}.",
            "",
        ]
        if self.provenance:
            lines += [f"Trained: {self.provenance}.", ""]
        for method in METHODS:
            grid = self.grids.get(method.name)
            if not grid:
                continue
            rows = sorted({p[0] for p in grid})
            cols = sorted({p[1] for p in grid})
            lines += [
                f"{method.name}, seed-0 box AP of each trial (shipped: "
                f"{method.label(method.shipped)}):",
                "",
                f"| {method.axes[0]} \\ {method.axes[1]} | "
                + " | ".join(f"{c:g}" for c in cols)
                + " |",
                "|---|" + "---|" * len(cols),
            ]
            chosen = self.chosen[method.name]
            for r in rows:
                cells = [
                    (
                        ""
                        if (r, c) not in grid
                        else f"{grid[r, c]:.1f}" + marks(method, (r, c), chosen)
                    )
                    for c in cols
                ]
                lines.append(f"| {r:g} | " + " | ".join(cells) + " |")
            lines += ["", f"Chosen: {method.label(self.chosen[method.name])}.", ""]
        seeds = len(next(iter(self.fresh.values())))
        lines += [
            f"Fresh seeds 1–{seeds}:" if seeds > 1 else "Fresh seed 1:",
            "",
            "| model | box AP | per seed box AP |",
            "|---|---|---|",
        ]
        for name, aps in self.fresh.items():
            lines.append(f"| {name} | {mean_std(aps)} | {', '.join(f'{x:.1f}' for x in aps)} |")
        lines.append("")
        lines += paired_lines(self.fresh, next(iter(self.fresh)), "box AP points")
        return lines

    def chart(self):
        data = {"teacher": [self.teacher.get("bbox/AP", float("nan"))]}
        data.update(self.fresh)
        return "equal tuning, fresh seeds: box AP", data


def run(seeds: int, quick: bool, work: str, env: dict, points: int = 3) -> DetTuning:
    """The tuning grids (``points`` values per axis) on seed 0, then the chosen values and
    LumiNet's shipped ones on ``seeds`` fresh seeds. --quick: two trials per method (the shipped
    values and the highest of the first axis) at toy sizes."""
    teacher, t_metrics, provenance = group_teacher(GROUPS["det"], quick, work, env)
    provenance = provenance[-1] if provenance else ""  # "teacher_R_50_FPN.yaml: <recipe>"
    records: List[Dict] = []

    def train(method: Tuned, point: Point, seed: int, phase: str) -> float:
        out = method.folder(work, point, seed)
        extra = method.overrides(point)
        label = f"dettune {phase}: {method.name}, {method.label(point)}"
        train_detector(label, method.config, out, seed, teacher, quick, env, extra)
        ap = final_metrics(out)["bbox/AP"]
        records.append(
            {
                "phase": phase,
                "method": method.name,
                **dict(zip(method.keys, point)),
                "seed": seed,
                **detector_record(method.config, out, seed, teacher, quick, extra),
                "bbox/AP": ap,
                **({"teacher": provenance} if provenance else {}),
            }
        )
        return ap

    grids: Dict[str, Dict[Point, float]] = {}
    chosen: Dict[str, Point] = {}
    for method in METHODS:
        grid = method.grid(points)
        if quick:
            grid = [method.shipped, (method.values[0][-1], method.shipped[1])]
        grids[method.name] = {p: train(method, p, 0, "tuning") for p in grid}
        chosen[method.name] = choose(grids[method.name], method.shipped)
    luminet, dkd = METHODS
    rows = [(luminet, chosen["LumiNet"]), (dkd, chosen["DKD"])]
    if chosen["LumiNet"] != luminet.shipped:
        rows.append((luminet, luminet.shipped))
    fresh = {
        row_name(m, p, chosen[m.name]): [
            train(m, p, seed, "fresh seeds") for seed in range(1, seeds + 1)
        ]
        for m, p in rows
    }
    return DetTuning(grids, chosen, fresh, t_metrics, records, provenance)
