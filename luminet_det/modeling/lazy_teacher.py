"""Teachers from LazyConfig (``.py``) files: detectron2's "new baselines" (LSJ Mask R-CNN, RegNet),
ViTDet, MViTv2 and Swin models, built with ``detectron2.config.instantiate``.

``MODEL.DISTILL.TEACHER_CONFIG`` ending in ``.py`` names one: a path, or a name of detectron2's
model zoo (``new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py``, as ``model_zoo.get_config``
resolves it). ``MODEL.DISTILL.TEACHER_OPTS`` then holds LazyConfig overrides ``"key=value"``
(e.g. ``"model.roi_heads.num_classes=10"``), each checked to name an existing key. The model
is ``instantiate(cfg.model)``: its own input format and pixel statistics come with it. It is
checked against the student (architecture, class count, channel order, box branch), its
weights loaded in full or refused, and frozen, as a YAML teacher (:mod:`.teacher`).
SyncBN / NaiveSyncBatchNorm layers of the new baselines run as BatchNorm in eval mode.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from detectron2.config import CfgNode
from detectron2.modeling import GeneralizedRCNN, RetinaNet

from ..config import TEACHER_ARCHITECTURE, get_num_classes, num_classes_key
from ..errors import ConfigError
from .roi import num_box_stages, require_box_branch

__all__ = ["is_lazy_config", "load_lazy_teacher_cfg", "build_lazy_teacher"]

_CLASSES = {"GeneralizedRCNN": GeneralizedRCNN, "RetinaNet": RetinaNet}


def is_lazy_config(config: str) -> bool:
    """Whether a teacher config names a LazyConfig (``.py``) file."""
    return str(config).endswith(".py")


def load_lazy_teacher_cfg(config: str, opts: Sequence[str] = ()):
    """The LazyConfig of ``config`` (a path, or a detectron2 model-zoo name) with ``opts``
    (``"key=value"`` overrides) applied.

    Raises:
        ConfigError: a file that is neither on disk nor in the zoo, a file that defines no
            ``model``, an override that is not ``key=value`` or names no existing key.
    """
    from detectron2.config import LazyConfig

    if os.path.isfile(config):
        cfg = LazyConfig.load(config)
    else:
        from detectron2 import model_zoo

        try:
            cfg = model_zoo.get_config(config)
        except RuntimeError:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_CONFIG={config!r} is neither an existing LazyConfig file "
                f"(looked in {os.getcwd()!r} and next to the student's config) nor a detectron2 "
                "model-zoo LazyConfig name (e.g. 'new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py')."
            ) from None
    if "model" not in cfg:
        raise ConfigError(
            f"The teacher LazyConfig {config!r} defines no `model` (it defines {sorted(cfg)}): "
            "a teacher config must set `model = L(GeneralizedRCNN)(...)` or import one, as "
            "detectron2's common/models/*.py do."
        )
    overrides = []
    for item in opts or []:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_OPTS of a LazyConfig teacher ({config}) are 'key=value' "
                f"strings (e.g. 'model.roi_heads.num_classes=10'), got {item!r}."
            )
        key = item.split("=", 1)[0].strip()
        node, parts = cfg, key.split(".")
        for i, part in enumerate(parts):
            if part not in node:
                raise ConfigError(
                    f"MODEL.DISTILL.TEACHER_OPTS {item!r}: the teacher LazyConfig {config!r} has "
                    f"no key {'.'.join(parts[: i + 1])!r}; overrides can only change keys it "
                    "defines (see the file)."
                )
            node = node[part]
        overrides.append(item)
    return LazyConfig.apply_overrides(cfg, overrides)


def build_lazy_teacher(lazy_cfg, student_cfg: CfgNode, name: str, device: str) -> torch.nn.Module:
    """Instantiate the teacher model of ``lazy_cfg`` on ``device`` and check it against the
    student config (its weights are loaded by the caller:
    :func:`~luminet_det.modeling.teacher.build_teachers`).

    Raises:
        ConfigError: another architecture than the student's teachers (GeneralizedRCNN for
            DistillRCNN, RetinaNet for DistillRetinaNet), another class count, a channel order
            other than RGB/BGR, ROI heads without a box branch.
    """
    from detectron2.config import instantiate

    wanted = TEACHER_ARCHITECTURE.get(student_cfg.MODEL.META_ARCHITECTURE, "GeneralizedRCNN")
    teacher = instantiate(lazy_cfg.model)
    if not isinstance(teacher, _CLASSES[wanted]):
        raise ConfigError(
            f"The teacher LazyConfig {name!r} builds a {type(teacher).__name__}; a "
            f"{student_cfg.MODEL.META_ARCHITECTURE}'s teacher must be a {wanted}."
        )
    teacher.to(device)
    classes = teacher.num_classes if wanted == "RetinaNet" else teacher.roi_heads.num_classes
    if classes != get_num_classes(student_cfg):
        key = "model.num_classes" if wanted == "RetinaNet" else "model.roi_heads.num_classes"
        raise ConfigError(
            f"Teacher and student class counts differ: the teacher LazyConfig {name!r} has "
            f"{classes} classes ({key}), the student {get_num_classes(student_cfg)} "
            f"({num_classes_key(student_cfg)}). Use a teacher trained on the student's classes "
            f"(MODEL.DISTILL.TEACHER_OPTS ['{key}=N'] for a checkpoint with N classes)."
        )
    formats = {teacher.input_format, student_cfg.INPUT.FORMAT}
    if len(formats) == 2 and formats != {"RGB", "BGR"}:
        raise ConfigError(
            f"Student INPUT.FORMAT {student_cfg.INPUT.FORMAT!r} and the teacher's input_format "
            f"{teacher.input_format!r} ({name}) differ and only RGB<->BGR can be converted."
        )
    square = getattr(teacher.backbone, "padding_constraints", {}).get("square_size", 0)
    largest = max(student_cfg.INPUT.MAX_SIZE_TRAIN, student_cfg.INPUT.MAX_SIZE_TEST)
    if square and largest > square:
        raise ConfigError(
            f"The teacher {name!r} pads every image to a {square} x {square} square (ViTDet's "
            f"square_pad), but the student's images reach {largest} px (INPUT.MAX_SIZE_TRAIN "
            f"{student_cfg.INPUT.MAX_SIZE_TRAIN}, MAX_SIZE_TEST {student_cfg.INPUT.MAX_SIZE_TEST}"
            f"): set both to at most {square}."
        )
    if isinstance(teacher, GeneralizedRCNN):
        require_box_branch(teacher.roi_heads, "teacher")
        stages = num_box_stages(teacher.roi_heads)
        s = student_cfg.MODEL
        student_stages = (
            len(s.ROI_BOX_CASCADE_HEAD.IOUS) if s.ROI_HEADS.NAME == "CascadeROIHeads" else 1
        )
        if stages > 1 and student_stages > 1 and stages != student_stages:
            raise ConfigError(
                f"The Cascade teacher ({name}) has {stages} stages and the Cascade student "
                f"{student_stages}: stage k is distilled from stage k, so they must have as many."
            )
    return teacher
