#!/usr/bin/env python
"""What the teacher's dtype and the step's host synchronisations cost on this CPU.

The built-in pair's architectures (configs/Digits-Detection/luminet_R50_R18.yaml: R-50-FPN
teacher, R-18-FPN student; random weights: only time is measured), one batch of 8 images of
128 px. For each MODEL.DISTILL.TEACHER_DTYPE (float32, bfloat16, float16): the teacher's
forward alone and one whole training step (LumiNet + KD + DKD, forward and backward), in
interleaved rounds so that every dtype sees the same machine load; ratios to float32 per
round, summarised by the median and quartiles. Also the host synchronisations of the step,
distilled minus the stock student's (``aten._local_scalar_dense``, as tests/test_sync.py).

    python benchmarks/precision_cpu.py [--rounds 7] [--name 2026-12-01-precision-cpu]

Writes benchmarks/results/<name>.md and <name>.runs.json.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import luminet_det.cli  # noqa: E402,F401  isort: skip  (a command: hides known dependency noise)
import torch  # noqa: E402

from benchmarks.results_io import commit as results_commit  # noqa: E402
from benchmarks.results_io import header  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "Digits-Detection", "luminet_R50_R18.yaml")
DTYPES = ("float32", "bfloat16", "float16")


def build(dtype: str, work: str, stock: bool = False):
    from detectron2.modeling import build_model

    from luminet_det import load_config

    cfg = load_config(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    teacher = os.path.join(work, "teacher.pth")
    if not os.path.isfile(teacher):
        from luminet_det.modeling import load_teacher_cfg

        tcfg = load_teacher_cfg(cfg.MODEL.DISTILL.TEACHER_CONFIG, [], "cpu")
        torch.manual_seed(1)
        torch.save({"model": build_model(tcfg).state_dict()}, teacher)
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher
    cfg.MODEL.DISTILL.LOSSES = ["luminet", "kd", "dkd"]
    cfg.MODEL.DISTILL.TEACHER_DTYPE = dtype
    if stock:
        cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    torch.manual_seed(0)
    return build_model(cfg).train()


def syncs(model, batch) -> int:
    from detectron2.utils.events import EventStorage
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Count.n += 1
            return func(*args, **(kwargs or {}))

    with EventStorage(5), Count():
        torch.manual_seed(0)
        sum(model(batch).values()).backward()
    return Count.n


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    from detectron2.utils.events import EventStorage

    from luminet_det.testing import toy_batch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--name", default=f"{datetime.date.today().isoformat()}-precision-cpu")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    start = time.time()
    batch = toy_batch(8, 128, 10, boxes_per_image=3, seed=0)
    with tempfile.TemporaryDirectory(prefix="luminet_precision_") as work:  # the teacher's file
        models = {d: build(d, work) for d in DTYPES}
        stock_syncs = syncs(build("float32", work, stock=True), batch)
    sync_counts = {d: syncs(m, batch) - stock_syncs for d, m in models.items()}
    teacher, step = {d: [] for d in DTYPES}, {d: [] for d in DTYPES}
    with EventStorage(5):
        _, record = models["float32"].forward_student(batch)
        for r in range(args.rounds + 1):  # round 0: warm-up, not kept
            for d, model in models.items():
                t = timed(lambda: model.teacher_outputs(batch, record))

                def one_step(model=model):
                    torch.manual_seed(0)
                    sum(model(batch).values()).backward()

                s = timed(one_step)
                if r:
                    teacher[d].append(t)
                    step[d].append(s)
            print(f"round {r}/{args.rounds}", flush=True)

    def summary(values):
        q = statistics.quantiles(values, n=4)
        return statistics.median(values), q[0], q[2]

    rows = []
    for d in DTYPES:
        t_ratio = summary([a / b for a, b in zip(teacher[d], teacher["float32"])])
        s_ratio = summary([a / b for a, b in zip(step[d], step["float32"])])
        rows.append(
            {
                "dtype": d,
                "teacher_ms": 1000 * statistics.median(teacher[d]),
                "step_ms": 1000 * statistics.median(step[d]),
                "teacher_ratio": t_ratio,
                "step_ratio": s_ratio,
                "syncs_added": sync_counts[d],
                "teacher_s": teacher[d],
                "step_s": step[d],
            }
        )
    commit = results_commit()
    command = f"python benchmarks/precision_cpu.py --rounds {args.rounds} --name {args.name}"
    fmt = "{:.2f} [{:.2f}, {:.2f}]".format
    lines = [
        *header(args.name, commit, command, start, f", {torch.get_num_threads()} threads"),
        "",
        "## The teacher's dtype on CPU (MODEL.DISTILL.TEACHER_DTYPE)",
        "",
        "R-50-FPN teacher, R-18-FPN student (the built-in pair's architectures, random weights), "
        "8 images of 128 px, LumiNet + KD + DKD. Times: medians over rounds; ratios to float32 "
        "per round, median [q1, q3]. Host syncs: one step (forward + backward), distilled minus "
        "the stock student's.",
        "",
        "| teacher dtype | teacher forward ms | ÷ float32 | whole step ms | ÷ float32 "
        "| host syncs added |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['teacher_ms']:.0f} | {fmt(*r['teacher_ratio'])} | "
            f"{r['step_ms']:.0f} | {fmt(*r['step_ratio'])} | {r['syncs_added']} |"
        )
    record = {"command": command, "commit": commit}
    write_results(args.results, args.name, lines, record, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
