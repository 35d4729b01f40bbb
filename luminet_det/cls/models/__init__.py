"""Model zoo of luminet_det.cls: CIFAR architectures (written here), torchvision's ImageNet
models and the Table 7 vision-transformer students (timm, and PVT v1 written here). Every model
returns ``(logits, penultimate features)``."""

from __future__ import annotations

import functools
import logging
from typing import Callable, Dict, Optional

import torch
from torch import nn

from luminet_det.errors import ConfigError
from luminet_det.runio import load_checkpoint

from .cifar import VGG, CifarResNet, MobileNetV2Cifar, ShuffleNetV1, ShuffleNetV2, WideResNet
from .mobilenetv1 import MobileNetV1
from .vit import VIT_MIN_SIZE, VIT_MODELS

__all__ = ["build_model", "MODELS", "ResizedInput", "TorchvisionClassifier", "VIT_MODELS"]

logger = logging.getLogger("luminet_det.cls")


class TorchvisionClassifier(nn.Module):
    """A torchvision ImageNet classifier returning ``(logits, penultimate features)``."""

    def __init__(self, *, arch: str, num_classes: int = 1000):
        super().__init__()
        import torchvision

        self.net = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        # the final linear layer: ResNets call it `fc`, MobileNetV2 `classifier[-1]`
        if hasattr(self.net, "fc"):
            self.head, self.net.fc = self.net.fc, nn.Identity()
        else:
            self.head, self.net.classifier[-1] = self.net.classifier[-1], nn.Identity()

    def forward(self, x):
        feat = self.net(x)
        return self.head(feat), feat


class ResizedInput(nn.Module):
    """``net`` on its input resized (bilinear) to ``size`` x ``size``: a teacher that sees the
    student's batch at its own input size (``MODEL.TEACHER_INPUT_SIZE``), in training, in the
    teacher check and in every statistics pass alike.

    Args:
        net (nn.Module): the classifier.
        size (int): its input size in pixels.
    """

    def __init__(self, net: nn.Module, *, size: int):
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x: torch.Tensor):
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = nn.functional.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False
            )
        return self.net(x)


def _resnet50_cifar(num_classes: int = 100) -> TorchvisionClassifier:
    """torchvision's ResNet-50 with CRD's CIFAR stem (3x3 stride-1 conv, no max-pool)."""
    model = TorchvisionClassifier(arch="resnet50", num_classes=num_classes)
    model.net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.net.maxpool = nn.Identity()
    return model


def _tv(arch: str) -> Callable[..., nn.Module]:
    return functools.partial(TorchvisionClassifier, arch=arch)


MODELS: Dict[str, Callable[..., nn.Module]] = {
    # CIFAR (32x32)
    "resnet8": functools.partial(CifarResNet, depth=8, filters=(16, 16, 32, 64)),
    "resnet20": functools.partial(CifarResNet, depth=20, filters=(16, 16, 32, 64)),
    "resnet32": functools.partial(CifarResNet, depth=32, filters=(16, 16, 32, 64)),
    "resnet56": functools.partial(CifarResNet, depth=56, filters=(16, 16, 32, 64)),
    "resnet110": functools.partial(CifarResNet, depth=110, filters=(16, 16, 32, 64)),
    "resnet8x4": functools.partial(CifarResNet, depth=8, filters=(32, 64, 128, 256)),
    "resnet32x4": functools.partial(CifarResNet, depth=32, filters=(32, 64, 128, 256)),
    "wrn_16_2": functools.partial(WideResNet, depth=16, widen=2),
    "wrn_40_1": functools.partial(WideResNet, depth=40, widen=1),
    "wrn_40_2": functools.partial(WideResNet, depth=40, widen=2),
    "vgg8": functools.partial(VGG, depth=8),
    "vgg13": functools.partial(VGG, depth=13),
    "mobilenetv2_cifar": MobileNetV2Cifar,
    "shufflenetv1": ShuffleNetV1,
    "shufflenetv2": ShuffleNetV2,
    "resnet50_cifar": _resnet50_cifar,
    # ImageNet (torchvision)
    "resnet18": _tv("resnet18"),
    "resnet34": _tv("resnet34"),
    "resnet50": _tv("resnet50"),
    "mobilenet_v2": _tv("mobilenet_v2"),
    # ImageNet, the official LumiNet / mdistiller MobileNetV1 (paper Table 2, R-50 -> MobileNet)
    "mobilenet_v1": MobileNetV1,
    # the paper's Table 7 vision-transformer students (224 px; models/vit.py)
    **VIT_MODELS,
}


def build_model(
    name: str,
    num_classes: int,
    weights: Optional[str] = None,
    *,
    trusted: bool = False,
    loaded: Optional[Dict] = None,
    img_size: int = 0,
    drop_path: float = 0.0,
) -> nn.Module:
    """Build ``name`` from :data:`MODELS` with ``num_classes`` outputs; load ``weights`` (a
    checkpoint of this module, or a torchvision state dict for the ImageNet models) as data
    (:func:`luminet_det.runio.load_checkpoint`); ``trusted`` lets a file that needs full
    unpickling load (``MODEL.TRUSTED_CHECKPOINTS``); ``loaded``: the contents of ``weights``
    when the caller has read the file already (it is then not read again); ``img_size`` (the
    input size, > 0) and ``drop_path`` (stochastic depth): the vision transformers'
    (:data:`VIT_MODELS`) options, ignored by convolutional networks (which take any size)."""
    if name not in MODELS:
        raise ConfigError(f"Unknown model {name!r}; available: {sorted(MODELS)}.")
    if name in VIT_MODELS:
        if img_size and img_size < VIT_MIN_SIZE[name]:
            raise ConfigError(
                f"{name} needs inputs of at least {VIT_MIN_SIZE[name]} px, got {img_size}; set "
                f"DATA.INPUT_SIZE={VIT_MIN_SIZE[name]} or more (images are resized to it)."
            )
        options = {"drop_path_rate": drop_path, **({"img_size": img_size} if img_size else {})}
        model = MODELS[name](num_classes=num_classes, **options)
    else:
        assert drop_path == 0, f"drop path {drop_path} given to {name}, which has none"
        model = MODELS[name](num_classes=num_classes)
    if weights:
        state = loaded
        if state is None:
            state = load_checkpoint(
                weights, trusted=trusted, opt_in=f"MODEL.TRUSTED_CHECKPOINTS=['{weights}']"
            )
        state = state.get("model", state) if isinstance(state, dict) else state
        state = _to_our_names(state, model, weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"Weights {weights!r} do not fit {name}: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}."
            )
    return model


def _to_our_names(state: Dict[str, torch.Tensor], model: nn.Module, source: str) -> Dict:
    """The parameter names of ``model`` for a state dict saved under other names:

    * a plain torchvision state dict (``fc.*`` / ``classifier.1.*``) for the ImageNet models;
    * the layout of the CRD / mdistiller code that trained the released CIFAR-100 teachers
      (``cifar_teachers.tar``: ``block1.layer.0.*`` for WRN, ``block0.*`` for VGG, ``layer1.0.
      shortcut.*`` for ResNet-50, ...). Our modules register the same layers in the same order
      as that code (``tests/test_cls_upstream.py`` pins this for all 16 CIFAR architectures), so
      the n-th tensor of its state dict is our n-th tensor. The translation is used only when
      every position agrees in shape and kind (weight, bias, running_mean, ...).

    Anything else is returned unchanged (``load_state_dict`` then names the keys that differ).
    """
    ours = model.state_dict()
    if set(state) == set(ours):
        return state
    if isinstance(model, TorchvisionClassifier) and not any(
        k.startswith(("net.", "head.")) for k in state
    ):  # a plain torchvision state dict
        head = "fc." if "fc.weight" in state else "classifier.1."
        renamed = {
            ("head." + k[len(head) :]) if k.startswith(head) else "net." + k: v
            for k, v in state.items()
        }
        if set(renamed) == set(ours):
            return renamed
    theirs = list(state.items())
    if len(theirs) == len(ours) and all(
        k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1] and tuple(v.shape) == tuple(ref.shape)
        for (k, v), (name, ref) in zip(theirs, ours.items())
    ):
        logger.info(
            f"{source}: {len(ours)} tensors in the CRD/mdistiller layout, mapped by position."
        )
        return {name: v for name, (_, v) in zip(ours, theirs)}
    return state
