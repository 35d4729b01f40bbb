"""The classification runs of the benchmarks (luminet_det.cls, in this process): one student
run, a teacher trained once and reused, the ``--quick`` overrides, and each run's command line
as the results files print it."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

from .common import log, rel


def quick_cls(quick: bool) -> List[str]:
    """luminet_det.cls overrides of --quick runs: one epoch at a small LR (a one-epoch teacher
    gives wild logits), and no minimum top-1 for such a teacher."""
    if not quick:
        return []
    return [
        "SOLVER.EPOCHS=1",
        "SOLVER.LR_STEPS=[1]",
        "SOLVER.LR=0.005",
        "MODEL.TEACHER_MIN_TOP1=0.0",
    ]


def cls_command(
    config: str, overrides: Sequence[str], quick: bool, action: str = "train", checkpoint: str = ""
) -> str:
    """The ``python -m luminet_det.cls`` command of one run (``action`` ``train`` with
    :func:`quick_cls`'s overrides when ``quick``, or ``probe`` of ``checkpoint``), as it runs
    from the repository (paths relative to it)."""
    head = f"python -m luminet_det.cls {action} --config {rel(config)}"
    head += f" --checkpoint {rel(checkpoint)}" if checkpoint else ""
    args = [f"{k}={rel(v)}" for k, v in (o.split("=", 1) for o in overrides)]
    return " ".join([head, *args, *(quick_cls(quick) if action == "train" else [])])


def train_cls(config: str, overrides: Sequence[str], quick: bool) -> Dict[str, float]:
    """Train one luminet_det.cls run (``config`` with ``overrides``) and return its final
    validation metrics."""
    from luminet_det.cls import Trainer, load_config

    cfg = load_config(config, list(overrides) + quick_cls(quick))
    return Trainer(cfg, progress=False).train()


def cls_teacher(
    config: str, out_dir: str, quick: bool, label: str, overrides: Sequence[str] = ()
) -> Tuple[str, Dict]:
    """(best.pth, its validation metrics) of the classification teacher ``config`` (with
    ``overrides``) trained into ``out_dir``; trained first if absent (a finished teacher is
    reused)."""
    from luminet_det.runio import load_checkpoint

    best = os.path.join(out_dir, "best.pth")
    if not os.path.isfile(best):
        log(f"{label}: training the teacher ({os.path.basename(config)})")
        train_cls(config, [f"OUTPUT_DIR={out_dir}", *overrides], quick)
    return best, load_checkpoint(best)["metrics"]
