"""ROIAlign with a multi-threaded input gradient on the CPU.

torchvision's CPU ``roi_align`` backward is one single-threaded loop over every (ROI, channel,
bin, sample) that recomputes the sample's bilinear weights and scatters four additions; in a
training step of the built-in 128-px R-50-FPN it took about a quarter of the step on 2 threads
(benchmarks/results/2026-12-02-step-profile.md). The gradient is linear and separable: for ROI
``r`` of image ``n`` and bin ``(i, j)``,

    out[r, c, i, j] = sum_{y, x} Ay[r, i, y] * input[n, c, y, x] * Ax[r, j, x]

where ``Ay[r, i]`` holds the bilinear weights of bin row ``i``'s sampling points along y
(averaged over them; zero where a point falls outside the map as torchvision decides) and
``Ax`` the same along x. So

    grad_input[n, :, y, :] = sum_{r in n, i} Ay[r, i, y] * (grad_out[r] @ Ax[r])[i]

is two matrix products per image: one batched over its ROIs (the bin columns), one over all its
(ROI, bin row) pairs. They run on every core and vectorize; the forward stays torchvision's, so
outputs are identical and gradients agree with torchvision's to rounding.

The dense products cost ``R*ph*C*W*(pw + H)`` multiply-adds against torchvision's
``C*ph*pw*sum(grid_h*grid_w)`` sampling points, so they pay off where ROIs are large relative
to the map (the FPN levels of small images) and not on COCO-sized maps with small ROIs:
:func:`matmul_grad_pays` decides per call, and everything else (GPU tensors, no gradient
needed, autocast, half precision) uses torchvision's kernels unchanged.

:func:`use_matmul_roi_align_grad` swaps a built model's detectron2 ``ROIAlign`` modules for
:class:`ROIAlign` (no parameters or buffers: checkpoints are unchanged); the training commands
do it through :func:`set_roi_align_cpu_grad` for ``MODEL.DISTILL.ROI_ALIGN_CPU_GRAD "matmul"``
(the default; ``distill.roi_align_cpu_grad`` of a LazyConfig).
"""

from typing import Tuple

import torch
from detectron2.layers import ROIAlign as _D2ROIAlign
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align as _tv_roi_align

from ..config import ROI_ALIGN_CPU_GRADS
from ..errors import ConfigError

__all__ = [
    "ROIAlign",
    "axis_weights",
    "bilinear_weights",
    "matmul_grad_pays",
    "roi_align",
    "sampling_grid",
    "set_roi_align_cpu_grad",
    "use_matmul_roi_align_grad",
]

#: One torchvision backward sampling point (per channel and bin) costs about as much as this
#: many multiply-adds of the dense products. Measured here: 139-229 on one thread, 265-375 on
#: two (benchmarks/results/2026-12-02-roi-align-grad.md); 100 keeps a margin, so the products
#: are chosen only where they are expected to be clearly faster.
MACS_PER_POINT = 100
#: Largest per-image buffer (ROIs x bin rows x channels x map width) the products may allocate.
MAX_BUFFER_BYTES = 256 * 2**20
#: Largest sampling grid per bin and axis the weights are built for (a bigger one falls back).
MAX_GRID = 64


def _roi_geometry(
    rois: Tensor, spatial_scale: float, aligned: bool
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x0, y0, width, height) of each ROI on the feature map, as torchvision computes them."""
    offset = 0.5 if aligned else 0.0
    x0 = rois[:, 1] * spatial_scale - offset
    y0 = rois[:, 2] * spatial_scale - offset
    width = rois[:, 3] * spatial_scale - offset - x0
    height = rois[:, 4] * spatial_scale - offset - y0
    if not aligned:  # the legacy mode forces ROIs to be at least one pixel
        width, height = width.clamp(min=1.0), height.clamp(min=1.0)
    return x0, y0, width, height


def sampling_grid(
    rois: Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tuple[Tensor, Tensor]:
    """Sampling points per bin along y and x, as torchvision chooses them.

    Args:
        rois (Tensor): (R, 5) ``(batch index, x1, y1, x2, y2)`` in input coordinates.
        output_size ((int, int)): (pooled height, pooled width).
        sampling_ratio (int): points per bin and axis; 0 = ``ceil(ROI size / bins)`` per ROI.

    Returns:
        (Tensor, Tensor): (R,) int64 grid heights and widths (0 or less: no points).
    """
    _, _, width, height = _roi_geometry(rois, spatial_scale, aligned)
    return _grid(width, height, output_size, sampling_ratio)


def _grid(
    width: Tensor, height: Tensor, output_size: Tuple[int, int], sampling_ratio: int
) -> Tuple[Tensor, Tensor]:
    """:func:`sampling_grid` from the ROIs' sizes on the map."""
    if sampling_ratio > 0:
        full = torch.full(width.shape, sampling_ratio, dtype=torch.long, device=width.device)
        return full, full
    return (
        torch.ceil(height / output_size[0]).long(),
        torch.ceil(width / output_size[1]).long(),
    )


def axis_weights(start: Tensor, size: Tensor, grid: Tensor, length: int, bins: int) -> Tensor:
    """Bilinear weights of each bin's sampling points along one axis, averaged over the points.

    Follows torchvision's ``bilinear_interpolate``: point ``p = start + b * size / bins +
    (s + 0.5) * size / bins / grid``; a point below -1 or beyond ``length`` contributes nothing,
    one in [-1, 0] is clamped to 0, one at or past the last index ``length - 1`` weighs on it
    alone.

    Args:
        start (Tensor): (R,) ROI start on the map (after the alignment offset).
        size (Tensor): (R,) ROI size on the map.
        grid (Tensor): (R,) int64 points per bin (<= 0: none).
        length (int): the map's size along the axis.
        bins (int): bins along the axis.

    Returns:
        Tensor: (R, bins, length): row ``b`` sums to the valid points' share of the bin.
    """
    num = start.shape[0]
    points = max(int(grid.max()), 1) if num else 1
    dtype, device = start.dtype, start.device
    per_point = grid.clamp(min=1).to(dtype)[:, None, None]
    bin_size = (size / bins)[:, None, None]
    b = torch.arange(bins, dtype=dtype, device=device)[None, :, None]
    s = torch.arange(points, device=device)[None, None, :]
    p = start[:, None, None] + b * bin_size + (s.to(dtype) + 0.5) * bin_size / per_point
    valid = (s < grid[:, None, None]) & (p >= -1.0) & (p <= length)
    p = p.clamp(min=0.0)
    low = p.floor().long().clamp(max=length - 1)
    last = p >= length - 1
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(p), p - low.to(dtype))
    weight = valid.to(dtype) / per_point
    out = torch.zeros(num, bins, length, dtype=dtype, device=device)
    out.scatter_add_(2, low, (1.0 - frac) * weight)
    out.scatter_add_(2, high, frac * weight)
    return out


def bilinear_weights(
    rois: Tensor,
    height: int,
    width: int,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tuple[Tensor, Tensor]:
    """``(Ay, Ax)`` of the module docstring: (R, pooled height, height) and (R, pooled width,
    width), so that ``out[r, c] = Ay[r] @ input[n_r, c] @ Ax[r].T``."""
    x0, y0, roi_w, roi_h = _roi_geometry(rois, spatial_scale, aligned)
    grid_h, grid_w = _grid(roi_w, roi_h, output_size, sampling_ratio)
    ay = axis_weights(y0, roi_h, grid_h, height, output_size[0])
    ax = axis_weights(x0, roi_w, grid_w, width, output_size[1])
    return ay, ax


def matmul_grad_pays(
    rois: Tensor,
    input_shape: Tuple[int, int, int, int],
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
    itemsize: int = 4,
) -> bool:
    """Whether the two matrix products are expected to beat torchvision's CPU backward: their
    multiply-adds at most :data:`MACS_PER_POINT` per torchvision sampling point, a per-image
    buffer within :data:`MAX_BUFFER_BYTES` and sampling grids within :data:`MAX_GRID`."""
    num = rois.shape[0]
    if num == 0:
        return False
    n, c, h, w = input_shape
    ph, pw = output_size
    grid_h, grid_w = sampling_grid(rois, output_size, spatial_scale, sampling_ratio, aligned)
    if int(grid_h.max()) > MAX_GRID or int(grid_w.max()) > MAX_GRID:
        return False
    points = c * ph * pw * float((grid_h.clamp(min=0) * grid_w.clamp(min=0)).sum())
    macs = float(num) * ph * c * w * (pw + h)
    per_image = int(torch.bincount(rois[:, 0].long(), minlength=n).max())
    buffer = per_image * ph * c * w * itemsize
    return macs <= MACS_PER_POINT * points and buffer <= MAX_BUFFER_BYTES


class _MatmulGrad(torch.autograd.Function):
    """torchvision's ``roi_align`` forward; the input gradient by the two products."""

    @staticmethod
    def forward(ctx, input, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.args = (input.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return _tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (rois,) = ctx.saved_tensors
        (n, c, h, w), output_size, spatial_scale, sampling_ratio, aligned = ctx.args
        ph, pw = output_size
        ay, ax = bilinear_weights(rois, h, w, output_size, spatial_scale, sampling_ratio, aligned)
        image = rois[:, 0].long()
        if image.numel() > 1 and not bool((image[1:] >= image[:-1]).all()):
            image, order = image.sort(stable=True)
            grad_out, ay, ax = grad_out[order], ay[order], ax[order]
        # (R, ph, C, pw): the bin rows outermost, so that the products below need no transpose
        grad_rows = grad_out.permute(0, 2, 1, 3).reshape(-1, ph * c, pw)
        grad_in = grad_out.new_zeros(n, h, c * w)
        start = 0
        for index, count in enumerate(torch.bincount(image, minlength=n).tolist()):
            if count:
                rows = slice(start, start + count)
                cols = torch.bmm(grad_rows[rows], ax[rows])  # (count, ph * C, W)
                torch.mm(
                    ay[rows].reshape(count * ph, h).t(),
                    cols.view(count * ph, c * w),
                    out=grad_in[index],
                )
            start += count
        grad_in = grad_in.view(n, h, c, w).permute(0, 2, 1, 3).contiguous()
        return grad_in, None, None, None, None, None


def roi_align(
    input: Tensor,
    rois: Tensor,
    output_size: Tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> Tensor:
    """``torchvision.ops.roi_align`` whose CPU input gradient is computed by the two matrix
    products where :func:`matmul_grad_pays` (float32/float64, outside autocast).

    Args:
        input (Tensor): (N, C, H, W) feature map.
        rois (Tensor): (R, 5) ``(batch index, x1, y1, x2, y2)``, the dtype of ``input``.

    Returns:
        Tensor: (R, C, pooled height, pooled width), torchvision's values.
    """
    output_size = _pair(output_size)
    if (
        input.device.type == "cpu"
        and input.requires_grad
        and torch.is_grad_enabled()
        and input.dtype in (torch.float32, torch.float64)
        and not torch.is_autocast_enabled("cpu")
        and matmul_grad_pays(
            rois,
            tuple(input.shape),
            output_size,
            spatial_scale,
            sampling_ratio,
            aligned,
            itemsize=input.element_size(),
        )
    ):
        return _MatmulGrad.apply(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    return _tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)


class ROIAlign(_D2ROIAlign):
    """detectron2's ``ROIAlign`` through :func:`roi_align`: the same outputs, the CPU input
    gradient by matrix products where they pay off."""

    def forward(self, input: Tensor, rois: Tensor) -> Tensor:
        assert rois.dim() == 2 and rois.size(1) == 5, f"rois must be (R, 5), got {rois.shape}"
        if input.is_quantized:
            input = input.dequantize()
        return roi_align(
            input,
            rois.to(dtype=input.dtype),
            _pair(self.output_size),
            self.spatial_scale,
            self.sampling_ratio,
            self.aligned,
        )


def use_matmul_roi_align_grad(model: nn.Module) -> int:
    """Replace every detectron2 ``ROIAlign`` inside ``model`` (its box, mask and cascade
    poolers, a distilled model's teacher too) by :class:`ROIAlign` with the same settings.

    Returns:
        int: how many modules were replaced.
    """
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is _D2ROIAlign:
                new = ROIAlign(
                    child.output_size, child.spatial_scale, child.sampling_ratio, child.aligned
                )
                setattr(parent, name, new)
                replaced += 1
    return replaced


def set_roi_align_cpu_grad(model: nn.Module, choice: str) -> int:
    """Apply ``MODEL.DISTILL.ROI_ALIGN_CPU_GRAD``: ``"matmul"`` swaps :class:`ROIAlign` in
    (:func:`use_matmul_roi_align_grad`), ``"torchvision"`` leaves the model as built.

    Returns:
        int: how many modules were replaced.

    Raises:
        ConfigError: ``choice`` is not one of :data:`luminet_det.config.ROI_ALIGN_CPU_GRADS`.
    """
    if choice not in ROI_ALIGN_CPU_GRADS:
        raise ConfigError(
            f"MODEL.DISTILL.ROI_ALIGN_CPU_GRAD must be one of {list(ROI_ALIGN_CPU_GRADS)}, got "
            f"{choice!r}."
        )
    return use_matmul_roi_align_grad(model) if choice == "matmul" else 0
