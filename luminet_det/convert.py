"""torchvision ImageNet state dicts -> detectron2 backbone state dicts."""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

import torch

__all__ = ["convert_torchvision_state_dict", "PREFIX"]

#: Where the bottom-up network sits in a detectron2 FPN detector.
PREFIX = "backbone.bottom_up."

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
    if arch.startswith("resnet"):
        rule = _resnet_key
    elif arch == "mobilenet_v2":
        rule = _mobilenet_key
    else:
        raise ValueError(f"arch must be resnet18/34/50/101 or mobilenet_v2, got {arch!r}.")
    out, unmatched = {}, []
    for key, value in state.items():
        new = rule(key)
        if new is None:
            unmatched.append(key)
        elif new:
            out[PREFIX + new] = value.detach().clone()
    return out, unmatched
