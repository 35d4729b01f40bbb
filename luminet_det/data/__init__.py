"""Datasets: the built-in digits detection set and any COCO-format detection set.

Importing this package registers ``digits_det_train`` / ``digits_det_val`` in detectron2's
catalogs.

* :mod:`.digits` — the generator of the built-in set (no detectron2);
* :mod:`.builtin` — its registration;
* :mod:`.coco` — reading and registering COCO-format files, with errors that say what to fix;
* :mod:`.catalog` — the datasets a config names (``--register``, class counts);
* :mod:`.mapper` — a DatasetMapper that names unreadable images.
"""

from .builtin import BUILTIN_DATASETS, digits_root, register_builtin_digits
from .catalog import check_dataset_files, check_num_classes, register_user_datasets
from .coco import load_coco_detection, read_coco_json, register_coco_detection
from .digits import DIGIT_CLASSES, generate_digits_detection
from .mapper import CheckedDatasetMapper

register_builtin_digits()

__all__ = [
    "BUILTIN_DATASETS",
    "check_dataset_files",
    "check_num_classes",
    "register_user_datasets",
    "CheckedDatasetMapper",
    "DIGIT_CLASSES",
    "digits_root",
    "generate_digits_detection",
    "load_coco_detection",
    "read_coco_json",
    "register_builtin_digits",
    "register_coco_detection",
]
