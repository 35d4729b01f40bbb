"""Vision-transformer students of the paper's Table 7 (CNN teacher -> ViT student on CIFAR-100),
as Li et al. 2022b ("Locality guidance for improving vision transformers on tiny datasets",
ECCV 2022; public code lkhl/tiny-transformers, ``pycls/models/transformers/``) build them: the
standard ImageNet-size networks at 224 px (CIFAR images are upscaled by the data pipeline;
``DATA.INPUT_SIZE``) with 100 classes.

* DeiT-Ti, PiT-Ti and PVTv2-B0 are timm's ``deit_tiny_patch16_224``, ``pit_ti_224`` and
  ``pvt_v2_b0``: the same layers, in the same order, computing the same function as the source's
  ``DeiT``, ``PiT`` and ``PVTv2`` (``tests/test_vit.py`` pins the logits against the source's),
  with 5,543,716 / 4,615,972 / 3,435,460 parameters at 100 classes. DeiT-Ti starts as the source
  starts it: a zero classifier and a truncated-normal class token.
* PVT-Ti (PVT v1, Wang et al. 2021) is not in timm; :class:`PVT` is written here after the
  source's ``PVT`` (12,767,588 parameters at 100 classes).

Every model returns ``(logits (N, classes), pre-logit features (N, D))``.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TimmClassifier", "PVT", "VIT_MODELS", "VIT_MIN_SIZE"]


class TimmClassifier(nn.Module):
    """A timm vision transformer returning ``(logits, pre-logit features)``.

    Args:
        arch (str): timm model name (``deit_tiny_patch16_224``, ``pit_ti_224``, ``pvt_v2_b0``).
        num_classes (int): outputs of the classifier.
        img_size (int): input size in pixels the position embeddings are made for (the
            hierarchical PVTv2 takes any size).
        drop_path_rate (float): stochastic depth of the last block (linear in depth).
    """

    def __init__(
        self, *, arch: str, num_classes: int, img_size: int = 224, drop_path_rate: float = 0.0
    ):
        super().__init__()
        import timm

        kwargs = {} if arch.startswith("pvt_v2") else {"img_size": img_size}
        self.net = timm.create_model(
            arch, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs
        )
        if arch.startswith("deit"):  # as the source's DeiT starts
            nn.init.zeros_(self.net.head.weight)
            nn.init.zeros_(self.net.head.bias)
            nn.init.trunc_normal_(self.net.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        feat = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net.get_classifier()(feat), feat


class _Attention(nn.Module):
    """Spatial-reduction attention: keys and values from the tokens pooled by a
    ``sr_ratio``-strided convolution (and a LayerNorm) when ``sr_ratio > 1``."""

    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} is not a multiple of heads {heads}"
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            grid = x.transpose(1, 2).reshape(b, c, *hw)
            x = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        kv = self.kv(x).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ kv[0].transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ kv[1]).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, sr_ratio: int, drop_path: float):
        super().__init__()
        from timm.layers import DropPath

        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads, sr_ratio)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, patch)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class PVT(nn.Module):
    """Pyramid Vision Transformer v1 (Wang et al., ICCV 2021) as Li et al. 2022b's
    ``pycls/models/transformers/pvt.py`` builds it (after whai362/PVT ``classification/pvt.py``):
    four stages of a patch embedding (strided convolution and LayerNorm), a learned position
    embedding and pre-norm blocks of spatial-reduction attention and a GELU MLP; a class token
    joins the last stage, whose final LayerNorm's class token is classified. Layers are
    registered in the source's order. The defaults are PVT-Ti.

    Args:
        num_classes (int): outputs of the classifier.
        img_size (int): input size the position embeddings are made for; other sizes
            interpolate them (bilinear).
        patch_sizes, dims, depths, heads, mlp_ratios, sr_ratios (sequences of 4 ints): per
            stage.
        drop_path_rate (float): stochastic depth of the last block (linear over all blocks).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        img_size: int = 224,
        patch_sizes: Sequence[int] = (4, 2, 2, 2),
        dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.stages = len(dims)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        grid, cin, first = img_size, 3, 0
        self.grids: List[int] = []
        for i in range(self.stages):
            grid //= patch_sizes[i]
            self.grids.append(grid)
            tokens = grid * grid + (1 if i == self.stages - 1 else 0)
            setattr(self, f"patch_embed{i + 1}", _PatchEmbed(cin, dims[i], patch_sizes[i]))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, tokens, dims[i])))
            blocks = [
                _Block(dims[i], heads[i], mlp_ratios[i], sr_ratios[i], rates[first + j])
                for j in range(depths[i])
            ]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            cin, first = dims[i], first + depths[i]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[-1]))
        self.head = nn.Linear(dims[-1], num_classes)
        for i in range(self.stages):
            nn.init.trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.zeros_(m.bias)
            nn.init.ones_(m.weight)

    def _pos(self, i: int, hw: Tuple[int, int]) -> torch.Tensor:
        pos = getattr(self, f"pos_embed{i + 1}")
        last = i == self.stages - 1
        grid_pos = pos[:, 1:] if last else pos
        if hw != (self.grids[i], self.grids[i]):
            g = self.grids[i]
            grid_pos = grid_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)
            grid_pos = F.interpolate(grid_pos, size=hw, mode="bilinear", align_corners=False)
            grid_pos = grid_pos.flatten(2).transpose(1, 2)
        return torch.cat([pos[:, :1], grid_pos], dim=1) if last else grid_pos

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        for i in range(self.stages):
            x, hw = getattr(self, f"patch_embed{i + 1}")(x)
            if i == self.stages - 1:
                x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            x = x + self._pos(i, hw)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, hw)
            if i != self.stages - 1:
                x = x.transpose(1, 2).reshape(b, -1, *hw)
        feat = self.norm(x)[:, 0]
        return self.head(feat), feat


def _timm(arch: str):
    def build(*, num_classes: int, img_size: int = 224, drop_path_rate: float = 0.0):
        return TimmClassifier(
            arch=arch, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path_rate
        )

    build.__doc__ = f"timm's ``{arch}`` (see :class:`TimmClassifier`)."
    return build


#: The Table 7 students by the names configs use (``MODEL.STUDENT``); each takes
#: ``num_classes``, ``img_size`` and ``drop_path_rate``.
VIT_MODELS = {
    "deit_ti": _timm("deit_tiny_patch16_224"),
    "pit_ti": _timm("pit_ti_224"),
    "pvt_ti": PVT,
    "pvtv2_b0": _timm("pvt_v2_b0"),
}

#: The smallest input (pixels) each student runs on: one 16-px patch for DeiT-Ti and PiT-Ti; for
#: the PVTs, the first stage's spatial-reduction attention pools 8 x 8 tokens of 4 x 4 pixels.
VIT_MIN_SIZE = {"deit_ti": 16, "pit_ti": 16, "pvt_ti": 32, "pvtv2_b0": 32}
