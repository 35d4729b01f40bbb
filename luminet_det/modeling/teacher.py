"""The teacher: its own detectron2 config and weights, checked against the student, frozen.

Every check of a teacher lives here and runs once: its config (architecture, class count,
input format) before anything is built, its box branch once built, its weights once loaded.
"""

from __future__ import annotations

import logging
import os
from typing import List, Optional, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.structures import Boxes, ImageList

from ..config import TEACHER_ARCHITECTURE, get_num_classes, num_classes_key
from ..errors import ConfigError, WeightsUnavailableError
from .lazy_teacher import build_lazy_teacher, is_lazy_config, load_lazy_teacher_cfg
from .roi import box_logits, num_box_stages, require_box_branch
from .weights import local_weights

__all__ = [
    "load_teacher_cfg",
    "teacher_architecture",
    "check_teacher_cfg",
    "build_teacher",
    "build_teachers",
    "load_teacher_weights",
    "freeze",
    "run_teacher",
    "teacher_images",
    "teacher_box_logits",
]

logger = logging.getLogger(__name__)


def load_teacher_cfg(
    config: str,
    opts: Optional[List] = None,
    device: str = "cpu",
    architecture: str = "GeneralizedRCNN",
) -> CfgNode:
    """The teacher's own detectron2 config.

    Args:
        config (str): path to a YAML file, or a model-zoo name such as
            ``"COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"``.
        opts (list): KEY VALUE overrides applied after the file.
        device (str): MODEL.DEVICE of the teacher (always the student's).
        architecture (str): the META_ARCHITECTURE the teacher must have
            ("GeneralizedRCNN" for DistillRCNN, "RetinaNet" for DistillRetinaNet; see
            :func:`teacher_architecture`).
    """
    if not config:
        raise ConfigError(
            "MODEL.DISTILL.TEACHER_CONFIG is empty: DistillRCNN needs the teacher's detectron2 "
            "config, e.g. MODEL.DISTILL.TEACHER_CONFIG "
            "'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml' or a path to a YAML file."
        )
    path = config
    if not os.path.isfile(path):
        from detectron2 import model_zoo  # imported lazily: it needs pkg_resources

        try:
            path = model_zoo.get_config_file(config)
        except RuntimeError:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_CONFIG={config!r} is neither an existing file (looked in "
                f"{os.getcwd()!r} and, via tools/train_net.py, next to the student's config) nor "
                "a detectron2 model-zoo config name (e.g. "
                "'COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml')."
            ) from None
    cfg = get_cfg()
    # A teacher config may carry a MODEL.DISTILL node (e.g. a config of this plugin reused as a
    # teacher); the node must exist to merge such a file.
    from luminet_det.config import add_luminet_config

    add_luminet_config(cfg)
    cfg.set_new_allowed(False)
    cfg.merge_from_file(path)
    if opts:
        if len(opts) % 2:
            raise ConfigError(
                f"MODEL.DISTILL.TEACHER_OPTS must be a list of KEY VALUE pairs, got an odd number "
                f"of items: {list(opts)}"
            )
        cfg.merge_from_list(list(opts))
    cfg.MODEL.DEVICE = device
    if cfg.MODEL.META_ARCHITECTURE != architecture:
        student = {v: k for k, v in TEACHER_ARCHITECTURE.items()}.get(architecture, "student")
        raise ConfigError(
            f"The teacher ({config}) has META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE!r}; a "
            f"{student}'s teacher must be a stock {architecture!r} (supported pairs: "
            + ", ".join(f"{k} <- {v}" for k, v in TEACHER_ARCHITECTURE.items())
            + "). To use a distilled student as a teacher, export it first with "
            "tools/export_student.py."
        )
    return cfg


def teacher_architecture(cfg: CfgNode) -> str:
    """The META_ARCHITECTURE the teachers of the student config ``cfg`` must have."""
    return TEACHER_ARCHITECTURE.get(cfg.MODEL.META_ARCHITECTURE, "GeneralizedRCNN")


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Put a model in eval mode and stop gradients into all of its parameters."""
    model.eval()
    model.requires_grad_(False)
    return model


def load_teacher_weights(teacher: torch.nn.Module, weights: str, config: str = "") -> None:
    """Load the teacher's checkpoint and make sure every teacher parameter came from it.

    Raises:
        ValueError: no weights given.
        WeightsUnavailableError: a local checkpoint that does not exist, or a URL that could
            not be downloaded.
        RuntimeError: a checkpoint that cannot be read, or that leaves parameters of the
            teacher at their random initialisation (listed by name).
    """
    if not weights:
        raise ConfigError(
            "MODEL.DISTILL.TEACHER_WEIGHTS is empty: distilling from a randomly initialised "
            "teacher teaches the student nothing. Set it to the teacher's checkpoint (a path, a "
            "URL, 'detectron2://...', or 'zoo' for the model-zoo weights of TEACHER_CONFIG)."
        )
    if weights == "zoo":
        from detectron2 import model_zoo

        weights = model_zoo.get_checkpoint_url(config)
    if "://" not in weights and not os.path.isfile(weights):
        raise WeightsUnavailableError(
            f"Teacher weights {weights!r} not found (MODEL.DISTILL.TEACHER_WEIGHTS). Give the "
            "path of the teacher's checkpoint (.pth or .pkl), e.g. output/teacher/model_final.pth."
        )
    source, weights = weights, local_weights(weights, "MODEL.DISTILL.TEACHER_WEIGHTS")
    checkpointer = _RecordingCheckpointer(teacher)
    try:
        checkpointer.load(weights)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name and a fix
        raise RuntimeError(
            f"Could not read the teacher checkpoint {weights!r}: {type(e).__name__}: {e}. The "
            "file may be truncated or not a detectron2/PyTorch checkpoint; re-download or "
            "re-export it."
        ) from e
    incompatible = checkpointer.incompatible
    if incompatible is None:
        raise RuntimeError(f"The teacher checkpoint {weights!r} holds no model weights.")
    # Keys of the teacher that the file did not provide (absent, or of another shape and so
    # skipped): those parameters and buffers keep their random initialisation.
    not_loaded = [k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")] + [
        k for k, *_ in incompatible.incorrect_shapes
    ]
    if not_loaded:
        total = len(teacher.state_dict())
        shown = ", ".join(not_loaded[:8]) + (" ..." if len(not_loaded) > 8 else "")
        raise RuntimeError(
            f"The teacher checkpoint {weights!r} left {len(not_loaded)} of {total} teacher "
            f"parameters/buffers at their random initialisation ({shown}). The checkpoint does "
            "not match MODEL.DISTILL.TEACHER_CONFIG (other depth, head or class count?); a "
            "student must not be distilled from a partly random teacher."
        )
    logger.info(f"Teacher weights loaded from {source}; every teacher parameter was found.")


class _RecordingCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer that keeps the incompatible keys of its last load."""

    incompatible = None

    def _log_incompatible_keys(self, incompatible) -> None:
        self.incompatible = incompatible
        super()._log_incompatible_keys(incompatible)


def check_teacher_cfg(teacher_cfg: CfgNode, student_cfg: CfgNode, name: str) -> None:
    """Raise ValueError if the teacher ``name`` cannot teach the student: another class count,
    Cascade heads with another number of stages, or an input format that cannot be converted
    (only RGB <-> BGR can)."""
    t_classes, s_classes = get_num_classes(teacher_cfg), get_num_classes(student_cfg)
    if t_classes != s_classes:
        key = num_classes_key(teacher_cfg)
        raise ConfigError(
            f"Teacher and student class counts differ: the teacher config {name!r} has "
            f"{key}={t_classes}, the student {s_classes}. Their logits must cover the same "
            "classes: use a teacher trained on the student's dataset (or set "
            f"MODEL.DISTILL.TEACHER_OPTS ['{key}', N] for a teacher checkpoint with N classes)."
        )
    cascade = [c.MODEL.ROI_HEADS.NAME == "CascadeROIHeads" for c in (teacher_cfg, student_cfg)]
    stages = [len(c.MODEL.ROI_BOX_CASCADE_HEAD.IOUS) for c in (teacher_cfg, student_cfg)]
    if all(cascade) and stages[0] != stages[1]:
        raise ConfigError(
            f"The Cascade teacher ({name}) has {stages[0]} stages and the Cascade student "
            f"{stages[1]} (MODEL.ROI_BOX_CASCADE_HEAD.IOUS): stage k of the student is distilled "
            "from stage k of the teacher, so they must have as many. Supported: Cascade -> "
            "Cascade with as many stages, Cascade -> Faster R-CNN (stages combined), Faster "
            "R-CNN -> Cascade (one head scores every stage)."
        )
    formats = {teacher_cfg.INPUT.FORMAT, student_cfg.INPUT.FORMAT}
    if len(formats) == 2 and formats != {"RGB", "BGR"}:
        raise ConfigError(
            f"Student INPUT.FORMAT {student_cfg.INPUT.FORMAT!r} and teacher ({name}) INPUT.FORMAT "
            f"{teacher_cfg.INPUT.FORMAT!r} differ and only RGB<->BGR can be converted."
        )


def build_teacher(teacher_cfg: CfgNode, weights: str, config_name: str = "") -> torch.nn.Module:
    """Build the teacher from its config, check its box branch, load and check its weights,
    freeze it.

    Args:
        teacher_cfg (CfgNode): from :func:`load_teacher_cfg`.
        weights (str): checkpoint path/URL, or "zoo" for the zoo weights of ``config_name``.
        config_name (str): the model-zoo name of the teacher config (for ``weights="zoo"``).
    """
    teacher = build_model(teacher_cfg)
    if isinstance(teacher, GeneralizedRCNN):
        require_box_branch(teacher.roi_heads, "teacher")
    load_teacher_weights(teacher, weights, config_name)
    return freeze(teacher)


def build_teachers(cfg: CfgNode) -> List[torch.nn.Module]:
    """The teacher and the ensemble's further teachers of a DistillRCNN or DistillRetinaNet
    config (:func:`teacher_architecture`; ``cfg.MODEL.
    DISTILL``: TEACHER_CONFIG / TEACHER_OPTS / TEACHER_WEIGHTS, then ENSEMBLE_CONFIGS paired with
    ENSEMBLE_WEIGHTS), each checked against the student config before its weights are read."""
    d = cfg.MODEL.DISTILL
    specs = [(d.TEACHER_CONFIG, list(d.TEACHER_OPTS), d.TEACHER_WEIGHTS)]
    specs += [(c, [], w) for c, w in zip(d.ENSEMBLE_CONFIGS, d.ENSEMBLE_WEIGHTS)]
    teachers = []
    for config, opts, weights in specs:
        if is_lazy_config(config):  # a LazyConfig (.py) teacher: modeling/lazy_teacher.py
            lazy = load_lazy_teacher_cfg(config, opts)
            teacher = build_lazy_teacher(lazy, cfg, config, cfg.MODEL.DEVICE)
            load_teacher_weights(teacher, weights, config)
            teachers.append(freeze(teacher))
            continue
        teacher_cfg = load_teacher_cfg(config, opts, cfg.MODEL.DEVICE, teacher_architecture(cfg))
        check_teacher_cfg(teacher_cfg, cfg, config)
        teachers.append(build_teacher(teacher_cfg, weights, config))
    return teachers


def teacher_images(
    teacher: GeneralizedRCNN,
    student_format: str,
    batched_inputs: List[dict],
    student_images: Optional[ImageList] = None,
    student_backbone: Optional[torch.nn.Module] = None,
) -> ImageList:
    """The student's images as the teacher takes them: in its channel order (RGB <-> BGR,
    checked by :func:`check_teacher_cfg`), normalised with its own pixel statistics, padded
    (an ImageList), exactly as ``teacher.preprocess_image`` would make them.

    Given the student's own ImageList of the same images (``student_images``) and a student
    backbone that pads as the teacher's does (size divisibility and padding constraints), the
    padded size and the image sizes are taken from it instead of being computed again
    (ImageList.from_tensors reads them back from tensors, which waits for the device)."""
    if teacher.input_format != student_format:
        batched_inputs = [dict(x, image=x["image"].flip(0)) for x in batched_inputs]
    backbone = teacher.backbone
    same_padding = (
        student_images is not None
        and student_backbone is not None
        and student_backbone.size_divisibility == backbone.size_divisibility
        and student_backbone.padding_constraints == backbone.padding_constraints
    )
    if not same_padding:
        return teacher.preprocess_image(batched_inputs)
    images = [teacher._move_to_current_device(x["image"]) for x in batched_inputs]
    images = [(x - teacher.pixel_mean) / teacher.pixel_std for x in images]
    shape = (len(images), images[0].shape[0]) + tuple(student_images.tensor.shape[-2:])
    batch = images[0].new_zeros(shape)  # ImageList.from_tensors pads with 0 too
    for padded, image in zip(batch, images):
        padded[:, : image.shape[-2], : image.shape[-1]].copy_(image)
    sizes = [tuple(image.shape[-2:]) for image in images]
    assert sizes == [tuple(s) for s in student_images.image_sizes], f"{sizes}"
    return ImageList(batch, sizes)


def teacher_box_logits(
    teacher: GeneralizedRCNN,
    features: dict,
    stage_boxes: List[List[Boxes]],
    combine: str = "mean_logits",
) -> List[torch.Tensor]:
    """The teacher's box logits (R_k, K+1) on each student stage's boxes (``stage_boxes``: per
    student box stage, the boxes of each image), from its backbone ``features``. Which teacher
    head scores student stage k: a single box branch scores every stage; a Cascade teacher
    scores stage k with its stage-k head when the student has as many stages, and a
    single-stage student's boxes with its stages combined as ``combine`` says
    (``MODEL.DISTILL.CASCADE_COMBINE``, see :func:`~luminet_det.modeling.roi.box_logits`)."""
    teacher_stages, student_stages = num_box_stages(teacher.roi_heads), len(stage_boxes)
    assert (
        teacher_stages in (1, student_stages) or student_stages == 1
    ), f"a {teacher_stages}-stage teacher for a {student_stages}-stage student"
    cascade_pairs = teacher_stages > 1 and student_stages > 1
    return [
        box_logits(teacher, features, boxes, k if cascade_pairs else None, combine)
        for k, boxes in enumerate(stage_boxes)
    ]


def run_teacher(
    teacher: GeneralizedRCNN,
    student_format: str,
    batched_inputs: List[dict],
    stage_boxes: Optional[List[List[Boxes]]],
    combine: str = "mean_logits",
    student_images: Optional[ImageList] = None,
    student_backbone: Optional[torch.nn.Module] = None,
) -> Tuple[dict, Optional[List[torch.Tensor]]]:
    """The teacher's backbone (FPN) features on the student's images (:func:`teacher_images`,
    with ``student_images`` and ``student_backbone`` when at hand) and, if ``stage_boxes`` are
    given, its box logits on each student stage's boxes (:func:`teacher_box_logits`, with
    ``combine``). Call under ``torch.no_grad()``."""
    images = teacher_images(
        teacher, student_format, batched_inputs, student_images, student_backbone
    )
    features = teacher.backbone(images.tensor)
    if stage_boxes is None:
        return features, None
    return features, teacher_box_logits(teacher, features, stage_boxes, combine)
