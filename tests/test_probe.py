"""Linear probing (luminet-cls probe, paper Fig. 3a): the linear classifier on separable
features, invariance to the features' scale and offset (they are standardised), the class
count read from a checkpoint, deterministic features of the training split, and the command
on a tiny folder set."""

import json
import os

import pytest
import torch
from test_cls_data_and_trust import _folder_set

from luminet_det.cls.__main__ import main
from luminet_det.cls.config import load_config
from luminet_det.cls.models import build_model
from luminet_det.cls.probe import checkpoint_classes, extract_features, train_linear_probe
from luminet_det.errors import ConfigError


def _blobs(n, seed):
    """Three classes, each a Gaussian blob far from the others in 8 dimensions."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    centres = torch.eye(3, 8) * 6
    return centres[labels] + torch.randn(n, 8, generator=g), labels


def test_separable_features_are_classified_and_scale_does_not_matter():
    (xt, yt), (xv, yv) = _blobs(90, 0), _blobs(30, 1)
    kw = dict(classes=3, epochs=10, lr=0.1, batch_size=16, weight_decay=0.0)
    out = train_linear_probe(xt, yt, xv, yv, **kw)
    assert out["top1"] == 100.0 and out["top5"] == 100.0
    # standardised per dimension with the training features' moments: an affine change of
    # the features changes nothing (up to rounding)
    scaled = train_linear_probe(xt * 1000 + 7, yt, xv * 1000 + 7, yv, **kw)
    assert scaled["train_loss"] == pytest.approx(out["train_loss"], rel=1e-4)
    # labels unrelated to the features: the probe cannot beat chance by much on new data
    shuffled = yv[torch.randperm(30, generator=torch.Generator().manual_seed(3))]
    assert train_linear_probe(xt, yt, xv, shuffled, **kw)["top1"] < 70.0
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        train_linear_probe(xt, yt, xv, yv, **dict(kw, epochs=0))


def test_checkpoint_classes_and_deterministic_training_features():
    for arch, head in (("resnet8", "fc"), ("vgg8", "classifier"), ("shufflenetv1", "linear")):
        state = {"model": build_model(arch, 7).state_dict(), "arch": arch}
        assert checkpoint_classes(state) == 7, (arch, head)
    with pytest.raises(ConfigError, match="no linear layer"):
        checkpoint_classes({"model": {"conv.weight": torch.zeros(3, 3, 1, 1)}})
    from torch.utils.data import DataLoader

    from luminet_det.cls.data import build_dataset
    from luminet_det.cls.probe import _without_augmentation

    cfg = load_config("", ["DATA.NAME=digits_hard", "METHOD.NAME=ce"])
    train = _without_augmentation(cfg, build_dataset("digits_hard", "", train=False))
    model = build_model("resnet8", 10)
    loader = DataLoader(torch.utils.data.Subset(train, range(40)), 20)
    a, la = extract_features(model, loader, torch.device("cpu"))
    b, lb = extract_features(model, loader, torch.device("cpu"))
    assert a.shape == (40, 64) and torch.equal(a, b) and torch.equal(la, lb)


def test_the_probe_command_on_a_folder_set(tmp_path, capsys):
    root = _folder_set(tmp_path / "shapes")
    ckpt = tmp_path / "net.pth"
    torch.save({"model": build_model("resnet8", 10).state_dict(), "arch": "resnet8"}, ckpt)
    opts = [
        "DATA.NAME=folder",
        f"DATA.ROOT={root}",
        "DATA.INPUT_SIZE=16",
        "DATA.NUM_WORKERS=0",
        "PROBE.EPOCHS=3",
        f"OUTPUT_DIR={tmp_path / 'probe'}",
    ]
    assert main(["probe", "--checkpoint", str(ckpt), *opts]) == 0
    out = json.load(open(tmp_path / "probe" / "probe.json"))
    assert (out["train_images"], out["val_images"], out["feature_dim"]) == (36, 12, 64)
    assert 0.0 <= out["top1"] <= 100.0 and out["arch"] == "resnet8"
    # bad settings: the message, exit code 2
    assert main(["probe", "--checkpoint", str(ckpt), *opts, "PROBE.LR=0.0"]) == 2
    assert "PROBE needs EPOCHS >= 1" in capsys.readouterr().err
    assert main(["probe", "--checkpoint", str(tmp_path / "missing.pth"), *opts]) == 2
    assert os.path.isfile(ckpt)
