"""Datasets of luminet_det.cls: CIFAR-100 and ImageNet-style folders through torchvision, and a
built-in set that needs no download (scikit-learn's handwritten digits, upscaled)."""

from __future__ import annotations

import os
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["build_dataset", "DigitsClassification", "DATASETS", "NUM_CLASSES"]

NUM_CLASSES = {"cifar100": 100, "imagenet": 1000, "tiny_imagenet": 200, "digits": 10}
DATASETS = tuple(NUM_CLASSES)
_CIFAR_MEAN, _CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DigitsClassification(Dataset):
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled to ``size`` x ``size`` RGB.

    Every fifth sample is the validation split (360 images), the rest train (1,437). Training
    applies a random translation of up to ``size // 8`` pixels and pixel noise.

    Items: ``(image (3, size, size) float tensor, normalised; label int)``.
    """

    def __init__(self, train: bool, size: int = 16):
        from sklearn.datasets import load_digits

        data = load_digits()
        val = np.arange(len(data.images)) % 5 == 0
        keep = ~val if train else val
        images = torch.tensor(data.images[keep], dtype=torch.float32)[:, None] / 16.0
        images = torch.nn.functional.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False
        )
        self.images = ((images - 0.3) / 0.4).expand(-1, 3, -1, -1).contiguous()
        self.labels = torch.tensor(data.target[keep], dtype=torch.long)
        self.train, self.pad = train, size // 8

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.train:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
            dx, dy = (int(v) for v in torch.randint(-self.pad, self.pad + 1, (2,), generator=g))
            img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
            img = img + 0.1 * torch.randn(img.shape, generator=g)
        return img, int(self.labels[i])


def _missing(name: str, where: str, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name} not found: expected {where}. {how}")


def build_dataset(name: str, root: str, train: bool) -> Dataset:
    """The train or validation split of ``name`` (one of :data:`DATASETS`) under ``root``.

    Layouts: CIFAR-100 as torchvision writes it (``root/cifar-100-python/``); ImageNet and
    Tiny-ImageNet as class folders (``root/train/<class>/*.JPEG``, ``root/val/<class>/...``);
    ``digits`` needs nothing on disk.
    """
    import torchvision.transforms as T

    if name == "digits":
        return DigitsClassification(train)
    if name == "cifar100":
        from torchvision.datasets import CIFAR100

        tf = (
            T.Compose(
                [
                    T.RandomCrop(32, padding=4),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    T.Normalize(_CIFAR_MEAN, _CIFAR_STD),
                ]
            )
            if train
            else T.Compose([T.ToTensor(), T.Normalize(_CIFAR_MEAN, _CIFAR_STD)])
        )
        try:
            return CIFAR100(root, train=train, download=False, transform=tf)
        except RuntimeError:
            raise _missing(
                "CIFAR-100",
                os.path.join(root, "cifar-100-python", "{train,test,meta}"),
                "Download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                f"and unpack it in {root!r} (or call torchvision.datasets.CIFAR100(root, "
                "download=True) once on a machine with internet).",
            ) from None
    if name in ("imagenet", "tiny_imagenet"):
        from torchvision.datasets import ImageFolder

        size = 224 if name == "imagenet" else 64
        tf = (
            T.Compose(
                [
                    T.RandomResizedCrop(size),
                    T.RandomHorizontalFlip(),
                    T.ToTensor(),
                    T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
                ]
            )
            if train
            else T.Compose(
                [
                    T.Resize(int(size * 256 / 224)),
                    T.CenterCrop(size),
                    T.ToTensor(),
                    T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD),
                ]
            )
        )
        split = os.path.join(root, "train" if train else "val")
        if not os.path.isdir(split):
            raise _missing(
                name,
                f"class folders under {split!r} (e.g. {split}/n01440764/*.JPEG)",
                "Extract the train and val archives into one folder per class (for ImageNet's "
                "val set, sort the images into class folders with the devkit labels).",
            )
        return ImageFolder(split, transform=tf)
    raise ValueError(f"Unknown dataset {name!r}; available: {list(DATASETS)}.")
