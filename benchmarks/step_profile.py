#!/usr/bin/env python
"""Where a training step of the built-in detectors spends its time on this CPU.

Real training steps (the built-in set's batches of 8 images of 128 px, from random weights,
after warm-up steps) of the demo's models: the R-50-FPN teacher (teacher_R_50_FPN.yaml) and the
R-18-FPN student alone (student_R_18_FPN.yaml), at 1 and 2 threads and at two RPN pre-NMS
sizes (``MODEL.RPN.PRE_NMS_TOPK_TRAIN`` 1000 and 250 boxes per level). Each step is split into
loading the batch, the forward of the backbone, of the RPN (and, inside it, the NMS of its
proposals) and of the ROI heads, the backward and the optimizer's step (with the configs'
gradient clipping). Settings are measured in interleaved rounds so that each sees the same
machine load; times are medians over rounds.

    python benchmarks/step_profile.py [--steps 8] [--rounds 3] [--name 2026-12-02-step-profile]

Writes benchmarks/results/<name>.md and <name>.runs.json.
"""

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import time
from typing import Dict, List

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import luminet_det.cli  # noqa: E402,F401  isort: skip  (a command: hides known dependency noise)
import torch  # noqa: E402

from benchmarks.results_io import command_line  # noqa: E402
from benchmarks.results_io import header  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from benchmarks.results_io import commit as results_commit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "Digits-Detection")
MODELS = {"teacher R-50-FPN": "teacher_R_50_FPN.yaml", "student R-18-FPN": "student_R_18_FPN.yaml"}
PHASES = ("data", "backbone", "rpn", "nms", "roi_heads", "backward", "optimizer")


class Timer:
    """Adds the wall time of the forwards of a model's backbone, proposal generator and ROI
    heads, and of torchvision's batched NMS (the RPN's proposals), to ``self.s``."""

    def __init__(self, model: torch.nn.Module):
        self.s: Dict[str, float] = {}
        for name, key in (
            ("backbone", "backbone"),
            ("proposal_generator", "rpn"),
            ("roi_heads", "roi_heads"),
        ):
            module = getattr(model, name)
            module.register_forward_pre_hook(self._start(key))
            module.register_forward_hook(self._stop(key))

    def _start(self, key):
        def hook(*_):
            self.s["_" + key] = time.perf_counter()

        return hook

    def _stop(self, key):
        def hook(*_):
            self.add(key, time.perf_counter() - self.s["_" + key])

        return hook

    def add(self, key: str, seconds: float) -> None:
        self.s[key] = self.s.get(key, 0.0) + seconds

    @contextlib.contextmanager
    def nms(self):
        """Time detectron2's ``batched_nms`` (the RPN's) while inside."""
        from detectron2.modeling.proposal_generator import proposal_utils

        original = proposal_utils.batched_nms

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            self.add("nms", time.perf_counter() - start)
            return out

        proposal_utils.batched_nms = timed
        try:
            yield
        finally:
            proposal_utils.batched_nms = original


class Setting:
    """One model at one pre-NMS size: its model, optimizer and data iterator (the trainer's)."""

    def __init__(self, config: str, pre_nms: int):
        from detectron2.engine import DefaultTrainer

        from luminet_det import load_config

        cfg = load_config(os.path.join(CONFIGS, config))
        cfg.MODEL.DEVICE = "cpu"
        cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = pre_nms
        torch.manual_seed(0)
        self.model = DefaultTrainer.build_model(cfg).train()
        self.optimizer = DefaultTrainer.build_optimizer(cfg, self.model)
        self.data = iter(DefaultTrainer.build_train_loader(cfg))
        self.timer = Timer(self.model)

    def step(self) -> Dict[str, float]:
        """One training step; seconds per phase and in all (``step``)."""
        timer = self.timer
        timer.s = {}
        start = time.perf_counter()
        batch = next(self.data)
        loaded = time.perf_counter()
        with timer.nms():
            loss = sum(self.model(batch).values())
        forward = time.perf_counter()
        self.optimizer.zero_grad()
        loss.backward()
        backward = time.perf_counter()
        self.optimizer.step()
        end = time.perf_counter()
        times = {k: v for k, v in timer.s.items() if not k.startswith("_")}
        times.update(
            data=loaded - start,
            backward=backward - forward,
            optimizer=end - backward,
            step=end - start,
        )
        return times


def measure(steps: int, rounds: int, threads=(2, 1), pre_nms=(1000, 250)) -> List[Dict]:
    """Per (model, threads, pre-NMS size): median seconds per phase and per step over
    ``rounds`` interleaved rounds of ``steps`` steps (each round after 2 warm-up steps)."""
    from detectron2.utils.events import EventStorage

    settings = {(m, n): Setting(c, n) for m, c in MODELS.items() for n in pre_nms}
    samples: Dict = {(m, t, n): [] for m in MODELS for t in threads for n in pre_nms}
    with EventStorage(0):
        for r in range(rounds):
            for (model, n), setting in settings.items():
                for t in threads:
                    torch.set_num_threads(t)
                    for _ in range(2):
                        setting.step()
                    samples[(model, t, n)] += [setting.step() for _ in range(steps)]
            print(f"round {r + 1}/{rounds}", flush=True)
    rows = []
    for (model, t, n), steps_ in samples.items():
        row = {"model": model, "threads": t, "pre_nms_topk_train": n, "steps": len(steps_)}
        for key in ("step",) + PHASES:
            row[key + "_ms"] = 1000 * statistics.median(s.get(key, 0.0) for s in steps_)
        rows.append(row)
    return rows


def top_ops(config: str, pre_nms: int, threads: int, steps: int, n: int = 12) -> List[Dict]:
    """The ``n`` operators with the most self time (torch.profiler) over ``steps`` training
    steps of one setting, after 2 warm-up steps: name, milliseconds per step, share of the
    profiled time."""
    from detectron2.utils.events import EventStorage
    from torch.profiler import ProfilerActivity, profile

    setting = Setting(config, pre_nms)
    torch.set_num_threads(threads)
    with EventStorage(0):
        for _ in range(2):
            setting.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                setting.step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "op": e.key,
            "ms_per_step": e.self_cpu_time_total / 1000 / steps,
            "share": e.self_cpu_time_total / total,
        }
        for e in events[:n]
    ]


def table(rows: List[Dict]) -> List[str]:
    lines = [
        "| model | threads | pre-NMS per level | step ms | data | backbone fwd | RPN fwd "
        "(of it NMS) | ROI heads fwd | backward | optimizer |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['pre_nms_topk_train']} | "
            f"{r['step_ms']:.0f} | {r['data_ms']:.0f} | {r['backbone_ms']:.0f} | "
            f"{r['rpn_ms']:.0f} ({r['nms_ms']:.0f}) | {r['roi_heads_ms']:.0f} | "
            f"{r['backward_ms']:.0f} | {r['optimizer_ms']:.0f} |"
        )
    return lines


def ratios(rows: List[Dict]) -> List[str]:
    """Readings: the speed-up of a second thread and of the smaller pre-NMS size."""
    by = {(r["model"], r["threads"], r["pre_nms_topk_train"]): r["step_ms"] for r in rows}
    lines = []
    for model in MODELS:
        one, two = by[(model, 1, 1000)], by[(model, 2, 1000)]
        small = by[(model, 2, 250)]
        lines.append(
            f"- {model}: a second thread makes the step {one / two:.2f}× faster "
            f"({one:.0f} → {two:.0f} ms); pre-NMS 250 instead of 1000 (2 threads) "
            f"{two / small:.2f}× ({two:.0f} → {small:.0f} ms)."
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="measured steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default=f"{datetime.date.today().isoformat()}-step-profile")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    start = time.time()
    from luminet_det.data import digits_root
    from luminet_det.data.digits import generate_digits_detection, is_generated

    if not is_generated(digits_root()):
        generate_digits_detection(digits_root())
    rows = measure(args.steps, args.rounds)
    ops = top_ops("teacher_R_50_FPN.yaml", 250, 2, args.steps)
    commit = results_commit()
    lines = [
        *header(args.name, commit, command_line(), start),
        "",
        "## Where a training step's time goes (CPU)",
        "",
        "Training steps from random weights on the built-in set (8 images of 128 px), medians "
        f"over {args.rounds} interleaved rounds of {args.steps} steps, milliseconds. The RPN's "
        "NMS (torchvision's, single-threaded) is part of the RPN forward; the backward "
        "includes ROIAlign's (single-threaded) and the optimizer the per-parameter gradient "
        "clipping of the configs.",
        "",
        *table(rows),
        "",
        *ratios(rows),
        "",
        "## The teacher's step by operator (2 threads, pre-NMS 250)",
        "",
        f"torch.profiler over {args.steps} steps (self time; the profiler's own cost included): "
        "the operators with the most time, per step and as a share of all operators' time.",
        "",
        "| operator | ms per step | share |",
        "|---|---|---|",
        *(f"| `{o['op']}` | {o['ms_per_step']:.1f} | {100 * o['share']:.1f} % |" for o in ops),
    ]
    record = {"command": command_line(), "commit": commit, "teacher_top_ops": ops}
    write_results(args.results, args.name, lines, record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
