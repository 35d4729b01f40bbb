"""luminet_det.cls: models, metrics by hand, training lowers the loss, resume, no detectron2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from luminet_det.cls import MODELS, build_model, load_config
from luminet_det.cls.engine import Trainer
from luminet_det.metrics import calibration_bins, ece_mce, fpr_at_95_tpr, topk_accuracy

# Parameter counts published with the CRD / mdistiller CIFAR-100 model zoo (millions).
PUBLISHED = {
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.73,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg13": 9.46,
    "mobilenetv2_cifar": 0.81,
    "shufflenetv1": 0.95,
    "shufflenetv2": 1.36,
    "resnet50_cifar": 23.71,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_cifar_models_shape_and_parameter_count(name):
    model = build_model(name, 100).eval()
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert count == pytest.approx(PUBLISHED[name], rel=0.01, abs=0.005), count
    logits, feat = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100) and feat.dim() == 2 and feat.shape[0] == 2


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])
def test_imagenet_models_from_torchvision(name, tmp_path):
    import torchvision

    model = build_model(name, 1000).eval()
    logits, feat = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 1000)
    # a plain torchvision state dict loads (teacher weights users already have)
    tv = torchvision.models.get_model(name, weights=None)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    loaded = build_model(name, 1000, str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x)[0], tv.eval()(x))


def test_unknown_model_and_bad_weights(tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
        build_model("resnet9", 10)
    path = tmp_path / "w.pth"
    torch.save({"model": build_model("resnet8", 10).state_dict()}, path)
    with pytest.raises(ValueError, match="do not fit resnet20"):
        build_model("resnet20", 10, str(path))


# ------------------------------------------------------------------------------- metrics
def test_topk_by_hand():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2, 0, 1])
    acc = topk_accuracy(logits, labels, (1, 2, 5))
    # top-1: only row 0; top-2: rows 0 and 1; top-5 (capped at 3): all
    assert acc == {1: 25.0, 2: 50.0, 5: 100.0}


def test_ece_mce_by_hand():
    # confidences 0.9 (correct), 0.9 (wrong), 0.55 (correct), 0.55 (correct), 15 bins:
    # bin of 0.9 -> acc 0.5, conf 0.9, gap 0.4; bin of 0.55 -> acc 1.0, conf 0.55, gap 0.45
    # ECE = (2 * 0.4 + 2 * 0.45) / 4 = 0.425 ; MCE = 0.45
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.45, 0.55]])
    labels = np.array([0, 1, 0, 1])
    counts, acc, conf = calibration_bins(probs, labels, 15)
    assert counts.sum() == 4 and counts[13] == 2 and counts[8] == 2  # (13/15, 14/15], (8/15, 9/15]
    ece, mce = ece_mce(probs, labels, 15)
    assert ece == pytest.approx(42.5) and mce == pytest.approx(45.0)


def test_report_confidence_says_over_or_under_confident_by_hand():
    from luminet_det.metrics import classification_report

    # the same four rows as logits (log-probabilities): top probabilities 0.9, 0.9, 0.55, 0.55
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.45, 0.55]])
    report = classification_report(probs.log(), torch.tensor([0, 1, 0, 1]))
    # mean confidence 72.5 % against 75 % top-1: slightly under-confident; ECE as above
    assert report["confidence"] == pytest.approx(72.5) and report["top1"] == 75.0
    assert report["ece"] == pytest.approx(42.5)


def test_fpr95_by_hand():
    # class 0: positives score [0.9, 0.8, 0.7, 0.2]; ceil(0.95 * 4) = 4 -> threshold 0.2;
    # negatives' class-0 scores [0.1, 0.3] -> FPR 1/2.
    # class 1: positives [0.9, 0.7] -> threshold 0.7; negatives [0.1, 0.2, 0.3, 0.8] -> 1/4.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    assert fpr_at_95_tpr(probs, labels) == pytest.approx(100 * (0.5 + 0.25) / 2)


# ------------------------------------------------------------------------------- training
def _cfg(tmp_path, method, extra=()):
    teacher = str(tmp_path / "teacher.pth")
    if not os.path.exists(teacher):
        torch.manual_seed(0)
        torch.save({"model": build_model("resnet20", 10).state_dict(), "arch": "resnet20"}, teacher)
    return load_config(
        "",
        [
            "DATA.NAME=digits",
            "DATA.NUM_WORKERS=0",
            "MODEL.STUDENT=resnet8",
            "MODEL.TEACHER=resnet20",
            f"MODEL.TEACHER_WEIGHTS={teacher}",
            "MODEL.TEACHER_MIN_TOP1=0.0",  # a random teacher: these tests check the mechanics
            f"METHOD.NAME={method}",
            "SOLVER.BATCH_SIZE=64",
            "SOLVER.EPOCHS=2",
            "SOLVER.LR=0.05",
            "SOLVER.LR_STEPS=[1]",
            f"OUTPUT_DIR={tmp_path / method}",
            *extra,
        ],
    )


@pytest.mark.parametrize("method", ["ce", "kd", "dkd", "luminet"])
def test_each_method_lowers_the_training_loss(method, tmp_path):
    cfg = _cfg(tmp_path, method, ["SOLVER.EPOCHS=3"])
    trainer = Trainer(cfg, progress=False)
    first = trainer.train_epoch(1)["loss"]
    trainer.train_epoch(2)
    last = trainer.train_epoch(3)["loss"]
    assert last < first, (first, last)


def test_resume_continues_at_next_epoch_with_same_optimizer_state(tmp_path):
    cfg = _cfg(tmp_path, "luminet", ["SOLVER.EPOCHS=1"])
    Trainer(cfg, progress=False).train()
    saved = torch.load(os.path.join(cfg.OUTPUT_DIR, "last.pth"), weights_only=False)
    cfg.defrost()
    cfg.SOLVER.EPOCHS = 2
    resumed = Trainer(cfg, resume=True, progress=False)
    assert resumed.start_epoch == 2
    # LR decayed after epoch 1 (LR_STEPS [1]) and momentum buffers are restored
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
    state = resumed.optimizer.state_dict()["state"]
    for k, v in saved["optimizer"]["state"].items():
        torch.testing.assert_close(state[k]["momentum_buffer"], v["momentum_buffer"])
    resumed.train()
    rows = [json.loads(line) for line in open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # 0 = the teacher's evaluation
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "best.pth"))
    assert not any(f.endswith(".tmp") for f in os.listdir(cfg.OUTPUT_DIR))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="needs MODEL.TEACHER_WEIGHTS"):
        load_config("", ["METHOD.NAME=luminet"])
    with pytest.raises(ValueError, match="METHOD.NAME must be one of"):
        load_config("", ["METHOD.NAME=fitnet"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        load_config("", ["SOLVER.EPOCHS"])
    with pytest.raises(ValueError, match="SOLVER.EPOCH"):
        load_config("", ["SOLVER.EPOCH=3"])


def test_missing_cifar_says_where_and_how(tmp_path):
    from luminet_det.cls.data import build_dataset

    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*cs.toronto.edu"):
        build_dataset("cifar100", str(tmp_path), train=True)
    with pytest.raises(FileNotFoundError, match="class folders"):
        build_dataset("imagenet", str(tmp_path), train=False)


def test_cls_never_imports_detectron2(root_dir):
    """Block detectron2 entirely: luminet_det.cls still imports, builds and computes losses."""
    script = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "detectron2" or name.startswith("detectron2."):
            raise ImportError("detectron2 blocked")
sys.meta_path.insert(0, Block())
import torch
import luminet_det.cls as cls
from luminet_det.losses import luminet_loss
m = cls.build_model("resnet8", 10)
out, _ = m(torch.randn(4, 3, 16, 16))
print(float(luminet_loss(out, out.detach() * 2)))
assert not any(k.startswith("detectron2") for k in sys.modules)
print("NO_D2_OK")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root_dir
    )
    assert "NO_D2_OK" in proc.stdout, proc.stderr[-2000:]


def test_shipped_cls_configs_load(root_dir):
    import glob

    paths = glob.glob(os.path.join(root_dir, "configs", "CIFAR-100", "*", "*.yaml"))
    paths += glob.glob(os.path.join(root_dir, "configs", "ImageNet", "*", "*.yaml"))
    paths += glob.glob(os.path.join(root_dir, "configs", "Digits-Classification", "*_*.yaml"))
    assert len(paths) >= 11 * 3 + 9
    for path in paths:
        cfg = load_config(path)
        assert cfg.MODEL.STUDENT in MODELS
        if cfg.METHOD.NAME != "ce":
            assert cfg.MODEL.TEACHER in MODELS
    row = load_config(
        os.path.join(root_dir, "configs", "CIFAR-100", "luminet", "res32x4_res8x4.yaml")
    )
    assert (row.SOLVER.BATCH_SIZE, row.SOLVER.EPOCHS, row.SOLVER.LR) == (64, 240, 0.05)
    assert list(row.SOLVER.LR_STEPS) == [150, 180, 210] and row.SOLVER.WEIGHT_DECAY == 5e-4
    # the official LumiNet HEAD (tests/test_recipes.py pins every config to its source)
    assert (row.METHOD.CE_WEIGHT, row.METHOD.WEIGHT, row.METHOD.TEMPERATURE) == (2.0, 33.0**2, 4.0)
    inet = load_config(os.path.join(root_dir, "configs", "ImageNet", "r34_r18", "luminet.yaml"))
    assert (inet.SOLVER.BATCH_SIZE, inet.SOLVER.EPOCHS, inet.SOLVER.LR) == (512, 100, 0.2)
    assert (inet.METHOD.CE_WEIGHT, inet.METHOD.WEIGHT, inet.METHOD.TEMPERATURE) == (1.0, 4.0, 0.7)


def test_a_new_run_starts_a_new_metrics_file(tmp_path):
    cfg = _cfg(tmp_path, "ce", ["SOLVER.EPOCHS=1"])
    Trainer(cfg, progress=False).train()
    Trainer(cfg, progress=False).train()  # same OUTPUT_DIR, not --resume
    rows = [json.loads(line) for line in open(os.path.join(cfg.OUTPUT_DIR, "metrics.json"))]
    assert [r["epoch"] for r in rows] == [1]


def test_running_stats_count_every_training_row_and_survive_resume(tmp_path):
    cfg = _cfg(tmp_path, "luminet", ["SOLVER.EPOCHS=1", "METHOD.STATS=running"])
    trainer = Trainer(cfg, progress=False)
    rows_per_epoch = len(trainer.train_loader) * cfg.SOLVER.BATCH_SIZE  # drop_last batches
    trainer.train()
    saved = torch.load(os.path.join(cfg.OUTPUT_DIR, "last.pth"), weights_only=False)
    assert saved["distill"]["running.count"].item() == rows_per_epoch
    cfg.defrost()
    cfg.SOLVER.EPOCHS = 2
    resumed = Trainer(cfg, resume=True, progress=False)
    for k in ("count", "mean", "m2"):
        assert torch.equal(getattr(resumed.distill.running, k), saved["distill"][f"running.{k}"])
    resumed.train()
    assert resumed.distill.running.count.item() == 2 * rows_per_epoch
    # evaluation does not update the running moments (only training batches count)
    final = torch.load(os.path.join(cfg.OUTPUT_DIR, "last.pth"), weights_only=False)
    assert final["distill"]["running.count"].item() == 2 * rows_per_epoch


def test_global_stats_are_the_teachers_moments_over_every_training_image_and_kept(tmp_path):
    """METHOD.STATS global: one pass of the teacher over the training set before epoch 1
    (exact moments, replayed here from the same random state), applied unchanged, saved,
    and not recomputed on resume."""
    from luminet_det.losses import batch_moments

    cfg = _cfg(tmp_path, "luminet", ["SOLVER.EPOCHS=1", "METHOD.STATS=global"])
    trainer = Trainer(cfg, progress=False)
    state = torch.get_rng_state()
    assert trainer.precompute_teacher_stats() == len(trainer.train_set)
    assert torch.equal(torch.get_rng_state(), state)  # training's draws are untouched
    after = torch.get_rng_state()
    torch.set_rng_state(state)  # replay: the same augmented images, in order
    with torch.no_grad():
        loader = torch.utils.data.DataLoader(trainer.train_set, 500, shuffle=False)
        logits = torch.cat([trainer.teacher(x)[0] for x, _ in loader])
    torch.set_rng_state(after)
    mean, var = batch_moments(logits.double())
    running = trainer.distill.running
    torch.testing.assert_close(running.mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(running.m2 / running.count, var, rtol=1e-4, atol=1e-6)
    trainer.train()  # no second pass; training leaves them as they are
    saved = torch.load(os.path.join(cfg.OUTPUT_DIR, "last.pth"), weights_only=False)["distill"]
    assert saved["running.count"].item() == len(trainer.train_set)
    torch.testing.assert_close(saved["running.mean"], running.mean)
    cfg.defrost()
    cfg.SOLVER.EPOCHS = 2
    resumed = Trainer(cfg, resume=True, progress=False)
    assert resumed.precompute_teacher_stats() == 0  # loaded, not recomputed
    resumed.train()
    final = torch.load(os.path.join(cfg.OUTPUT_DIR, "last.pth"), weights_only=False)["distill"]
    for k in ("count", "mean", "m2"):
        assert torch.equal(final[f"running.{k}"], saved[f"running.{k}"])
