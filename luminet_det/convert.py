"""torchvision ImageNet state dicts -> detectron2 backbone checkpoints, and the config keys a
converted backbone needs.

A converted checkpoint is a ``.pth`` file that detectron2's checkpointer reads with
``torch.load(weights_only=True)`` (no code runs while it is read): ``{"model": state dict,
"__luminet_requires__": {config key: value}}``. The second entry names the config values
the weights only make sense with: torchvision's input convention (RGB, its ImageNet mean and
std) and, for the bottleneck ResNets, the layout of the block (torchvision strides the 3x3
convolution, detectron2's default ``MODEL.RESNETS.STRIDE_IN_1X1: True`` strides the 1x1: the
weights would load without an error into the wrong network). :func:`config_mismatches` checks
a config against it before training (tools/train_net.py).
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Tuple

import torch

__all__ = [
    "convert_torchvision_state_dict",
    "required_config",
    "converted_checkpoint",
    "config_mismatches",
    "PREFIX",
    "REQUIRES_KEY",
    "ARCHS",
]

#: Where the bottom-up network sits in a detectron2 FPN detector.
PREFIX = "backbone.bottom_up."
#: The entry of a converted checkpoint that lists the config values it needs.
REQUIRES_KEY = "__luminet_requires__"
#: The torchvision architectures the converter maps.
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2")
#: torchvision's ImageNet input convention (RGB, 0-255 scale as detectron2 feeds images).
_TORCHVISION_INPUT = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
}

_BN = {
    "weight": "weight",
    "bias": "bias",
    "running_mean": "running_mean",
    "running_var": "running_var",
}


def _resnet_key(key: str):
    """torchvision ResNet key -> detectron2 ResNet key, '' to drop, None if unknown."""
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return ""
    m = re.fullmatch(r"conv1\.weight", key)
    if m:
        return "stem.conv1.weight"
    m = re.fullmatch(r"bn1\.(\w+)", key)
    if m and m.group(1) in _BN:
        return f"stem.conv1.norm.{m.group(1)}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.+)", key)
    if not m:
        return None
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    head = f"res{stage}.{block}."
    m2 = re.fullmatch(r"conv(\d)\.weight", rest)
    if m2:
        return head + f"conv{m2.group(1)}.weight"
    m2 = re.fullmatch(r"bn(\d)\.(\w+)", rest)
    if m2 and m2.group(2) in _BN:
        return head + f"conv{m2.group(1)}.norm.{m2.group(2)}"
    if rest == "downsample.0.weight":
        return head + "shortcut.weight"
    m2 = re.fullmatch(r"downsample\.1\.(\w+)", rest)
    if m2 and m2.group(1) in _BN:
        return head + f"shortcut.norm.{m2.group(1)}"
    return None


def _mobilenet_key(key: str):
    if key.startswith("classifier.") or key.endswith("num_batches_tracked"):
        return ""
    m = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if not m:
        return None
    if int(m.group(1)) >= 18:  # the 1280-channel conv before the classifier: unused
        return ""
    return key


def convert_torchvision_state_dict(
    state: Dict[str, torch.Tensor], arch: str
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map a torchvision ``resnet*`` or ``mobilenet_v2`` state dict onto detectron2 names.

    Args:
        state (dict): torchvision state dict.
        arch (str): "resnet18", "resnet34", "resnet50", "resnet101" or "mobilenet_v2".

    Returns:
        (dict, list): the converted state dict (keys under ``backbone.bottom_up.``) and the
        torchvision keys that matched no rule (empty when the conversion is complete).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}.")
    rule = _mobilenet_key if arch == "mobilenet_v2" else _resnet_key
    out, unmatched = {}, []
    for key, value in state.items():
        new = rule(key)
        if new is None:
            unmatched.append(key)
        elif new:
            out[PREFIX + new] = value.detach().clone()
    return out, unmatched


def required_config(arch: str) -> Dict[str, object]:
    """The config values (full key -> value) a detector needs for torchvision's ``arch``
    weights: RGB input with torchvision's mean and std, and for resnet50/101 the stride on the
    3x3 convolution (``MODEL.RESNETS.STRIDE_IN_1X1: False``)."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {list(ARCHS)}, got {arch!r}.")
    required = dict(_TORCHVISION_INPUT)
    if arch in ("resnet50", "resnet101"):
        required["MODEL.RESNETS.STRIDE_IN_1X1"] = False
    return required


def converted_checkpoint(state: Dict[str, torch.Tensor], arch: str) -> Dict[str, object]:
    """What the converter saves with ``torch.save``: the converted state dict (contiguous
    tensors) and the config values it requires (:func:`required_config`)."""
    return {
        "model": {k: v.contiguous() for k, v in state.items()},
        REQUIRES_KEY: required_config(arch),
        "__author__": f"torchvision {arch} (luminet_det converter)",
    }


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and abs(float(a) - float(b)) <= 1e-3
    return a == b


def config_mismatches(cfg, requires: Mapping[str, object]) -> List[str]:
    """``"KEY: the config has X, the weights need Y"`` for every required key (a converted
    checkpoint's :data:`REQUIRES_KEY` entry) that ``cfg`` does not satisfy."""
    out = []
    for key, wanted in requires.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        if not _same(node, wanted):
            out.append(f"{key}: the config has {node!r}, the weights need {wanted!r}")
    return out
