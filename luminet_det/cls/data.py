"""Datasets of luminet_det.cls: CIFAR-100 and ImageNet-style folders through torchvision, and a
built-in set that needs no download (scikit-learn's handwritten digits, upscaled)."""

from __future__ import annotations

import os
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from luminet_det.errors import ConfigError

__all__ = [
    "build_dataset",
    "num_classes",
    "folder_classes",
    "DigitsClassification",
    "DATASETS",
    "NUM_CLASSES",
]

NUM_CLASSES = {
    "cifar100": 100,
    "imagenet": 1000,
    "tiny_imagenet": 200,
    "digits": 10,
    "digits_hard": 10,
}
#: "folder": your own images, DATA.ROOT/{train,val}/<class>/* (classes from the folders)
DATASETS = tuple(NUM_CLASSES) + ("folder",)
_DEFAULT_SIZE = {
    "cifar100": 32,
    "imagenet": 224,
    "tiny_imagenet": 64,
    "digits": 16,
    "digits_hard": 16,
    "folder": 224,
}
_CIFAR_MEAN, _CIFAR_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DigitsClassification(Dataset):
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled to ``size`` x ``size`` RGB.

    Every fifth sample is the validation split (360 images), the rest train (1,437). Training
    applies a random translation of up to ``size // 8`` pixels and pixel noise.

    ``hard=True`` (DATA.NAME "digits_hard", a setting where capacity matters): on every image,
    train and val, an occluding square of half the side at a random place plus strong pixel
    noise (std 0.6 after normalisation); validation corruptions are fixed per image (seeded by
    its index), training ones drawn anew each time. Measured here (20 epochs, one seed):
    resnet8 alone 80.6 % top-1, wrn_40_2 88.3 %.

    Items: ``(image (3, size, size) float tensor, normalised; label int)``.
    """

    def __init__(self, train: bool, size: int = 16, hard: bool = False):
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
        self.train, self.pad, self.hard, self.size = train, size // 8, hard, size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.train:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
            dx, dy = (int(v) for v in torch.randint(-self.pad, self.pad + 1, (2,), generator=g))
            img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
            img = img + 0.1 * torch.randn(img.shape, generator=g)
        if self.hard:
            g = (
                torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, ())))
                if self.train
                else torch.Generator().manual_seed(10_000 + i)  # fixed per validation image
            )
            side = self.size // 2
            y0, x0 = (int(v) for v in torch.randint(0, self.size - side + 1, (2,), generator=g))
            img = img.clone()
            img[:, y0 : y0 + side, x0 : x0 + side] = -0.75  # the background's value
            img = img + 0.6 * torch.randn(img.shape, generator=g)
        return img, int(self.labels[i])


def _missing(name: str, where: str, how: str) -> FileNotFoundError:
    return FileNotFoundError(f"{name} not found: expected {where}. {how}")


def _image_folders(split: str) -> list:
    return sorted(e.name for e in os.scandir(split) if e.is_dir()) if os.path.isdir(split) else []


def folder_classes(root: str) -> list:
    """The class names of a ``folder`` dataset: the sub-folders of ``root/train``, which must be
    the same as those of ``root/val``, at least two, none empty.

    Raises:
        FileNotFoundError: no ``root/train`` or ``root/val``.
        ValueError: fewer than two classes, different class folders in train and val (both
            differences named), or class folders without a single image file.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    splits = {s: os.path.join(root, s) for s in ("train", "val")}
    for split, path in splits.items():
        if not os.path.isdir(path):
            raise _missing(
                f"The {split} split of DATA.ROOT",
                f"one folder per class under {path!r} (e.g. {path}/cat/0001.jpg)",
                "DATA.NAME 'folder' reads DATA.ROOT/train/<class>/* and DATA.ROOT/val/<class>/*.",
            )
    train, val = _image_folders(splits["train"]), _image_folders(splits["val"])
    if train != val:
        raise ConfigError(
            f"The class folders of {splits['train']!r} and {splits['val']!r} differ: only in "
            f"train {sorted(set(train) - set(val))}, only in val {sorted(set(val) - set(train))}. "
            "Both splits need the same classes (the class index is the folder's sorted position)."
        )
    if len(train) < 2:
        raise ConfigError(
            f"{splits['train']!r} has {len(train)} class folder(s) ({train}); classification "
            "needs at least two, one folder per class."
        )
    empty = [
        f"{split}/{c}"
        for split, path in splits.items()
        for c in train
        if not any(f.lower().endswith(IMG_EXTENSIONS) for f in os.listdir(os.path.join(path, c)))
    ]
    if empty:
        raise ConfigError(
            f"Class folders without images under {root!r}: {empty[:10]} (image files end in "
            f"{', '.join(IMG_EXTENSIONS)}). Add images or remove the folders from both splits."
        )
    return train


def num_classes(name: str, root: str) -> int:
    """The number of classes of dataset ``name`` (read from the folders for ``folder``)."""
    if name == "folder":
        return len(folder_classes(root))
    if name not in NUM_CLASSES:
        raise ConfigError(f"Unknown dataset {name!r}; available: {list(DATASETS)}.")
    return NUM_CLASSES[name]


def _checked_loader(path: str):
    """Pillow's RGB loader with an error that names an unreadable image and the fix."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(
            f"Could not read image {path!r} ({type(e).__name__}: {e}). The file is corrupt, "
            "truncated or not an image: replace it or remove it from the folder."
        ) from None


def input_size(name: str, size: int = 0) -> int:
    """The input size in pixels of dataset ``name`` at ``DATA.INPUT_SIZE`` ``size`` (0 = the
    dataset's standard size)."""
    return size or _DEFAULT_SIZE[name]


def build_dataset(
    name: str,
    root: str,
    train: bool,
    size: int = 0,
    autoaugment: bool = False,
    randaugment: str = "",
    random_erasing: float = 0.0,
) -> Dataset:
    """The train or validation split of ``name`` (one of :data:`DATASETS`) under ``root``.

    Layouts: CIFAR-100 as torchvision writes it (``root/cifar-100-python/``); ImageNet,
    Tiny-ImageNet and ``folder`` as class folders (``root/train/<class>/*``,
    ``root/val/<class>/...``; for ``folder`` any image format Pillow reads, classes from the
    folders); ``digits`` needs nothing on disk.

    Args:
        size (int): input size in pixels; 0 = the dataset's standard size (32 for CIFAR-100,
            224 for ImageNet and ``folder``, 64 for Tiny-ImageNet, 16 for digits).
        autoaugment (bool): training images only: torchvision's AutoAugment with its CIFAR-10
            policy (Cubuk et al. 2019) after the crop and flip, before normalisation (the
            paper's Table 6). Not for the built-in digits sets (16-px float tensors).
        randaugment (str): training images only: timm's DeiT-style pipeline replaces the crop
            and flip (random-resized crop to ``size``, bicubic; flip; RandAugment with this
            timm policy, e.g. ``rand-m9-mstd0.5-inc1``; normalisation; random erasing with
            probability ``random_erasing``, per-pixel noise), as Li et al. 2022b train the
            paper's Table 7 ViT students. "" = off.
        random_erasing (float): see ``randaugment``.
    """
    import torchvision.transforms as T

    if name not in DATASETS:
        raise ConfigError(f"Unknown dataset {name!r}; available: {list(DATASETS)}.")
    size = input_size(name, size)
    if (autoaugment or randaugment) and name in ("digits", "digits_hard"):
        raise ConfigError(
            f"DATA.AUTOAUGMENT and DATA.RANDAUGMENT work on the image datasets (cifar100, "
            f"imagenet, tiny_imagenet, folder), not on the built-in {name!r} set (16-px float "
            "tensors, no PIL images); set DATA.AUTOAUGMENT=False and DATA.RANDAUGMENT=''."
        )
    strong = [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10)] if autoaugment and train else []
    if name in ("digits", "digits_hard"):
        return DigitsClassification(train, size, hard=name == "digits_hard")
    if name == "cifar100":
        from torchvision.datasets import CIFAR100

        tf = (
            _timm_train(size, randaugment, random_erasing, _CIFAR_MEAN, _CIFAR_STD)
            if train and randaugment
            else (
                T.Compose(
                    [
                        T.RandomCrop(32, padding=4),
                        T.RandomHorizontalFlip(),
                        *strong,
                        *([T.Resize(size)] if size != 32 else []),
                        T.ToTensor(),
                        T.Normalize(_CIFAR_MEAN, _CIFAR_STD),
                    ]
                )
                if train
                else T.Compose(
                    [
                        *([T.Resize(size)] if size != 32 else []),
                        T.ToTensor(),
                        T.Normalize(_CIFAR_MEAN, _CIFAR_STD),
                    ]
                )
            )
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
    if name in ("imagenet", "tiny_imagenet", "folder"):
        from torchvision.datasets import ImageFolder

        if name == "folder":
            folder_classes(root)  # checks the folders, with messages that say what to fix
        tf = (
            _timm_train(size, randaugment, random_erasing, _IMAGENET_MEAN, _IMAGENET_STD)
            if train and randaugment
            else (
                T.Compose(
                    [
                        T.RandomResizedCrop(size),
                        T.RandomHorizontalFlip(),
                        *strong,
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
        )
        split = os.path.join(root, "train" if train else "val")
        if not os.path.isdir(split):
            raise _missing(
                name,
                f"class folders under {split!r} (e.g. {split}/n01440764/*.JPEG)",
                "Extract the train and val archives into one folder per class (for ImageNet's "
                "val set, sort the images into class folders with the devkit labels).",
            )
        return ImageFolder(split, transform=tf, loader=_checked_loader)


def _timm_train(size: int, policy: str, erasing: float, mean, std):
    """timm's training transform as Li et al. 2022b call it (lkhl/tiny-transformers
    ``pycls/datasets/transforms.py``): ``create_transform(is_training=True, auto_augment=policy,
    re_prob=erasing, re_mode="pixel", re_count=1, interpolation="bicubic")`` with our mean and
    std (the source's colour jitter 0.4 is off under RandAugment in timm)."""
    from timm.data import create_transform

    try:
        return create_transform(
            input_size=size,
            is_training=True,
            auto_augment=policy,
            re_prob=erasing,
            re_mode="pixel",
            re_count=1,
            interpolation="bicubic",
            mean=mean,
            std=std,
        )
    except (AssertionError, ValueError, KeyError) as e:
        raise ConfigError(
            f"DATA.RANDAUGMENT {policy!r} is not a timm RandAugment policy ({e}); e.g. "
            "rand-m9-mstd0.5-inc1."
        ) from None
