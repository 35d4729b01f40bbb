"""The classification runs of the benchmarks (luminet_det.cls, in this process): one student
run, a teacher trained once and reused, the ``--quick`` overrides, and each run's command line
as the results files print it."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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


def _one_thread() -> None:
    """Initialiser of :func:`train_many`'s worker processes: torch on one thread each."""
    import torch

    torch.set_num_threads(1)


def train_many(
    jobs: Sequence[Tuple[str, Sequence[str]]],
    quick: bool,
    workers: int = 1,
    done: Optional[Callable[[int, Dict[str, float]], None]] = None,
    train: Callable[[str, Sequence[str], bool], Dict[str, float]] = train_cls,
) -> List[Dict[str, float]]:
    """Train every ``(config, overrides)`` of ``jobs`` with ``train`` (:func:`train_cls`) and
    return their metrics in the order of ``jobs``. ``workers`` > 1 trains that many at once, in
    spawned processes with torch on one thread each (on a small CPU, several one-thread runs
    of these small models finish more runs per hour than one run on every core). ``done(index,
    metrics)`` is called as each run finishes; the log gives the progress and an ETA. The first
    run that fails raises (the runs still queued are cancelled)."""
    if workers < 1:
        raise ValueError(f"workers={workers}: must be at least 1")
    start, results = time.time(), [None] * len(jobs)

    def finished(i: int, metrics: Dict[str, float]) -> None:
        results[i] = metrics
        n = sum(r is not None for r in results)
        eta = (time.time() - start) / n * (len(jobs) - n)
        log(f"{n}/{len(jobs)} runs done, ETA {eta / 60:.0f} min")
        if done is not None:
            done(i, metrics)

    if workers == 1:
        for i, (config, overrides) in enumerate(jobs):
            finished(i, train(config, list(overrides), quick))
        return results
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        futures = {pool.submit(train, c, list(o), quick): i for i, (c, o) in enumerate(jobs)}
        try:
            for future in as_completed(futures):
                finished(futures[future], future.result())
        except BaseException:
            pool.shutdown(cancel_futures=True)  # drop the queued runs; running ones finish
            raise
    return results


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
