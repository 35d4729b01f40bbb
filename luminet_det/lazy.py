"""LazyConfig students: a detectron2 LazyConfig (``.py``) whose ``model`` is the student and whose
``distill`` section names the teacher and the losses, as ``MODEL.DISTILL`` does for YAML::

    from detectron2.model_zoo import get_config
    model = get_config("common/models/mask_rcnn_fpn.py").model      # the student
    ...                                                              # dataloader, optimizer, train
    distill = dict(
        teacher_config="COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",   # YAML or LazyConfig
        teacher_weights="zoo",
        losses=["luminet"],
        luminet=dict(temperature=1.0, weight=1.0),
        warmup_iters=1000,
    )

The keys of ``distill`` are those of ``MODEL.DISTILL`` in lower case (luminet_det/config.py
documents each), nested nodes as dicts. :func:`build_lazy_model` turns the section into the
plugin's node, runs every check of a YAML config on it (with what the checks need of the
student: architecture, class count, channel order, image sizes) and instantiates the student
as a ``DistillRCNN`` / ``DistillRetinaNet`` with the student's own components: the same
teachers, losses, warm-up, finiteness checks and checkpoints without the teacher as a YAML
student. luminet-lazy-train (:mod:`luminet_det.cli.lazy_train`) trains it;
:func:`export_lazy_student` writes the stock student.
"""

from __future__ import annotations

import copy
import os
from typing import Tuple

import torch
from detectron2.config import CfgNode
from torch import nn

from .errors import ConfigError

__all__ = [
    "distill_cfgnode",
    "build_lazy_model",
    "export_lazy_student",
    "lazy_student_config",
    "resolve_lazy_teacher_paths",
]


def resolve_lazy_teacher_paths(lazy_cfg, config_file: str) -> None:
    """Make the relative teacher configs of a ``distill`` section absolute where the file
    exists next to ``config_file`` (as YAML students resolve ``TEACHER_CONFIG``; in place)."""
    if "distill" not in lazy_cfg:
        return
    base = os.path.dirname(os.path.abspath(config_file))

    def resolve(path):
        if not path or os.path.isabs(path) or "://" in str(path):
            return path
        candidate = os.path.join(base, path)
        return os.path.normpath(candidate) if os.path.isfile(candidate) else path

    d = lazy_cfg.distill
    if "teacher_config" in d:
        d.teacher_config = resolve(d.teacher_config)
    if "ensemble_configs" in d:
        d.ensemble_configs = [resolve(p) for p in d.ensemble_configs]


#: LazyConfig student targets -> (the distilled class's name, the num_classes attribute path)
_STUDENTS = {
    "GeneralizedRCNN": ("DistillRCNN", ("roi_heads", "num_classes")),
    "RetinaNet": ("DistillRetinaNet", ("num_classes",)),
}


def _target_name(node) -> str:
    target = node.get("_target_", None)
    return getattr(target, "__name__", str(target).split(".")[-1])


def _largest_image(lazy_cfg) -> Tuple[int, int]:
    """The largest training and test image side the LazyConfig's loaders produce (the
    ``max_size`` of a resize, or the size of a fixed-size crop / LSJ), 1333 if none is found."""

    def largest(loader) -> int:
        sizes = []
        for aug in (loader.get("mapper", {}) or {}).get("augmentations", []) or []:
            for key in ("max_size", "crop_size", "target_height", "target_width"):
                value = aug.get(key, None) if hasattr(aug, "get") else None
                if isinstance(value, (int, float)):
                    sizes.append(int(value))
                elif isinstance(value, (list, tuple)) and value:
                    sizes.append(int(max(value)))
        return max(sizes) if sizes else 1333

    data = lazy_cfg.get("dataloader", {}) or {}
    return largest(data.get("train", {}) or {}), largest(data.get("test", {}) or {})


def _flatten(prefix: str, node) -> list:
    pairs = []
    for key, value in node.items():
        full = f"{prefix}.{str(key).upper()}"
        if hasattr(value, "items"):
            pairs += _flatten(full, value)
        else:
            pairs += [full, value]
    return pairs


def distill_cfgnode(lazy_cfg) -> CfgNode:
    """The plugin's YACS node (``MODEL.DISTILL``) from a LazyConfig's ``distill`` section, with
    what the checks of luminet_det.config and the teachers need of the student (its
    META_ARCHITECTURE as the distilled one, class count, Cascade stages, channel order, device,
    largest image sides); checked by ``check_distill_config``.

    Raises:
        ConfigError: no ``distill`` section, a student other than GeneralizedRCNN / RetinaNet,
            an unknown key in ``distill`` (named, with the nearest valid one), a bad value.
    """
    from detectron2.config import get_cfg
    from omegaconf import OmegaConf

    from .config import _explain_key_error, add_luminet_config, check_distill_config

    if "distill" not in lazy_cfg:
        raise ConfigError(
            "This LazyConfig has no `distill` section: add distill = dict(teacher_config=..., "
            "teacher_weights=..., losses=[...]) (luminet_det/lazy.py shows one), or train the "
            "student alone with detectron2's tools/lazyconfig_train_net.py."
        )
    target = _target_name(lazy_cfg.model)
    if target not in _STUDENTS:
        raise ConfigError(
            f"A LazyConfig student must be a GeneralizedRCNN or a RetinaNet; `model` builds a "
            f"{target}."
        )
    distilled, classes_path = _STUDENTS[target]
    cfg = get_cfg()
    add_luminet_config(cfg)
    model = lazy_cfg.model
    cfg.MODEL.META_ARCHITECTURE = distilled
    num_classes = model
    for part in classes_path:
        num_classes = num_classes[part]
    if target == "RetinaNet":
        cfg.MODEL.RETINANET.NUM_CLASSES = int(num_classes)
    else:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = int(num_classes)
        heads = model.roi_heads
        if _target_name(heads) == "CascadeROIHeads":
            cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
            cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = [0.5] * len(heads.box_predictors)
        cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = bool(heads.get("train_on_pred_boxes", False))
    cfg.INPUT.FORMAT = model.get("input_format", "BGR")
    cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TEST = _largest_image(lazy_cfg)
    device = (lazy_cfg.get("train", {}) or {}).get("device", "cuda")
    cfg.MODEL.DEVICE = (
        "cpu" if device.startswith("cuda") and not torch.cuda.is_available() else device
    )
    distill = OmegaConf.to_container(lazy_cfg.distill, resolve=True)
    try:
        cfg.merge_from_list(_flatten("MODEL.DISTILL", distill))
    except (KeyError, AssertionError) as e:
        if _explain_key_error(cfg, e, "distill") is None:
            raise
        import difflib

        message = str(e.args[0]) if e.args else str(e)
        key = message.split(":", 1)[1].strip().replace("MODEL.DISTILL.", "").lower()
        valid = [k.replace("MODEL.DISTILL.", "").lower() for k in _distill_keys(cfg)]
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f" Did you mean distill.{close[0]}?" if close else ""
        raise ConfigError(
            f"The LazyConfig's distill section has no key distill.{key}: its keys are those of "
            f"MODEL.DISTILL in lower case (luminet_det/config.py documents each).{hint}"
        ) from None
    check_distill_config(cfg)
    return cfg


def _distill_keys(cfg: CfgNode) -> list:
    keys = []

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, CfgNode):
                walk(v, f"{prefix}{k}.")
            else:
                keys.append(f"{prefix}{k}")

    walk(cfg.MODEL.DISTILL, "MODEL.DISTILL.")
    return keys


def build_lazy_model(lazy_cfg) -> nn.Module:
    """The model of a LazyConfig: with a ``distill`` section, the student's components
    (``instantiate``\\ d) assembled into a DistillRCNN / DistillRetinaNet with the teachers
    and losses of the section; without one, the stock model. On ``train.device``."""
    from detectron2.config import instantiate

    from .config import DENSE_LOGIT_LOSSES, LOGIT_LOSSES
    from .modeling import DistillRCNN, DistillRetinaNet
    from .modeling.distiller import distillation_from_config

    if "distill" not in lazy_cfg:
        return instantiate(lazy_cfg.model)
    cfg = distill_cfgnode(lazy_cfg)
    kwargs = {k: instantiate(v) for k, v in lazy_cfg.model.items() if k != "_target_"}
    if cfg.MODEL.META_ARCHITECTURE == "DistillRetinaNet":
        extra = distillation_from_config(
            cfg,
            kwargs["backbone"],
            DENSE_LOGIT_LOSSES,
            cfg.MODEL.RETINANET.NUM_CLASSES,
            registry_name=lambda name: f"{name}_sigmoid",
        )
        model = DistillRetinaNet(**kwargs, **extra, anchors=cfg.MODEL.DISTILL.DENSE.ANCHORS)
    else:
        num_logits = cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1
        extra = distillation_from_config(cfg, kwargs["backbone"], LOGIT_LOSSES, num_logits)
        model = DistillRCNN(**kwargs, **extra, cascade_combine=cfg.MODEL.DISTILL.CASCADE_COMBINE)
    return model.to(cfg.MODEL.DEVICE)


def lazy_student_config(lazy_cfg, weights: str = ""):
    """A copy of a LazyConfig without its ``distill`` section, ``train.init_checkpoint`` set to
    ``weights``: the stock student, which detectron2 alone instantiates and loads."""
    out = copy.deepcopy(lazy_cfg)
    out.pop("distill", None)
    if "train" in out:
        out.train.init_checkpoint = weights
    return out


def export_lazy_student(lazy_cfg, checkpoint: str, output_dir: str, *, trusted: bool = False):
    """Write ``student.pth`` (the student's keys only) and ``student.yaml`` (the LazyConfig of
    the stock student, :func:`lazy_student_config`) into ``output_dir``; returns their paths.
    Stock detectron2 loads them::

        cfg = LazyConfig.load("student.yaml"); model = instantiate(cfg.model)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    """
    from detectron2.config import LazyConfig

    from .modeling.distiller import student_state_dict
    from .runio import atomic_save, load_checkpoint

    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"Checkpoint {checkpoint!r} not found.")
    data = load_checkpoint(checkpoint, trusted=trusted, opt_in="--trust-pickle")
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise RuntimeError(f"{checkpoint!r} holds no model state dict.")
    os.makedirs(output_dir, exist_ok=True)
    weights = os.path.join(output_dir, "student.pth")
    config = os.path.join(output_dir, "student.yaml")
    atomic_save({"model": student_state_dict(state), "__author__": "luminet_det"}, weights)
    LazyConfig.save(lazy_student_config(lazy_cfg, weights), config)
    return weights, config
