"""Toy inputs for tests and benchmarks (as detectron2.utils.testing is for detectron2)."""

from __future__ import annotations

from typing import Dict, List

import torch
from detectron2.structures import BitMasks, Boxes, Instances

__all__ = ["toy_batch"]


def toy_batch(
    n: int = 2,
    size: int = 64,
    num_classes: int = 3,
    boxes_per_image: int = 2,
    seed: int = 0,
    masks: bool = False,
) -> List[Dict]:
    """``n`` images as detectron2's DatasetMapper gives them in training: random pixels
    (3, size, size) in [0, 255], and ``boxes_per_image`` random ground-truth boxes (sides
    between a quarter and about two thirds of ``size``, inside the image) with random classes
    in [0, num_classes); with ``masks``, ``gt_masks`` (BitMasks: the ellipse inscribed in each
    box). The same ``seed`` gives the same batch."""
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
        if masks:
            yy, xx = torch.meshgrid(
                torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij"
            )
            b = inst.gt_boxes.tensor
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            rx, ry = (b[:, 2] - b[:, 0]) / 2, (b[:, 3] - b[:, 1]) / 2
            inside = ((xx - cx[:, None, None]) / rx[:, None, None]) ** 2 + (
                (yy - cy[:, None, None]) / ry[:, None, None]
            ) ** 2
            inst.gt_masks = BitMasks(inside <= 1)
        image = torch.randint(0, 256, (3, size, size), generator=g).float()
        out.append({"image": image, "instances": inst, "height": size, "width": size})
    return out
