"""Datasets named in a config: users' COCO-format sets (``--register``) and class-count checks."""

from __future__ import annotations

import logging
import os
from typing import Dict, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..config import get_num_classes, num_classes_key, set_num_classes
from ..errors import ConfigError, DatasetMissingError
from .builtin import BUILTIN_DATASETS
from .coco import register_coco_detection

__all__ = ["register_user_datasets", "check_num_classes", "check_dataset_files"]

logger = logging.getLogger(__name__)


def register_user_datasets(cfg: CfgNode, registrations: Sequence[Sequence[str]]) -> None:
    """Register ``(name, json_file, image_root)`` COCO-format sets and set
    the detector's class count (``MODEL.ROI_HEADS.NUM_CLASSES``, ``MODEL.RETINANET.NUM_CLASSES``
    for RetinaNet) from their categories (all must agree)."""
    counts: Dict[str, int] = {}
    for item in registrations or ():
        if len(item) != 3:
            raise ConfigError(f"--register takes NAME JSON IMAGE_ROOT, got {list(item)}")
        name, json_file, image_root = item
        if name in DatasetCatalog.list():  # e.g. registered again in the same process
            counts[name] = len(MetadataCatalog.get(name).thing_classes)
            continue
        counts[name] = len(register_coco_detection(name, json_file, image_root))
    if not counts:
        return
    if len(set(counts.values())) > 1:
        raise ConfigError(f"The registered datasets have different class counts: {counts}")
    n = next(iter(counts.values()))
    if get_num_classes(cfg) != n:
        logger.warning(
            f"{num_classes_key(cfg)} set to {n} (from the categories of {sorted(counts)}) "
            f"instead of {get_num_classes(cfg)}."
        )
        set_num_classes(cfg, n)


def check_num_classes(cfg: CfgNode) -> None:
    """Every dataset of DATASETS.TRAIN / TEST whose metadata lists ``thing_classes`` must have
    as many classes as the detector (:func:`luminet_det.config.get_num_classes`)."""
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            raise ConfigError(
                f"Dataset {name!r} is not registered. Registered: built-in "
                "digits_det_train/digits_det_val, detectron2's COCO names (coco_2017_train, ...), "
                "or your own with --register NAME JSON IMAGE_ROOT."
            )
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != get_num_classes(cfg):
            raise ConfigError(
                f"Dataset {name!r} has {len(classes)} classes but {num_classes_key(cfg)} is "
                f"{get_num_classes(cfg)}; set it to {len(classes)}."
            )


def check_dataset_files(cfg: CfgNode) -> None:
    """Every dataset of DATASETS.TRAIN / TEST registered with a ``json_file`` (COCO-format
    sets, detectron2's built-in COCO names, the built-in digits set) must have it on disk, and
    its ``image_root``: checked before any model is built or weight downloaded.

    Raises:
        DatasetMissingError: naming the missing path, where the set is expected and how to get
            it.
    """
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        meta = MetadataCatalog.get(name)
        json_file, image_root = meta.get("json_file", None), meta.get("image_root", None)
        missing = [p for p in (json_file, image_root) if p and not os.path.exists(p)]
        if not missing:
            continue
        root = os.getenv("DETECTRON2_DATASETS")
        where = f"DETECTRON2_DATASETS={root!r}" if root else "DETECTRON2_DATASETS unset: 'datasets'"
        if name in BUILTIN_DATASETS:
            how = (
                "Generate the built-in set with `python datasets/prepare_digits.py` (or `make "
                f"demo`), or point DETECTRON2_DATASETS at the folder holding digits_det/ ({where})."
            )
        elif name.startswith("coco_"):
            how = (
                "COCO 2017 is expected under $DETECTRON2_DATASETS/coco/ (annotations/"
                f"instances_{{train,val}}2017.json, train2017/, val2017/; {where}). Download the "
                "2017 train and val images and the 2017 annotations from cocodataset.org, unpack "
                "them there (datasets/README.md), or set DETECTRON2_DATASETS to the folder that "
                "holds coco/."
            )
        else:
            how = "Check the paths given to --register (or to register_coco_detection)."
        raise DatasetMissingError(f"Dataset {name!r}: {missing[0]!r} does not exist. {how}")
