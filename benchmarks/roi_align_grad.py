#!/usr/bin/env python
"""ROIAlign's CPU input gradient: torchvision's loop against the matrix products of
luminet_det/modeling/roi_align.py (``MODEL.DISTILL.ROI_ALIGN_CPU_GRAD``), side by side.

Two measurements, each pair interleaved so that both see the same machine load:

1. the backward alone on the P2 level of an FPN (1/4 scale) for batches of 8 images of 128,
   256 and 512 px with 128 ROIs per image (sides 10-80 % of the image, as proposals of the
   built-in set span), 64 and 256 channels, 1 and 2 threads; with the cost rule's choice and
   the measured cost of one torchvision sampling point in multiply-adds of the products (what
   ``MACS_PER_POINT`` stands for);
2. whole training steps of the demo's teacher (R-50-FPN) and student (R-18-FPN) on the built-in
   set (8 images of 128 px) after ``--warmup`` steps from random weights, with their configs'
   pre-NMS sizes, at 1 and 2 threads.

    python benchmarks/roi_align_grad.py [--steps 8] [--rounds 3] [--warmup 30]

Writes benchmarks/results/<name>.md and <name>.runs.json.
"""

import argparse
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
MODES = ("torchvision", "matmul")
KERNEL_CASES = ((128, 64), (128, 256), (256, 64), (512, 64))
STEP_MODELS = {
    "teacher R-50-FPN": ("teacher_R_50_FPN.yaml", 250),
    "student R-18-FPN": ("student_R_18_FPN.yaml", 1000),
}


def kernel_inputs(image: int, channels: int, seed: int = 0):
    """(features, rois, upstream gradient) of one P2 level: 8 images, 128 ROIs each."""
    g = torch.Generator().manual_seed(seed)
    n, per_image, size = 8, 128, image // 4
    count = n * per_image
    wh = image * (0.1 + 0.7 * torch.rand(count, 2, generator=g))
    xy = (image - wh) * torch.rand(count, 2, generator=g)
    index = torch.arange(n).repeat_interleave(per_image).float()
    rois = torch.cat([index[:, None], xy, xy + wh], 1)
    x = torch.randn(n, channels, size, size, generator=g)
    return x, rois, torch.randn(count, channels, 7, 7, generator=g)


def backward_ms(mode: str, x, rois, grad_out, repeats: int) -> float:
    """Median milliseconds of the backward of one ROIAlign call (aligned, adaptive grid)."""
    from torchvision.ops import roi_align as tv_roi_align

    from luminet_det.modeling.roi_align import _MatmulGrad

    times = []
    for _ in range(repeats):
        inp = x.detach().requires_grad_()
        if mode == "matmul":
            out = _MatmulGrad.apply(inp, rois, (7, 7), 0.25, 0, True)
        else:
            out = tv_roi_align(inp, rois, (7, 7), 0.25, 0, True)
        start = time.perf_counter()
        out.backward(grad_out)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure_kernel(rounds: int, repeats: int = 5) -> List[Dict]:
    from luminet_det.modeling.roi_align import matmul_grad_pays, sampling_grid

    rows = []
    for image, channels in KERNEL_CASES:
        x, rois, grad_out = kernel_inputs(image, channels)
        n, c, h, w = x.shape
        gh, gw = sampling_grid(rois, (7, 7), 0.25, 0, True)
        points = c * 49 * float((gh * gw).sum())
        macs = float(rois.shape[0]) * 7 * c * w * (7 + h)
        pays = matmul_grad_pays(rois, tuple(x.shape), (7, 7), 0.25, 0, True)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            samples = {m: [] for m in MODES}
            for _ in range(rounds):
                for mode in MODES:
                    samples[mode].append(backward_ms(mode, x, rois, grad_out, repeats))
            tv, mm = (statistics.median(samples[m]) for m in MODES)
            rows.append(
                {
                    "image_px": image,
                    "channels": channels,
                    "map": f"{h}x{w}",
                    "threads": threads,
                    "torchvision_ms": tv,
                    "matmul_ms": mm,
                    "points": points,
                    "macs": macs,
                    "macs_per_point": (tv / points) / (mm / macs),
                    "rule_chooses_matmul": pays,
                }
            )
            print(
                f"kernel {image} px C {channels} {threads} thr: {tv:.0f} / {mm:.0f} ms", flush=True
            )
    return rows


def measure_steps(steps: int, rounds: int, warmup: int) -> List[Dict]:
    from detectron2.utils.events import EventStorage

    from benchmarks.step_profile import Setting
    from luminet_det.modeling.roi_align import use_matmul_roi_align_grad

    rows = []
    with EventStorage(0):
        for model, (config, pre_nms) in STEP_MODELS.items():
            settings = {}
            for mode in MODES:
                setting = settings[mode] = Setting(config, pre_nms)  # the same seed, weights
                if mode == "matmul":
                    use_matmul_roi_align_grad(setting.model)
                torch.set_num_threads(2)
                for _ in range(warmup):
                    setting.step()
            samples = {(t, m): [] for t in (1, 2) for m in MODES}
            for r in range(rounds):
                for threads in (2, 1):
                    torch.set_num_threads(threads)
                    for mode in MODES:
                        settings[mode].step()
                        samples[(threads, mode)] += [
                            settings[mode].step()["step"] for _ in range(steps)
                        ]
                print(f"{model}: round {r + 1}/{rounds}", flush=True)
            for threads in (2, 1):
                tv, mm = (1000 * statistics.median(samples[(threads, m)]) for m in MODES)
                rows.append(
                    {
                        "model": model,
                        "pre_nms_topk_train": pre_nms,
                        "threads": threads,
                        "steps": len(samples[(threads, "matmul")]),
                        "torchvision_step_ms": tv,
                        "matmul_step_ms": mm,
                    }
                )
    return rows


def report(kernel: List[Dict], steps: List[Dict], args) -> List[str]:
    from luminet_det.modeling.roi_align import MACS_PER_POINT

    lines = [
        "## The backward alone (P2 level, 8 images x 128 ROIs)",
        "",
        f"Medians over {args.rounds} interleaved rounds of 5 calls, milliseconds. 'MACs per "
        "point': one torchvision sampling point (per channel and bin) costs as much time as this "
        "many multiply-adds of the products; the cost rule chooses the products where their "
        f"multiply-adds are at most {MACS_PER_POINT} per point (and their buffer is small).",
        "",
        "| image px | channels | map | threads | torchvision ms | matmul ms | ratio | "
        "MACs per point | rule chooses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in kernel:
        lines.append(
            f"| {r['image_px']} | {r['channels']} | {r['map']} | {r['threads']} | "
            f"{r['torchvision_ms']:.0f} | {r['matmul_ms']:.0f} | "
            f"{r['torchvision_ms'] / r['matmul_ms']:.2f}× | {r['macs_per_point']:.0f} | "
            f"{'matmul' if r['rule_chooses_matmul'] else 'torchvision'} |"
        )
    lines += [
        "",
        "## Training steps of the demo's models (built-in set, 8 images of 128 px)",
        "",
        f"After {args.warmup} steps from random weights; medians over {args.rounds} interleaved "
        f"rounds of {args.steps} steps, milliseconds per step (data loading, forward, backward, "
        "optimizer).",
        "",
        "| model | pre-NMS per level | threads | torchvision ms | matmul ms | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for r in steps:
        lines.append(
            f"| {r['model']} | {r['pre_nms_topk_train']} | {r['threads']} | "
            f"{r['torchvision_step_ms']:.0f} | {r['matmul_step_ms']:.0f} | "
            f"{r['torchvision_step_ms'] / r['matmul_step_ms']:.2f}× |"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="measured steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30, help="steps before measuring")
    parser.add_argument("--name", default=f"{datetime.date.today().isoformat()}-roi-align-grad")
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args(argv)
    start = time.time()
    from luminet_det.data import digits_root
    from luminet_det.data.digits import generate_digits_detection, is_generated

    if not is_generated(digits_root()):
        generate_digits_detection(digits_root())
    kernel = measure_kernel(args.rounds)
    steps = measure_steps(args.steps, args.rounds, args.warmup)
    commit = results_commit()
    lines = [*header(args.name, commit, command_line(), start), "", *report(kernel, steps, args)]
    record = {"command": command_line(), "commit": commit, "kernel": kernel}
    write_results(args.results, args.name, lines, record, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
