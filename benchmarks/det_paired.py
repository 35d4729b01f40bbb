"""Paired seeds on the built-in detection set, one group of configs per detector family: the
paper's Faster R-CNN pair with every method, Mask R-CNN, a Cascade teacher for a Faster R-CNN
student, RetinaNet. Seed k gives every student of a group the same initialisation and data
order, so differences are taken per seed: the reference method (LumiNet) minus each other,
with a 95 % t-interval and the count of seeds it wins. Each group's teacher is trained first
(once; cached in its config's OUTPUT_DIR) and must beat the student alone. Every run keeps its
config, command and final metrics (``run_records``, written beside the results)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .common import (
    DIGITS,
    METHODS,
    METRIC_NAMES,
    detector_record,
    final_metrics,
    mean_std,
    paired_lines,
    random_weights,
    train_detector,
    trained,
)
from .results_io import recipe

_ALL_ANCHORS = ("MODEL.DISTILL.DENSE.ANCHORS", "valid")
_KD = ("MODEL.DISTILL.LOSSES", "['kd']")
_MEAN_PROBS = ("MODEL.DISTILL.CASCADE_COMBINE", "mean_probs")


@dataclass(frozen=True)
class Group:
    """One paired comparison.

    Attributes:
        key (str): its section name in benchmarks/run.py.
        title (str): the heading.
        teacher (str): the teacher's config in configs/Digits-Detection/.
        methods (tuple): (label, config) or (label, config, overrides) of every student, in
            report order; overrides are KEY VALUE pairs of tools/train_net.py.
        metrics (tuple[str]): detectron2 metric keys reported, the first compared per seed.
        reference (str): the label every other method is compared with.
        requires (tuple[str]): configs whose trained weights the group's configs start from
            (MODEL.WEIGHTS), trained first into their OUTPUT_DIR if absent.
        tuned (str): which shipped values were tuned on this group's seeds, if any (the
            report says so: those runs are not untuned trials).
    """

    key: str
    title: str
    teacher: str
    methods: Tuple[tuple, ...]
    metrics: Tuple[str, ...] = ("bbox/AP",)
    reference: str = "LumiNet"
    requires: Tuple[str, ...] = ()
    tuned: str = ""


GROUPS: Dict[str, Group] = {
    g.key: g
    for g in (
        Group(
            "det",
            "built-in detection set, Faster R-CNN R-50-FPN → R-18-FPN",
            "teacher_R_50_FPN.yaml",
            tuple((m.name, m.config) for m in METHODS),
            tuned="LumiNet's weight 4 was chosen on seed 0 of this pair by equal-budget tuning "
            "against DKD (`dettune`, 2026-12-02-dettune.md; it was 1 before), so LumiNet's "
            "seed-0 run is not a fresh trial",
        ),
        Group(
            "mask",
            "built-in detection set, Mask R-CNN R-50-FPN → R-18-FPN",
            "teacher_mask_R_50_FPN.yaml",
            (
                ("student alone", "student_mask_R_18_FPN.yaml"),
                ("LumiNet", "luminet_mask_R50_R18.yaml"),
            ),
            metrics=("bbox/AP", "segm/AP"),
        ),
        Group(
            "cascade",
            "built-in detection set, Cascade R-CNN R-50-FPN teacher → Faster R-CNN R-18-FPN",
            "teacher_cascade_R_50_FPN.yaml",
            (
                ("student alone", "student_R_18_FPN.yaml"),
                ("LumiNet", "luminet_cascade_R50_R18.yaml"),
                # the same combined teacher target with KD (T 1, weight 1)
                ("KD", "luminet_cascade_R50_R18.yaml", _KD),
                # the other combination of the teacher's stages (cascade inference's score)
                ("LumiNet, mean of probabilities", "luminet_cascade_R50_R18.yaml", _MEAN_PROBS),
                ("KD, mean of probabilities", "luminet_cascade_R50_R18.yaml", _KD + _MEAN_PROBS),
            ),
        ),
        Group(
            "retinanet",
            "built-in detection set, RetinaNet R-50-FPN → R-18-FPN",
            "teacher_retinanet_R_50_FPN.yaml",
            (
                ("student alone", "student_retinanet_R_18_FPN.yaml"),
                ("KD", "kd_retinanet_R50_R18.yaml"),
                ("DIST", "dist_retinanet_R50_R18.yaml"),
                ("CrossKD", "crosskd_retinanet_R50_R18.yaml"),
                ("LumiNet", "luminet_retinanet_R50_R18.yaml"),
                # what else was tried: every valid anchor as the rows (KD's usual form)
                ("KD, all anchors", "kd_retinanet_R50_R18.yaml", _ALL_ANCHORS),
                ("LumiNet, all anchors", "luminet_retinanet_R50_R18.yaml", _ALL_ANCHORS),
            ),
            # the RetinaNet teacher and students start from these backbones (their configs)
            requires=("teacher_R_50_FPN.yaml", "student_R_18_FPN.yaml"),
        ),
        Group(
            "lazy",
            "built-in detection set, a LazyConfig (new-baseline-style) R-50-FPN teacher → the "
            "YAML R-18-FPN student",
            "lazy_teacher_R_50_FPN.py",
            (
                ("student alone", "student_R_18_FPN.yaml"),
                ("KD", "kd_lazyteacher_R50_R18.yaml"),
                ("LumiNet", "luminet_lazyteacher_R50_R18.yaml"),
            ),
            # the LazyConfig teacher starts from the YAML teacher's weights (its config)
            requires=("teacher_R_50_FPN.yaml",),
        ),
    )
}


@dataclass
class PairedDetection:
    """metrics: label -> per seed {metric: value}; teacher: its final metrics;
    run_records: one per run (group, method, seed, config, command, metrics)."""

    group: Group
    metrics: Dict[str, List[Dict[str, float]]]
    teacher: Dict[str, float]
    run_records: List[Dict] = field(default_factory=list)
    #: how the teacher (last) and what it required (first) were trained: see common.recipe
    provenance: List[str] = field(default_factory=list)

    def values(self, metric: str) -> Dict[str, List[float]]:
        return {k: [r.get(metric, float("nan")) for r in v] for k, v in self.metrics.items()}

    def markdown(self) -> List[str]:
        g = self.group
        seeds = len(next(iter(self.metrics.values())))
        names = [METRIC_NAMES.get(m, m) for m in g.metrics]
        teacher = ", ".join(
            f"{n} {self.teacher.get(m, float('nan')):.1f}" for n, m in zip(names, g.metrics)
        )
        lines = [
            f"## Accuracy: {g.title}, paired seeds",
            "",
            f"configs/Digits-Detection/, {seeds} seeds; seed k gives every student the same "
            "initialisation and data order. One trial per method (the shipped configs)"
            + (f"; {g.tuned}." if g.tuned else ", none tuned on these runs."),
            "",
            f"Teacher ({g.teacher}): {teacher}.",
            "",
        ]
        if self.provenance:
            lines += ["Trained: " + "; ".join(self.provenance) + ".", ""]
        lines += [
            "| model | " + " | ".join(names) + f" | per seed {names[0]} |",
            "|---|" + "---|" * (len(names) + 1),
        ]
        first = self.values(g.metrics[0])
        for label in self.metrics:
            cells = [mean_std(self.values(m)[label]) for m in g.metrics]
            per_seed = ", ".join(f"{x:.1f}" for x in first[label])
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_seed} |")
        lines.append("")
        for metric, name in zip(g.metrics, names):
            lines += paired_lines(self.values(metric), g.reference, f"{name} points")
        return lines

    def chart(self):
        first = self.group.metrics[0]
        data = {"teacher": [self.teacher.get(first, float("nan"))]}
        data.update(self.values(first))
        return f"{self.group.key}: {METRIC_NAMES.get(first, first)}", data


def group_teacher(group: Group, quick: bool, work: str, env: dict) -> Tuple[str, Dict, List[str]]:
    """(weights, final metrics, provenance) of the group's teacher (after what the group
    requires), see :func:`~benchmarks.common.trained`; provenance: "config: recipe" of what
    the group required, then of the teacher (:func:`~benchmarks.common.recipe`). --quick:
    random weights of its architecture, nothing required, no provenance."""
    if quick:
        return random_weights(group.teacher, work), {}, []
    provenance = []
    for config in group.requires:
        final, _ = trained(config, env, group.key)
        provenance.append(f"{config}: {recipe(os.path.dirname(final))}")
    weights, metrics = trained(group.teacher, env, f"{group.key} teacher")
    provenance.append(f"{group.teacher}: {recipe(os.path.dirname(weights))}")
    return weights, metrics, provenance


def run(
    group: Group,
    seeds: int,
    quick: bool,
    work: str,
    env: dict,
    procs: Optional[int] = None,
    methods: Optional[Sequence[str]] = None,
) -> PairedDetection:
    """Every method of ``group`` (or those of ``methods``, by label; the reference always
    runs) for ``seeds`` paired seeds."""
    from luminet_det import load_config
    from luminet_det.config import TEACHER_ARCHITECTURE

    teacher, t_metrics, provenance = group_teacher(group, quick, work, env)
    metrics, runs = {}, []
    chosen = [m for m in group.methods if methods is None or m[0] in methods]
    if methods is not None and group.reference not in [m[0] for m in chosen]:
        chosen += [m for m in group.methods if m[0] == group.reference]
    for label, config, *overrides in chosen:
        extra = list(overrides[0]) if overrides else []
        distilled = load_config(os.path.join(DIGITS, config)).MODEL.META_ARCHITECTURE
        distilled = distilled in TEACHER_ARCHITECTURE
        metrics[label] = []
        # by config (and overrides), not by group: the same student alone is shared by groups
        name = "_".join(
            [config.replace(".yaml", "")]
            + [re.sub(r"[^A-Za-z0-9]+", "", str(x).split(".")[-1]) for x in extra]
        )
        for seed in range(seeds):
            out = os.path.join(work, "det", name, f"seed{seed}")
            weights = teacher if distilled else None
            train_detector(f"{group.key}: {label}", config, out, seed, weights, quick, env, extra)
            row = final_metrics(out)
            metrics[label].append(row)
            runs.append(
                {
                    "group": group.key,
                    "method": label,
                    "seed": seed,
                    **detector_record(config, out, seed, weights, quick, extra),
                    **row,
                }
            )
            if distilled and provenance:
                runs[-1]["teacher"] = provenance[-1]
        if label == "student alone" and not quick:
            _check_teacher_beats(group, t_metrics, metrics[label])
    return PairedDetection(group, metrics, t_metrics, runs, provenance)


def _check_teacher_beats(group: Group, teacher: Dict[str, float], alone: List[Dict]) -> None:
    """Stop before the distilled students if the group's teacher is not above the student
    alone (mean box AP over the seeds run): distilling from it would measure nothing."""
    mean = sum(r["bbox/AP"] for r in alone) / len(alone)
    if not teacher["bbox/AP"] > mean:
        raise RuntimeError(
            f"The {group.key} group's teacher ({group.teacher}) has box AP "
            f"{teacher['bbox/AP']:.1f}, not above the student alone's {mean:.1f}: distilling from "
            "it measures nothing. Train a stronger teacher (more iterations, or a recipe that "
            "converges on this set) into its OUTPUT_DIR, then rerun."
        )


def sections(keys: Sequence[str]) -> List[str]:
    """The group keys among ``keys``, in GROUPS order."""
    return [k for k in GROUPS if k in keys]
