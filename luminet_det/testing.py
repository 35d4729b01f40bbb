"""Toy inputs for tests and benchmarks (as detectron2.utils.testing is for detectron2)."""

from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.structures import Boxes, Instances

__all__ = ["toy_batch"]


def toy_batch(
    n: int = 2, size: int = 64, num_classes: int = 3, boxes_per_image: int = 2, seed: int = 0
) -> List[Dict]:
    """``n`` images as detectron2's DatasetMapper gives them in training: random pixels
    (3, size, size) in [0, 255], and ``boxes_per_image`` random ground-truth boxes (sides
    between a quarter and about two thirds of ``size``, inside the image) with random classes
    in [0, num_classes). The same ``seed`` gives the same batch."""
    if n < 1 or size < 16 or num_classes < 1 or boxes_per_image < 1:
        raise ValueError(
            f"toy_batch needs n >= 1, size >= 16, num_classes >= 1 and boxes_per_image >= 1, "
            f"got {n}, {size}, {num_classes}, {boxes_per_image}."
        )
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = boxes_per_image
        wh = size * (0.25 + 0.4 * torch.rand(k, 2, generator=g))
        xy = (size - wh) * torch.rand(k, 2, generator=g)
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], 1))
        inst.gt_classes = torch.randint(0, num_classes, (k,), generator=g)
        image = torch.randint(0, 256, (3, size, size), generator=g).float()
        out.append({"image": image, "instances": inst, "height": size, "width": size})
    return out
