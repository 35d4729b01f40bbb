"""Cost of one DistillRCNN training step per method, the teacher's share, and peak memory.

The memory of each configuration is measured in a fresh process:
``python -m benchmarks.step_cost LOSS [LOSS ...] --weights W [--quick]`` prints ``MB <value>``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from .common import (
    METHODS,
    ROOT,
    distill_cfg,
    fmt,
    in_fresh_process,
    stand_in_teacher,
    summary,
)

#: targets: LumiNet step ÷ KD step, and LumiNet's overhead over the student alone ÷ teacher share
TARGET_VS_KD, TARGET_OVERHEAD = 1.02, 1.1


@dataclass
class StepCost:
    """rows: per configuration ``config``, ``s``, ``vs_student``, ``vs_kd`` summaries;
    overhead: summary of (LumiNet step - student step) / teacher's share; memory: config ->
    peak MB added by 3 steps (or None when not measured)."""

    rows: List[Dict]
    overhead: Dict[str, float]
    memory: Optional[Dict[str, float]] = None

    def markdown(self) -> List[str]:
        lines = [
            "## Cost of one training step (DistillRCNN, R-50-FPN teacher → R-18-FPN student)",
            "",
            "| configuration | step time (s) | ÷ student alone | ÷ KD step | step memory (MB) |",
            "|---|---|---|---|---|",
        ]
        for r in self.rows:
            mem = (self.memory or {}).get(r["config"])
            lines.append(
                f"| {r['config']} | {fmt(r['s'])} | {fmt(r['vs_student'])} | {fmt(r['vs_kd'])} | "
                f"{f'{mem:.0f}' if mem else '-'} |"
            )
        lu = next(r for r in self.rows if r["config"] == "LumiNet")["vs_kd"]["median"]
        o = self.overhead
        return lines + [
            "",
            f"Target LumiNet step ≤ {TARGET_VS_KD}× KD step: {lu:.3f}× "
            f"({'met' if lu <= TARGET_VS_KD else 'NOT met'}).",
            f"Target LumiNet overhead over the student alone ≤ {TARGET_OVERHEAD}× the teacher's "
            f"share: {o['median']:.2f}× [{o['q1']:.2f}, {o['q3']:.2f}] "
            f"({'met' if o['median'] <= TARGET_OVERHEAD else 'NOT met'}).",
            "",
        ]


def _inputs(quick: bool):
    from luminet_det.testing import toy_batch

    images, size = (2, 64) if quick else (8, 128)
    return toy_batch(images, size, num_classes=10, boxes_per_image=3)


def run(repeats: int, quick: bool, work: str) -> StepCost:
    """Time a training step of every method, interleaved, and the teacher's share (its
    backbone and box head on the student's proposals, through DistillRCNN's public seam)."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    weights = stand_in_teacher(work, quick)
    inputs = _inputs(quick)
    models = {}
    for method in METHODS:
        torch.manual_seed(0)
        m = build_model(distill_cfg(method.losses, weights, quick))
        m.train()
        params = [p for p in m.parameters() if p.requires_grad]
        models[method.name] = (m, torch.optim.SGD(params, lr=1e-4))
    times = {name: [] for name in models}
    times["teacher alone"] = []
    luminet = models["LumiNet"][0]
    with EventStorage(10_000):
        for r in range(repeats + 2):  # the first two rounds warm up
            for name, (m, opt) in models.items():
                torch.manual_seed(r)
                t0 = time.perf_counter()
                loss = sum(m(inputs).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                if r >= 2:
                    times[name].append(time.perf_counter() - t0)
            _, record = luminet.forward_student(inputs)
            t0 = time.perf_counter()
            luminet.teacher_outputs(inputs, record)
            if r >= 2:
                times["teacher alone"].append(time.perf_counter() - t0)
    student, kd = times["student alone"], times["KD"]
    rows = [
        {
            "config": name,
            "s": summary(ts),
            "vs_student": summary([a / b for a, b in zip(ts, student)]),
            "vs_kd": summary([a / b for a, b in zip(ts, kd)]),
        }
        for name, ts in times.items()
    ]
    overhead = [
        (lu - st) / te for lu, st, te in zip(times["LumiNet"], student, times["teacher alone"])
    ]
    return StepCost(rows, summary(overhead))


def measure_memory(quick: bool, work: str) -> Dict[str, float]:
    """Per method, the peak resident memory (MB) that 3 training steps add to the built model,
    each in its own process."""
    weights = stand_in_teacher(work, quick)
    out = {}
    for method in METHODS:
        if quick:  # toy sizes: a process forked from one that has the imports done
            out[method.name] = in_fresh_process(_memory_worker, list(method.losses), weights, True)
            continue
        cmd = [sys.executable, "-W", "ignore", "-m", "benchmarks.step_cost", *method.losses]
        cmd += ["--weights", weights]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = [x for x in proc.stdout.splitlines() if x.startswith("MB ")]
        if not line:
            raise RuntimeError(f"memory worker for {method.name} failed:\n{proc.stderr[-2000:]}")
        out[method.name] = float(line[0].split()[1])
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_worker(losses: List[str], weights: str, quick: bool) -> float:
    """The peak resident memory (MB) added by 3 training steps over the built model, sampled
    every 2 ms (the process's own peak is dominated by loading torch)."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    m = build_model(distill_cfg(losses, weights, quick))
    m.train()
    inputs = _inputs(quick)
    base, peak, stop = _rss_mb(), [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with EventStorage(10_000):
        for _ in range(3):
            sum(m(inputs).values()).backward()
    stop.set()
    thread.join()
    return max(peak[0], _rss_mb()) - base


if __name__ == "__main__":
    import luminet_det.cli  # noqa: F401  (a command: hides the known dependency warnings)
    import luminet_det.modeling  # noqa: F401  (registers DistillRCNN)

    parser = argparse.ArgumentParser(description="memory of one configuration (MB on stdout)")
    parser.add_argument("losses", nargs="*")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print("MB", _memory_worker(args.losses, args.weights, args.quick))
