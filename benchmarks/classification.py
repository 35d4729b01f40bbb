"""Accuracy on the built-in classification set: resnet56 -> resnet8, every method, N seeds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .cls_runs import cls_teacher, train_cls
from .common import ROOT, log, mean_std

CONFIGS = os.path.join(ROOT, "configs", "Digits-Classification")
FILES = {
    "student alone": "ce_resnet8.yaml",
    "KD": "kd_resnet56_resnet8.yaml",
    "DKD": "dkd_resnet56_resnet8.yaml",
    "logitstd": "logitstd_resnet56_resnet8.yaml",
    "LumiNet": "luminet_resnet56_resnet8.yaml",
}


@dataclass
class ClassificationAccuracy:
    """results: row label -> (top-1, ECE) per seed (the teacher first, ECE nan)."""

    results: Dict[str, List[Tuple[float, float]]]

    def markdown(self) -> List[str]:
        lines = [
            "## Accuracy: built-in classification set (digits, resnet56 → resnet8)",
            "",
            "| model | top-1 (%) | ECE (%) | seeds |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {mean_std([a for a, _ in v])} | {mean_std([e for _, e in v])} | {len(v)} |"
            for k, v in self.results.items()
        ]
        return lines + [""]

    def chart(self):
        return "classification: top-1 (%)", {k: [a for a, _ in v] for k, v in self.results.items()}


def run(seeds: int, quick: bool, work: str) -> ClassificationAccuracy:
    teacher, t_metrics = cls_teacher(
        os.path.join(CONFIGS, "teacher_resnet56.yaml"),
        os.path.join(work, "cls", "teacher"),
        quick,
        "classification",
    )
    results = {"teacher resnet56": [(t_metrics["top1"], float("nan"))]}
    for name, file in FILES.items():
        results[name] = []
        for seed in range(seeds):
            out = os.path.join(work, "cls", name.replace(" ", "_"), f"seed{seed}")
            overrides = [f"OUTPUT_DIR={out}", f"SEED={seed}", f"MODEL.TEACHER_WEIGHTS={teacher}"]
            r = train_cls(os.path.join(CONFIGS, file), overrides, quick)
            results[name].append((r["top1"], r["ece"]))
            log(f"classification: {name}, seed {seed}: top-1 {r['top1']:.2f}, ECE {r['ece']:.2f}")
    return ClassificationAccuracy(results)
