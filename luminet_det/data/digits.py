"""The built-in detection set: scikit-learn's handwritten digits on cluttered backgrounds.

Real data that ships inside a package (``sklearn.datasets.load_digits``: 1,797 8x8 digits
written by 43 people), placed, scaled and coloured on textured, noisy canvases with line and
blob distractors; 1-5 digits per image, 10 classes. At 8x8 source resolution 3/8/9/5 and
1/7/4 are genuinely confusable, so the teacher's class relations carry information. Train and
val use disjoint digit samples. Deterministic from a seed; written in COCO format.

Layout written by :func:`generate_digits_detection` under ``root``::

    root/train/000000.png ...    root/annotations/instances_train.json
    root/val/000000.png ...      root/annotations/instances_val.json
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..runio import atomic_write

__all__ = ["generate_digits_detection", "DIGIT_CLASSES", "digits_paths", "digits_root"]

DIGIT_CLASSES = [str(i) for i in range(10)]
# bump when the generator's output changes; stored in the JSON "info". 3: instance masks
# (images, boxes and labels are those of version 2: the masks take no random draws)
_VERSION = 3


def digits_root() -> str:
    """Where the built-in set is registered: ``$DETECTRON2_DATASETS/digits_det``
    (``DETECTRON2_DATASETS`` defaults to ``datasets``, as in detectron2)."""
    return os.path.join(
        os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")), "digits_det"
    )


def digits_paths(root: str, split: str) -> Tuple[str, str]:
    """(annotation json, image dir) of ``split`` ("train" or "val") under ``root``."""
    return os.path.join(root, "annotations", f"instances_{split}.json"), os.path.join(root, split)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured canvas: low-frequency grey texture with a faint colour tint, a gradient and
    pixel noise."""
    coarse = rng.uniform(60, 200, size=(rng.integers(3, 9), rng.integers(3, 9)))
    low = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC), np.float32
    )[..., None]
    tint = rng.uniform(-20, 20, 3)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * rng.uniform(-30, 30)
    noise = rng.normal(0, rng.uniform(3, 10), size=(size, size, 1))
    return np.clip(low + tint + gradient + noise, 0, 255)


def _distractors(rng: np.random.Generator, img: Image.Image) -> None:
    """Strokes and blobs that look like parts of digits but are not objects."""
    draw = ImageDraw.Draw(img)
    size = img.size[0]
    for _ in range(rng.integers(1, 5)):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.6:
            pts = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(2)]
            draw.line(pts, fill=color, width=int(rng.integers(1, 4)))
        else:
            x, y = rng.uniform(0, size, 2)
            r = rng.uniform(2, 7)
            draw.arc(
                [x - r, y - r, x + r, y + r],
                0,
                float(rng.uniform(90, 360)),
                fill=color,
                width=int(rng.integers(1, 3)),
            )


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _render_image(
    rng: np.random.Generator,
    digits: np.ndarray,
    labels: np.ndarray,
    size: int,
    min_digit: int,
    max_digit: int,
    max_objects: int,
) -> Tuple[np.ndarray, List[Tuple[List[float], int, np.ndarray]]]:
    """An image and its digits: (box, label, mask) with the digit's own pixels as the mask
    (size x size, bool) and its tight box."""
    canvas = _background(rng, size)
    img = Image.fromarray(canvas.astype(np.uint8))
    _distractors(rng, img)
    canvas = np.asarray(img, np.float32).copy()
    placed: List[Tuple[List[float], int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            idx = int(rng.integers(len(digits)))
            h = int(rng.integers(min_digit, max_digit + 1))
            w = max(6, int(round(h * rng.uniform(0.7, 1.1))))
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            glyph = Image.fromarray((digits[idx] * (255.0 / 16.0)).astype(np.uint8))
            alpha = np.asarray(glyph.resize((w, h), Image.BILINEAR), np.float32) / 255.0
            ys, xs = np.nonzero(alpha > 0.25)
            if len(xs) == 0:
                continue
            box = [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1.0, y0 + ys.max() + 1.0]
            if any(_iou(box, other) > 0.2 for other, _, _ in placed):
                continue
            # a colour that stands out from the local background (but not always by much)
            local = canvas[y0 : y0 + h, x0 : x0 + w].mean()
            color = rng.uniform(0, 60, 3) if local > 128 else rng.uniform(195, 255, 3)
            a = alpha[..., None] * rng.uniform(0.75, 1.0)
            region = canvas[y0 : y0 + h, x0 : x0 + w]
            canvas[y0 : y0 + h, x0 : x0 + w] = region * (1 - a) + color * a
            mask = np.zeros((size, size), dtype=bool)
            mask[y0 : y0 + h, x0 : x0 + w] = alpha > 0.25
            placed.append(([float(v) for v in box], int(labels[idx]), mask))
            break
    canvas += rng.normal(0, 4, size=canvas.shape)  # sensor noise over digits too
    return np.clip(canvas, 0, 255).astype(np.uint8), placed


def generate_digits_detection(
    root: str,
    *,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    min_digit: int = 18,
    max_digit: int = 44,
    max_objects: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> Dict[str, str]:
    """Write the built-in detection set (COCO format) under ``root``.

    Args:
        root (str): output directory (created).
        num_train (int), num_val (int): images per split (>= 1).
        image_size (int): square canvas side in pixels (>= 2 * max_digit).
        min_digit (int), max_digit (int): range of digit heights in pixels.
        max_objects (int): 1..max_objects digits per image.
        seed (int): everything is a deterministic function of the arguments.
        progress (bool): print a progress line per 200 images.

    Returns:
        dict: split -> annotation json path.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be >= 1, got {num_train}, {num_val}.")
    if not 8 <= min_digit <= max_digit or image_size < max_digit:
        raise ValueError(
            f"Need 8 <= min_digit <= max_digit <= image_size, got {min_digit}, {max_digit}, "
            f"{image_size}."
        )
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}.")
    from pycocotools import mask as mask_utils
    from sklearn.datasets import load_digits

    data = load_digits()
    images, targets = data.images, data.target
    # disjoint digit samples: every fifth sample is reserved for validation
    val_mask = np.arange(len(images)) % 5 == 0
    pools = {
        "train": (images[~val_mask], targets[~val_mask]),
        "val": (images[val_mask], targets[val_mask]),
    }
    out = {}
    for split, count, split_seed in (("train", num_train, seed), ("val", num_val, seed + 10_000)):
        rng = np.random.default_rng(split_seed)
        json_path, image_dir = digits_paths(root, split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(os.path.dirname(json_path), exist_ok=True)
        coco = {
            "info": {
                "description": "luminet_det built-in digits detection set",
                "version": _VERSION,
                "generator": dict(
                    seed=seed,
                    image_size=image_size,
                    min_digit=min_digit,
                    max_digit=max_digit,
                    max_objects=max_objects,
                ),
            },
            "images": [],
            "annotations": [],
            "categories": [{"id": i + 1, "name": name} for i, name in enumerate(DIGIT_CLASSES)],
        }
        digits, labels = pools[split]
        for i in range(count):
            pixels, objects = _render_image(
                rng, digits, labels, image_size, min_digit, max_digit, max_objects
            )
            file_name = f"{i:06d}.png"
            Image.fromarray(pixels).save(os.path.join(image_dir, file_name))
            coco["images"].append(
                {"id": i + 1, "file_name": file_name, "height": image_size, "width": image_size}
            )
            for box, label, mask in objects:
                x0, y0, x1, y1 = box
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": i + 1,
                        "category_id": label + 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),  # the box's, as in version 2
                        "iscrowd": 0,
                        # the digit's own pixels, COCO run-length encoding
                        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    }
                )
            if progress and (i + 1) % 200 == 0:
                print(f"  {split}: {i + 1}/{count} images", flush=True)
        with atomic_write(json_path) as f:  # the json appears only once the split is complete
            json.dump(coco, f)
        out[split] = json_path
    return out


def is_generated(root: str) -> bool:
    """True if both splits' annotation files exist under ``root``."""
    return all(os.path.isfile(digits_paths(root, s)[0]) for s in ("train", "val"))


def main(argv: Optional[List[str]] = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="output dir (default: the registered one)")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="regenerate even if present")
    args = parser.parse_args(argv)
    root = args.root or digits_root()
    if is_generated(root) and not args.force:
        print(f"Built-in digits detection set already present in {root} (--force regenerates).")
        return
    print(f"Generating the built-in digits detection set in {root} ...", flush=True)
    generate_digits_detection(
        root,
        num_train=args.num_train,
        num_val=args.num_val,
        image_size=args.image_size,
        seed=args.seed,
        progress=True,
    )
    print(f"Done: {root}")
