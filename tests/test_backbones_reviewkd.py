"""MobileNetV2-FPN, torchvision -> detectron2 conversion, and ReviewKD."""

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone, build_model
from tiny import ROOT, distill_cfg, save_teacher, tiny_cfg

from luminet_det import export_student
from luminet_det.convert import convert_torchvision_state_dict
from luminet_det.losses import hcl_loss
from luminet_det.modeling import MobileNetV2, ReviewKD


def mv2_cfg(freeze_at=0, norm="BN"):
    cfg = tiny_cfg(norm=norm)
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    return cfg


# ------------------------------------------------------------------------------- MobileNetV2
def test_mobilenetv2_fpn_shapes_and_strides():
    backbone = build_backbone(mv2_cfg())
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {
        "p2": 4,
        "p3": 8,
        "p4": 16,
        "p5": 32,
        "p6": 64,
    }
    assert all(v.channels == 32 for v in shapes.values())
    assert {k: v.channels for k, v in backbone.bottom_up.output_shape().items()} == {
        "res2": 24,
        "res3": 32,
        "res4": 96,
        "res5": 320,
    }
    out = backbone(torch.randn(1, 3, 64, 128))
    for name, t in out.items():
        assert t.shape[-2:] == (64 // shapes[name].stride, 128 // shapes[name].stride), name


def test_mobilenetv2_freeze_at_and_norm():
    frozen = MobileNetV2(norm="BN", freeze_at=2)
    stem_res2 = [p for i in range(0, 4) for p in frozen.features[i].parameters()]
    rest = [p for i in range(4, 18) for p in frozen.features[i].parameters()]
    assert stem_res2 and all(not p.requires_grad for p in stem_res2)
    assert all(p.requires_grad for p in rest)
    from detectron2.layers import FrozenBatchNorm2d

    assert any(isinstance(m, FrozenBatchNorm2d) for m in frozen.features[1].modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in frozen.features[5].modules())
    with pytest.raises(ValueError, match="norm"):
        MobileNetV2(norm="")
    with pytest.raises(ValueError, match="res2..res5"):
        MobileNetV2(out_features=["res6"])


# ------------------------------------------------------------------------------- conversion
def _torchvision_features(tv, arch, x):
    """torchvision's intermediate outputs under detectron2's names (res2..res5)."""
    with torch.no_grad():
        if arch.startswith("resnet"):
            y, ref = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))), {}
            for i, layer in enumerate([tv.layer1, tv.layer2, tv.layer3, tv.layer4]):
                y = layer(y)
                ref[f"res{i + 2}"] = y
            return ref
        ref, y = {}, x
        ends = {4: "res2", 7: "res3", 14: "res4", 18: "res5"}
        for i in range(18):
            y = tv.features[i](y)
            if i + 1 in ends:
                ref[ends[i + 1]] = y
        return ref


def _convert(arch, tmp_path, output_name=None):
    torch.manual_seed(0)
    tv = torchvision.models.get_model(arch, weights=None).eval()
    # perturb BN statistics so that a mis-mapped running_mean would show
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    src = tmp_path / f"{arch}_tv.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / (output_name or f"{arch}.pth")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "convert_torchvision_to_d2.py"),
            *("--arch", arch, "--input", str(src), "--output", str(out)),
        ],
        capture_output=True,
        text=True,
    )
    return tv, out, proc


def _converted_cfg(arch, requires):
    if arch == "mobilenet_v2":
        cfg = mv2_cfg(norm="FrozenBN")
    else:
        cfg = tiny_cfg(norm="FrozenBN", depth=int(arch[len("resnet") :]), fmt="RGB")
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    for key, value in requires.items():  # what the converter says the config must set
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "mobilenet_v2"])
def test_torchvision_conversion_maps_every_key_and_matches_outputs(arch, tmp_path):
    from luminet_det.convert import REQUIRES_KEY, required_config
    from luminet_det.engine import check_converted_weights

    tv, out, proc = _convert(arch, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, unmatched = convert_torchvision_state_dict(tv.state_dict(), arch)
    assert unmatched == []
    # a .pth that torch.load reads as data only, naming the config values it needs
    saved = torch.load(out, weights_only=True)
    assert saved[REQUIRES_KEY] == required_config(arch)
    assert saved[REQUIRES_KEY].get("MODEL.RESNETS.STRIDE_IN_1X1", None) is (
        False if arch == "resnet50" else None
    )

    cfg = _converted_cfg(arch, saved[REQUIRES_KEY])
    check_converted_weights(cfg, str(out))  # the config satisfies it: no error
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(out))
    loaded = saved["model"]
    state = model.state_dict()
    assert set(loaded) <= set(state), set(loaded) - set(state)
    bottom_up = [k for k in state if k.startswith("backbone.bottom_up.") and "num_batches" not in k]
    assert set(bottom_up) == set(loaded)  # every backbone tensor comes from torchvision

    x = torch.randn(1, 3, 64, 64)
    d2 = model.backbone.bottom_up(x)
    ref = _torchvision_features(tv, arch, x)
    for name in ref:
        torch.testing.assert_close(d2[name], ref[name], atol=1e-4, rtol=1e-4)


def test_converted_bottleneck_resnet_in_detectron2s_default_layout_is_refused(tmp_path):
    """torchvision's R-50 strides the 3x3 convolution; with detectron2's default
    STRIDE_IN_1X1 True the same weights load without an error into another network."""
    from luminet_det.engine import check_converted_weights
    from luminet_det.errors import ConfigError

    tv, out, proc = _convert("resnet50", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MODEL.RESNETS.STRIDE_IN_1X1 False" in proc.stdout
    cfg = _converted_cfg("resnet50", {"INPUT.FORMAT": "RGB"})
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True  # detectron2's default
    with pytest.raises(
        ConfigError, match=r"STRIDE_IN_1X1: the config has True, the weights need F"
    ):
        check_converted_weights(cfg, str(out))
    # what the check prevents: the wrong layout loads silently and computes something else
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(out))
    x = torch.randn(1, 3, 64, 64)
    wrong = model.backbone.bottom_up(x)["res5"]
    assert (wrong - _torchvision_features(tv, "resnet50", x)["res5"]).abs().max() > 1e-2
    # BGR input is refused too (torchvision's weights expect RGB)
    cfg.MODEL.RESNETS.STRIDE_IN_1X1, cfg.INPUT.FORMAT = False, "BGR"
    with pytest.raises(ConfigError, match="INPUT.FORMAT: the config has 'BGR'"):
        check_converted_weights(cfg, str(out))


def test_converter_refuses_a_pickle_output(tmp_path):
    _, out, proc = _convert("resnet18", tmp_path, output_name="r18.pkl")
    assert proc.returncode == 2 and "must end in .pth" in proc.stderr
    assert not out.exists()


def test_conversion_reports_unmatched_keys():
    state = {"conv1.weight": torch.zeros(1), "mystery.weight": torch.zeros(1)}
    converted, unmatched = convert_torchvision_state_dict(state, "resnet18")
    assert unmatched == ["mystery.weight"]
    assert list(converted) == ["backbone.bottom_up.stem.conv1.weight"]
    with pytest.raises(ValueError, match="arch"):
        convert_torchvision_state_dict(state, "vgg16")


# ------------------------------------------------------------------------------- ReviewKD
def test_hcl_loss_hand_worked():
    # one level 2x2: MSE(0, [[2,0],[0,0]]) = 1; pooled to 1x1: MSE(0, 0.5) = 0.25 with weight 1/2
    # (4 and 2 are >= H=2 and skipped): (1 + 0.5 * 0.25) / (1 + 0.5) = 0.75
    fs = torch.zeros(1, 1, 2, 2)
    ft = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    assert hcl_loss([fs], [ft]).item() == pytest.approx(0.75)
    # levels are summed
    assert hcl_loss([fs, fs], [ft, ft]).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="same non-zero number"):
        hcl_loss([fs], [ft, ft])
    with pytest.raises(ValueError, match="shapes"):
        hcl_loss([fs], [torch.zeros(1, 2, 2, 2)])
    empty = torch.zeros(0, 1, 2, 2, requires_grad=True)
    loss = hcl_loss([empty], [torch.zeros(0, 1, 2, 2)])
    assert loss.item() == 0.0 and loss.requires_grad


def _shapes(channels, strides=(4, 8, 16)):
    return {
        f"p{i + 2}": ShapeSpec(channels=c, stride=s)
        for i, (c, s) in enumerate(zip(channels, strides))
    }


def test_reviewkd_zero_when_fused_student_equals_teacher_and_gradients():
    torch.manual_seed(0)
    rkd = ReviewKD(
        student_shapes=_shapes([8, 8, 8]), teacher_shapes=_shapes([16, 16, 16]), mid_channels=4
    )
    student = {
        f"p{i + 2}": torch.randn(2, 8, 32 // 2**i, 32 // 2**i, requires_grad=True) for i in range(3)
    }
    rkd.train()
    fused = rkd.fuse(student)
    assert [f.shape[1] for f in fused] == [16, 16, 16]
    teacher = {name: f.detach() for name, f in zip(rkd.in_features, fused)}
    rkd.eval()  # BN in eval: fuse() is then deterministic
    fused = rkd.fuse(student)
    teacher = {name: f.detach() for name, f in zip(rkd.in_features, fused)}
    assert rkd(student, teacher).item() == pytest.approx(0.0, abs=1e-10)
    teacher = {k: (v + 1.0).requires_grad_(True) for k, v in teacher.items()}
    loss = rkd(student, teacher)
    assert loss.item() > 0.5
    loss.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in student.values())
    assert all(p.grad is not None for p in rkd.parameters())
    assert all(v.grad is None for v in teacher.values())


def test_reviewkd_level_mismatch_lists_both_sets():
    with pytest.raises(
        ValueError, match=r"student \['p2', 'p3', 'p4'\] and teacher \['p2', 'p3'\]"
    ):
        ReviewKD(student_shapes=_shapes([8, 8, 8]), teacher_shapes=_shapes([8, 8]))
    with pytest.raises(ValueError, match="strides differ"):
        ReviewKD(student_shapes=_shapes([8, 8, 8]), teacher_shapes=_shapes([8, 8, 8], (4, 8, 32)))


def test_reviewkd_student_with_mobilenet_exports_to_stock_detectron2(tmp_path):
    config, weights = save_teacher(tmp_path)
    cfg = distill_cfg(config, weights, losses=["luminet", "reviewkd"])
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_fpn_backbone"
    model = build_model(cfg)
    assert any(k.startswith("feature_losses.") for k in model.state_dict())
    run = tmp_path / "run"
    run.mkdir()
    DetectionCheckpointer(model, save_dir=str(run)).save("model_final")
    w, c = export_student(cfg, str(run / "model_final.pth"), str(tmp_path / "export"))
    state = torch.load(w)["model"]
    assert not any(k.startswith(("feature_losses.", "teacher.")) for k in state)
    script = f"""
import torch, warnings
warnings.filterwarnings("ignore")
import luminet_det.modeling  # registers the MobileNetV2 backbone (README: MV2 students)
from detectron2.config import get_cfg
from detectron2.modeling import build_model
cfg = get_cfg()
cfg.merge_from_file({c!r})
model = build_model(cfg)
model.load_state_dict(torch.load({w!r})["model"], strict=True)
print("MV2_OK", type(model).__name__)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert "MV2_OK GeneralizedRCNN" in proc.stdout, proc.stderr[-3000:]
