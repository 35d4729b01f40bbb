"""Sensitivity of LumiNet and KD to the batch size and to the temperature (the paper's Fig.
3b-c) on the hard built-in classification task (wrn_40_2 → resnet8, the configs of
``configs/Digits-Classification-Hard``), paired seeds.

LumiNet's perception uses the statistics of each batch, so the first question a user asks is
how small a batch it tolerates. Batch sweep: each method's config at the batch sizes given,
the learning rate scaled linearly with the batch (the config's LR at its batch of 64) and the
epochs unchanged, so every run sees the same images as often. Temperature sweep: each
method's config at its own batch with ``METHOD.TEMPERATURE`` replaced. Seed k gives every run
the same initialisation and data order at a given batch size. Every run is kept
(``run_records``) with its command."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from .cls_paired import CONFIGS, FILES, TEACHER
from .cls_runs import cls_command, cls_teacher, train_many
from .common import log, rel

METHODS = ("KD", "LumiNet")
BATCHES = (8, 16, 32, 64, 128, 256)
TEMPERATURES = (1.0, 2.0, 4.0, 8.0, 16.0)
#: the batch of the configs' learning rate (configs/Digits-Classification-Hard)
BASE_BATCH = 64
COLORS = {"KD": "#4c72b0", "LumiNet": "#c44e52"}


@dataclass
class Sweeps:
    """top1[sweep][method][value] -> per seed top-1 (%); sweep is "batch" or "tau";
    run_records: one per run."""

    top1: Dict[str, Dict[str, Dict[float, List[float]]]]
    teacher: Dict[str, float]
    run_records: List[Dict] = field(default_factory=list)
    figure: str = ""  # the plot's file name beside the results, once drawn
    workers: int = 1  # runs trained at once (one torch thread each when above 1)

    def markdown(self) -> List[str]:
        seeds = len(next(iter(self.top1["batch"]["LumiNet"].values())))
        lines = [
            "## Sensitivity to the batch size and the temperature (hard built-in set)",
            "",
            "digits_hard, wrn_40_2 teacher → resnet8, KD and LumiNet at their configs "
            "(`configs/Digits-Classification-Hard`), one value changed at a time; "
            f"{seeds} paired seeds; top-1 (%) mean ± std. Batch sweep: LR × batch / "
            f"{BASE_BATCH}, same epochs. Temperature sweep: each config's own batch."
            + (
                f" {self.workers} runs at a time, one torch thread each."
                if self.workers > 1
                else ""
            ),
            "",
            f"Teacher wrn_40_2: top-1 {self.teacher['top1']:.2f} %.",
            "",
        ]
        if self.figure:
            lines += [f"![top-1 against batch size and temperature]({self.figure})", ""]
        for sweep, what in (("batch", "batch size"), ("tau", "temperature τ")):
            values = sorted(next(iter(self.top1[sweep].values())))
            lines += [
                f"| {what} | " + " | ".join(METHODS) + " | LumiNet − KD (per seed) |",
                "|---|" + "---|" * (len(METHODS) + 1),
            ]
            for v in values:
                cells = [_mean_std(self.top1[sweep][m][v]) for m in METHODS]
                diff = [
                    a - b for a, b in zip(self.top1[sweep]["LumiNet"][v], self.top1[sweep]["KD"][v])
                ]
                label = f"{int(v)}" if sweep == "batch" else f"{v:g}"
                lines.append(
                    f"| {label} | "
                    + " | ".join(cells)
                    + " | "
                    + ", ".join(f"{d:+.1f}" for d in diff)
                    + " |"
                )
            lines.append("")
        return lines

    def plot(self, path: str) -> None:
        """Top-1 against each swept value, one colour per method, mean with std bars and every
        seed as a dot."""
        from luminet_det.visualize.plots import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, (sweep, label) in zip(axes, (("batch", "batch size"), ("tau", "temperature τ"))):
            for method in METHODS:
                data = self.top1[sweep][method]
                xs = sorted(data)
                means = [statistics.mean(data[x]) for x in xs]
                stds = [statistics.stdev(data[x]) if len(data[x]) > 1 else 0.0 for x in xs]
                ax.errorbar(
                    xs, means, yerr=stds, color=COLORS[method], marker="o", capsize=3, label=method
                )
                for x in xs:
                    ax.plot([x] * len(data[x]), data[x], ".", color=COLORS[method], alpha=0.4)
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.set_xlabel(label)
            ax.set_ylabel("top-1 (%)")
            ax.legend()
        fig.suptitle("hard built-in set, wrn_40_2 → resnet8")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def _mean_std(values: Sequence[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _runs(quick: bool) -> List[Tuple[str, float, List[str]]]:
    """(sweep, value, overrides) of every point, for one method."""
    batches = (32, 64) if quick else BATCHES  # --quick: each code path, at little cost
    taus = (4.0,) if quick else TEMPERATURES
    out = []
    for b in batches:
        out.append(("batch", float(b), [f"SOLVER.BATCH_SIZE={b}"]))
    for t in taus:
        out.append(("tau", t, [f"METHOD.TEMPERATURE={t}"]))
    return out


def run(seeds: int, quick: bool, work: str, workers: int = 1) -> Sweeps:
    """Every point of both sweeps for both methods at ``seeds`` paired seeds; ``workers`` runs
    at once (:func:`~benchmarks.cls_runs.train_many`)."""
    from luminet_det.cls import load_config

    teacher, t_metrics = cls_teacher(
        os.path.join(CONFIGS, TEACHER), os.path.join(work, "cls_hard", "teacher"), quick, "sweeps"
    )
    points = []  # (method, sweep, value, seed, config, overrides)
    for method in METHODS:
        config = os.path.join(CONFIGS, FILES[method])
        base_lr = load_config(config, [f"MODEL.TEACHER_WEIGHTS={teacher}"]).SOLVER.LR
        for sweep, value, overrides in _runs(quick):
            if sweep == "batch":
                overrides = overrides + [f"SOLVER.LR={base_lr * value / BASE_BATCH:g}"]
            for seed in range(seeds):
                name = f"{method}_{sweep}{value:g}".replace(" ", "_")
                out = os.path.join(work, "sweeps", name, f"seed{seed}")
                opts = overrides + [
                    f"OUTPUT_DIR={out}",
                    f"SEED={seed}",
                    f"MODEL.TEACHER_WEIGHTS={teacher}",
                ]
                points.append((method, sweep, value, seed, config, opts))

    def done(i: int, r: Dict[str, float]) -> None:
        method, sweep, value, seed = points[i][:4]
        log(f"sweeps: {method}, {sweep} {value:g}, seed {seed}: top-1 {r['top1']:.2f}")

    results = train_many([p[4:] for p in points], quick, workers, done)
    top1 = {"batch": {m: {} for m in METHODS}, "tau": {m: {} for m in METHODS}}
    records = []
    for (method, sweep, value, seed, config, opts), r in zip(points, results):
        top1[sweep][method].setdefault(value, []).append(r["top1"])  # points are seed-ordered
        records.append(
            {
                "sweep": sweep,
                "value": value,
                "method": method,
                "seed": seed,
                "config": rel(config),
                "command": cls_command(config, opts, quick),
                "top1": r["top1"],
                "ece": r["ece"],
            }
        )
    return Sweeps(top1, t_metrics, records, workers=workers)
