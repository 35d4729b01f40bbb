"""RetinaNet students (issue #17): the sigmoid losses worked out by hand, DistillRetinaNet's
row alignment, gradients, frozen teacher, refusals, stock parity and export."""

import math
import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import RetinaNet, build_model
from detectron2.modeling.meta_arch.dense_detector import permute_to_N_HWA_K
from detectron2.utils.events import EventStorage
from tiny import batch, save_teacher, tiny_retinanet_cfg

from luminet_det import export_student
from luminet_det.errors import ConfigError
from luminet_det.losses import (
    build_logit_loss,
    foreground_count,
    sigmoid_kd_loss,
    sigmoid_luminet_loss,
)
from luminet_det.modeling import DenseRecord, DistillRetinaNet, student_state_dict


# --------------------------------------------------------------------------- the losses
def test_sigmoid_kd_by_hand():
    # p_T = sigmoid(ln 3) = 0.75, p_S = 0.5: KL = 0.75 ln 1.5 + 0.25 ln 0.5
    s, t = torch.zeros(1, 1), torch.full((1, 1), math.log(3.0))
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert sigmoid_kd_loss(s, t, torch.tensor([0])).item() == pytest.approx(expected, rel=1e-6)
    # T = 2: logits halved, times T^2 = 4 (p_T = sigmoid(ln 3 / 2) = sqrt(3) / (1 + sqrt(3)))
    p = math.sqrt(3) / (1 + math.sqrt(3))
    expected_t2 = 4 * (p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p)))
    got = sigmoid_kd_loss(s, t, torch.tensor([0]), temperature=2.0).item()
    assert got == pytest.approx(expected_t2, rel=1e-6)


def test_sigmoid_losses_are_normalised_by_the_foreground_rows():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    background = torch.full((6,), 3)  # C = 3: every row background -> divided by 1
    two_fg = torch.tensor([0, 3, 3, 2, 3, 3])
    for fn in (sigmoid_kd_loss, sigmoid_luminet_loss):
        assert fn(s, t, two_fg).item() == pytest.approx(fn(s, t, background).item() / 2, rel=1e-6)
    assert foreground_count(background, 3) == 1 and foreground_count(two_fg, 3) == 2


def test_sigmoid_luminet_by_hand():
    # one class, two anchors: the student's column (0, 2) standardises to (-1, 1), the
    # teacher's (4, 0) to (1, -1); per anchor KL(sigmoid(+-1) || sigmoid(-+1)) = (2p - 1) * 1
    # with p = sigmoid(1), since ln(sigmoid(x) / sigmoid(-x)) = x
    s, t = torch.tensor([[0.0], [2.0]]), torch.tensor([[4.0], [0.0]])
    p = 1 / (1 + math.exp(-1))
    y = torch.tensor([0, 1])  # one foreground anchor
    got = sigmoid_luminet_loss(s, t, y, eps=1e-12).item()
    assert got == pytest.approx(2 * (2 * p - 1), rel=1e-5)
    # standardisation: any affine map of a column with positive scale changes nothing
    assert sigmoid_luminet_loss(3 * s - 7, t, y, eps=1e-12).item() == pytest.approx(got, rel=1e-5)
    assert sigmoid_luminet_loss(s, 5 * s + 1, y, eps=1e-12).item() == pytest.approx(0, abs=1e-6)


def test_sigmoid_luminet_is_a_class_mean_whose_size_does_not_grow_with_the_class_count():
    """700 anchors of the same distribution (a few confident classes per anchor, the rest low,
    the student a noisy copy of the teacher): the term at C = 80 stays within 2x of C = 10
    (the sum over classes it was before grew about 8x), and C times the term is that sum."""
    from luminet_det.losses import binary_kl, perception

    def term(c, seed):
        g = torch.Generator().manual_seed(seed)
        t = torch.randn(700, c, generator=g) - 4 + 6 * (torch.rand(700, c, generator=g) < 0.05)
        s = t + torch.randn(700, c, generator=g)
        y = torch.full((700,), c)
        y[:70] = 0  # 70 foreground anchors
        return s, t, y

    sizes = {}
    for c in (10, 80):
        s, t, y = term(c, c)
        sizes[c] = sigmoid_luminet_loss(s, t, y).item()
        old = binary_kl(perception(t), perception(s)).sum().item() / 70  # the class sum
        assert c * sizes[c] == pytest.approx(old, rel=1e-5)
    assert 0.5 < sizes[80] / sizes[10] < 2.0, sizes


def test_sigmoid_losses_edge_cases_and_refusals():
    empty = torch.zeros(0, 4, requires_grad=True)
    for name in ("kd_sigmoid", "luminet_sigmoid"):
        loss = build_logit_loss(name, num_classes=4)
        value = loss(empty, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        value.backward()
        assert value.item() == 0.0 and empty.grad is not None
        with pytest.raises(ValueError, match="needs the targets"):
            loss(torch.zeros(2, 4), torch.zeros(2, 4))
        with pytest.raises(ValueError, match=r"lie in \[0, 4\].*drop ignored anchors"):
            loss(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([-1, 0]))
    # one anchor: its standardised column is zero on both sides
    one = sigmoid_luminet_loss(torch.randn(1, 4), torch.randn(1, 4), torch.tensor([1]))
    assert one.item() == 0.0
    # half precision in, float32 out, finite for huge logits
    big = torch.tensor([[80.0, -80.0]], dtype=torch.float16).repeat(3, 1)
    out = sigmoid_kd_loss(big, -big, torch.tensor([0, 2, 2]))
    assert out.dtype == torch.float32 and torch.isfinite(out)


# --------------------------------------------------------------------------- the detector
def distill_retinanet_cfg(tmp_path, losses=("luminet",), teacher_cfg=None, **kwargs):
    os.makedirs(tmp_path, exist_ok=True)
    config, weights = save_teacher(tmp_path, teacher_cfg or tiny_retinanet_cfg(depth=34))
    cfg = tiny_retinanet_cfg(**kwargs)
    cfg.MODEL.META_ARCHITECTURE = "DistillRetinaNet"
    cfg.MODEL.DISTILL.TEACHER_CONFIG = config
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = weights
    cfg.MODEL.DISTILL.LOSSES = list(losses)
    return cfg


def step(model, inputs):
    with EventStorage(0):
        torch.manual_seed(42)
        return model(inputs)


def test_teacher_scores_the_students_anchors_row_by_row(tmp_path):
    cfg = distill_retinanet_cfg(tmp_path)
    model = build_model(cfg).train()
    inputs = batch(2, size=64)
    with EventStorage(0):
        _, record = model.forward_student(inputs)
        teacher = model.teacher_outputs(inputs, record)
    assert isinstance(record, DenseRecord)
    n, r, k = record.logits.shape
    assert (n, k) == (2, 3) and record.labels.shape == (n, r)
    # the teacher alone, as stock RetinaNet computes its head on its own preprocessed images
    t = model.teacher
    with torch.no_grad():
        images = t.preprocess_image(inputs)
        feats = t.backbone(images.tensor)
        logits, _ = t.head([feats[f] for f in t.head_in_features])
        expected = torch.cat([permute_to_N_HWA_K(x, k) for x in logits], dim=1)
    assert torch.allclose(teacher.logits, expected, atol=1e-6)
    # the rows: "valid" drops ignored anchors, "foreground" keeps matched ones only
    labels = record.labels
    assert int(record.rows("valid").sum()) == int((labels >= 0).sum())
    fg = record.rows("foreground")
    assert int(fg.sum()) == int(((labels >= 0) & (labels < k)).sum()) > 0


@pytest.mark.parametrize("loss", ["luminet", "kd"])
def test_distillation_reaches_the_student_classifier_not_the_teacher(tmp_path, loss):
    cfg = distill_retinanet_cfg(tmp_path, losses=(loss,))
    model = build_model(cfg).train()
    assert not model.teacher.training and not any(
        p.requires_grad for p in model.teacher.parameters()
    )
    losses = step(model, batch(2, size=64))
    assert set(losses) == {"loss_cls", "loss_box_reg", f"loss_{loss}"}
    assert losses[f"loss_{loss}"].item() > 0
    losses[f"loss_{loss}"].backward()
    cls_grad = model.head.cls_score.weight.grad
    assert cls_grad is not None and cls_grad.abs().sum() > 0
    assert model.head.bbox_pred.weight.grad is None  # the box branch is not distilled
    assert all(p.grad is None for p in model.teacher.parameters())
    model.train()
    assert not model.teacher.training


def test_anchor_rows_by_hand():
    # one image, five anchors, K = 2: labels fg 0, bg, ignored, fg 1, bg
    labels = torch.tensor([[0, 2, -1, 1, 2]])
    record = DenseRecord({}, torch.zeros(1, 5, 2), labels)
    # the teacher is confident (>= 0.05) on anchors 1 and 2 only
    t = torch.full((1, 5, 2), -10.0)
    t[0, 1, 1] = t[0, 2, 0] = math.log(0.1 / 0.9)  # sigmoid = 0.1
    rows = {a: record.rows(a, t, 0.05)[0].tolist() for a in ("valid", "foreground", "relevant")}
    assert rows["valid"] == [True, True, False, True, True]
    assert rows["foreground"] == [True, False, False, True, False]
    # foreground plus the valid anchors the teacher would report (not the ignored one)
    assert rows["relevant"] == [True, True, False, True, False]


def test_anchors_option_changes_the_rows(tmp_path):
    counts = {}
    for anchors in ("valid", "relevant", "foreground"):
        cfg = distill_retinanet_cfg(tmp_path)
        cfg.MODEL.DISTILL.DENSE.ANCHORS = anchors
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.012  # random teacher: scores about 0.01
        torch.manual_seed(0)
        with EventStorage(0) as storage:
            torch.manual_seed(42)
            build_model(cfg).train()(batch(2, size=64))
            counts[anchors] = storage.latest()["distill_anchors"][0]
    assert counts["foreground"] < counts["relevant"] < counts["valid"]


def test_unsupported_teachers_and_losses_are_refused(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"one-stage, sigmoid head.*\['luminet', 'kd', 'dist', 'crosskd', 'reviewkd'\]",
    ):
        build_model(distill_retinanet_cfg(tmp_path, losses=("dkd",)))
    bad = distill_retinanet_cfg(tmp_path)
    bad.MODEL.DISTILL.DENSE.ANCHORS = "positive"
    with pytest.raises(
        ConfigError, match=r"DENSE.ANCHORS must be one of \['relevant', 'valid', 'foreground'\]"
    ):
        build_model(bad)
    other_anchors = tiny_retinanet_cfg(depth=34, sizes=(10, 20, 40, 80, 160))
    with pytest.raises(ConfigError, match="anchors do not align.*cell anchors"):
        build_model(distill_retinanet_cfg(tmp_path / "a", teacher_cfg=other_anchors))
    other_classes = tiny_retinanet_cfg(num_classes=5, depth=34)
    with pytest.raises(ConfigError, match="RETINANET.NUM_CLASSES=5, the student 3"):
        build_model(distill_retinanet_cfg(tmp_path / "b", teacher_cfg=other_classes))
    from tiny import tiny_cfg  # a Faster R-CNN teacher

    with pytest.raises(ConfigError, match="must be a stock 'RetinaNet'"):
        build_model(distill_retinanet_cfg(tmp_path / "c", teacher_cfg=tiny_cfg()))


def test_inference_and_export_equal_stock_retinanet(tmp_path):
    cfg = distill_retinanet_cfg(tmp_path, losses=("luminet", "reviewkd"))
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0  # random weights: keep low-scoring boxes
    model = build_model(cfg)
    state = model.state_dict()
    assert not any(k.startswith("teacher.") for k in state)
    ckpt = os.path.join(str(tmp_path), "model_final.pth")
    torch.save({"model": state}, ckpt)
    weights, config = export_student(cfg, ckpt, str(tmp_path / "export"))
    stock_cfg = get_cfg()  # stock detectron2: no plugin node
    stock_cfg.merge_from_file(config)
    assert stock_cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
    stock = build_model(stock_cfg)
    assert type(stock) is RetinaNet
    from detectron2.checkpoint import DetectionCheckpointer

    DetectionCheckpointer(stock).load(weights)
    assert set(stock.state_dict()) == set(student_state_dict(state))
    inputs = batch(2, size=64)
    model.eval(), stock.eval()
    with torch.no_grad():
        ours, theirs = model(inputs), stock(inputs)
    for a, b in zip(ours, theirs):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores) and torch.equal(a.pred_classes, b.pred_classes)
    assert isinstance(model, DistillRetinaNet)
