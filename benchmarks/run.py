#!/usr/bin/env python
"""What LumiNet costs and what it buys, side by side with KD and DKD (`make bench`).

Cost (CPU, one fixed batch, interleaved repeats; ratios are computed per round, then
summarised by median and inter-quartile range):
  * each loss alone on ROI-sized (1024 x 81) and ImageNet-sized (512 x 1000) logits,
    forward + backward;
  * one DistillRCNN training step (forward, backward, SGD step) with LOSSES [], [kd], [dkd],
    [luminet], [luminet, reviewkd], and the teacher's share of the work alone (its
    backbone and its box head on the student's proposals);
  * the peak resident memory that 3 such steps add to the built model, per configuration.
Accuracy:
  * built-in detection set: the teacher, and an R-18-FPN student alone / KD / DKD / LumiNet /
    LumiNet+ReviewKD, N seeds each, through tools/train_net.py (COCO box AP);
  * built-in classification set: resnet56 -> resnet8 with ce / kd / dkd / luminet, N seeds
    (top-1, ECE).
Every method gets the same hyper-parameter budget: one trial, the shipped config, never tuned
on the validation set.

Results go to benchmarks/results/<name>.md (date, machine, commit, command, tables) and
<name>.png (bar chart). `--quick` runs everything at toy sizes (used by the tests).
"""

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DIGITS = os.path.join(ROOT, "configs", "Digits-Detection")
METHODS = [
    ("student alone", []),
    ("KD", ["kd"]),
    ("DKD", ["dkd"]),
    ("LumiNet", ["luminet"]),
    ("LumiNet+ReviewKD", ["luminet", "reviewkd"]),
]
METHOD_CONFIGS = {
    "student alone": "student_R_18_FPN.yaml",
    "KD": "kd_R50_R18.yaml",
    "DKD": "dkd_R50_R18.yaml",
    "LumiNet": "luminet_R50_R18.yaml",
    "LumiNet+ReviewKD": "luminet_reviewkd_R50_R18.yaml",
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summary(values):
    values = sorted(values)
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "n": len(values)}


def fmt(s, scale=1.0, digits=2):
    return f"{s['median'] * scale:.{digits}f} [{s['q1'] * scale:.{digits}f}, {s['q3'] * scale:.{digits}f}]"


# ----------------------------------------------------------------------------- cost: losses
def bench_losses(repeats):
    from luminet_det.losses import dkd_loss, kd_loss, luminet_loss

    rows = []
    for n, c in ((1024, 81), (512, 1000)):
        g = torch.Generator().manual_seed(0)
        s = torch.randn(n, c, generator=g, requires_grad=True)
        t = torch.randn(n, c, generator=g) * 3
        y = torch.randint(0, c, (n,), generator=g)
        fns = {
            "kd": lambda: kd_loss(s, t, 4.0),
            "dkd": lambda: dkd_loss(s, t, y, 1.0, 8.0, 4.0),
            "luminet": lambda: luminet_loss(s, t, 4.0),
        }
        times = {k: [] for k in fns}
        for _ in range(5):  # warm-up
            for fn in fns.values():
                fn().backward()
        for _ in range(repeats):
            for k, fn in fns.items():
                s.grad = None
                t0 = time.perf_counter()
                fn().backward()
                times[k].append(time.perf_counter() - t0)
        ratios = {k: summary([a / b for a, b in zip(times[k], times["kd"])]) for k in fns}
        for k in fns:
            rows.append(
                {"shape": f"{n}x{c}", "loss": k, "ms": summary(times[k]), "vs_kd": ratios[k]}
            )
    return rows


# ----------------------------------------------------------------------------- cost: steps
def _batch(n, size, num_classes=10, seed=0):
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        inst = Instances((size, size))
        k = 3
        xy = torch.rand(k, 2, generator=g) * (size - 48)
        wh = 18 + torch.rand(k, 2, generator=g) * 26
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
        out.append(
            {
                "image": torch.randint(0, 256, (3, size, size), generator=g).float(),
                "instances": inst,
                "height": size,
                "width": size,
            }
        )
    return out


def _distill_cfg(losses, teacher_weights, quick):
    from luminet_det import load_config

    cfg = load_config(os.path.join(DIGITS, "luminet_reviewkd_R50_R18.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DISTILL.LOSSES = list(losses)
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher_weights
    if quick:
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    return cfg


def _teacher_weights(tmp, quick):
    cached = os.path.join(ROOT, "output", "digits", "teacher_R_50_FPN", "model_final.pth")
    if os.path.isfile(cached) and not quick:
        return cached
    path = os.path.join(tmp, "teacher.pth")
    if os.path.isfile(path):  # written by an earlier section of this run
        return path
    from detectron2.modeling import build_model

    from luminet_det import load_config
    from luminet_det.modeling.teacher import load_teacher_cfg

    cfg = load_config(os.path.join(DIGITS, "luminet_R50_R18.yaml"))
    tcfg = load_teacher_cfg(cfg.MODEL.DISTILL.TEACHER_CONFIG, [], "cpu")
    torch.save({"model": build_model(tcfg).state_dict()}, path)
    return path  # step times do not depend on the weights' values


def bench_steps(repeats, quick, tmp):
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    weights = _teacher_weights(tmp, quick)
    images, size = (2, 64) if quick else (8, 128)
    inputs = _batch(images, size)
    models = {}
    for name, losses in METHODS:
        torch.manual_seed(0)
        m = build_model(_distill_cfg(losses, weights, quick))
        m.train()
        models[name] = (m, torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1e-4))
    times = {name: [] for name in models}
    times["teacher alone"] = []
    luminet_model = models["LumiNet"][0]
    with EventStorage(10_000):
        for r in range(repeats + 2):
            for name, (m, opt) in models.items():
                torch.manual_seed(r)
                t0 = time.perf_counter()
                loss = sum(m(inputs).values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                if r >= 2:
                    times[name].append(time.perf_counter() - t0)
            # the teacher's share: its images, backbone and box head on sampled proposals
            captured = {}
            with luminet_model._capture_student(captured):
                luminet_model(inputs)
            t0 = time.perf_counter()
            luminet_model._teacher_forward(inputs, captured["proposals"], need_logits=True)
            if r >= 2:
                times["teacher alone"].append(time.perf_counter() - t0)
    student = times["student alone"]
    rows = []
    for name, ts in times.items():
        rows.append(
            {
                "config": name,
                "s": summary(ts),
                "vs_student": summary([a / b for a, b in zip(ts, student)]),
                "vs_kd": summary([a / b for a, b in zip(ts, times["KD"])]),
            }
        )
    overhead = [
        (lu - st) / te for lu, st, te in zip(times["LumiNet"], student, times["teacher alone"])
    ]
    return rows, summary(overhead)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_worker(losses, weights, quick):
    """Run in a subprocess: the peak resident memory (MB) added by 3 training steps over the
    built model, sampled every 2 ms (the process's own peak is dominated by loading torch)."""
    import threading

    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    import luminet_det  # noqa: F401

    m = build_model(_distill_cfg(losses, weights, quick))
    m.train()
    images, size = (2, 64) if quick else (8, 128)
    inputs = _batch(images, size)
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


def bench_memory(quick, tmp):
    weights = _teacher_weights(tmp, quick)
    out = {}
    for name, losses in METHODS:
        code = (
            f"import sys, json; sys.path.insert(0, {ROOT!r}); from benchmarks.run import "
            f"_memory_worker; print('MB', _memory_worker({losses!r}, {weights!r}, {quick}))"
        )
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=ROOT
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("MB ")]
        if not line:
            raise RuntimeError(f"memory worker for {name} failed:\n{proc.stderr[-2000:]}")
        out[name] = float(line[0].split()[1])
    return out


# ----------------------------------------------------------------------------- accuracy
def _final_ap(output_dir):
    from luminet_det.visualize import last_box_ap

    row = last_box_ap(output_dir)
    if row is None:
        raise ValueError(f"No box AP in {output_dir}/metrics.json.")
    return row["bbox/AP"]


def _done(output_dir):
    """A finished run (final checkpoint and a finite AP row): reused, so an interrupted
    benchmark loses at most the run in progress."""
    if not os.path.isfile(os.path.join(output_dir, "model_final.pth")):
        return False
    try:
        ap = _final_ap(output_dir)
    except (OSError, IndexError, ValueError):
        return False
    return ap == ap


_QUICK_DET = [
    "SOLVER.MAX_ITER",
    "3",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "(100,)",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def _detection_teacher(quick, out_root, env):
    """(weights, AP) of the built-in set's R-50-FPN teacher, trained first if needed (quick:
    random weights of the right architecture, AP nan)."""
    if quick:
        return _teacher_weights(out_root, True), float("nan")
    teacher_final = os.path.join(ROOT, "output", "digits", "teacher_R_50_FPN", "model_final.pth")
    if not os.path.isfile(teacher_final):
        log("training the teacher (teacher_R_50_FPN.yaml) first")
        cmd = [sys.executable, "tools/train_net.py", "--config-file"]
        cmd.append(os.path.join(DIGITS, "teacher_R_50_FPN.yaml"))
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return teacher_final, _final_ap(os.path.dirname(teacher_final))


def _train_detector(label, config, out, seed, teacher, quick, env, extra=(), procs=1):
    """Train one detector with tools/train_net.py (``procs`` processes) and return its final
    box AP; a finished run in ``out`` is reused."""
    if not quick and _done(out):
        log(f"{label}, seed {seed}: cached run, AP {_final_ap(out):.2f}")
        return _final_ap(out)
    cmd = [sys.executable, "tools/train_net.py", "--config-file", os.path.join(DIGITS, config)]
    # a free port: detectron2's default is fixed per user, so two runs at once would clash
    cmd += ["--num-gpus", str(procs), "--dist-url", "auto"] if procs > 1 else []
    cmd += ["SEED", str(seed), "OUTPUT_DIR", out, "DATALOADER.NUM_WORKERS", "1"]
    cmd += _QUICK_DET if quick else []
    if teacher is not None:
        cmd += ["MODEL.DISTILL.TEACHER_WEIGHTS", teacher]
    cmd += list(extra)
    log(f"{label}, seed {seed}")
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    ap = _final_ap(out)
    log(f"  AP {ap:.2f} ({time.time() - t0:.0f} s)")
    return ap


def bench_detection_accuracy(seeds, quick, out_root, env):
    teacher, teacher_ap = _detection_teacher(quick, out_root, env)
    results = {"teacher R-50-FPN": [teacher_ap]}
    for name, _ in METHODS:
        folder = os.path.join(out_root, "det", name.replace(" ", "_").replace("+", "_"))
        results[name] = [
            _train_detector(
                f"detection: {name}",
                METHOD_CONFIGS[name],
                os.path.join(folder, f"seed{seed}"),
                seed,
                None if name == "student alone" else teacher,
                quick,
                env,
            )
            for seed in range(seeds)
        ]
    return results


def bench_stats(seeds, quick, out_root, env, procs=2, global_batches=(8, 2)):
    """LumiNet with each ``MODEL.DISTILL.LUMINET.STATS`` mode, all in ``procs`` CPU processes
    (gloo), for each global batch in ``global_batches``, so that within a batch size the modes
    differ only in where the statistics come from. The first batch is the config's; a smaller
    one keeps the same images seen and schedule in epochs (learning rate scaled down and
    iterations, steps and warm-ups up by the same factor).

    Returns:
        dict: ``procs`` and ``runs``: per batch size ``{"ims_per_batch", "lr", "iters", "ap":
        {mode: [AP per seed]}}``.
    """
    from luminet_det import load_config
    from luminet_det.stats import STATS_MODES

    teacher, _ = _detection_teacher(quick, out_root, env)
    config = METHOD_CONFIGS["LumiNet"]
    cfg = load_config(os.path.join(DIGITS, config))
    default = 2 if quick else cfg.SOLVER.IMS_PER_BATCH
    results = {"procs": procs, "runs": []}
    for batch in (2,) if quick else global_batches:
        scale = default // batch
        assert scale * batch == default, f"{batch} must divide the config's batch {default}"
        lr, iters = cfg.SOLVER.BASE_LR / scale, cfg.SOLVER.MAX_ITER * scale
        extra, suffix = [], ""
        if scale > 1:
            suffix = f"_batch{batch}_iters{iters}"
            extra = ["SOLVER.IMS_PER_BATCH", str(batch), "SOLVER.BASE_LR", str(lr)]
            extra += ["SOLVER.MAX_ITER", str(iters), "SOLVER.WARMUP_ITERS"]
            extra += [str(cfg.SOLVER.WARMUP_ITERS * scale), "SOLVER.STEPS"]
            extra += [str(tuple(x * scale for x in cfg.SOLVER.STEPS)), "MODEL.DISTILL.WARMUP_ITERS"]
            extra += [str(cfg.MODEL.DISTILL.WARMUP_ITERS * scale)]
        ap = {}
        for mode in STATS_MODES:
            ap[mode] = [
                _train_detector(
                    f"statistics: {mode} ({procs} processes, {batch} images)",
                    config,
                    os.path.join(out_root, "stats", f"{mode}_{procs}procs{suffix}", f"seed{seed}"),
                    seed,
                    teacher,
                    quick,
                    env,
                    extra=["MODEL.DISTILL.LUMINET.STATS", mode, *extra],
                    procs=procs,
                )
                for seed in range(seeds)
            ]
        if quick:  # what the toy runs used
            iters = int(_QUICK_DET[_QUICK_DET.index("SOLVER.MAX_ITER") + 1])
        results["runs"].append({"ims_per_batch": batch, "lr": lr, "iters": iters, "ap": ap})
    return results


def moment_errors(per_batch, group):
    """Per class column, how far the moments of ``group`` consecutive batches pooled are from
    those of all the rows of ``per_batch`` (a list of (N_i, C) tensors).

    Returns:
        (list[float], list[float], list[int]): |batch mean - mean| / std and
        |batch std - std| / std for every pooled batch and column (stds biased), and the rows
        of each pooled batch.
    """
    everything = torch.cat(per_batch)
    mu, sd = everything.mean(0), everything.std(0, unbiased=False)
    mean_err, std_err, sizes = [], [], []
    for i in range(0, len(per_batch) - group + 1, group):
        z = torch.cat(per_batch[i : i + group])
        sizes.append(z.shape[0])
        mean_err += ((z.mean(0) - mu).abs() / sd).tolist()
        std_err += ((z.std(0, unbiased=False) - sd).abs() / sd).tolist()
    return mean_err, std_err, sizes


def bench_stats_noise(quick, out_root, per_process=(4, 1), images=256):
    """How far per-batch perception statistics are from the data set's. The trained teacher
    scores the ROIs that a trained LumiNet student (seed 0 of :func:`bench_stats`, "batch")
    samples on ``images`` training images, as in training. For one process's batch of each
    size in ``per_process`` and the synced batch of two such processes, each class column's
    mean and std are compared with those over all the rows (what "global" converges to).

    Returns:
        dict: ``images`` (int) and ``rows``: one dict per batch with ``label``, ``rows``
        (mean rows per batch), ``mean_err`` and ``std_err`` summaries (see the report).
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from luminet_det import load_config

    teacher, _ = _detection_teacher(quick, out_root, None)
    cfg = load_config(os.path.join(DIGITS, METHOD_CONFIGS["LumiNet"]))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher
    if quick:
        images, per_process = 8, (1,)
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    model = build_model(cfg)
    student = os.path.join(out_root, "stats", "batch_2procs", "seed0", "model_final.pth")
    if os.path.isfile(student):
        DetectionCheckpointer(model).load(student)
    model.train()
    dataset = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:images]
    mapper = DatasetMapper(cfg, True)
    torch.manual_seed(0)
    per_image = []  # the teacher's logits on each image's sampled ROIs
    with EventStorage(0), torch.no_grad():
        for b in range(0, len(dataset), 4):
            inputs = [mapper(d) for d in dataset[b : b + 4]]
            captured = {}
            with model._capture_student(captured):
                model(inputs)
            logits = model._teacher_forward(inputs, captured["proposals"], True)[1]
            per_image += logits.split([len(p) for p in captured["proposals"]])
    rows = []
    for k in per_process:
        per_batch = [torch.cat(per_image[i : i + k]) for i in range(0, len(per_image) - k + 1, k)]
        for group, label in ((1, "one process's batch"), (2, "2 processes synced")):
            mean_err, std_err, sizes = moment_errors(per_batch, group)
            n = group * k
            rows.append(
                {
                    "label": f"{label} ({n} image{'s' if n > 1 else ''})",
                    "rows": statistics.mean(sizes),
                    "mean_err": summary(mean_err),
                    "std_err": summary(std_err),
                }
            )
    return {"images": len(per_image), "rows": rows}


def bench_classification_accuracy(seeds, quick, out_root):
    from luminet_det.cls import Trainer, load_config

    base = os.path.join(ROOT, "configs", "Digits-Classification")
    # quick: one epoch at a small LR (a one-epoch teacher gives wild logits)
    epochs = ["SOLVER.EPOCHS=1", "SOLVER.LR_STEPS=[1]", "SOLVER.LR=0.005"] if quick else []
    teacher_dir = os.path.join(out_root, "cls", "teacher")
    teacher = os.path.join(teacher_dir, "best.pth")
    if not os.path.isfile(teacher):
        log("classification: training the resnet56 teacher")
        cfg = load_config(
            os.path.join(base, "teacher_resnet56.yaml"), [f"OUTPUT_DIR={teacher_dir}", *epochs]
        )
        Trainer(cfg, progress=False).train()
    t_top1 = torch.load(teacher, weights_only=False)["metrics"]["top1"]
    results = {"teacher resnet56": [(t_top1, float("nan"))]}
    files = {
        "student alone": "ce_resnet8.yaml",
        "KD": "kd_resnet56_resnet8.yaml",
        "DKD": "dkd_resnet56_resnet8.yaml",
        "LumiNet": "luminet_resnet56_resnet8.yaml",
    }
    for name, file in files.items():
        results[name] = []
        for seed in range(seeds):
            out = os.path.join(out_root, "cls", name.replace(" ", "_"), f"seed{seed}")
            cfg = load_config(
                os.path.join(base, file),
                [f"OUTPUT_DIR={out}", f"SEED={seed}", f"MODEL.TEACHER_WEIGHTS={teacher}", *epochs],
            )
            r = Trainer(cfg, progress=False).train()
            results[name].append((r["top1"], r["ece"]))
            log(f"classification: {name}, seed {seed}: top-1 {r['top1']:.2f}, ECE {r['ece']:.2f}")
    return results


# ----------------------------------------------------------------------------- report
def _commit():
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
            or "unknown"
        )
    except OSError:
        return "unknown"


def _mean_std(values):
    vals = [v for v in values if v == v]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def write_report(path_md, args, losses, steps, overhead, memory, det, stats, cls, elapsed):
    lines = [
        f"# Benchmark: {os.path.basename(path_md)[:-3]}",
        "",
        f"- date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- machine: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        f"- commit: {_commit()}",
        f"- command: `{' '.join(['python'] + sys.argv)}`",
        f"- wall time: {elapsed / 60:.1f} min",
        "",
    ]
    if losses:
        lines += [
            "## Cost of the losses alone (forward + backward, CPU)",
            "",
            "median [q1, q3] over interleaved repeats; the ratio is computed per round.",
            "",
            "| logits | loss | time (ms) | ÷ kd_loss |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['shape']} | {r['loss']} | {fmt(r['ms'], 1e3)} | {fmt(r['vs_kd'])} |"
            for r in losses
        ]
        lumi = {r["shape"]: r["vs_kd"]["median"] for r in losses if r["loss"] == "luminet"}
        lines += [
            "",
            "Target `luminet_loss` ≤ 1.5× `kd_loss`: "
            + ", ".join(
                f"{k}: {v:.2f}× ({'met' if v <= 1.5 else 'NOT met'})" for k, v in lumi.items()
            ),
            "",
        ]
    if steps:
        lines += [
            "## Cost of one training step (DistillRCNN, R-50-FPN teacher → R-18-FPN student)",
            "",
            "| configuration | step time (s) | ÷ student alone | ÷ KD step | step memory (MB) |",
            "|---|---|---|---|---|",
        ]
        for r in steps:
            mem = memory.get(r["config"]) if memory else None
            lines.append(
                f"| {r['config']} | {fmt(r['s'])} | {fmt(r['vs_student'])} | {fmt(r['vs_kd'])} | "
                f"{f'{mem:.0f}' if mem else '-'} |"
            )
        lu = next(r for r in steps if r["config"] == "LumiNet")["vs_kd"]["median"]
        lines += [
            "",
            f"Target LumiNet step ≤ 1.02× KD step: {lu:.3f}× ({'met' if lu <= 1.02 else 'NOT met'}).",
            f"Target LumiNet overhead over the student alone ≤ 1.1× the teacher's share: "
            f"{overhead['median']:.2f}× [{overhead['q1']:.2f}, {overhead['q3']:.2f}] "
            f"({'met' if overhead['median'] <= 1.1 else 'NOT met'}).",
            "",
        ]
    if det:
        lines += [
            "## Accuracy: built-in detection set (digits_det_val, COCO box AP)",
            "",
            "Same budget for every student (the configs in configs/Digits-Detection/, one "
            "hyper-parameter trial each, nothing tuned on val); mean ± std over seeds.",
            "",
            "| model | AP | seeds |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {_mean_std(v)} | {len(v)} |" for k, v in det.items()]
        lines.append("")
    if stats:
        procs = stats["procs"]
        lines += [
            "## Where the perception statistics come from (`MODEL.DISTILL.LUMINET.STATS`)",
            "",
            f"LumiNet R-50-FPN → R-18-FPN on the built-in set, {procs} CPU processes (gloo, "
            f"`--num-gpus {procs}`), same config and seeds for every mode; only the source of "
            "the statistics differs. A smaller global batch sees the same images with the same "
            "schedule in epochs (learning rate scaled down, iterations up). mean ± std over seeds.",
            "",
            "| images per process (global batch, LR, iterations) | STATS | AP | per seed |",
            "|---|---|---|---|",
        ]
        for run in stats["runs"]:
            b = run["ims_per_batch"]
            lines += [
                f"| {b // procs} ({b}, {run['lr']:g}, {run['iters']}) | {k} | {_mean_std(v)} | "
                f"{', '.join(f'{x:.1f}' for x in v)} |"
                for k, v in run["ap"].items()
            ]
        noise = stats["noise"]
        lines += [
            "",
            f"How noisy are batch statistics? The trained teacher's logits on a seed-0 student's "
            f"sampled ROIs over {noise['images']} training images: per class column, the batch "
            "mean's distance from the mean over all of them and the batch std's relative error, "
            "in units of their std; median [q1, q3] over batches and columns.",
            "",
            "| statistics from | rows per batch | mean error (÷ std) | std relative error |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['label']} | {r['rows']:.0f} | {fmt(r['mean_err'])} | {fmt(r['std_err'])} |"
            for r in noise["rows"]
        ]
        lines.append("")
    if cls:
        lines += [
            "## Accuracy: built-in classification set (digits, resnet56 → resnet8)",
            "",
            "| model | top-1 (%) | ECE (%) | seeds |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {_mean_std([a for a, _ in v])} | {_mean_std([e for _, e in v])} | {len(v)} |"
            for k, v in cls.items()
        ]
        lines.append("")
    with open(path_md, "w") as f:
        f.write("\n".join(lines))


_STATS_COLORS = {"batch": "#c44e52", "sync": "#dd8452", "global": "#8172b3"}


def _bar_color(name):
    if name.startswith("teacher"):
        return "#888888"
    if name.split(",")[0] in _STATS_COLORS:
        return _STATS_COLORS[name.split(",")[0]]
    return "#c44e52" if name.startswith("LumiNet") else "#4c72b0"


def write_chart(path_png, det, cls, stats=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats_ap = None
    if stats:
        stats_ap = {
            f"{k}, {r['ims_per_batch'] // stats['procs']} img/proc": v
            for r in stats["runs"]
            for k, v in r["ap"].items()
        }
    panels = [
        (t, d)
        for t, d in (
            ("detection: box AP", det),
            ("LumiNet by STATS, 2 processes: box AP", stats_ap),
            ("classification: top-1 (%)", cls),
        )
        if d
    ]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels):
        names = list(data)
        vals = [[x if not isinstance(x, tuple) else x[0] for x in data[n]] for n in names]
        vals = [[x for x in v if x == x] for v in vals]
        means = [statistics.mean(v) if v else 0 for v in vals]
        stds = [statistics.stdev(v) if len(v) > 1 else 0 for v in vals]
        colors = [_bar_color(n) for n in names]
        ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=4)
        for i, v in enumerate(vals):  # every seed, so the spread is visible
            ax.plot([i] * len(v), v, "k.", markersize=4)
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right")
        ax.set_title(title)
        for i, (m, sd) in enumerate(zip(means, stds)):  # above the error bar
            ax.text(i, m + sd, f"{m:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes (tests)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["losses", "steps", "memory", "det", "stats", "cls"],
    )
    parser.add_argument("--results", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument("--name", default=None, help="results file stem (default: date)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.repeats = 1, 3
    start = time.time()
    os.makedirs(args.results, exist_ok=True)
    name = args.name or ("quick" if args.quick else datetime.date.today().isoformat())
    work = (
        tempfile.mkdtemp(prefix="luminet_bench_")
        if args.quick
        else os.path.join(ROOT, "output", "bench")
    )
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    import luminet_det  # noqa: F401  (registers DistillRCNN and the datasets)
    from luminet_det.data import digits_root
    from luminet_det.data.digits import generate_digits_detection, is_generated

    if args.quick:
        generate_digits_detection(os.path.join(work, "digits_det"), num_train=8, num_val=4)
        # for the training subprocesses and for what runs here (bench_stats_noise)
        os.environ["DETECTRON2_DATASETS"] = env["DETECTRON2_DATASETS"] = work
    elif not is_generated(digits_root()) and not {"det", "stats"} <= set(args.skip):
        log(f"generating the built-in detection set in {digits_root()}")
        generate_digits_detection(digits_root(), progress=True)
    losses = steps = overhead = memory = det = stats = cls = None
    if "losses" not in args.skip:
        log("cost of the losses alone")
        losses = bench_losses(20 if args.quick else 200)
    if "steps" not in args.skip:
        log("cost of one training step per configuration")
        steps, overhead = bench_steps(args.repeats, args.quick, work)
    if "memory" not in args.skip:
        log("peak memory per configuration")
        memory = bench_memory(args.quick, work)
    if "det" not in args.skip:
        det = bench_detection_accuracy(args.seeds, args.quick, work, env)
    if "stats" not in args.skip:
        stats = bench_stats(args.seeds, args.quick, work, env)
        log("statistics: how far local batch moments are from the data set's")
        per_process = [r["ims_per_batch"] // stats["procs"] for r in stats["runs"]]
        stats["noise"] = bench_stats_noise(args.quick, work, per_process=per_process)
    if "cls" not in args.skip:
        cls = bench_classification_accuracy(args.seeds, args.quick, work)
    md = os.path.join(args.results, f"{name}.md")
    write_report(md, args, losses, steps, overhead, memory, det, stats, cls, time.time() - start)
    write_chart(os.path.join(args.results, f"{name}.png"), det, cls, stats)
    log(f"wrote {md}")
    print(open(md).read())


if __name__ == "__main__":
    main()
