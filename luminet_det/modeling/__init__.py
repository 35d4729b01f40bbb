"""Detectron2 modeling components of luminet_det.

Importing this package registers ``DistillRCNN`` and ``DistillRetinaNet`` in
``META_ARCH_REGISTRY`` and the MobileNetV2(-FPN) backbones in ``BACKBONE_REGISTRY``, and
imports :mod:`luminet_det.data` (the built-in datasets' registration), so that this one import
registers everything a detector of the plugin needs.

* :mod:`.distiller` — what both distilled meta-architectures share (teachers, weights,
  warm-up, finiteness checks, student state dict);
* :mod:`.distill_rcnn` — Faster / Mask / Cascade R-CNN students;
* :mod:`.distill_retinanet` — RetinaNet students (per-anchor sigmoid losses);
* :mod:`.records` — its typed seam (StudentRecord with its box Stages, TeacherOutputs);
* :mod:`.teacher` — building and checking teachers;
* :mod:`.roi` — the box branch (which heads have one, its logits on given boxes);
* :mod:`.reviewkd` — ReviewKD's fusion adapters and loss;
* :mod:`.backbone` — MobileNetV2-FPN;
* :mod:`.roi_align` — ROIAlign whose CPU input gradient is two matrix products (the training
  command swaps it in: ``MODEL.DISTILL.ROI_ALIGN_CPU_GRAD``).
"""

from .. import data as _data  # noqa: F401  (registers the built-in datasets)
from .backbone import MobileNetV2, build_mobilenetv2_backbone, build_mobilenetv2_fpn_backbone
from .distill_rcnn import DistillRCNN
from .distill_retinanet import DistillRetinaNet, check_anchors_align
from .distiller import STUDENT_EXCLUDED_PREFIXES, Distiller, student_state_dict
from .records import DenseRecord, Stage, StudentRecord, TeacherOutputs
from .reviewkd import ABF, ReviewKD
from .roi import box_logits, num_box_stages, require_box_branch
from .roi_align import use_matmul_roi_align_grad
from .teacher import (
    build_teacher,
    build_teachers,
    check_teacher_cfg,
    freeze,
    load_teacher_cfg,
    load_teacher_weights,
    run_teacher,
    teacher_architecture,
    teacher_box_logits,
    teacher_images,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
