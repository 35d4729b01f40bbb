"""ROIAlign's CPU input gradient by matrix products (luminet_det/modeling/roi_align.py): the
gradient on hand-worked ROIs, equality with torchvision's on random ones, the cost rule's
choice, and the swap inside a detector (the same losses and parameter gradients)."""

import pytest
import torch
from detectron2.layers import ROIAlign as D2ROIAlign
from tiny import batch, build, tiny_cfg, train_step
from torchvision.ops import roi_align as tv_roi_align

from luminet_det.errors import ConfigError
from luminet_det.modeling.roi_align import (
    MAX_BUFFER_BYTES,
    ROIAlign,
    _MatmulGrad,
    axis_weights,
    matmul_grad_pays,
    roi_align,
    sampling_grid,
    use_matmul_roi_align_grad,
)


def _matmul_grad(x, rois, grad_out, output_size, scale=1.0, sampling_ratio=1, aligned=False):
    x = x.detach().clone().requires_grad_()
    out = _MatmulGrad.apply(x, rois, output_size, scale, sampling_ratio, aligned)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    return grad


def _tv_grad(x, rois, grad_out, output_size, scale=1.0, sampling_ratio=1, aligned=False):
    x = x.detach().clone().requires_grad_()
    out = tv_roi_align(x, rois, output_size, scale, sampling_ratio, aligned)
    (grad,) = torch.autograd.grad(out, x, grad_out)
    return grad


def test_gradient_of_one_interior_point():
    # ROI (0.5, 0.5)-(2, 2), one bin, one point at (1.25, 1.25): bilinear weights 0.75/0.25
    # along each axis, so 0.5625 on (1, 1), 0.1875 on (1, 2) and (2, 1), 0.0625 on (2, 2)
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    rois = torch.tensor([[0, 0.5, 0.5, 2.0, 2.0]], dtype=torch.float64)
    grad_out = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[1, 1], expected[1, 2], expected[2, 1], expected[2, 2] = 0.5625, 0.1875, 0.1875, 0.0625
    assert torch.equal(_matmul_grad(x, rois, grad_out, (1, 1))[0, 0], expected)
    assert torch.equal(_tv_grad(x, rois, grad_out, (1, 1))[0, 0], expected)


def test_gradient_at_the_borders():
    # x from -2 to -0.5 in two bins of 0.75: points at -1.625 (below -1: no contribution) and
    # -0.875 (clamped to column 0); y from 2.5 to 4 in one bin: the point 3.25 lies past the
    # last row (3) but within the map's extent (<= 4), so it weighs on row 3 alone
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    rois = torch.tensor([[0, -2.0, 2.5, -0.5, 4.0]], dtype=torch.float64)
    grad_out = torch.tensor([[[[1.0, 10.0]]]], dtype=torch.float64)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[3, 0] = 10.0
    assert torch.equal(_matmul_grad(x, rois, grad_out, (1, 2))[0, 0], expected)
    assert torch.equal(_tv_grad(x, rois, grad_out, (1, 2))[0, 0], expected)


def test_axis_weights_average_the_points():
    # start 0, size 4, 2 bins of 2, 2 points each at 0.5, 1.5 | 2.5, 3.5 on a length-4 axis:
    # bin 0 = (0.5 * [.5, .5, 0, 0] + 0.5 * [0, .5, .5, 0]) = [.25, .5, .25, 0]; bin 1 ends at
    # 3.5 past the last index, which takes the point whole: [0, 0, .25, .75]
    w = axis_weights(
        torch.tensor([0.0], dtype=torch.float64),
        torch.tensor([4.0], dtype=torch.float64),
        torch.tensor([2]),
        4,
        2,
    )
    expected = torch.tensor([[[0.25, 0.5, 0.25, 0.0], [0.0, 0.0, 0.25, 0.75]]], dtype=torch.float64)
    assert torch.equal(w, expected)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_gradient_equals_torchvision(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    n, c, h, w = 3, 5, 12, 10
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    wh = 4 + 40 * torch.rand(40, 2, generator=g, dtype=torch.float64)
    xy = -8 + 48 * torch.rand(40, 2, generator=g, dtype=torch.float64)  # some partly outside
    image = torch.tensor([2, 0] * 20, dtype=torch.float64)  # unsorted; image 1 has no ROI
    rois = torch.cat([image[:, None], xy, xy + wh], 1)
    rois[5, 3:] = rois[5, 1:3]  # an empty ROI
    grad_out = torch.randn(40, c, 3, 4, generator=g, dtype=torch.float64)
    args = ((3, 4), 0.25, sampling_ratio, aligned)
    ours, theirs = _matmul_grad(x, rois, grad_out, *args), _tv_grad(x, rois, grad_out, *args)
    assert theirs.abs().sum() > 0 and theirs[1].abs().sum() == 0
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    # the forward is torchvision's, unchanged
    assert torch.equal(_MatmulGrad.apply(x, rois, *args), tv_roi_align(x, rois, *args))


def test_sampling_grid_as_torchvision_chooses_it():
    rois = torch.tensor([[0, 0.0, 0.0, 29.0, 7.0], [0, 0.0, 0.0, 1.0, 1.0]])
    # adaptive: ceil(size / bins) per axis on the map (scale 1, aligned shifts both ends)
    gh, gw = sampling_grid(rois, (7, 7), 1.0, 0, True)
    assert gh.tolist() == [1, 1] and gw.tolist() == [5, 1]
    gh, gw = sampling_grid(rois, (7, 7), 1.0, 3, True)
    assert gh.tolist() == [3, 3] and gw.tolist() == [3, 3]


def test_cost_rule():
    g = torch.Generator().manual_seed(0)

    def rois(count, size, low, high):
        wh = low + (high - low) * torch.rand(count, 2, generator=g)
        xy = (size - wh) * torch.rand(count, 2, generator=g)
        image = torch.arange(count) % 8
        return torch.cat([image[:, None].float(), xy, xy + wh], 1)

    # the demo's P2 level: 128-px images (32x32 at 1/4), ROIs of 10-100 px: the products
    assert matmul_grad_pays(rois(1024, 128, 10, 100), (8, 64, 32, 32), (7, 7), 0.25, 0, True)
    # a COCO-sized P2 (200 x 336) with small ROIs: the dense products would do far more work
    assert not matmul_grad_pays(rois(1024, 800, 8, 64), (8, 256, 200, 336), (7, 7), 0.25, 0, True)
    # no ROIs: nothing to gain
    assert not matmul_grad_pays(rois(0, 128, 10, 100), (8, 64, 32, 32), (7, 7), 0.25, 0, True)
    # a per-image buffer over the cap: 2048 ROIs of one image x 7 x C x W
    c = MAX_BUFFER_BYTES // (2048 * 7 * 32 * 4) + 1
    big = rois(2048, 128, 60, 120)
    big[:, 0] = 0
    assert not matmul_grad_pays(big, (1, c, 32, 32), (7, 7), 0.25, 0, True)


def test_roi_align_chooses_the_products_only_where_they_apply():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 32, 32, generator=g, requires_grad=True)
    wh = 40 + 80 * torch.rand(64, 2, generator=g)
    xy = (128 - wh) * torch.rand(64, 2, generator=g)
    rois = torch.cat([(torch.arange(64) % 2)[:, None].float(), xy, xy + wh], 1)
    args = ((7, 7), 0.25, 0, True)
    out = roi_align(x, rois, *args)
    assert type(out.grad_fn).__name__ == "_MatmulGradBackward"
    assert torch.equal(out, tv_roi_align(x, rois, *args))
    with torch.no_grad():
        assert roi_align(x, rois, *args).grad_fn is None
    assert roi_align(x.detach(), rois, *args).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "MatmulGrad" not in type(roi_align(x, rois, *args).grad_fn).__name__


def test_swap_keeps_a_detectors_losses_and_gradients(monkeypatch):
    from luminet_det.modeling import roi_align as module

    chosen = []

    def recorded(*args, **kwargs):
        chosen.append(matmul_grad_pays(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(module, "matmul_grad_pays", recorded)
    cfg = tiny_cfg()
    cfg.MODEL.RESNETS.NORM = "BN"
    inputs = batch(n=2, size=64)

    def step(swap):
        model = build(cfg).train()
        count = use_matmul_roi_align_grad(model) if swap else 0
        losses = train_step(model, inputs)
        sum(losses.values()).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        return model, count, losses, grads

    stock, _, losses_a, grads_a = step(False)
    swapped, count, losses_b, grads_b = step(True)
    assert count == 4  # the box head's pooler: one ROIAlign per FPN level P2-P5
    assert True in chosen  # the products computed some level's gradient
    poolers = swapped.roi_heads.box_pooler.level_poolers
    assert all(type(p) is ROIAlign for p in poolers)
    assert all(type(p) is D2ROIAlign for p in stock.roi_heads.box_pooler.level_poolers)
    assert [(p.output_size, p.spatial_scale, p.sampling_ratio, p.aligned) for p in poolers] == [
        (p.output_size, p.spatial_scale, p.sampling_ratio, p.aligned)
        for p in stock.roi_heads.box_pooler.level_poolers
    ]
    assert list(swapped.state_dict()) == list(stock.state_dict())
    assert {k: v.item() for k, v in losses_a.items()} == {k: v.item() for k, v in losses_b.items()}
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_trainer_builds_with_the_chosen_gradient():
    from luminet_det.cli.train import Trainer

    cfg = tiny_cfg()
    model = Trainer.build_model(cfg)
    assert all(type(p) is ROIAlign for p in model.roi_heads.box_pooler.level_poolers)
    cfg.MODEL.DISTILL.ROI_ALIGN_CPU_GRAD = "torchvision"
    model = Trainer.build_model(cfg)
    assert all(type(p) is D2ROIAlign for p in model.roi_heads.box_pooler.level_poolers)
    cfg.MODEL.DISTILL.ROI_ALIGN_CPU_GRAD = "fast"
    with pytest.raises(ConfigError, match=r"ROI_ALIGN_CPU_GRAD must be one of \['matmul', "):
        Trainer.build_model(cfg)


def test_lazy_trainer_applies_the_distill_sections_choice(monkeypatch):
    # luminet-lazy-train reads distill.roi_align_cpu_grad (MODEL.DISTILL's default without a
    # distill section) and hands it to set_roi_align_cpu_grad before training
    from types import SimpleNamespace

    from luminet_det.cli import lazy_train

    seen = []

    class Stop(Exception):
        pass

    def record(model, choice):
        seen.append(choice)
        raise Stop

    monkeypatch.setattr(lazy_train, "build_lazy_model", lambda cfg: torch.nn.Linear(1, 1))
    monkeypatch.setattr(lazy_train, "set_roi_align_cpu_grad", record)
    monkeypatch.setattr(
        lazy_train,
        "distill_cfgnode",
        lambda cfg: SimpleNamespace(
            MODEL=SimpleNamespace(
                DISTILL=SimpleNamespace(ROI_ALIGN_CPU_GRAD=cfg.distill.roi_align_cpu_grad)
            )
        ),
    )
    args = SimpleNamespace(check_teacher=False)
    from omegaconf import OmegaConf

    with_section = OmegaConf.create({"distill": {"roi_align_cpu_grad": "torchvision"}})
    without = OmegaConf.create({})
    for cfg in (with_section, without):
        with pytest.raises(Stop):
            lazy_train.do_train(args, cfg)
    assert seen == ["torchvision", "matmul"]
