"""DIST (Huang et al., NeurIPS 2022): the loss against correlations computed independently
(numpy's corrcoef), its degenerate inputs, its sigmoid form, and its use by the detectors and
the classifier through the one loss interface."""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch, distill_cfg, save_teacher, tiny_retinanet_cfg

from luminet_det.losses import build_logit_loss, dist_loss, sigmoid_dist_loss


def _by_numpy(p_s, p_t, beta, gamma, scale):
    rows = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(p_s, p_t)])
    cols = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(p_s.T, p_t.T)])
    return scale * (beta * (1 - rows) + gamma * (1 - cols))


def test_dist_by_hand_two_rows():
    # probabilities (.5, .5), (.25, .75) against (.75, .25), (.5, .5): each row has one constant
    # side (correlation 0: inter-class relation 1); each class column is the other's shifted
    # copy (correlation 1: intra-class relation 0). So the loss is beta.
    s = torch.tensor([[0.0, 0.0], [0.0, np.log(3.0)]])
    t = torch.tensor([[np.log(3.0), 0.0], [0.0, 0.0]])
    assert dist_loss(s, t, beta=1.0, gamma=2.0).item() == pytest.approx(1.0, abs=1e-6)
    assert dist_loss(s, t, beta=3.0, gamma=2.0).item() == pytest.approx(3.0, abs=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dist_equals_the_relations_computed_by_numpy(tau):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(12, 7, generator=g) * 2, torch.randn(12, 7, generator=g) * 3
    p_s = torch.softmax(s.double() / tau, 1).numpy()
    p_t = torch.softmax(t.double() / tau, 1).numpy()
    expected = _by_numpy(p_s, p_t, 2.0, 0.5, tau**2)
    assert dist_loss(s, t, beta=2.0, gamma=0.5, tau=tau).item() == pytest.approx(expected, rel=1e-5)
    loss = build_logit_loss("dist", beta=2.0, gamma=0.5, tau=tau, num_classes=7)
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    # the sigmoid form: per-class sigmoid probabilities, no temperature
    sig = _by_numpy(torch.sigmoid(s.double()).numpy(), torch.sigmoid(t.double()).numpy(), 1, 1, 1)
    assert sigmoid_dist_loss(s, t).item() == pytest.approx(sig, rel=1e-5)


def test_dist_is_zero_for_a_teacher_equal_up_to_the_relations_and_stays_finite_when_degenerate():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(10, 5, generator=g, requires_grad=True)
    assert dist_loss(s, s.detach()).item() == pytest.approx(0.0, abs=1e-6)
    # one row: the class columns have no spread (their correlation is 0, that term is gamma)
    one = dist_loss(s[:1], torch.randn(1, 5, generator=g), beta=0.0, gamma=1.0)
    assert torch.isfinite(one) and one.item() == pytest.approx(1.0, abs=1e-6)
    # constant columns and rows: finite, and gradients finite too
    const = torch.zeros(6, 4, requires_grad=True)
    value = dist_loss(const, torch.zeros(6, 4)) + sigmoid_dist_loss(const, torch.zeros(6, 4))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(const.grad).all()
    empty = torch.zeros(0, 4, requires_grad=True)
    assert dist_loss(empty, torch.zeros(0, 4)).item() == 0.0


def test_dist_arguments_are_checked():
    with pytest.raises(ValueError, match="beta must be a number >= 0"):
        build_logit_loss("dist", beta=-1.0)
    with pytest.raises(ValueError, match="tau must be a number > 0"):
        dist_loss(torch.zeros(2, 3), torch.zeros(2, 3), tau=0.0)
    with pytest.raises(ValueError, match="takes no temperature: tau must be 1.0"):
        build_logit_loss("dist_sigmoid", tau=4.0)


def test_dist_on_a_detectors_sampled_rois(tmp_path):
    cfg = distill_cfg(*save_teacher(tmp_path), losses=["dist"])
    cfg.MODEL.DISTILL.DIST.BETA, cfg.MODEL.DISTILL.DIST.WEIGHT = 2.0, 0.5
    model = build_model(cfg).train()
    with EventStorage(5):
        torch.manual_seed(0)
        _, record = model.forward_student(batch())
        teacher = model.teacher_outputs(batch(), record)
        losses = model.distillation_losses(record, teacher)
    expected = 0.5 * dist_loss(record.logits, teacher.logits, beta=2.0)
    assert losses["loss_dist"].item() == pytest.approx(expected.item(), rel=1e-6)
    losses["loss_dist"].backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_dist_for_a_retinanet_student_is_the_sigmoid_form(tmp_path):
    files = save_teacher(tmp_path, tiny_retinanet_cfg(depth=34))
    cfg = tiny_retinanet_cfg()
    cfg.MODEL.META_ARCHITECTURE = "DistillRetinaNet"
    cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS = files
    cfg.MODEL.DISTILL.LOSSES = ["dist"]
    model = build_model(cfg).train()
    assert type(model.logit_losses["dist"]).__name__ == "SigmoidDISTLoss"
    with EventStorage(5):
        losses = model(batch())
    assert torch.isfinite(losses["loss_dist"])
    cfg.MODEL.DISTILL.DIST.TAU = 2.0
    with pytest.raises(ValueError, match="tau must be 1.0"):
        build_model(cfg)


def test_the_classifier_distils_with_dist(tmp_path):
    from luminet_det.cls import build_model as build_cls
    from luminet_det.cls import load_config
    from luminet_det.cls.engine import Trainer

    teacher = tmp_path / "t.pth"
    torch.save({"model": build_cls("resnet8", 10).state_dict()}, teacher)
    cfg = load_config(
        "",
        [
            "DATA.NAME=digits",
            "DATA.NUM_WORKERS=0",
            "MODEL.STUDENT=resnet8",
            "MODEL.TEACHER=resnet8",
            f"MODEL.TEACHER_WEIGHTS={teacher}",
            "METHOD.NAME=dist",
            "METHOD.TEMPERATURE=4.0",
            "METHOD.WEIGHT=2.0",
            f"OUTPUT_DIR={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(cfg, progress=False)
    assert type(trainer.distill).__name__ == "DISTLoss" and trainer.distill.tau == 4.0
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    trainer.model.eval()
    loss, ce, distill = trainer.losses(x, y)
    with torch.no_grad():
        s, t = trainer.student(x)[0], trainer.teacher(x)[0]
    assert distill.item() == pytest.approx(2.0 * dist_loss(s, t, tau=4.0).item(), rel=1e-5)
