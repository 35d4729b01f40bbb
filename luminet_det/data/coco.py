"""Register and load any COCO-format detection set, with errors that say what to fix."""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = ["read_coco_json", "load_coco_detection", "register_coco_detection"]

logger = logging.getLogger(__name__)


def read_coco_json(json_file: str) -> Dict:
    """Parse and validate a COCO instances file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not JSON (with line, column and character position), no ``images`` /
            ``annotations`` / ``categories`` lists, no categories, or annotations whose
            ``category_id`` is not declared (with the ids and an example annotation id).
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"COCO annotation file {json_file!r} not found. Check the path (for COCO itself see "
            "datasets/README.md; for the built-in set run `python datasets/prepare_digits.py`)."
        )
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"COCO annotation file {json_file!r} is not valid JSON: {e.msg} at line {e.lineno}, "
            f"column {e.colno} (character {e.pos}). The file is corrupt or truncated; "
            "re-download or re-export it."
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"COCO annotation file {json_file!r} is not UTF-8 text: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{json_file!r}: expected a JSON object, got {type(data).__name__}.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"{json_file!r} has no {key!r} list; a COCO instances file needs 'images', "
                "'annotations' and 'categories'."
            )
    if not data["categories"]:
        raise ValueError(f"{json_file!r} declares no categories.")
    declared = {c["id"] for c in data["categories"]}
    bad = [a for a in data["annotations"] if a.get("category_id") not in declared]
    if bad:
        ids = sorted({a.get("category_id") for a in bad}, key=str)
        raise ValueError(
            f"{json_file!r}: {len(bad)} annotations use category ids {ids[:10]} that are not "
            f"among the declared categories {sorted(declared)[:20]} (first: annotation id "
            f"{bad[0].get('id')}). Fix the ids or add the categories."
        )
    return data


def _clean_boxes(dicts: List[Dict], dataset_name: str) -> None:
    """Clip boxes to their image; drop boxes of zero/negative size or entirely outside."""
    dropped = clipped = 0
    for record in dicts:
        h, w = record["height"], record["width"]
        kept = []
        for obj in record["annotations"]:
            x, y, bw, bh = obj["bbox"]
            x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            if bw <= 0 or bh <= 0 or x1 <= x0 or y1 <= y0:
                dropped += 1
                continue
            if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
                clipped += 1
                obj["bbox"] = [x0, y0, x1 - x0, y1 - y0]
            kept.append(obj)
        record["annotations"] = kept
    if dropped or clipped:
        logger.warning(
            f"{dataset_name}: dropped {dropped} boxes of zero/negative size or outside their "
            f"image, clipped {clipped} boxes to their image."
        )


def load_coco_detection(json_file: str, image_root: str, dataset_name: str) -> List[Dict]:
    """detectron2 dataset dicts of a COCO instances file, validated (see
    :func:`read_coco_json`), boxes cleaned, and every image file checked to exist. Images
    without annotations are kept here; detectron2 drops them from training when
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` is True (its default) and keeps them in evaluation.
    """
    read_coco_json(json_file)
    if not os.path.isdir(image_root):
        raise FileNotFoundError(f"Image folder {image_root!r} of {dataset_name} not found.")
    dicts = load_coco_json(json_file, image_root, dataset_name)
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        raise FileNotFoundError(
            f"{dataset_name}: {len(missing)} of {len(dicts)} images listed in {json_file!r} are "
            f"missing, e.g. {missing[:3]}. Check the image folder ({image_root!r})."
        )
    _clean_boxes(dicts, dataset_name)
    return dicts


def register_coco_detection(name: str, json_file: str, image_root: str) -> List[str]:
    """Register a COCO-format detection set under ``name`` in detectron2's catalogs.

    The JSON is read once now (clear errors early) to set ``thing_classes``; the dataset dicts
    are loaded lazily. Returns the class names (their count is the ``NUM_CLASSES`` to use).
    """
    if name in DatasetCatalog.list():
        raise ValueError(f"A dataset named {name!r} is already registered; choose another name.")
    data = read_coco_json(json_file)
    classes = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    DatasetCatalog.register(name, lambda: load_coco_detection(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="coco", thing_classes=classes
    )
    return classes
