"""Do the classifier's LumiNet values hold on new data once tuned? Equal-budget tuning on one
built-in set, confirmed on fresh seeds and on a set never tuned on.

1. Tuning: LumiNet's temperature and weight (``METHOD.TEMPERATURE``, ``METHOD.WEIGHT``) on
   the hard built-in set (wrn_40_2 → resnet8, ``configs/Digits-Classification-Hard``), seed 0
   only: a 3 × 3 grid around the shipped values (T 8, weight 5625 = α² with the CIFAR-100
   recipe's α 75), T halved and doubled, the weight divided and multiplied by 4. The chosen
   values have the highest top-1 (ties: the lower ECE).
2. Confirmation: the shipped and the chosen values on fresh seeds (1, 2, ...) of the hard set
   and of the unseen 8-class folder set (``clsnew`` of :mod:`benchmarks.cls_paired`, never
   used for tuning), seed k giving both the same initialisation and data order. Accuracy and
   ECE are reported; new defaults are worth shipping only if they win on the unseen set too.

Every run is kept (``run_records``) with its command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .cls_paired import CONFIGS, FILES, SETS, set_teacher
from .cls_runs import cls_command, train_many
from .common import log, mean_std, paired_lines, paired_row, rel

#: the shipped values (configs/Digits-Classification-Hard/luminet_wrn40_2_resnet8.yaml)
SHIPPED = (8.0, 5625.0)
TEMPERATURES = (4.0, 8.0, 16.0)
WEIGHTS = (1406.25, 5625.0, 22500.0)
#: the metrics kept of every run
KEPT = ("top1", "ece", "confidence")


def label(t: float, weight: float) -> str:
    """Values as the tables print them, e.g. "T 8, weight 5625"."""
    return f"T {t:g}, weight {weight:g}"


def marks(values: Tuple[float, float], chosen: Tuple[float, float]) -> str:
    """ " (shipped)", " (chosen)", " (shipped, chosen)" or "" for ``values``."""
    names = [m for m, v in (("shipped", SHIPPED), ("chosen", chosen)) if values == v]
    return f" ({', '.join(names)})" if names else ""


def row_name(values: Tuple[float, float], chosen: Tuple[float, float]) -> str:
    """A confirmation row's name: the values, marked shipped and/or chosen."""
    return label(*values) + marks(values, chosen)


@dataclass
class Tuning:
    """grid: (T, weight) -> seed-0 metrics on the hard set; chosen: the chosen (T, weight);
    confirm: set key -> row label -> per fresh seed metrics {"top1", "ece", "confidence"};
    teachers: set key -> its teacher's metrics; run_records: one per run; workers: runs
    trained at once."""

    grid: Dict[Tuple[float, float], Dict[str, float]]
    chosen: Tuple[float, float]
    confirm: Dict[str, Dict[str, List[Dict[str, float]]]]
    teachers: Dict[str, Dict[str, float]]
    run_records: List[Dict] = field(default_factory=list)
    workers: int = 1

    def markdown(self) -> List[str]:
        temps = sorted({t for t, _ in self.grid})
        weights = sorted({w for _, w in self.grid})
        lines = [
            "## Tuning LumiNet's T and weight on one set, confirmed on another (classifier)",
            "",
            f"Tuning: {len(self.grid)} trials on the hard built-in set (wrn_40_2 teacher, top-1 "
            f"{self.teachers['clshard']['top1']:.2f} % → resnet8, the shipped LumiNet config "
            "but for the two values), seed 0 only; chosen by top-1 (ties: lower ECE). "
            f"Shipped: {label(*SHIPPED)}."
            + (
                f" {self.workers} runs at a time, one torch thread each."
                if self.workers > 1
                else ""
            ),
            "",
            "Seed-0 top-1 (%) / ECE (%) of each trial:",
            "",
            "| T \\ weight | " + " | ".join(f"{w:g}" for w in weights) + " |",
            "|---|" + "---|" * len(weights),
        ]
        for t in temps:
            cells = []
            for w in weights:
                r = self.grid.get((t, w))
                mark = marks((t, w), self.chosen)
                cells.append(f"{r['top1']:.2f} / {r['ece']:.1f}{mark}" if r else "")
            lines.append(f"| {t:g} | " + " | ".join(cells) + " |")
        lines += ["", f"Chosen: {label(*self.chosen)}.", ""]
        for key, rows in self.confirm.items():
            seeds = len(next(iter(rows.values())))
            where = SETS[key].about if SETS[key].data else "the hard set (tuned on, fresh seeds)"
            lines += [
                f"Confirmation on {where}: {seeds} fresh seeds (teacher top-1 "
                f"{self.teachers[key]['top1']:.2f} %).",
                "",
                "| LumiNet | top-1 (%) | ECE (%) | mean confidence − top-1 | per seed top-1 |",
                "|---|---|---|---|---|",
            ]
            for name, runs in rows.items():
                top1 = [r["top1"] for r in runs]
                lines.append(
                    f"| {name} | {mean_std(top1)} | {mean_std([r['ece'] for r in runs])} | "
                    f"{mean_std([r['confidence'] - r['top1'] for r in runs])} | "
                    f"{', '.join(f'{x:.1f}' for x in top1)} |"
                )
            lines.append("")
            if len(rows) > 1:
                chosen = row_name(self.chosen, self.chosen)
                top1 = {n: [r["top1"] for r in runs] for n, runs in rows.items()}
                lines += paired_lines(top1, chosen, "top-1 points")
                ece = [r["ece"] for r in rows[chosen]]
                lines += [
                    "ECE: each row minus the chosen values, per seed (positive: the chosen "
                    "values are better calibrated): mean, 95 % t-interval, seeds where the "
                    "chosen values' ECE is lower.",
                    "",
                    "| vs | mean difference | 95 % interval | chosen lower |",
                    "|---|---|---|---|",
                ]
                for name, runs in rows.items():
                    if name != chosen:
                        diff = [r["ece"] - c for r, c in zip(runs, ece)]
                        lines.append(paired_row(name, diff))
                lines.append("")
        return lines

    def chart(self):
        key = "clsnew" if "clsnew" in self.confirm else next(iter(self.confirm))
        data = {n: [r["top1"] for r in v] for n, v in self.confirm[key].items()}
        return f"LumiNet shipped vs tuned ({key}, fresh seeds): top-1 (%)", data


def run(seeds: int, quick: bool, work: str, workers: int = 1) -> Tuning:
    """The grid on seed 0 of the hard set, then the shipped and chosen values on ``seeds``
    fresh seeds of the hard set and of the unseen folder set; ``workers`` runs at once."""
    config = os.path.join(CONFIGS, FILES["LumiNet"])
    sets = {key: set_teacher(key, work, quick) for key in ("clshard", "clsnew")}
    grid = (
        [(SHIPPED[0], w) for w in (SHIPPED[1], WEIGHTS[-1])]
        if quick
        else [(t, w) for t in TEMPERATURES for w in WEIGHTS]
    )

    def job(key: str, t: float, w: float, seed: int):
        best, _, data = sets[key]
        out = os.path.join(work, "cls_tune", SETS[key].folder, f"T{t:g}_w{w:g}", f"seed{seed}")
        opts = [
            f"METHOD.TEMPERATURE={t}",
            f"METHOD.WEIGHT={w}",
            f"OUTPUT_DIR={out}",
            f"SEED={seed}",
            f"MODEL.TEACHER_WEIGHTS={best}",
            *data,
        ]
        return (config, opts)

    records: List[Dict] = []

    def train(points, phase):
        def done(i: int, r: Dict[str, float]) -> None:
            key, t, w, seed = points[i]
            log(f"clstune {phase}: {key}, {label(t, w)}, seed {seed}: top-1 {r['top1']:.2f}")

        jobs = [job(*p) for p in points]
        results = train_many(jobs, quick, workers, done)
        for (key, t, w, seed), (cfg, opts), r in zip(points, jobs, results):
            records.append(
                {
                    "phase": phase,
                    "set": key,
                    "temperature": t,
                    "weight": w,
                    "seed": seed,
                    "config": rel(cfg),
                    "command": cls_command(cfg, opts, quick),
                    **{k: r[k] for k in KEPT},
                }
            )
        return results

    trials = train([("clshard", t, w, 0) for t, w in grid], "tuning")
    scores = {p: r for p, r in zip(grid, trials)}
    chosen = max(grid, key=lambda p: (scores[p]["top1"], -scores[p]["ece"]))
    log(f"clstune: chosen {label(*chosen)} (shipped {label(*SHIPPED)})")
    values = [SHIPPED] if chosen == SHIPPED else [SHIPPED, chosen]
    points = [
        (key, t, w, seed)
        for key in ("clshard", "clsnew")
        for t, w in values
        for seed in range(1, seeds + 1)
    ]
    results = train(points, "confirmation")
    confirm: Dict[str, Dict[str, List[Dict[str, float]]]] = {"clshard": {}, "clsnew": {}}
    for (key, t, w, _), r in zip(points, results):  # points are seed-ordered within a row
        confirm[key].setdefault(row_name((t, w), chosen), []).append({k: r[k] for k in KEPT})
    teachers = {k: v[1] for k, v in sets.items()}
    return Tuning(scores, chosen, confirm, teachers, records, workers)
