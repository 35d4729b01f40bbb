"""Evaluate a distilled detector's teachers before distilling (``tools/train_net.py --check-teacher``)."""

from __future__ import annotations

import logging
import os
from typing import Dict

from detectron2.config import CfgNode
from torch import nn

from ..errors import TeacherTooWeakError
from ..rng import preserved_rng

__all__ = ["evaluate_teacher", "TeacherTooWeakError"]

logger = logging.getLogger(__name__)


def evaluate_teacher(cfg: CfgNode, model: nn.Module, min_ap: float = 1.0) -> Dict[str, Dict]:
    """Evaluate the teacher(s) of a built DistillRCNN or DistillRetinaNet on ``cfg.DATASETS.TEST[0]``, each with
    its own config (input format, test sizes) and COCO AP, and raise
    :class:`TeacherTooWeakError` if one's box AP is below ``min_ap``. Evaluates the very
    modules the student will learn from (no second build, no extra random draws). Under
    several processes the evaluation is distributed and every process takes the same decision.

    Args:
        cfg (CfgNode): the student's (DistillRCNN) config.
        model (nn.Module): the built DistillRCNN, possibly wrapped in DistributedDataParallel.
        min_ap (float): minimum box AP (0-100) of every teacher.

    Returns:
        dict: per teacher config, detectron2's results ``{"bbox": {"AP": ..., ...}}`` (empty
        on processes other than the main one).
    """
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils import comm

    from ..modeling.lazy_teacher import is_lazy_config
    from ..modeling.teacher import load_teacher_cfg, teacher_architecture

    model = model.module if hasattr(model, "module") else model
    d = cfg.MODEL.DISTILL
    teachers = [(d.TEACHER_CONFIG, d.TEACHER_OPTS, d.TEACHER_WEIGHTS, model.teacher)]
    teachers += [
        (config, [], weights, t)
        for config, weights, t in zip(d.ENSEMBLE_CONFIGS, d.ENSEMBLE_WEIGHTS, model.extra_teachers)
    ]
    name = cfg.DATASETS.TEST[0]
    out: Dict[str, Dict] = {}
    for i, (config, opts, weights, teacher) in enumerate(teachers):
        if is_lazy_config(config):
            # a LazyConfig teacher has no YAML test loader: the student's (its sizes and
            # channel order; the teacher's own order restored by a flip where they differ)
            tcfg = cfg.clone()
            tcfg.defrost()
            teacher = _InStudentFormat(teacher, cfg.INPUT.FORMAT)
        else:
            tcfg = load_teacher_cfg(config, opts, cfg.MODEL.DEVICE, teacher_architecture(cfg))
        tcfg.DATASETS.TEST = (name,)
        tcfg.DATALOADER.NUM_WORKERS = cfg.DATALOADER.NUM_WORKERS
        folder = os.path.join(cfg.OUTPUT_DIR, "teacher_eval" + (f"_{i}" if i else ""))
        with preserved_rng():  # e.g. a DataLoader iterator draws its base seed from torch
            results = DefaultTrainer.test(tcfg, teacher, [COCOEvaluator(name, output_dir=folder)])
        # only the main process holds the results: share its AP so all processes agree
        ap = comm.all_gather(results.get("bbox", {}).get("AP", float("nan")))[0]
        if not ap >= min_ap:
            raise TeacherTooWeakError(
                f"The teacher ({config}, weights {weights}) reaches box AP {ap:.2f} on {name}, "
                f"below the minimum {min_ap}. Distilling from it would teach the student noise: "
                "check the weights, the class order and the input format (or lower "
                "--min-teacher-ap)."
            )
        logger.info(f"Teacher {config}: box AP on {name} {ap:.2f} (minimum {min_ap}).")
        out[config] = results
    return out


class _InStudentFormat(nn.Module):
    """A teacher fed images in the student's channel order (its evaluation through the
    student's test loader): flips RGB <-> BGR when the two differ."""

    def __init__(self, teacher: nn.Module, student_format: str):
        super().__init__()
        self.teacher = teacher
        self.flip = teacher.input_format != student_format

    def forward(self, batched_inputs):
        if self.flip:
            batched_inputs = [dict(x, image=x["image"].flip(0)) for x in batched_inputs]
        return self.teacher(batched_inputs)
