"""Transfer by linear probing, the built-in twin of the paper's Fig. 3a (``probe``): resnet8
students trained on the clean built-in digits (``configs/Digits-Classification``: the student
alone, KD and LumiNet from the resnet56 teacher; N paired seeds), frozen, then a linear
classifier trained on their features of the hard built-in set (every image occluded and
noised: the same ten digits under a corruption none of the networks saw) and scored on its
validation split — ``luminet-cls probe`` with
``configs/Digits-Classification/probe_resnet8_digits_hard.yaml``. The teacher's features are
probed too, as a reference. Seed k gives every student the same initialisation and data order
and every probe the same classifier initialisation, so differences are taken per seed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .cls_runs import cls_command, cls_teacher, train_cls
from .common import ROOT, log, mean_std, paired_lines, rel

CONFIGS = os.path.join(ROOT, "configs", "Digits-Classification")
TEACHER = "teacher_resnet56.yaml"
PROBE = "probe_resnet8_digits_hard.yaml"
#: the students, label -> config under CONFIGS
FILES = {
    "student alone": "ce_resnet8.yaml",
    "KD": "kd_resnet56_resnet8.yaml",
    "LumiNet": "luminet_resnet56_resnet8.yaml",
}


def quick_probe(quick: bool) -> List[str]:
    """The probe's overrides of ``--quick`` runs: two epochs of the linear classifier."""
    return ["PROBE.EPOCHS=2"] if quick else []


def probe(checkpoint: str, out_dir: str, seed: int, quick: bool) -> Tuple[Dict[str, float], str]:
    """The probe's result (``top1`` on the hard set's validation split, ...) of ``checkpoint``,
    and its command line as it runs from the repository."""
    from luminet_det.cls import load_config
    from luminet_det.cls.probe import probe_checkpoint

    config = os.path.join(CONFIGS, PROBE)
    overrides = [f"OUTPUT_DIR={out_dir}", f"SEED={seed}", *quick_probe(quick)]
    result = probe_checkpoint(load_config(config, overrides), checkpoint)
    return result, cls_command(config, overrides, quick, "probe", checkpoint)


@dataclass
class LinearProbe:
    """metrics: method -> per seed {"source_top1": top-1 on the clean set, "probe_top1": the
    probe's top-1 on the hard set}; teacher: the same for the teacher (one run);
    run_records: one per student (method, seed, config, commands, metrics)."""

    metrics: Dict[str, List[Dict[str, float]]]
    teacher: Dict[str, float]
    run_records: List[Dict] = field(default_factory=list)

    def markdown(self) -> List[str]:
        seeds = len(next(iter(self.metrics.values())))
        lines = [
            "## Transfer: linear probing, clean built-in digits → hard set (paper Fig. 3a)",
            "",
            f"resnet56 teacher → resnet8 on the clean built-in digits, {seeds} paired seeds (each "
            "method's config in configs/Digits-Classification, untuned); each network frozen, "
            "a linear classifier trained on its features (the input of its last layer) of the "
            "hard set's training images (occluded and noised, a corruption none of them saw) "
            "and scored on the hard set's validation images "
            f"(configs/Digits-Classification/{PROBE}).",
            "",
            "| model | top-1 on the clean set (%) | probe top-1 on the hard set (%) | "
            "per seed probe top-1 |",
            "|---|---|---|---|",
            f"| teacher resnet56 | {self.teacher['source_top1']:.1f} | "
            f"{self.teacher['probe_top1']:.1f} | |",
        ]
        for name, rows in self.metrics.items():
            probe_top1 = [r["probe_top1"] for r in rows]
            lines.append(
                f"| {name} | {mean_std([r['source_top1'] for r in rows])} | "
                f"{mean_std(probe_top1)} | {', '.join(f'{x:.1f}' for x in probe_top1)} |"
            )
        lines.append("")
        probes = {name: [r["probe_top1"] for r in rows] for name, rows in self.metrics.items()}
        return lines + paired_lines(probes, "LumiNet", "probe top-1 points")

    def chart(self):
        return "linear probe, clean → hard digits: top-1 (%)", {
            k: [r["probe_top1"] for r in v] for k, v in self.metrics.items()
        }


def run(seeds: int, quick: bool, work: str) -> LinearProbe:
    """Train the students (and the teacher, unless it is in ``work``) for ``seeds`` paired
    seeds and probe each final student (``last.pth``) and the teacher (its ``best.pth``, the
    file students are distilled from) on the hard set."""
    folder = os.path.join(work, "cls_probe")
    teacher, t_metrics = cls_teacher(
        os.path.join(CONFIGS, TEACHER), os.path.join(folder, "teacher"), quick, "probe"
    )
    t_probe, _ = probe(teacher, os.path.join(folder, "teacher", "probe"), 0, quick)
    log(f"probe: teacher, probe top-1 {t_probe['top1']:.2f}")
    metrics, runs = {}, []
    for name, file in FILES.items():
        metrics[name] = []
        for seed in range(seeds):
            out = os.path.join(folder, name.replace(" ", "_"), f"seed{seed}")
            overrides = [f"OUTPUT_DIR={out}", f"SEED={seed}", f"MODEL.TEACHER_WEIGHTS={teacher}"]
            config = os.path.join(CONFIGS, file)
            r = train_cls(config, overrides, quick)
            p, probe_cmd = probe(
                os.path.join(out, "last.pth"), os.path.join(out, "probe"), seed, quick
            )
            row = {"source_top1": r["top1"], "probe_top1": p["top1"]}
            metrics[name].append(row)
            runs.append(
                {
                    "set": "probe",
                    "method": name,
                    "seed": seed,
                    "config": rel(config),
                    "command": cls_command(config, overrides, quick),
                    "probe_command": probe_cmd,
                    **row,
                }
            )
            log(f"probe: {name}, seed {seed}: probe top-1 {p['top1']:.2f}")
    teacher_row = {"source_top1": t_metrics["top1"], "probe_top1": t_probe["top1"]}
    return LinearProbe(metrics, teacher_row, runs)
