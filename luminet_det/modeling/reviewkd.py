"""ReviewKD feature distillation on FPN levels (Chen et al., "Distilling Knowledge via
Knowledge Review", CVPR 2021), the "Ours*" rows of the LumiNet paper (Table 12)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from torch import nn

from luminet_det.losses import hcl_loss

__all__ = ["ABF", "ReviewKD"]


class ABF(nn.Module):
    """Attention-based fusion: reduce a student level to ``mid_channels``, fuse it with the
    (upsampled) residual from the deeper level through two sigmoid attention maps, and project
    to the teacher's channel count.
    """

    def __init__(self, *, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        """
        Args:
            in_channels (int): channels of the student level.
            mid_channels (int): channels of the fused residual.
            out_channels (int): channels of the teacher level it is compared with.
            fuse (bool): False for the deepest level (nothing to fuse with).
        """
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.att_conv = (
            nn.Sequential(nn.Conv2d(mid_channels * 2, 2, 1), nn.Sigmoid()) if fuse else None
        )
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x (Tensor): (N, in_channels, H, W) student level.
            residual (Tensor): (N, mid_channels, h, w) from the deeper level, or None.

        Returns:
            (Tensor, Tensor): the output (N, out_channels, H, W) and the new residual
            (N, mid_channels, H, W).
        """
        x = self.conv1(x)
        if self.att_conv is not None:
            assert residual is not None, "a fusing ABF needs the deeper level's residual"
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, 0:1] + residual * z[:, 1:2]
        return self.conv2(x), x


class ReviewKD(nn.Module):
    """ReviewKD on backbone (FPN) outputs: student levels are fused from deep to shallow by
    :class:`ABF` modules and compared to the teacher's levels with :func:`hcl_loss`.

    Level names and channels come from the backbones' ``output_shape()``. The ABF modules train
    with the student and are dropped when the student is exported.
    """

    def __init__(
        self,
        *,
        student_shapes: Dict[str, ShapeSpec],
        teacher_shapes: Dict[str, ShapeSpec],
        mid_channels: int = 256,
        pool_levels: Sequence[int] = (4, 2, 1),
    ):
        """
        Args:
            student_shapes (dict[str, ShapeSpec]): the student backbone's ``output_shape()``.
            teacher_shapes (dict[str, ShapeSpec]): the teacher backbone's ``output_shape()``;
                must name the same levels with the same strides.
            mid_channels (int): > 0, channels of the fusion residuals.
            pool_levels (sequence of int): pyramid pooling sizes of the HCL loss.
        """
        super().__init__()
        if set(student_shapes) != set(teacher_shapes):
            raise ValueError(
                "ReviewKD needs the same feature levels in student and teacher, got student "
                f"{sorted(student_shapes)} and teacher {sorted(teacher_shapes)}. Use FPN backbones "
                "with the same MODEL.FPN settings (levels p2-p6) for both."
            )
        strides = {n: (student_shapes[n].stride, teacher_shapes[n].stride) for n in student_shapes}
        bad = {n: s for n, s in strides.items() if s[0] != s[1]}
        if bad:
            raise ValueError(
                f"Student and teacher strides differ at levels (student, teacher): {bad}"
            )
        if not isinstance(mid_channels, int) or mid_channels <= 0:
            raise ValueError(f"MODEL.DISTILL.REVIEWKD.MID_CHANNELS must be > 0, got {mid_channels}")
        if any(not isinstance(p, int) or p <= 0 for p in pool_levels):
            raise ValueError(f"MODEL.DISTILL.REVIEWKD.POOL_LEVELS must be > 0, got {pool_levels}")
        # shallow (small stride) to deep
        self.in_features: List[str] = sorted(student_shapes, key=lambda n: student_shapes[n].stride)
        self.pool_levels = tuple(pool_levels)
        deep_to_shallow = self.in_features[::-1]
        self.abfs = nn.ModuleList(
            ABF(
                in_channels=student_shapes[name].channels,
                mid_channels=mid_channels,
                out_channels=teacher_shapes[name].channels,
                fuse=i > 0,
            )
            for i, name in enumerate(deep_to_shallow)
        )

    def fuse(self, student_features: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """The fused student features, one per level of ``in_features`` (shallow to deep)."""
        missing = [n for n in self.in_features if n not in student_features]
        assert not missing, f"student features lack levels {missing}"
        outputs: List[torch.Tensor] = []
        residual = None
        for name, abf in zip(self.in_features[::-1], self.abfs):  # equal lengths by construction
            out, residual = abf(student_features[name], residual)
            outputs.insert(0, out)
        return outputs

    def forward(
        self, student_features: Dict[str, torch.Tensor], teacher_features: Dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Unweighted ReviewKD loss (scalar); the teacher features receive no gradient."""
        fused = self.fuse(student_features)
        teacher = []
        for name, fs in zip(self.in_features, fused):
            ft = teacher_features[name].detach()
            if ft.shape[-2:] != fs.shape[-2:]:
                # Same images padded to other multiples (size_divisibility): both start at the
                # top-left corner, so crop / zero-pad the teacher's padding to the student's.
                h, w = fs.shape[-2:]
                ft = ft[..., :h, :w]
                ft = F.pad(ft, (0, w - ft.shape[-1], 0, h - ft.shape[-2]))
            teacher.append(ft)
        return hcl_loss(fused, teacher, self.pool_levels)
