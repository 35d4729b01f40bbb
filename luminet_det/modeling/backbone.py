"""MobileNetV2 (torchvision) as a detectron2 backbone, and its FPN variant."""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn
from torchvision.models import mobilenet_v2

__all__ = ["MobileNetV2", "build_mobilenetv2_backbone", "build_mobilenetv2_fpn_backbone"]

# torchvision's mobilenet_v2().features split into detectron2-style stages:
# name -> (first index, end index (exclusive), stride). features[18] (the 1280-channel
# classifier conv) is not used by detection.
_STAGES = {
    "stem": (0, 1, 2),
    "res2": (1, 4, 4),
    "res3": (4, 7, 8),
    "res4": (7, 14, 16),
    "res5": (14, 18, 32),
}
_STAGE_ORDER = ["stem", "res2", "res3", "res4", "res5"]


class MobileNetV2(Backbone):
    """torchvision's MobileNetV2 feature extractor with outputs at strides 4/8/16/32.

    Outputs are named ``res2`` .. ``res5`` (24, 32, 96, 320 channels at width 1.0) so that
    detectron2's FPN configs (``MODEL.FPN.IN_FEATURES: [res2, res3, res4, res5]``) apply
    unchanged. Parameter names are torchvision's (``features.<i>...``), so torchvision
    checkpoints convert by a prefix (``tools/convert_torchvision_to_d2.py``).
    """

    def __init__(
        self,
        *,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        width_mult: float = 1.0,
    ):
        """
        Args:
            out_features (sequence of str): subset of res2..res5 to return.
            norm (str): detectron2 norm name ("FrozenBN", "BN", "SyncBN", "GN", ...).
            freeze_at (int): 0 trains everything; 1 freezes the stem; k >= 2 freezes the stem
                and stages res2 .. res<k> (as detectron2's ResNet).
            width_mult (float): torchvision's width multiplier.
        """
        super().__init__()
        if not norm:
            raise ValueError("MobileNetV2 needs a norm layer; MODEL.RESNETS.NORM is empty.")
        unknown = [f for f in out_features if f not in _STAGES or f == "stem"]
        if unknown or not out_features:
            raise ValueError(
                f"MobileNetV2 out_features must be a non-empty subset of res2..res5, got "
                f"{list(out_features)}."
            )
        if not isinstance(freeze_at, int) or not 0 <= freeze_at <= 5:
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT must be in 0..5, got {freeze_at!r}.")
        features = mobilenet_v2(
            weights=None, width_mult=width_mult, norm_layer=lambda c: get_norm(norm, c)
        ).features[:18]
        self.features = features
        self._out_features = list(out_features)
        self._out_feature_strides = {n: _STAGES[n][2] for n in self._out_features}
        self._out_feature_channels = {
            n: _last_channels(features[_STAGES[n][0] : _STAGES[n][1]]) for n in self._out_features
        }
        self._last_stage = max(_STAGE_ORDER.index(n) for n in self._out_features)
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int = 0) -> "MobileNetV2":
        """Freeze the stem (freeze_at >= 1) and stages res2..res<freeze_at>: no gradient, and
        batch norms turned into FrozenBatchNorm2d."""
        for idx, name in enumerate(_STAGE_ORDER):
            if idx >= freeze_at:
                break
            start, end, _ = _STAGES[name]
            for i in range(start, end):
                self.features[i].requires_grad_(False)
                self.features[i] = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features[i])
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        outputs = {}
        for name in _STAGE_ORDER[: self._last_stage + 1]:
            start, end, _ = _STAGES[name]
            for i in range(start, end):
                x = self.features[i](x)
            if name in self._out_features:
                outputs[name] = x
        return outputs


def _last_channels(stage: nn.Module) -> int:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_backbone(cfg, input_shape: ShapeSpec) -> MobileNetV2:
    """MobileNetV2 from ``MODEL.RESNETS.OUT_FEATURES``, ``MODEL.RESNETS.NORM`` and
    ``MODEL.BACKBONE.FREEZE_AT`` (the same keys as detectron2's ResNet)."""
    if input_shape.channels != 3:
        raise ValueError(f"MobileNetV2 takes 3-channel images, got {input_shape.channels}.")
    return MobileNetV2(
        out_features=cfg.MODEL.RESNETS.OUT_FEATURES,
        norm=cfg.MODEL.RESNETS.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
    )


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """MobileNetV2 + detectron2's FPN (``MODEL.FPN.*``), with a max-pooled p6 like
    ``build_resnet_fpn_backbone``."""
    bottom_up = build_mobilenetv2_backbone(cfg, input_shape)
    in_features: List[str] = cfg.MODEL.FPN.IN_FEATURES
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
