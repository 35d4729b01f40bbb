"""Paired seeds on the hard built-in classification task (``configs/Digits-Classification-Hard``):
the student alone, KD, DKD, logitstd, DIST and LumiNet with the resnet8 student (``clshard``),
the student alone, KD and LumiNet with a PVTv2-B0 vision-transformer student (``clsvit``, the
built-in twin of the paper's Table 7), and the resnet8 recipes unchanged but for the data on an
8-class image-folder set they were not chosen for (``clsnew``: do LumiNet's CIFAR-100 values
hold on new data?), N seeds each. Seed k gives every method the
same student initialisation, data order and augmentations, so differences can be taken per
seed: for each method vs LumiNet, the mean paired difference with a 95 % t-interval and the
number of seeds LumiNet wins. Every run's config, command and final metrics are kept
(``run_records``, written beside the results), so a reader can rerun any row."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from .cls_runs import cls_command, cls_teacher, train_cls
from .common import ROOT, log, mean_std, paired_lines, paired_row, rel

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


class ClsSet(NamedTuple):
    """One section: its methods (label -> config under CONFIGS), the student, what its table
    says about the data and the recipes, its run folder under the work folder, and (``data``)
    the folder set its runs use instead of the configs' own data ("" = the configs' own)."""

    files: Dict[str, str]
    student: str
    about: str
    recipe: str
    folder: str
    data: str = ""
    #: (label, method of ``files``, extra overrides): a method run again with other values
    variants: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = ()

    def runs(self) -> List[Tuple[str, str, List[str]]]:
        """(label, config file, extra overrides) of every method, in report order."""
        plain = [(name, file, []) for name, file in self.files.items()]
        return plain + [(label, self.files[m], list(extra)) for label, m, extra in self.variants]


#: the folder set's size in pixels and class count
FOLDER_SIZE, FOLDER_CLASSES = 16, 8

#: the AutoAugment override (torchvision's CIFAR-10 policy, the paper's Table 6)
AA = "DATA.AUTOAUGMENT=True"


def root_c_weight(classes: int) -> float:
    """LumiNet's CIFAR-100 weight (alpha 75) scaled by sqrt(C / 100) for ``classes`` classes:
    the weight whose push against the cross-entropy equals CIFAR-100's
    (benchmarks/luminet_scale.py)."""
    return round(5625.0 * (classes / 100) ** 0.5, 1)


#: the folder set's (8 classes) and the hard set's (10 classes)
ROOT_C_WEIGHT, HARD_ROOT_C_WEIGHT = root_c_weight(FOLDER_CLASSES), root_c_weight(10)


def solver_overrides(config: str) -> Tuple[str, ...]:
    """``SOLVER.KEY=value`` overrides of every key the YAML file ``config`` (under CONFIGS)
    sets in its own SOLVER node (not its base's): a recipe's optimizer and schedule, to run
    another student with them."""
    import yaml

    with open(os.path.join(CONFIGS, config)) as f:
        solver = yaml.safe_load(f)["SOLVER"]
    return tuple(f"SOLVER.{k}={v}" for k, v in solver.items())


#: the ViT recipe's optimizer and schedule (AdamW, cosine with warm-up), for the resnet8 student
VIT_SOLVER = solver_overrides("Base-Digits-Hard-ViT.yaml")

HARD = "digits_hard (every image occluded and noised)"
#: the sections of this module
SETS = {
    "clshard": ClsSet(
        FILES,
        "resnet8",
        HARD,
        "each method's CIFAR-100 recipe; the student alone, KD and LumiNet also with the ViT "
        "recipe's optimizer and schedule (AdamW, cosine: "
        "`configs/Digits-Classification-Hard/Base-Digits-Hard-ViT.yaml`'s SOLVER keys)",
        "cls_hard",
        variants=tuple((f"{m}, AdamW", m, VIT_SOLVER) for m in ("student alone", "KD", "LumiNet")),
    ),
    "clsvit": ClsSet(
        VIT_FILES,
        "PVTv2-B0 (32 px; the teacher sees 16 px)",
        HARD,
        "Table 7's AdamW / cosine recipe over 20 epochs, the resnet8 student's KD and LumiNet "
        "values; LumiNet also at the weight × √(C / 100)",
        "cls_vit",
        variants=(
            (
                f"LumiNet, weight {HARD_ROOT_C_WEIGHT:g}",
                "LumiNet",
                (f"METHOD.WEIGHT={HARD_ROOT_C_WEIGHT}",),
            ),
        ),
    ),
    "clsnew": ClsSet(
        {k: FILES[k] for k in ("student alone", "KD", "LumiNet")},
        "resnet8",
        "an 8-class image-folder set the recipes were not chosen for (scikit-learn's digits 0-7, "
        "clean, as 16-px PNG files in class folders written by `digit_folders` of "
        "benchmarks/cls_paired.py, read through `DATA.NAME: folder` with its random-resized-crop "
        "and flip augmentation)",
        "the hard set's configs unchanged but for `DATA.NAME folder`, `DATA.ROOT` and "
        "`DATA.INPUT_SIZE 16`; LumiNet at the CIFAR-100 recipe's weight 5625 and T 8; KD and "
        "LumiNet also with `DATA.AUTOAUGMENT True`, and LumiNet at the weight × √(C / 100) "
        "that keeps CIFAR-100's balance against the cross-entropy",
        "cls_new",
        data="folder8",
        variants=(
            ("KD + AutoAugment", "KD", (AA,)),
            ("LumiNet + AutoAugment", "LumiNet", (AA,)),
            (f"LumiNet, weight {ROOT_C_WEIGHT:g}", "LumiNet", (f"METHOD.WEIGHT={ROOT_C_WEIGHT}",)),
        ),
    ),
}


def digit_folders(
    root: str, classes: int = FOLDER_CLASSES, size: int = FOLDER_SIZE, images: int = 0
) -> str:
    """Write scikit-learn's handwritten digits of labels ``0 .. classes - 1`` as ``size``-px RGB
    PNG files in class folders, ``root/{train,val}/c<label>/<index>.png`` (every fifth image
    is validation, as in the built-in sets), once (a finished set is reused); returns ``root``.
    ``images`` > 0 keeps only scikit-learn's first ``images`` images (``--quick``)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    done = os.path.join(root, "COMPLETE")
    if os.path.isfile(done):
        return root
    data = load_digits()
    for i, (image, label) in enumerate(zip(data.images, data.target)):
        if label >= classes or 0 < images <= i:
            continue
        folder = os.path.join(root, "val" if i % 5 == 0 else "train", f"c{label}")
        os.makedirs(folder, exist_ok=True)
        pixels = Image.fromarray((image / 16.0 * 255).astype(np.uint8))
        pixels.resize((size, size), Image.BILINEAR).convert("RGB").save(
            os.path.join(folder, f"{i:04d}.png")
        )
    open(done, "w").close()
    return root


def data_overrides(s: ClsSet, work: str, quick: bool) -> List[str]:
    """The config overrides that point a section's runs at its data (none for the configs' own
    data); the folder set is written first (``quick``: from the first 300 images)."""
    if not s.data:
        return []
    root = digit_folders(os.path.join(work, s.folder, s.data), images=300 if quick else 0)
    return ["DATA.NAME=folder", f"DATA.ROOT={root}", f"DATA.INPUT_SIZE={FOLDER_SIZE}"]


def set_teacher(key: str, work: str, quick: bool) -> Tuple[str, Dict, List[str]]:
    """(best.pth, its metrics, data overrides) of the set ``key``'s wrn_40_2 teacher, trained
    on the set's data (:func:`data_overrides`) first if absent; the sets on the hard set's own
    data share its teacher (``cls_hard/teacher`` under ``work``)."""
    s = SETS[key]
    data = data_overrides(s, work, quick)
    teacher_dir = os.path.join(work, s.folder if s.data else "cls_hard", "teacher")
    teacher, metrics = cls_teacher(os.path.join(CONFIGS, TEACHER), teacher_dir, quick, key, data)
    return teacher, metrics, data


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
        s = SETS[self.key]
        where = "an unseen image-folder set" if s.data else "hard built-in classification set"
        lines = [
            f"## Accuracy: {where}, {s.student} student, paired seeds",
            "",
            f"{s.about}, wrn_40_2 teacher → {s.student}, {seeds} seeds; seed k gives every "
            "method the same initialisation, data order and augmentations. One untuned trial "
            f"per method ({s.recipe}).",
            "",
            f"Teacher wrn_40_2: top-1 {self.teacher['top1']:.2f} %, ECE {self.teacher['ece']:.2f}.",
            "",
            "| model | top-1 (%) | ECE (%) | mean confidence − top-1 | FPR95 (%) | "
            "per seed top-1 |",
            "|---|---|---|---|---|---|",
        ]
        for name, rows in self.metrics.items():
            top1 = [r["top1"] for r in rows]
            gap = [r["confidence"] - r["top1"] for r in rows]
            lines.append(
                f"| {name} | {mean_std(top1)} | {mean_std([r['ece'] for r in rows])} | "
                f"{mean_std(gap)} | {mean_std([r['fpr95'] for r in rows])} | "
                f"{', '.join(f'{x:.1f}' for x in top1)} |"
            )
        lines.append("")
        top1 = {name: [r["top1"] for r in rows] for name, rows in self.metrics.items()}
        return lines + paired_lines(top1, "LumiNet", "top-1 points") + self._augment_lines(top1)

    def _augment_lines(self, top1: Dict[str, List[float]]) -> List[str]:
        """Markdown: each method with AutoAugment minus without, per seed."""
        pairs = [(m, label) for label, m, extra in SETS[self.key].variants if extra == (AA,)]
        pairs = [(m, a) for m, a in pairs if m in top1 and a in top1]
        if not pairs:
            return []
        lines = [
            "AutoAugment on minus off, per seed (top-1 points): mean, 95 % t-interval, seeds "
            "where it is higher.",
            "",
            "| method | mean difference | 95 % interval | AutoAugment higher |",
            "|---|---|---|---|",
        ]
        for plain, strong in pairs:
            lines.append(paired_row(plain, [a - b for a, b in zip(top1[strong], top1[plain])]))
        return lines + [""]

    def chart(self):
        title = {
            "clshard": "hard classification",
            "clsvit": "hard classification, ViT",
            "clsnew": "unseen 8-class folder set",
        }[self.key]
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
    s = SETS[key]
    teacher, t_metrics, data = set_teacher(key, work, quick)
    metrics, runs = {}, []
    for name, file, extra in s.runs():
        if methods is not None and name not in methods and name != "LumiNet":
            continue
        metrics[name] = []
        for seed in range(seeds):
            out = os.path.join(work, s.folder, re.sub(r"[^\w.+-]+", "_", name), f"seed{seed}")
            overrides = [f"OUTPUT_DIR={out}", f"SEED={seed}", f"MODEL.TEACHER_WEIGHTS={teacher}"]
            overrides += data + extra
            config = os.path.join(CONFIGS, file)
            r = train_cls(config, overrides, quick)
            row = {k: r[k] for k in ("top1", "ece", "fpr95", "confidence")}
            metrics[name].append(row)
            runs.append(
                {
                    "set": key,
                    "method": name,
                    "seed": seed,
                    "config": rel(config),
                    "command": cls_command(config, overrides, quick),
                    **row,
                }
            )
            log(f"{key}: {name}, seed {seed}: top-1 {r['top1']:.2f}")
    return PairedClassification(metrics, t_metrics, runs, key)
