"""CIFAR-style architectures of the CRD / DKD / LumiNet teacher-student pairs (32x32 input).

Every model returns ``(logits, features)`` where ``features`` is the penultimate
representation (N, D) before the classifier. Architectures follow the definitions published
with the CRD benchmark (Tian et al., ICLR 2020) that mdistiller and the LumiNet paper use, so
parameter counts match the published ones (tested).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CifarResNet",
    "WideResNet",
    "VGG",
    "MobileNetV2Cifar",
    "ShuffleNetV1",
    "ShuffleNetV2",
]

Output = Tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- ResNet
class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR with stage widths ``filters`` (e.g. resnet8x4: depth 8,
    filters (32, 64, 128, 256))."""

    def __init__(self, *, depth: int, filters: Sequence[int], num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 20, 32, ...), got {depth}.")
        n = (depth - 2) // 6
        self.in_planes = filters[0]
        self.conv1 = nn.Conv2d(3, filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.layer1 = self._make_layer(filters[1], n, 1)
        self.layer2 = self._make_layer(filters[2], n, 2)
        self.layer3 = self._make_layer(filters[3], n, 2)
        self.fc = nn.Linear(filters[3], num_classes)
        _init(self)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(_BasicBlock(self.in_planes, planes, stride if i == 0 else 1))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x) -> Output:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        feat = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(feat), feat


# ----------------------------------------------------------------------------- WRN
class _WideBlock(nn.Module):
    """Pre-activation wide basic block."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal = in_planes == out_planes
        self.shortcut = (
            None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)
        )

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + (x if self.equal else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-depth-widen (Zagoruyko & Komodakis 2016), e.g. WRN-40-2."""

    def __init__(self, *, depth: int, widen: int, num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (16, 40, ...), got {depth}.")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks: List[nn.Module] = []
        in_planes = widths[0]
        for stage, (width, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
            for i in range(n):
                blocks.append(_WideBlock(in_planes, width, stride if i == 0 else 1))
                in_planes = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        _init(self)

    def forward(self, x) -> Output:
        x = F.relu(self.bn(self.blocks(self.conv1(x))))
        feat = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(feat), feat


# ----------------------------------------------------------------------------- VGG
_VGG_CFG = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
}


class VGG(nn.Module):
    """VGG with batch norm for CIFAR (CRD's variant: 5 conv blocks, global average pooling,
    one linear classifier)."""

    def __init__(self, *, depth: int, num_classes: int = 100):
        super().__init__()
        if depth not in _VGG_CFG:
            raise ValueError(f"VGG depth must be one of {sorted(_VGG_CFG)}, got {depth}.")
        blocks, in_ch = [], 3
        for widths in _VGG_CFG[depth]:
            layers: List[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(in_ch, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True)]
                in_ch = w
            blocks.append(nn.Sequential(*layers[:-1]))  # the block's last ReLU is applied outside
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Linear(512, num_classes)
        _init(self)

    def forward(self, x) -> Output:
        for i, block in enumerate(self.blocks):
            x = F.relu(block(x))
            # pools after blocks 0-2; a fourth pool only while the map is larger than 4x4
            # (64 px inputs), as in CRD
            if i < 3 or (i == 3 and x.shape[-1] > 4):
                x = F.max_pool2d(x, 2)
        feat = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(feat), feat


# ----------------------------------------------------------------------------- MobileNetV2
class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(True),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Cifar(nn.Module):
    """MobileNetV2 for CIFAR as in CRD ("MobileNetV2" = width 0.5, expansion 6, the second
    stage at stride 1)."""

    def __init__(self, *, width_mult: float = 0.5, expand: int = 6, num_classes: int = 100):
        super().__init__()
        setting = [
            [1, 16, 1, 1],
            [expand, 24, 2, 1],
            [expand, 32, 3, 2],
            [expand, 64, 4, 2],
            [expand, 96, 3, 1],
            [expand, 160, 3, 2],
            [expand, 320, 1, 1],
        ]
        in_ch = int(32 * width_mult)
        layers: List[nn.Module] = [
            nn.Conv2d(3, in_ch, 3, 2, 1, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.ReLU(True),
        ]
        for t, c, n, s in setting:
            out_ch = int(c * width_mult)
            for i in range(n):
                layers.append(_InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        self.last_channel = 1280
        layers += [
            nn.Conv2d(in_ch, self.last_channel, 1, bias=False),
            nn.BatchNorm2d(self.last_channel),
            nn.ReLU(True),
        ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(self.last_channel, num_classes)
        _init(self)

    def forward(self, x) -> Output:
        feat = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        return self.classifier(feat), feat


# ----------------------------------------------------------------------------- ShuffleNets
def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleV1Block(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int):
        super().__init__()
        mid = out_planes // 4
        g = 1 if in_planes == 24 else groups
        self.groups, self.stride = g, stride
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        out = _channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.groups)
        # a ReLU after the depth-wise convolution, as the CRD / mdistiller block the paper's
        # ShuffleNetV1 rows were trained with (ShuffleNetv1.py)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    """ShuffleNetV1 (g=3) for CIFAR as in CRD."""

    def __init__(
        self,
        *,
        num_classes: int = 100,
        out_planes=(240, 480, 960),
        blocks=(4, 8, 4),
        groups: int = 3,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        layers, in_planes = [], 24
        for out, n in zip(out_planes, blocks):
            for i in range(n):
                cat = in_planes if i == 0 else 0  # the stride-2 block concatenates its input
                layers.append(_ShuffleV1Block(in_planes, out - cat, 2 if i == 0 else 1, groups))
                in_planes = out
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(out_planes[-1], num_classes)
        _init(self)

    def forward(self, x) -> Output:
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        feat = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(feat), feat


def _shuffle_v2_branch(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """1x1 conv, 3x3 depth-wise conv (stride), 1x1 conv: ShuffleNetV2's main branch."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(True),
        nn.Conv2d(out_ch, out_ch, 3, stride, 1, groups=out_ch, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.Conv2d(out_ch, out_ch, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(True),
    )


class _ShuffleV2Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.branch = _shuffle_v2_branch(channels // 2, channels // 2, 1)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return _channel_shuffle(torch.cat([x1, self.branch(x2)], 1), 2)


class _ShuffleV2Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        mid = out_ch // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, 3, 2, 1, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(True),
        )
        self.right = _shuffle_v2_branch(in_ch, mid, 2)

    def forward(self, x):
        return _channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 (1x) for CIFAR as in CRD."""

    def __init__(self, *, num_classes: int = 100, widths=(116, 232, 464, 1024), blocks=(3, 7, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        layers, in_ch = [], 24
        for out, n in zip(widths[:3], blocks):
            layers.append(_ShuffleV2Down(in_ch, out))
            layers += [_ShuffleV2Block(out) for _ in range(n)]
            in_ch = out
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(in_ch, widths[3], 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], num_classes)
        _init(self)

    def forward(self, x) -> Output:
        x = F.relu(self.bn2(self.conv2(self.layers(F.relu(self.bn1(self.conv1(x)))))))
        feat = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.linear(feat), feat


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
