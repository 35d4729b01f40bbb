#!/usr/bin/env python
"""Which way a high ECE points: each classification run of a results file, its final student
(``OUTPUT_DIR/last.pth``) evaluated again on its validation set, with its mean top probability
beside its top-1 (above: over-confident; below: under-confident) and ECE.

    python benchmarks/confidence.py benchmarks/results/2026-12-02-clsvit.runs.json

reads the runs' folders (still on disk: the benchmark's work folder) and writes
``<stem>-confidence.md`` and ``<stem>-confidence.runs.json`` beside the runs file.
"""

import argparse
import json
import os
import shlex
import sys
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from benchmarks.common import ROOT, mean_std  # noqa: E402
from benchmarks.report import header  # noqa: E402
from benchmarks.results_io import command_line  # noqa: E402


def config_and_overrides(command: str):
    """(config path, KEY=VALUE overrides) of a ``python -m luminet_det.cls train`` command."""
    args = shlex.split(command)
    if args[:4] != ["python", "-m", "luminet_det.cls", "train"] or args[4] != "--config":
        raise ValueError(f"Not a luminet_det.cls train command: {command!r}")
    return os.path.join(ROOT, args[5]), args[6:]


def measure(run: dict) -> dict:
    """The run's final student evaluated again: top1, ece and confidence (percent)."""
    from luminet_det.cls import load_config
    from luminet_det.cls.engine import evaluate_checkpoint

    config, overrides = config_and_overrides(run["command"])
    cfg = load_config(config, overrides)
    out = cfg.OUTPUT_DIR if os.path.isabs(cfg.OUTPUT_DIR) else os.path.join(ROOT, cfg.OUTPUT_DIR)
    metrics = evaluate_checkpoint(cfg, os.path.join(out, "last.pth"))
    return {k: metrics[k] for k in ("top1", "ece", "confidence")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", help="a benchmarks/results/<name>.runs.json")
    args = parser.parse_args(argv)
    if not args.runs.endswith(".runs.json"):
        parser.error(f"{args.runs!r} is not a results runs file: pass a <name>.runs.json")
    start = time.time()
    with open(args.runs) as f:
        runs = [r for r in json.load(f)["runs"] if "command" in r and "top1" in r]
    rows = []
    for r in runs:
        m = measure(r)
        if abs(m["top1"] - r["top1"]) > 1e-6:
            raise RuntimeError(
                f"{r['method']}, seed {r['seed']}: top-1 {m['top1']:.2f} now, {r['top1']:.2f} in "
                "the runs file: the folder holds another run's student."
            )
        rows.append({"method": r["method"], "seed": r["seed"], "command": r["command"], **m})
        print(f"{r['method']}, seed {r['seed']}: {m}", flush=True)
    stem = args.runs[: -len(".runs.json")] + "-confidence"
    lines = header(os.path.basename(stem), time.time() - start)
    lines += [
        f"The final students of [`{os.path.basename(args.runs)}`]({os.path.basename(args.runs)}) "
        "evaluated again on their validation set: mean top probability against top-1 (a "
        "positive gap: over-confident; negative: under-confident).",
        "",
        "| method | top-1 (%) | mean confidence (%) | confidence − top-1 | ECE (%) |",
        "|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        lines.append(
            f"| {method} | {mean_std([r['top1'] for r in mine])} | "
            f"{mean_std([r['confidence'] for r in mine])} | "
            f"{mean_std([r['confidence'] - r['top1'] for r in mine])} | "
            f"{mean_std([r['ece'] for r in mine])} |"
        )
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines + [""]))
    with open(stem + ".runs.json", "w") as f:
        json.dump({"command": command_line(), "runs": rows}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
