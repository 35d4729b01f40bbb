"""Where LumiNet's perception statistics come from (``MODEL.DISTILL.LUMINET.STATS``): every
mode in 2 CPU processes at two batch sizes, and how noisy per-batch statistics are."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch

from .common import (
    DIGITS,
    METHOD,
    TEACHER_CONFIG,
    detection_teacher,
    detector_record,
    final_metrics,
    fmt,
    mean_std,
    summary,
    train_detector,
)
from .results_io import recipe

COLORS = {"batch": "#c44e52", "sync": "#dd8452", "global": "#8172b3", "running": "#55a868"}


@dataclass
class StatsModes:
    """procs: processes per run; runs: per global batch ``{"ims_per_batch", "lr", "iters",
    "ap": {mode: [AP per seed]}}``; noise: see :func:`noise`."""

    procs: int
    runs: List[Dict]
    noise: Dict = field(default_factory=dict)
    #: every training run: config, command, final metrics (report.write_runs)
    run_records: List[Dict] = field(default_factory=list)
    #: the teacher's config and recipe (common.recipe); empty for --quick's random teacher
    teacher: str = ""

    def markdown(self) -> List[str]:
        procs = self.procs
        lines = [
            "## Where the perception statistics come from (`MODEL.DISTILL.LUMINET.STATS`)",
            "",
            f"LumiNet R-50-FPN → R-18-FPN on the built-in set, {procs} CPU processes (gloo, "
            f"`--num-gpus {procs}`), same config and seeds for every mode; only the source of "
            "the statistics differs. A smaller global batch sees the same images with the same "
            "schedule in epochs (learning rate scaled down, iterations up). mean ± std over seeds.",
            "",
            *([f"Teacher: {self.teacher}.", ""] if self.teacher else []),
            "| images per process (global batch, LR, iterations) | STATS | AP | per seed |",
            "|---|---|---|---|",
        ]
        for run in self.runs:
            b = run["ims_per_batch"]
            lines += [
                f"| {b // procs} ({b}, {run['lr']:g}, {run['iters']}) | {k} | {mean_std(v)} | "
                f"{', '.join(f'{x:.1f}' for x in v)} |"
                for k, v in run["ap"].items()
            ]
        if self.noise:
            lines += [
                "",
                "How noisy are batch statistics? The trained teacher's logits on a seed-0 "
                f"student's sampled ROIs over {self.noise['images']} training images: per class "
                "column, the batch mean's distance from the mean over all of them and the batch "
                "std's relative error, in units of their std; median [q1, q3] over batches and "
                "columns.",
                "",
                "| statistics from | rows per batch | mean error (÷ std) | std relative error |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {r['label']} | {r['rows']:.0f} | {fmt(r['mean_err'])} | {fmt(r['std_err'])} |"
                for r in self.noise["rows"]
            ]
        return lines + [""]

    def chart(self):
        title = f"LumiNet by STATS, {self.procs} processes: box AP"
        data = {
            f"{k}, {r['ims_per_batch'] // self.procs} img/proc": v
            for r in self.runs
            for k, v in r["ap"].items()
        }
        return title, data


def run(seeds: int, quick: bool, work: str, env: dict, procs: int = 2, global_batches=(8, 2)):
    """LumiNet with each STATS mode, all in ``procs`` CPU processes (gloo), for each global
    batch in ``global_batches``, so that within a batch size the modes differ only in where the
    statistics come from. The first batch is the config's; a smaller one keeps the same images
    seen and schedule in epochs (learning rate scaled down and iterations, steps and warm-ups
    up by the same factor)."""
    from luminet_det import load_config
    from luminet_det.losses import STATS_MODES

    from .common import QUICK_DET

    teacher, _ = detection_teacher(quick, work, env)
    config = METHOD["LumiNet"].config
    cfg = load_config(os.path.join(DIGITS, config))
    default = 2 if quick else cfg.SOLVER.IMS_PER_BATCH
    if not quick:
        assert all(b <= default for b in global_batches), f"{global_batches} vs {default} images"
    runs, records = [], []
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
            ap[mode] = []
            for seed in range(seeds):
                out = os.path.join(work, "stats", f"{mode}_{procs}procs{suffix}", f"seed{seed}")
                args = (config, out, seed, teacher, quick)
                options = ["MODEL.DISTILL.LUMINET.STATS", mode, *extra]
                label = f"statistics: {mode} ({procs} processes, {batch} images)"
                ap[mode].append(train_detector(label, *args, env, extra=options, procs=procs))
                records.append(
                    {
                        "group": "stats",
                        "method": f"LumiNet, STATS {mode}",
                        "ims_per_batch": batch,
                        "seed": seed,
                        **detector_record(*args, options, procs),
                        **final_metrics(out),
                    }
                )
        if quick:  # what the toy runs used
            iters = int(QUICK_DET["SOLVER.MAX_ITER"])
        runs.append({"ims_per_batch": batch, "lr": lr, "iters": iters, "ap": ap})
    provenance = "" if quick else f"{TEACHER_CONFIG}: {recipe(os.path.dirname(teacher))}"
    return StatsModes(procs, runs, run_records=records, teacher=provenance)


def moment_errors(per_batch: List[torch.Tensor], group: int):
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


def noise(quick: bool, work: str, per_process: Sequence[int] = (4, 1), images: int = 256) -> Dict:
    """How far per-batch perception statistics are from the data set's. The trained teacher
    scores the ROIs that a trained LumiNet student (seed 0 of :func:`run`, "batch"; untrained in
    --quick) samples on
    ``images`` training images, as in training. For one process's batch of each size in
    ``per_process`` and the synced batch of two such processes, each class column's mean and
    std are compared with those over all the rows.

    Returns:
        dict: ``images`` (int) and ``rows``: one dict per batch with ``label``, ``rows`` (mean
        rows per batch), ``mean_err`` and ``std_err`` summaries.
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from luminet_det import load_config

    teacher, _ = detection_teacher(quick, work, None)
    cfg = load_config(os.path.join(DIGITS, METHOD["LumiNet"].config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher
    if quick:
        images, per_process = 8, (1,)
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    model = build_model(cfg)
    import glob

    trained = sorted(
        glob.glob(os.path.join(work, "stats", "batch_2procs*", "seed0", "model_final.pth"))
    )
    if trained:  # the seed-0 student of the "batch" runs (of whichever batch size ran)
        DetectionCheckpointer(model).load(trained[0])
    model.train()
    dataset = DatasetCatalog.get(cfg.DATASETS.TRAIN[0])[:images]
    mapper = DatasetMapper(cfg, True)
    torch.manual_seed(0)
    per_image = []  # the teacher's logits on each image's sampled ROIs
    with EventStorage(0), torch.no_grad():
        for b in range(0, len(dataset), 4):
            inputs = [mapper(d) for d in dataset[b : b + 4]]
            _, record = model.forward_student(inputs)
            logits = model.teacher_outputs(inputs, record).logits
            per_image += logits.split([len(p) for p in record.proposals])
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
