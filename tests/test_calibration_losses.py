"""The calibration losses that can replace the student's cross-entropy (paper Table 5: focal
loss, dual focal loss): values worked out by hand, equality with a transcription of each
source's forward (sum over the batch there, the mean here), gradients, empty input, bad
arguments, and the classifier's METHOD.HARD_LOSS."""

import glob
import math
import os

import pytest
import torch
import torch.nn.functional as F
from tiny import ROOT

from luminet_det.losses import dual_focal_loss, hard_label_loss, softmax_focal_loss


def test_focal_loss_by_hand():
    # row 0: p_y = 1/2; row 1: logits (ln 3, 0), p_y = 3/4; gamma 2
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 0])
    rows = [0.25 * -math.log(0.5), 0.0625 * -math.log(0.75)]
    assert softmax_focal_loss(logits, targets, 2.0).item() == pytest.approx(sum(rows) / 2)
    # gamma 0 is the cross-entropy
    z, y = torch.randn(7, 5), torch.randint(0, 5, (7,))
    torch.testing.assert_close(softmax_focal_loss(z, y, 0.0), F.cross_entropy(z, y))


def test_dual_focal_loss_by_hand():
    # probabilities (0.5, 0.3, 0.2): the class ranked after the label is the next lower one
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log().repeat(3, 1)
    targets = torch.tensor([0, 1, 2])
    g = 2.0
    rows = [
        (1 - 0.5 + 0.3) ** g * -math.log(0.5),
        (1 - 0.3 + 0.2) ** g * -math.log(0.3),
        (1 - 0.2 + 0.0) ** g * -math.log(0.2),  # nothing below the label: p_j = 0
    ]
    assert dual_focal_loss(logits, targets, g).item() == pytest.approx(sum(rows) / 3)


def _source_focal(z, y, gamma):
    """torrvision/focal_calibration Losses/focal_loss.py FocalLoss.forward (size_average False)."""
    logpt = F.log_softmax(z, dim=1).gather(1, y.view(-1, 1)).view(-1)
    return (-1 * (1 - logpt.exp()) ** gamma * logpt).sum()


def _source_dual_focal(z, y, gamma):
    """Linwei94/ICML2023-DualFocalLoss Losses/dual_focal_loss.py DualFocalLoss.forward."""
    logp_k = F.log_softmax(z, dim=1)
    softmax_logits = logp_k.exp()
    logp_k = logp_k.gather(1, y.view(-1, 1)).view(-1)
    p_k = logp_k.exp()
    p_j_mask = torch.lt(softmax_logits, p_k.reshape(p_k.shape[0], 1)) * 1
    p_j = torch.topk(p_j_mask * softmax_logits, 1)[0].squeeze()
    return (-1 * (1 - p_k + p_j) ** gamma * logp_k).sum()


@pytest.mark.parametrize(
    "ours, source, gamma",
    [(softmax_focal_loss, _source_focal, 3.0), (dual_focal_loss, _source_dual_focal, 5.0)],
)
def test_equal_to_the_source_per_sample_with_gradients(ours, source, gamma):
    torch.manual_seed(0)
    z = (torch.randn(16, 10) * 3).requires_grad_()
    y = torch.randint(0, 10, (16,))
    mine = ours(z, y, gamma)
    (g_mine,) = torch.autograd.grad(mine, z)
    z2 = z.detach().clone().requires_grad_()
    theirs = source(z2, y, gamma) / 16  # the sources sum over the batch; here the mean
    (g_theirs,) = torch.autograd.grad(theirs, z2)
    torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(g_mine, g_theirs)


@pytest.mark.parametrize("loss", [softmax_focal_loss, dual_focal_loss])
def test_empty_input_and_bad_arguments(loss):
    z = torch.zeros(0, 4, requires_grad=True)
    out = loss(z, torch.zeros(0, dtype=torch.long))
    assert out.item() == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match="gamma must be a number >= 0, got -1"):
        loss(torch.randn(2, 4), torch.tensor([0, 1]), -1.0)
    with pytest.raises(ValueError, match="targets has 3 rows but logits has 2"):
        loss(torch.randn(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        loss(torch.randn(2, 4, 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="Unknown hard-label loss 'focall'"):
        hard_label_loss("focall", torch.randn(2, 4), torch.tensor([0, 1]), 3.0)


def test_the_classifier_uses_the_configured_hard_loss(tmp_path):
    from luminet_det.cls.config import load_config
    from luminet_det.cls.engine import Trainer
    from luminet_det.cls.models import build_model
    from luminet_det.errors import ConfigError

    teacher = str(tmp_path / "teacher.pth")
    torch.save({"model": build_model("resnet20", 10).state_dict(), "arch": "resnet20"}, teacher)
    opts = [
        "DATA.NAME=digits",
        "DATA.NUM_WORKERS=0",
        "MODEL.STUDENT=resnet8",
        "MODEL.TEACHER=resnet20",
        f"MODEL.TEACHER_WEIGHTS={teacher}",
        "MODEL.TEACHER_MIN_TOP1=0.0",
        "METHOD.NAME=kd",
        "METHOD.CE_WEIGHT=0.5",
        "METHOD.HARD_LOSS=dual_focal",
        "METHOD.HARD_GAMMA=5.0",
        f"OUTPUT_DIR={tmp_path / 'run'}",
    ]
    trainer = Trainer(load_config("", opts), progress=False)
    x, y = torch.randn(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4, 5])
    trainer.model.eval()  # the same logits in both calls
    _, loss_ce, _ = trainer.losses(x, y)
    with torch.no_grad():
        logits, _ = trainer.model(x)
    torch.testing.assert_close(loss_ce, 0.5 * dual_focal_loss(logits, y, 5.0))
    with pytest.raises(ConfigError, match="METHOD.HARD_LOSS must be one of"):
        load_config("", opts + ["METHOD.HARD_LOSS=brier"])
    with pytest.raises(ConfigError, match="METHOD.HARD_GAMMA must be >= 0"):
        load_config("", opts + ["METHOD.HARD_GAMMA=-1.0"])


def test_table5_configs_replace_the_cross_entropy_of_their_kd_and_luminet_rows():
    from luminet_det.cls.config import load_config

    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "CIFAR-100", "calibration", "*.yaml")))
    names = {os.path.basename(p) for p in paths}
    for pair in ("res32x4_res8x4", "vgg13_vgg8", "wrn40_2_shuv1"):
        for row in ("kd_focal", "kd_dual_focal", "luminet_dual_focal"):
            assert f"{row}_{pair}.yaml" in names
    for path in paths:
        cfg = load_config(path)
        row = os.path.basename(path)
        method = "luminet" if row.startswith("luminet") else "kd"
        pair = row.split("focal_", 1)[1]
        base = load_config(os.path.join(ROOT, "configs", "CIFAR-100", method, pair))
        assert cfg.METHOD.HARD_LOSS == ("dual_focal" if "dual" in row else "focal")
        # everything else is the row's KD / LumiNet recipe
        cfg.METHOD.HARD_LOSS, cfg.METHOD.HARD_GAMMA = base.METHOD.HARD_LOSS, base.METHOD.HARD_GAMMA
        cfg.OUTPUT_DIR = base.OUTPUT_DIR
        assert cfg == base, path
