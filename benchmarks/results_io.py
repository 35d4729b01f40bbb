"""Writing a results file: the commit it ran at, paths as it prints them, how a run's model was
trained, ``<name>.md`` and ``<name>.runs.json``. Shared by benchmarks/run.py and the
stand-alone measurements (dense_rows, luminet_scale, precision_cpu, gpu)."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line() -> str:
    """This process's command line, quoted so that it can be pasted back into a shell."""
    return shlex.join(["python", *sys.argv])


def commit() -> str:
    """The repository's short commit hash, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def header(name: str, commit: str, command: str, start: float, machine: str = "") -> List[str]:
    """The opening lines of a stand-alone measurement's results file: its name, the date, the
    machine (cores and torch, then ``machine``), ``commit``, ``command`` and the wall time since
    ``start`` (a ``time.time()``)."""
    import torch

    return [
        f"# Benchmark: {name}",
        "",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- machine: {os.cpu_count()} cores, torch {torch.__version__}{machine}",
        f"- commit: {commit}",
        f"- command: `{command}`",
        f"- wall time: {(time.time() - start) / 60:.1f} min",
    ]


def write_results(
    results: str, name: str, lines: Sequence[str], record: Dict, runs: List[Dict]
) -> None:
    """Write ``results/name.md`` (``lines``) and ``results/name.runs.json`` (``record``, e.g.
    command and commit, plus ``runs``), then print the Markdown."""
    os.makedirs(results, exist_ok=True)
    md = os.path.join(results, f"{name}.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(results, f"{name}.runs.json"), "w") as f:
        json.dump({**record, "runs": runs}, f, indent=1)
    print(open(md).read())


def rel(path: str) -> str:
    """``path`` relative to the repository (as the results files print it)."""
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def recipe(output_dir: str) -> str:
    """How the model in ``output_dir`` was trained, read from the ``config.yaml`` detectron2
    saved there (a YAML or a LazyConfig run), e.g. "600 iterations of 8 images at LR 0.02
    (÷10 at 500), from scratch": results files say which teacher they used (a cached teacher
    may predate a change of its config)."""
    import yaml

    path = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(path):
        return f"recipe unknown (no {rel(path)})"

    class Loader(yaml.SafeLoader):  # a LazyConfig dump names Python objects: not needed here
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda *_: None)
    with open(path) as f:
        cfg = yaml.load(f, Loader=Loader)
    if "SOLVER" in cfg:  # a YAML (CfgNode) run
        solver, init = cfg["SOLVER"], cfg["MODEL"]["WEIGHTS"]
        iters, images, lr = solver["MAX_ITER"], solver["IMS_PER_BATCH"], solver["BASE_LR"]
        steps = [s for s in solver["STEPS"] if s < iters]
    else:  # a LazyConfig run: its scheduler's milestones are not read here
        iters, init = cfg["train"]["max_iter"], cfg["train"]["init_checkpoint"]
        images, lr = cfg["dataloader"]["train"]["total_batch_size"], cfg["optimizer"]["lr"]
        steps = []
    drops = f" (÷10 at {', '.join(map(str, steps))})" if steps else ""
    start = f"from {rel(init)}" if init else "from scratch"
    return f"{iters} iterations of {images} images at LR {lr:g}{drops}, {start}"
