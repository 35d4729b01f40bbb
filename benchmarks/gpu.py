#!/usr/bin/env python
"""The GPU benchmark at COCO scale with random weights (scripts/gpu_check.sh runs it).

Faster R-CNN R-101-FPN teacher -> R-18-FPN student and RetinaNet R-101-FPN -> R-18-FPN, the
repository's COCO configs (80 classes), 2 images of 800 x 1333 per step. For each
configuration: the median step time (forward + backward + optimizer step, CUDA synchronised
around each step), the peak memory (``torch.cuda.max_memory_allocated``), the host
synchronisations of one step's forward and backward (``aten._local_scalar_dense``, counted as
tests/test_sync.py does) and the teacher's forward time alone; then the distillation overhead
over the student alone as a ratio of the teacher's forward time. Student alone, KD, DKD,
LumiNet and LumiNet + ReviewKD in float32; LumiNet also with AMP and with each teacher dtype.

    python benchmarks/gpu.py [--steps 10] [--name 2026-12-01-gpu]

Writes benchmarks/results/<name>.md and <name>.runs.json. Stops with a clear message, at once,
where there is no CUDA device.
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
from benchmarks.results_io import write_results  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO = os.path.join(ROOT, "configs", "COCO-Detection")
PAIRS = {
    "faster_rcnn": ("luminet_r101_r18.yaml", "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"),
    "retinanet": (
        "luminet_retinanet_r101_r18.yaml",
        "COCO-Detection/retinanet_R_101_FPN_3x.yaml",
    ),
}
#: (pair, label, losses, AMP, teacher dtype)
CONFIGS = [
    ("faster_rcnn", "student alone", [], False, "float32"),
    ("faster_rcnn", "KD", ["kd"], False, "float32"),
    ("faster_rcnn", "DKD", ["dkd"], False, "float32"),
    ("faster_rcnn", "LumiNet", ["luminet"], False, "float32"),
    ("faster_rcnn", "LumiNet + ReviewKD", ["luminet", "reviewkd"], False, "float32"),
    ("faster_rcnn", "LumiNet, teacher bf16", ["luminet"], False, "bfloat16"),
    ("faster_rcnn", "LumiNet, teacher fp16", ["luminet"], False, "float16"),
    ("faster_rcnn", "student alone, AMP", [], True, "float32"),
    ("faster_rcnn", "LumiNet, AMP", ["luminet"], True, "float32"),
    ("faster_rcnn", "LumiNet, AMP, teacher bf16", ["luminet"], True, "bfloat16"),
    ("retinanet", "student alone", [], False, "float32"),
    ("retinanet", "KD", ["kd"], False, "float32"),
    ("retinanet", "LumiNet", ["luminet"], False, "float32"),
    ("retinanet", "LumiNet, teacher bf16", ["luminet"], False, "bfloat16"),
    ("retinanet", "LumiNet, AMP", ["luminet"], True, "float32"),
]


def log(message: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {message}", flush=True)


def inputs(images: int = 2, seed: int = 0):
    """Random 800 x 1333 images with 8 random boxes each, as DatasetMapper gives them."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(images):
        wh = torch.rand(8, 2, generator=g) * torch.tensor([400.0, 300.0]) + 32
        xy = torch.rand(8, 2, generator=g) * (torch.tensor([1333.0, 800.0]) - wh)
        inst = Instances((800, 1333))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, 80, (8,), generator=g)
        image = (torch.rand(3, 800, 1333, generator=g) * 255).cuda()
        out.append({"image": image, "instances": inst, "height": 800, "width": 1333})
    return out


def teacher_weights(pair: str, work: str) -> str:
    """Random weights of the pair's zoo teacher architecture, saved once (a teacher must be
    loaded from a file)."""
    from detectron2 import model_zoo
    from detectron2.modeling import build_model

    path = os.path.join(work, f"{pair}_teacher.pth")
    if not os.path.isfile(path):
        cfg = model_zoo.get_config(PAIRS[pair][1])
        cfg.MODEL.DEVICE = "cpu"
        torch.save({"model": build_model(cfg).state_dict()}, path)
    return path


def build(pair: str, losses, dtype: str, work: str):
    from detectron2.modeling import build_model

    from luminet_det import load_config

    config, teacher = PAIRS[pair]
    cfg = load_config(os.path.join(COCO, config))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher_weights(pair, work)
    cfg.MODEL.DISTILL.LOSSES = list(losses)
    cfg.MODEL.DISTILL.WARMUP_ITERS = 0
    cfg.MODEL.DISTILL.TEACHER_DTYPE = dtype
    if not losses:  # the student alone: the stock model, no teacher on the GPU
        from luminet_det.config import TEACHER_ARCHITECTURE

        cfg.MODEL.META_ARCHITECTURE = TEACHER_ARCHITECTURE[cfg.MODEL.META_ARCHITECTURE]
    torch.manual_seed(0)
    model = build_model(cfg).train()
    return model


def measure(model, batch, steps: int, amp: bool) -> dict:
    from detectron2.utils.events import EventStorage
    from torch.utils._python_dispatch import TorchDispatchMode

    class Syncs(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                Syncs.count += 1
            return func(*args, **(kwargs or {}))

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    times = []
    torch.cuda.reset_peak_memory_stats()
    with EventStorage(5):  # a non-logging iteration
        for step in range(steps + 3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                losses = model(batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(sum(losses.values())).backward()
            scaler.step(opt)
            scaler.update()
            torch.cuda.synchronize()
            if step >= 3:  # warm-up steps: cuDNN autotuning, allocator
                times.append(time.perf_counter() - start)
        with Syncs():
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                losses = model(batch)
            sum(losses.values()).backward()
        teacher_times = []
        if getattr(model, "distilling", False):
            _, record = model.forward_student(batch)
            for _ in range(5):
                torch.cuda.synchronize()
                start = time.perf_counter()
                model.teacher_outputs(batch, record)
                torch.cuda.synchronize()
                teacher_times.append(time.perf_counter() - start)
    return {
        "step_ms": 1000 * statistics.median(times),
        "step_ms_q1_q3": [1000 * q for q in statistics.quantiles(times, n=4)[::2]],
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
        "syncs": Syncs.count,
        "teacher_ms": 1000 * statistics.median(teacher_times) if teacher_times else None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    parser.add_argument("--name", default=f"{datetime.date.today().isoformat()}-gpu")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "error: benchmarks/gpu.py needs a CUDA GPU and torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a GPU "
            "machine (scripts/gpu_check.sh).",
            file=sys.stderr,
        )
        return 2
    start = time.time()
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory(prefix="luminet_gpu_") as work:  # teachers' files
        batch = inputs()
        rows = []
        for i, (pair, label, losses, amp, dtype) in enumerate(CONFIGS):
            eta = (time.time() - start) / i * (len(CONFIGS) - i) if i else float("nan")
            log(f"{i + 1}/{len(CONFIGS)} {pair}: {label} (eta {eta:.0f} s)")
            model = build(pair, losses, dtype, work)
            result = measure(model, batch, args.steps, amp)
            rows.append(
                {"pair": pair, "label": label, "losses": losses, "amp": amp, "dtype": dtype}
            )
            rows[-1].update(result)
            log(
                f"   {result['step_ms']:.1f} ms/step, {result['peak_mb']:.0f} MB, "
                f"{result['syncs']} syncs"
            )
            del model
            torch.cuda.empty_cache()
    # overhead over the student alone (same pair, same AMP), as a ratio of the teacher forward
    for row in rows:
        alone = next(
            r
            for r in rows
            if r["pair"] == row["pair"] and not r["losses"] and r["amp"] == row["amp"]
        )
        row["alone_syncs"] = alone["syncs"]
        if row["losses"] and row["teacher_ms"]:
            row["overhead_vs_teacher"] = (row["step_ms"] - alone["step_ms"]) / row["teacher_ms"]
    write(args, rows, time.time() - start)
    return 0


def write(args, rows, seconds: float) -> None:
    commit = results_commit()
    command = f"python benchmarks/gpu.py --steps {args.steps} --name {args.name}"
    props = torch.cuda.get_device_properties(0)
    import detectron2

    lines = [
        f"# Benchmark: {args.name}",
        "",
        f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}",
        f"- torch {torch.__version__}, detectron2 {detectron2.__version__}, commit {commit}",
        f"- command: `{command}`",
        f"- wall time: {seconds / 60:.1f} min",
        "",
        "COCO-scale random weights: 2 images of 800 x 1333 per step, 80 classes. Median step "
        "(forward, backward, SGD step) over the timed steps after 3 warm-up steps; peak "
        "memory; host syncs of one step's forward and backward (distilled minus the student "
        "alone's); the teacher's forward alone; overhead = (step - student alone's step) / "
        "the teacher's forward.",
        "",
        "| pair | configuration | AMP | teacher | step ms | peak MB | syncs added | teacher ms "
        "| overhead ÷ teacher |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        teacher = f"{r['teacher_ms']:.1f}" if r["teacher_ms"] else "-"
        overhead = f"{r['overhead_vs_teacher']:.2f}" if r.get("overhead_vs_teacher") else "-"
        lines.append(
            f"| {r['pair']} | {r['label']} | {'on' if r['amp'] else 'off'} | {r['dtype']} | "
            f"{r['step_ms']:.1f} | {r['peak_mb']:.0f} | {r['syncs'] - r['alone_syncs']} | "
            f"{teacher} | {overhead} |"
        )
    kd = next(r for r in rows if r["pair"] == "faster_rcnn" and r["label"] == "KD")
    lum = next(r for r in rows if r["pair"] == "faster_rcnn" and r["label"] == "LumiNet")
    bf16 = next(
        r for r in rows if r["label"] == "LumiNet, teacher bf16" and r["pair"] == "faster_rcnn"
    )
    lines += [
        "",
        "Goals (ratios from this run): LumiNet step / KD step = "
        f"{lum['step_ms'] / kd['step_ms']:.3f} (goal <= 1.02); LumiNet overhead / teacher "
        f"forward = {lum['overhead_vs_teacher']:.2f} (goal <= 1.1); with a bfloat16 teacher the "
        f"overhead is {bf16['step_ms'] - rows[0]['step_ms']:.1f} ms against "
        f"{lum['step_ms'] - rows[0]['step_ms']:.1f} ms (goal: a third lower).",
    ]
    record = {"command": command, "commit": commit}
    write_results(args.results, args.name, lines, record, rows)


if __name__ == "__main__":
    sys.exit(main())
