"""Paired seeds on the hard built-in classification task (``configs/Digits-Classification-Hard``):
the student alone, KD, DKD, logitstd, DIST and LumiNet with the resnet8 student (``clshard``), and
the student alone, KD and LumiNet with a PVTv2-B0 vision-transformer student (``clsvit``, the
built-in twin of the paper's Table 7), N seeds each. Seed k gives every method the
same student initialisation, data order and augmentations, so differences can be taken per
seed: for each method vs LumiNet, the mean paired difference with a 95 % t-interval and the
number of seeds LumiNet wins. Every run's config, command and final metrics are kept
(``run_records``, written beside the results), so a reader can rerun any row."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .common import ROOT, cls_teacher, log, mean_std, paired_lines, quick_cls, rel, train_cls

CONFIGS = os.path.join(ROOT, "configs", "Digits-Classification-Hard")
TEACHER = "teacher_wrn_40_2.yaml"
FILES = {
    "student alone": "ce_resnet8.yaml",
    "KD": "kd_wrn40_2_resnet8.yaml",
    "DKD": "dkd_wrn40_2_resnet8.yaml",
    "logitstd": "logitstd_wrn40_2_resnet8.yaml",
    "DIST": "dist_wrn40_2_resnet8.yaml",
    "LumiNet": "luminet_wrn40_2_resnet8.yaml",
}
#: the ViT student's methods (configs/Digits-Classification-Hard/vit/)
VIT_FILES = {
    "student alone": "vit/ce_pvtv2_b0.yaml",
    "KD": "vit/kd_wrn40_2_pvtv2_b0.yaml",
    "LumiNet": "vit/luminet_wrn40_2_pvtv2_b0.yaml",
}
#: (files, student, what each set's table says about the recipes, run folder) per section
SETS = {
    "clshard": (FILES, "resnet8", "each method's CIFAR-100 recipe", "cls_hard"),
    "clsvit": (
        VIT_FILES,
        "PVTv2-B0 (32 px; the teacher sees 16 px)",
        "Table 7's AdamW / cosine recipe over 20 epochs, the resnet8 student's KD and LumiNet "
        "values",
        "cls_vit",
    ),
}


@dataclass
class PairedClassification:
    """metrics: method -> per seed {"top1", "ece", "fpr95"}; teacher: its metrics;
    run_records: one per run (method, seed, config, command, metrics)."""

    metrics: Dict[str, List[Dict[str, float]]]
    teacher: Dict[str, float]
    run_records: List[Dict] = field(default_factory=list)
    key: str = "clshard"

    def markdown(self) -> List[str]:
        seeds = len(next(iter(self.metrics.values())))
        _, student, recipe, _ = SETS[self.key]
        lines = [
            f"## Accuracy: hard built-in classification set, {student} student, paired seeds",
            "",
            f"digits_hard (every image occluded and noised), wrn_40_2 teacher → {student}, "
            f"{seeds} seeds; seed k gives every method the same initialisation, data order and "
            f"augmentations. One untuned trial per method ({recipe}).",
            "",
            f"Teacher wrn_40_2: top-1 {self.teacher['top1']:.2f} %, ECE {self.teacher['ece']:.2f}.",
            "",
            "| model | top-1 (%) | ECE (%) | FPR95 (%) | per seed top-1 |",
            "|---|---|---|---|---|",
        ]
        for name, rows in self.metrics.items():
            top1 = [r["top1"] for r in rows]
            lines.append(
                f"| {name} | {mean_std(top1)} | {mean_std([r['ece'] for r in rows])} | "
                f"{mean_std([r['fpr95'] for r in rows])} | {', '.join(f'{x:.1f}' for x in top1)} |"
            )
        lines.append("")
        top1 = {name: [r["top1"] for r in rows] for name, rows in self.metrics.items()}
        return lines + paired_lines(top1, "LumiNet", "top-1 points")

    def chart(self):
        title = "hard classification" if self.key == "clshard" else "hard classification, ViT"
        return f"{title}: top-1 (%)", {k: [r["top1"] for r in v] for k, v in self.metrics.items()}


def run(
    seeds: int,
    quick: bool,
    work: str,
    methods: Optional[Sequence[str]] = None,
    key: str = "clshard",
) -> PairedClassification:
    """Every method of the set ``key`` (:data:`SETS`; or those of ``methods``, by label;
    LumiNet, the reference, always runs) for ``seeds`` paired seeds."""
    files, _, _, folder = SETS[key]
    teacher, t_metrics = cls_teacher(
        os.path.join(CONFIGS, TEACHER), os.path.join(work, "cls_hard", "teacher"), quick, "hard"
    )
    metrics, runs = {}, []
    for name, file in files.items():
        if methods is not None and name not in methods and name != "LumiNet":
            continue
        metrics[name] = []
        for seed in range(seeds):
            out = os.path.join(work, folder, name.replace(" ", "_"), f"seed{seed}")
            overrides = [f"OUTPUT_DIR={out}", f"SEED={seed}", f"MODEL.TEACHER_WEIGHTS={teacher}"]
            config = os.path.join(CONFIGS, file)
            r = train_cls(config, overrides, quick)
            row = {k: r[k] for k in ("top1", "ece", "fpr95")}
            metrics[name].append(row)
            # the command as it runs from the repository (paths relative to it)
            args = [f"{k}={rel(v)}" for k, v in (o.split("=", 1) for o in overrides)]
            args += quick_cls(quick)
            runs.append(
                {
                    "set": key,
                    "method": name,
                    "seed": seed,
                    "config": rel(config),
                    "command": f"python -m luminet_det.cls train --config {rel(config)} "
                    + " ".join(args),
                    **row,
                }
            )
            log(f"{key}: {name}, seed {seed}: top-1 {r['top1']:.2f}")
    return PairedClassification(metrics, t_metrics, runs, key)
