"""DistillRCNN: teacher frozen and aligned, losses wired, errors early, checkpoints clean."""

import os
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch
from tiny import build as _build
from tiny import distill_cfg, save_teacher, tiny_cfg
from tiny import train_step as _train_step

from luminet_det import export_student
from luminet_det.losses import dkd_loss, kd_loss, logit_std_kd_loss, luminet_loss


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("teacher"))


def test_loss_keys_present_and_finite(teacher_files):
    model = _build(distill_cfg(*teacher_files, losses=["luminet", "kd", "dkd", "reviewkd"]))
    model.train()
    losses = _train_step(model, batch())
    for key in (
        "loss_cls",
        "loss_box_reg",
        "loss_rpn_cls",
        "loss_rpn_loc",
        "loss_luminet",
        "loss_kd",
        "loss_dkd",
        "loss_reviewkd",
    ):
        assert key in losses, key
        assert torch.isfinite(losses[key]), key
    assert losses["loss_reviewkd"] > 0


def test_teacher_frozen_in_eval_and_untouched_by_a_step(teacher_files):
    model = _build(distill_cfg(*teacher_files, losses=["luminet", "reviewkd"]))
    model.train()
    assert not model.teacher.training
    assert all(not m.training for m in model.teacher.modules())
    assert model.backbone.training
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    assert not any(p is q for p in params for q in model.teacher.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    losses = _train_step(model, batch())
    sum(losses.values()).backward()
    opt.step()
    assert all(p.grad is None for p in model.teacher.parameters())
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the ReviewKD fusion modules are trained with the student
    assert all(p.grad is not None for p in model.feature_losses.parameters())


def test_teacher_rows_align_with_student_rois(tmp_path):
    """With a teacher that *is* the student (same weights, FrozenBN), the teacher's ROI logits
    must equal the student's row by row: every logit loss is 0."""
    cfg = tiny_cfg()
    torch.manual_seed(7)
    student_like = build_model(cfg)
    weights = str(tmp_path / "same.pth")
    torch.save({"model": student_like.state_dict()}, weights)
    config = str(tmp_path / "same.yaml")
    config_text = cfg.dump()
    open(config, "w").write(config_text)
    model = build_model(distill_cfg(config, weights, losses=["luminet", "kd", "dkd"]))
    model.load_state_dict(student_like.state_dict(), strict=True)
    model.train()
    captured = {}
    model.roi_heads.box_predictor.register_forward_hook(
        lambda m, i, o: captured.__setitem__("rows", o[0].shape[0])
    )
    losses = _train_step(model, batch())
    assert captured["rows"] == 2 * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE
    for key in ("loss_luminet", "loss_kd", "loss_dkd"):
        assert losses[key].item() == pytest.approx(0.0, abs=1e-6), key


def test_losses_match_the_loss_functions_with_weights_and_warmup(teacher_files):
    cfg = distill_cfg(*teacher_files, losses=["luminet", "kd", "dkd"])
    cfg.MODEL.DISTILL.LUMINET.WEIGHT = 3.0
    cfg.MODEL.DISTILL.LUMINET.TEMPERATURE = 2.0
    cfg.MODEL.DISTILL.KD.WEIGHT = 0.5
    cfg.MODEL.DISTILL.DKD.WEIGHT = 2.0
    cfg.MODEL.DISTILL.WARMUP_ITERS = 10
    model = _build(cfg)
    model.train()
    rec = {}
    model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: rec.__setitem__("s", o[0]))
    model.teacher.roi_heads.box_predictor.register_forward_hook(
        lambda m, i, o: rec.__setitem__("t", o[0])
    )
    model.roi_heads.register_forward_hook(lambda m, i, o: rec.__setitem__("p", o[0]))
    losses = _train_step(model, batch(), it=4)  # warm-up factor 4 / 10
    s, t = rec["s"], rec["t"]
    y = torch.cat([p.gt_classes for p in rec["p"]])
    f = 0.4
    assert losses["loss_luminet"].item() == pytest.approx(
        3.0 * f * luminet_loss(s, t, 2.0).item(), rel=1e-5
    )
    assert losses["loss_kd"].item() == pytest.approx(0.5 * f * kd_loss(s, t, 1.0).item(), rel=1e-5)
    assert losses["loss_dkd"].item() == pytest.approx(
        2.0 * f * dkd_loss(s, t, y, 1.0, 0.25, 1.0).item(), rel=1e-5
    )
    # any registered logit loss is wired the same way
    cfg.MODEL.DISTILL.LOSSES = ["logitstd"]
    cfg.MODEL.DISTILL.LOGITSTD.WEIGHT = 1.5
    other = _build(cfg)
    other.train()
    other.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: rec.__setitem__("s", o[0]))
    other.teacher.roi_heads.box_predictor.register_forward_hook(
        lambda m, i, o: rec.__setitem__("t", o[0])
    )
    value = _train_step(other, batch(), it=4)["loss_logitstd"].item()
    assert value == pytest.approx(
        1.5 * f * logit_std_kd_loss(rec["s"], rec["t"], 2.0).item(), rel=1e-5
    )
    # past the warm-up the factor is 1
    assert _train_step(model, batch(), it=25)["loss_kd"].item() == pytest.approx(
        0.5 * kd_loss(rec["s"], rec["t"], 1.0).item(), rel=1e-5
    )


def test_public_seam_gives_the_step_that_forward_takes(teacher_files):
    """forward_student -> teacher_outputs -> distillation_losses is exactly forward's step;
    the record holds the sampled ROIs (R = images x BATCH_SIZE_PER_IMAGE), their gt classes
    and (R, K+1) logits, and the teacher's logits align with them."""
    from luminet_det.modeling import StudentRecord, TeacherOutputs

    cfg = distill_cfg(*teacher_files, losses=["luminet", "dkd", "reviewkd"])
    model = _build(cfg)
    model.train()
    inputs = batch()
    with EventStorage(0):
        torch.manual_seed(42)
        student_losses, record = model.forward_student(inputs)
        teacher = model.teacher_outputs(inputs, record)
        distill = model.distillation_losses(record, teacher)
    assert isinstance(record, StudentRecord) and isinstance(teacher, TeacherOutputs)
    rows = 2 * cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE
    assert (
        record.logits.shape == teacher.logits.shape == (rows, cfg.MODEL.ROI_HEADS.NUM_CLASSES + 1)
    )
    assert [len(p) for p in record.proposals] == [rows // 2] * 2
    assert record.gt_classes.shape == (rows,) and not teacher.logits.requires_grad
    assert set(record.features) == set(teacher.features) == {"p2", "p3", "p4", "p5", "p6"}
    assert set(student_losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert set(distill) == {"loss_luminet", "loss_dkd", "loss_reviewkd"}
    whole = _train_step(model, inputs)
    for key, value in {**student_losses, **distill}.items():
        assert whole[key].item() == pytest.approx(value.item(), rel=1e-6), key
    model.eval()
    with pytest.raises(AssertionError, match="model.train"):
        model.forward_student(inputs)


def test_no_losses_equals_generalized_rcnn(teacher_files):
    cfg = distill_cfg(*teacher_files, losses=[])
    model = _build(cfg)
    plain_cfg = tiny_cfg()
    plain = build_model(plain_cfg)
    plain.load_state_dict(model.state_dict(), strict=True)
    model.train(), plain.train()
    a, b = _train_step(model, batch()), _train_step(plain, batch())
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_inference_equals_generalized_rcnn(teacher_files):
    model = _build(distill_cfg(*teacher_files))
    plain = build_model(tiny_cfg())
    plain.load_state_dict(model.state_dict(), strict=True)
    model.eval(), plain.eval()
    with torch.no_grad():
        a, b = model(batch()), plain(batch())
    for x, y in zip(a, b):
        assert torch.equal(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)
        assert torch.equal(x["instances"].scores, y["instances"].scores)


def test_bgr_teacher_receives_its_channels_from_rgb_student(tmp_path):
    tcfg = tiny_cfg(fmt="BGR")
    config, weights = save_teacher(tmp_path, tcfg)
    model = _build(distill_cfg(config, weights, fmt="RGB"))
    model.train()
    seen = {}
    model.teacher.backbone.register_forward_pre_hook(lambda m, i: seen.__setitem__("t", i[0]))
    model.backbone.register_forward_pre_hook(lambda m, i: seen.__setitem__("s", i[0]))
    inputs = batch(1)
    _train_step(model, inputs)
    rgb = inputs[0]["image"]
    t_mean = torch.tensor(tcfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    t_std = torch.tensor(tcfg.MODEL.PIXEL_STD).view(3, 1, 1)
    expected = (rgb.flip(0) - t_mean) / t_std
    h, w = rgb.shape[1:]
    torch.testing.assert_close(seen["t"][0, :, :h, :w], expected)
    s_mean = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    s_std = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    torch.testing.assert_close(seen["s"][0, :, :h, :w], (rgb - s_mean) / s_std)


# ------------------------------------------------------------------------------- errors
def test_class_count_mismatch(tmp_path):
    config, weights = save_teacher(tmp_path, tiny_cfg(num_classes=5))
    with pytest.raises(ValueError, match="NUM_CLASSES=5, the student 3"):
        build_model(distill_cfg(config, weights))


def test_missing_teacher_weights(teacher_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model(distill_cfg(teacher_files[0], str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="TEACHER_WEIGHTS is empty"):
        build_model(distill_cfg(teacher_files[0], ""))


def test_unreadable_teacher_weights(teacher_files, tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(open(teacher_files[1], "rb").read()[:1000])
    with pytest.raises(RuntimeError, match="Could not read the teacher checkpoint"):
        build_model(distill_cfg(teacher_files[0], str(bad)))


def test_partial_teacher_weights_are_refused(teacher_files, tmp_path):
    state = torch.load(teacher_files[1])["model"]
    partial = {k: v for k, v in state.items() if not k.startswith("roi_heads.box_predictor")}
    path = str(tmp_path / "partial.pth")
    torch.save({"model": partial}, path)
    with pytest.raises(RuntimeError, match=r"random initialisation \(roi_heads.box_predictor"):
        build_model(distill_cfg(teacher_files[0], path))
    # wrong depth: every shape mismatch is reported as not loaded
    r34 = tiny_cfg(depth=34)
    config34, _ = save_teacher(tmp_path, r34, name="r34")
    with pytest.raises(RuntimeError, match="random initialisation"):
        build_model(distill_cfg(config34, teacher_files[1]))


def test_unknown_loss_and_missing_teacher_config(teacher_files):
    with pytest.raises(ValueError, match=r"Unknown MODEL.DISTILL.LOSSES \['lumi'\]"):
        build_model(distill_cfg(*teacher_files, losses=["lumi"]))
    with pytest.raises(ValueError, match="TEACHER_CONFIG is empty"):
        build_model(distill_cfg("", teacher_files[1]))
    with pytest.raises(ValueError, match="neither an existing file"):
        build_model(distill_cfg("no/such/teacher.yaml", teacher_files[1]))


# ------------------------------------------------------------------------------- checkpoints
def test_state_dict_has_no_teacher_and_reloads_without_missing_keys(teacher_files, tmp_path):
    model = _build(distill_cfg(*teacher_files, losses=["luminet", "reviewkd"]))
    keys = model.state_dict().keys()
    assert not any(k.startswith("teacher.") for k in keys)
    assert any(k.startswith("feature_losses.reviewkd.") for k in keys)
    plain_keys = build_model(tiny_cfg()).state_dict().keys()
    assert {k for k in keys if not k.startswith("feature_losses.")} == set(plain_keys)
    other = _build(distill_cfg(*teacher_files, losses=["luminet", "reviewkd"]), seed=1)
    result = other.load_state_dict(model.state_dict(), strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_export_loads_in_stock_detectron2_and_predicts_identically(teacher_files, tmp_path):
    cfg = distill_cfg(*teacher_files, losses=["luminet", "reviewkd"])
    model = _build(cfg, seed=3)
    ckpt_dir = str(tmp_path / "run")
    os.makedirs(ckpt_dir)
    DetectionCheckpointer(model, save_dir=ckpt_dir).save("model_final")
    weights, config = export_student(
        cfg, os.path.join(ckpt_dir, "model_final.pth"), str(tmp_path / "export")
    )
    inputs = batch(2, seed=5)
    model.eval()
    with torch.no_grad():
        expected = [o["instances"].scores for o in model(inputs)]
    torch.save({"inputs": [x["image"] for x in inputs], "scores": expected}, tmp_path / "io.pth")
    # a fresh interpreter that never imports luminet_det
    script = f"""
import torch, warnings
warnings.filterwarnings("ignore")
from detectron2.config import get_cfg
from detectron2.modeling import build_model
cfg = get_cfg()
cfg.merge_from_file({config!r})
assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
model = build_model(cfg)
state = torch.load({weights!r})["model"]
result = model.load_state_dict(state, strict=True)
model.eval()
io = torch.load({str(tmp_path / 'io.pth')!r})
with torch.no_grad():
    out = model([{{"image": im, "height": 64, "width": 64}} for im in io["inputs"]])
for o, s in zip(out, io["scores"]):
    assert torch.equal(o["instances"].scores, s), (o["instances"].scores, s)
import sys
assert not any(m.startswith("luminet_det") for m in sys.modules)
print("STOCK_OK")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd="/")
    assert "STOCK_OK" in proc.stdout, proc.stderr[-3000:]


def test_nan_in_teacher_or_loss_stops_with_the_term_and_iteration(tmp_path):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    teacher = build_model(cfg)
    state = teacher.state_dict()
    state["roi_heads.box_predictor.cls_score.bias"][0] = float("nan")
    weights = str(tmp_path / "nan.pth")
    torch.save({"model": state}, weights)
    config = str(tmp_path / "nan.yaml")
    open(config, "w").write(cfg.dump())
    model = build_model(distill_cfg(config, weights, losses=["luminet"]))
    model.train()
    with pytest.raises(FloatingPointError, match="teacher's ROI logits .* iteration 7"):
        _train_step(model, batch(), it=7)


def test_degenerate_batches_stay_finite(teacher_files):
    """One image, no foreground ROI (no ground truth boxes), fp16 logits: no NaN."""
    from detectron2.structures import Boxes, Instances

    model = _build(distill_cfg(*teacher_files, losses=["luminet", "kd", "dkd"]))
    model.train()
    one = batch(1)
    assert all(torch.isfinite(v) for v in _train_step(model, one).values())
    empty = batch(1)
    inst = Instances((64, 64))
    inst.gt_boxes = Boxes(torch.zeros(0, 4))
    inst.gt_classes = torch.zeros(0, dtype=torch.long)
    empty[0]["instances"] = inst
    losses = _train_step(model, empty)
    assert all(torch.isfinite(v) for v in losses.values())


def test_same_seed_same_losses_on_cpu(teacher_files):
    def run():
        model = _build(distill_cfg(*teacher_files, losses=["luminet", "dkd"], norm="BN"), seed=11)
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        out = []
        for it in range(3):
            losses = _train_step(model, batch(seed=it), it=it)
            out.append({k: v.item() for k, v in losses.items()})
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        return out

    assert run() == run()


def test_teacher_ensemble_averages_roi_logits_and_stays_frozen(teacher_files, tmp_path):
    second = save_teacher(tmp_path, seed=999, name="second")
    cfg = distill_cfg(*teacher_files, losses=["kd"])
    cfg.MODEL.DISTILL.ENSEMBLE_CONFIGS = [second[0]]
    cfg.MODEL.DISTILL.ENSEMBLE_WEIGHTS = [second[1]]
    model = _build(cfg)
    model.train()
    assert len(model.extra_teachers) == 1 and not model.extra_teachers[0].training
    assert all(not p.requires_grad for p in model.extra_teachers.parameters())
    assert not any(k.startswith("extra_teachers.") for k in model.state_dict())
    rec = {}
    model.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: rec.__setitem__("s", o[0]))
    model.teacher.roi_heads.box_predictor.register_forward_hook(
        lambda m, i, o: rec.__setitem__("t1", o[0])
    )
    model.extra_teachers[0].roi_heads.box_predictor.register_forward_hook(
        lambda m, i, o: rec.__setitem__("t2", o[0])
    )
    losses = _train_step(model, batch())
    expected = kd_loss(rec["s"], (rec["t1"] + rec["t2"]) / 2, 1.0)
    assert losses["loss_kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert not torch.allclose(rec["t1"], rec["t2"])
    cfg.MODEL.DISTILL.ENSEMBLE_WEIGHTS = []
    with pytest.raises(ValueError, match="pair up one to one"):
        build_model(cfg)
