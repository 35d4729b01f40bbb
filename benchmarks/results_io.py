"""Writing a results file: the commit it ran at, ``<name>.md`` and ``<name>.runs.json``.
Shared by benchmarks/run.py and the stand-alone measurements (dense_rows, luminet_scale,
precision_cpu, gpu)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
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
