"""Detectron2 modeling components of luminet_det.

Importing this package registers ``DistillRCNN`` in ``META_ARCH_REGISTRY`` and
``build_mobilenetv2_fpn_backbone`` in ``BACKBONE_REGISTRY``.
"""

from .backbone import MobileNetV2, build_mobilenetv2_backbone, build_mobilenetv2_fpn_backbone
from .distill_rcnn import STUDENT_EXCLUDED_PREFIXES, DistillRCNN, box_logits, student_state_dict
from .reviewkd import ABF, ReviewKD
from .teacher import build_teacher, freeze, load_teacher_cfg, load_teacher_weights

__all__ = [k for k in globals().keys() if not k.startswith("_")]
