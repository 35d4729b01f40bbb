"""The results file (Markdown: date, machine, commit, command, then each section's own table)
and the chart (one panel per accuracy section, every seed shown)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from typing import List, Sequence

import torch

from .results_io import command_line, commit
from .stats_modes import COLORS as STATS_COLORS


def header(title: str, elapsed: float) -> List[str]:
    cpu = platform.processor() or platform.machine()
    return [
        f"# Benchmark: {title}",
        "",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.node()}, {os.cpu_count()} cores, {cpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        f"- commit: {commit()}",
        f"- command: `{command_line()}`",
        f"- wall time: {elapsed / 60:.1f} min",
        "",
    ]


def write_markdown(path: str, sections: Sequence, elapsed: float) -> None:
    """``sections``: result objects with a ``markdown()`` method, in report order."""
    lines = header(os.path.splitext(os.path.basename(path))[0], elapsed)
    for section in sections:
        lines += section.markdown()
    with open(path, "w") as f:
        f.write("\n".join(lines))


def write_runs(path: str, sections: Sequence) -> None:
    """The runs behind the tables, for sections that keep them (``run_records``): each with
    its config, command and final metrics, so any row can be rerun."""
    import json

    runs = [r for s in sections for r in getattr(s, "run_records", [])]
    if runs:
        with open(path, "w") as f:
            json.dump({"command": command_line(), "runs": runs}, f, indent=1)


def _bar_color(name: str) -> str:
    if name.startswith("teacher"):
        return "#888888"
    if name.split(",")[0] in STATS_COLORS:
        return STATS_COLORS[name.split(",")[0]]
    return "#c44e52" if name.startswith("LumiNet") else "#4c72b0"


def write_chart(path: str, sections: Sequence) -> bool:
    """One bar panel per section with a ``chart()`` method (title, {label: values per seed});
    bars are means with std error bars, dots are the seeds. False if there is nothing to draw."""
    from luminet_det.visualize.plots import pyplot

    panels = [s.chart() for s in sections if hasattr(s, "chart")]
    if not panels:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels):
        names = list(data)
        vals = [[x for x in data[n] if x == x] for n in names]
        means = [statistics.mean(v) if v else 0 for v in vals]
        stds = [statistics.stdev(v) if len(v) > 1 else 0 for v in vals]
        ax.bar(range(len(names)), means, yerr=stds, color=[_bar_color(n) for n in names], capsize=4)
        for i, v in enumerate(vals):  # every seed, so the spread is visible
            ax.plot([i] * len(v), v, "k.", markersize=4)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_title(title)
        for i, (m, sd) in enumerate(zip(means, stds)):  # above the error bar
            ax.text(i, m + sd, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
