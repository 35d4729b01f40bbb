"""Accuracy on the built-in detection set: the teacher and every method, N seeds each."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

from .common import METHODS, detection_teacher, mean_std, train_detector


@dataclass
class DetectionAccuracy:
    """ap: row label -> final box AP per seed (the teacher first)."""

    ap: Dict[str, List[float]]

    def markdown(self) -> List[str]:
        lines = [
            "## Accuracy: built-in detection set (digits_det_val, COCO box AP)",
            "",
            "Same budget for every student (the configs in configs/Digits-Detection/, one "
            "hyper-parameter trial each, nothing tuned on val); mean ± std over seeds.",
            "",
            "| model | AP | seeds |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {mean_std(v)} | {len(v)} |" for k, v in self.ap.items()]
        return lines + [""]

    def chart(self):
        return "detection: box AP", self.ap


def run(seeds: int, quick: bool, work: str, env: dict) -> DetectionAccuracy:
    teacher, teacher_ap = detection_teacher(quick, work, env)
    ap = {"teacher R-50-FPN": [teacher_ap]}
    for method in METHODS:
        folder = os.path.join(work, "det", method.slug)
        ap[method.name] = [
            train_detector(
                f"detection: {method.name}",
                method.config,
                os.path.join(folder, f"seed{seed}"),
                seed,
                None if not method.losses else teacher,
                quick,
                env,
            )
            for seed in range(seeds)
        ]
    return DetectionAccuracy(ap)
