"""CrossKD for RetinaNet students (Wang et al., CVPR 2024): the quality focal loss by hand, the
feature re-scaling, and the wiring on tiny models: the student's features after the reused
convolution run through the teacher's remaining head layers; gradients reach the student's
subnets, none reach the teacher; mismatched heads are refused."""

import math

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch, save_teacher, tiny_retinanet_cfg

from luminet_det.errors import ConfigError
from luminet_det.modeling.crosskd import align_scale, kd_quality_focal_loss, subnet_split


def test_quality_focal_loss_by_hand():
    # teacher logit 0 (target 0.5), student logit ln 3 (p 0.75): BCE = -(0.5 ln .75 + 0.5 ln .25)
    # times |0.75 - 0.5|^beta
    bce = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    pred, teacher = torch.tensor([[math.log(3.0)]]), torch.tensor([[0.0]])
    assert kd_quality_focal_loss(pred, teacher, 1.0).item() == pytest.approx(bce * 0.25)
    assert kd_quality_focal_loss(pred, teacher, 2.0).item() == pytest.approx(bce * 0.0625)
    # equal logits: no focal weight, no loss
    assert kd_quality_focal_loss(teacher, teacher).item() == 0.0


def test_align_scale_gives_the_student_the_teachers_channel_statistics():
    g = torch.Generator().manual_seed(0)
    s, t = (
        torch.randn(2, 3, 4, 5, generator=g) * 7 + 2,
        torch.randn(2, 3, 4, 5, generator=g) * 0.5 - 1,
    )
    out = align_scale(s, t)
    flat = lambda x: x.permute(1, 0, 2, 3).reshape(3, -1)  # noqa: E731
    torch.testing.assert_close(flat(out).mean(1), flat(t).mean(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat(out).std(1), flat(t).std(1), atol=1e-4, rtol=1e-4)


def _cfg(tmp_path, **distill):
    teacher = tiny_retinanet_cfg(depth=34)
    teacher.MODEL.RETINANET.NUM_CONVS = 4
    teacher.MODEL.RETINANET.NORM = "GN"
    files = save_teacher(tmp_path, teacher)
    cfg = tiny_retinanet_cfg()
    cfg.MODEL.RETINANET.NUM_CONVS = 4
    cfg.MODEL.RETINANET.NORM = "GN"
    cfg.MODEL.META_ARCHITECTURE = "DistillRetinaNet"
    cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS = files
    cfg.MODEL.DISTILL.LOSSES = ["crosskd"]
    for key, value in distill.items():
        cfg.MODEL.DISTILL.CROSSKD[key] = value
    return cfg


def test_crosskd_runs_the_students_features_through_the_teachers_remaining_layers(tmp_path):
    model = build_model(_cfg(tmp_path)).train()
    index, rest = subnet_split(model.teacher.head.cls_subnet, 3)
    assert len(rest) == 3  # the teacher's 4th conv, its norm and its ReLU
    calls = []
    rest[0].register_forward_hook(lambda m, i, o: calls.append(i[0].requires_grad))
    with EventStorage(5):
        losses = model(batch())
    # the teacher's own forward (no gradient) and the cross path (with) on all 5 levels
    assert calls.count(True) == 5 and calls.count(False) == 5
    assert torch.isfinite(losses["loss_crosskd"]) and losses["loss_crosskd"].item() > 0
    losses["loss_crosskd"].backward()
    first_conv = model.head.cls_subnet[0].weight.grad
    assert first_conv is not None and first_conv.abs().sum() > 0  # before the reused layer
    assert model.head.bbox_subnet[0].weight.grad.abs().sum() > 0
    # the student's own last layers do not take part in the cross predictions
    assert model.head.cls_score.weight.grad is None
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())


def test_crosskd_of_a_teacher_equal_to_the_student_is_zero_on_classes(tmp_path):
    """The same weights on both sides: the cross-head predictions are the teacher's own (up to
    the re-scaling, which is the identity here), so the class term vanishes."""
    cfg = _cfg(tmp_path, REG_WEIGHT=0.0)
    teacher_cfg = tiny_retinanet_cfg()
    teacher_cfg.MODEL.RETINANET.NUM_CONVS, teacher_cfg.MODEL.RETINANET.NORM = 4, "GN"
    files = save_teacher(tmp_path, teacher_cfg, name="same")
    cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS = files
    torch.manual_seed(123)  # save_teacher's seed: the student gets the teacher's weights
    model = build_model(cfg).train()
    model.load_state_dict(torch.load(files[1])["model"], strict=False)
    with EventStorage(5):
        losses = model(batch())
    assert losses["loss_crosskd"].item() == pytest.approx(0.0, abs=1e-4)


def test_mismatched_heads_and_bad_values_are_refused(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.MODEL.FPN.OUT_CHANNELS = 64  # the student's head is wider than the teacher's (32)
    with pytest.raises(ValueError, match="CrossKD feeds the student's cls_subnet features"):
        build_model(cfg)
    cfg = _cfg(tmp_path, REUSED_HEAD_INDEX=5)
    with pytest.raises(ValueError, match=r"REUSED_HEAD_INDEX must be in \[1, 4\]"):
        build_model(cfg)
    cfg = _cfg(tmp_path)
    cfg.MODEL.META_ARCHITECTURE = "DistillRCNN"
    with pytest.raises(ConfigError, match="Unknown MODEL.DISTILL.LOSSES \\['crosskd'\\]"):
        from luminet_det.config import check_distill_config

        check_distill_config(cfg)
