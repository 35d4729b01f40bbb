"""Registration of the built-in digits detection set in detectron2's catalogs.

Names: ``digits_det_train`` and ``digits_det_val``, under
``$DETECTRON2_DATASETS/digits_det`` (``DETECTRON2_DATASETS`` defaults to ``datasets``, as in
detectron2). Generate the files with ``python datasets/prepare_digits.py``.
"""

from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco import load_coco_detection
from .digits import DIGIT_CLASSES, digits_paths, digits_root

__all__ = ["digits_root", "register_builtin_digits", "BUILTIN_DATASETS"]

BUILTIN_DATASETS = {"digits_det_train": "train", "digits_det_val": "val"}


def _load(name: str):
    json_file, image_root = digits_paths(digits_root(), BUILTIN_DATASETS[name])
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"The built-in dataset {name!r} has not been generated: {json_file!r} is missing. "
            "Run `python datasets/prepare_digits.py` (or `make demo`), or point "
            "DETECTRON2_DATASETS at the folder that holds digits_det/."
        )
    return load_coco_detection(json_file, image_root, name)


def register_builtin_digits() -> None:
    for name, split in BUILTIN_DATASETS.items():
        if name in DatasetCatalog.list():
            continue
        json_file, image_root = digits_paths(digits_root(), split)
        DatasetCatalog.register(name, lambda name=name: _load(name))
        MetadataCatalog.get(name).set(
            json_file=json_file,
            image_root=image_root,
            evaluator_type="coco",
            thing_classes=list(DIGIT_CLASSES),
        )
