"""MobileNetV1 (Howard et al., 2017) for ImageNet, as the paper's Table 2 "ResNet50 ->
MobileNet" row uses it (the official LumiNet code and mdistiller distil into this network:
4,231,976 parameters at 1000 classes). Parameter names follow that code's layout
(``model.<i>.<j>``, ``fc``), so its checkpoints load unchanged."""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

__all__ = ["MobileNetV1"]

#: (output channels, stride) of the 13 depth-wise separable blocks after the stem
_BLOCKS: List[Tuple[int, int]] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *[(512, 1)] * 5,
    (1024, 2),
    (1024, 1),
]


def _conv_bn_relu(
    cin: int, cout: int, kernel: int, stride: int, groups: int = 1
) -> List[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class MobileNetV1(nn.Module):
    """A 3x3 stem (32 channels, stride 2), 13 blocks of a 3x3 depth-wise and a 1x1 point-wise
    convolution (each with batch norm and ReLU), global average pooling and a linear
    classifier. Returns ``(logits (N, num_classes), pooled features (N, 1024))``.

    Args:
        num_classes (int): outputs of the classifier.
    """

    def __init__(self, *, num_classes: int = 1000):
        super().__init__()
        layers: List[nn.Module] = [nn.Sequential(*_conv_bn_relu(3, 32, 3, 2))]
        cin = 32
        for cout, stride in _BLOCKS:
            depthwise = _conv_bn_relu(cin, cin, 3, stride, groups=cin)
            layers.append(nn.Sequential(*depthwise, *_conv_bn_relu(cin, cout, 1, 1)))
            cin = cout
        layers.append(nn.AdaptiveAvgPool2d(1))  # AvgPool2d(7) at 224 px, any size here
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feat = self.model(x).flatten(1)
        return self.fc(feat), feat
