"""Datasets named in a config: users' COCO-format sets (``--register``) and class-count checks."""

from __future__ import annotations

import logging
from typing import Dict, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import register_coco_detection

__all__ = ["register_user_datasets", "check_num_classes"]

logger = logging.getLogger(__name__)


def register_user_datasets(cfg: CfgNode, registrations: Sequence[Sequence[str]]) -> None:
    """Register ``(name, json_file, image_root)`` COCO-format sets and set
    ``MODEL.ROI_HEADS.NUM_CLASSES`` from their categories (all must agree)."""
    counts: Dict[str, int] = {}
    for item in registrations or ():
        if len(item) != 3:
            raise ValueError(f"--register takes NAME JSON IMAGE_ROOT, got {list(item)}")
        name, json_file, image_root = item
        if name in DatasetCatalog.list():  # e.g. registered again in the same process
            counts[name] = len(MetadataCatalog.get(name).thing_classes)
            continue
        counts[name] = len(register_coco_detection(name, json_file, image_root))
    if not counts:
        return
    if len(set(counts.values())) > 1:
        raise ValueError(f"The registered datasets have different class counts: {counts}")
    n = next(iter(counts.values()))
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != n:
        logger.warning(
            f"MODEL.ROI_HEADS.NUM_CLASSES set to {n} (from the categories of {sorted(counts)}) "
            f"instead of {cfg.MODEL.ROI_HEADS.NUM_CLASSES}."
        )
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = n


def check_num_classes(cfg: CfgNode) -> None:
    """Every dataset of DATASETS.TRAIN / TEST whose metadata lists ``thing_classes`` must have
    ``MODEL.ROI_HEADS.NUM_CLASSES`` classes."""
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            raise ValueError(
                f"Dataset {name!r} is not registered. Registered: built-in "
                "digits_det_train/digits_det_val, detectron2's COCO names (coco_2017_train, ...), "
                "or your own with --register NAME JSON IMAGE_ROOT."
            )
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(
                f"Dataset {name!r} has {len(classes)} classes but MODEL.ROI_HEADS.NUM_CLASSES is "
                f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}; set it to {len(classes)}."
            )
