"""Every shipped YAML merges and builds its model on CPU; the paper's schedule is in place;
the four paper rows smoke-train on the built-in set."""

import glob
import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import ROOT

from luminet_det import load_config
from luminet_det.config import TEACHER_ARCHITECTURE, get_num_classes
from luminet_det.modeling.lazy_teacher import is_lazy_config, load_lazy_teacher_cfg
from luminet_det.modeling.teacher import load_teacher_cfg, teacher_architecture

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True))
COCO = [
    c
    for c in CONFIGS
    if ("COCO-Detection" in c or "COCO-InstanceSegmentation" in c)
    and not os.path.basename(c).startswith("Base")
]
DIGITS = [
    c for c in CONFIGS if "Digits-Detection" in c and not os.path.basename(c).startswith("Base")
]
_teacher_weights = {}


def _random_teacher_weights(cfg, tmp_dir):
    """Teacher weights for a build test: the teacher's own architecture, random values, saved
    to disk (nothing is downloaded)."""
    d = cfg.MODEL.DISTILL
    key = (d.TEACHER_CONFIG, tuple(d.TEACHER_OPTS))
    if key not in _teacher_weights:
        if is_lazy_config(d.TEACHER_CONFIG):  # a LazyConfig (.py) teacher
            model = instantiate(load_lazy_teacher_cfg(d.TEACHER_CONFIG, d.TEACHER_OPTS).model)
        else:
            tcfg = load_teacher_cfg(
                d.TEACHER_CONFIG, d.TEACHER_OPTS, "cpu", teacher_architecture(cfg)
            )
            model = build_model(tcfg)
        path = os.path.join(tmp_dir, f"teacher{len(_teacher_weights)}.pth")
        torch.save({"model": model.state_dict()}, path)
        _teacher_weights[key] = path
    return _teacher_weights[key]


def _load(path, tmp_dir):
    cfg = load_config(path)
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.META_ARCHITECTURE in TEACHER_ARCHITECTURE:
        cfg.MODEL.DISTILL.TEACHER_WEIGHTS = _random_teacher_weights(cfg, tmp_dir)
    return cfg


def test_the_configs_exist():
    names = {os.path.basename(c) for c in COCO}
    for pair in ("r101_r18", "r50_mv2"):
        for method in ("luminet", "kd", "dkd", "luminet_reviewkd"):
            assert f"{method}_{pair}.yaml" in names
    assert {"faster_rcnn_R_18_FPN.yaml", "faster_rcnn_MV2_FPN.yaml"} <= names
    assert {f"{m}_retinanet_r101_r18.yaml" for m in ("kd", "luminet")} <= names


@pytest.mark.parametrize("path", COCO, ids=os.path.basename)
def test_coco_config_builds_with_paper_schedule(path, tmp_path_factory):
    cfg = _load(path, str(tmp_path_factory.getbasetemp()))
    assert cfg.SOLVER.IMS_PER_BATCH == 8 and cfg.SOLVER.BASE_LR == 0.01
    assert cfg.SOLVER.MAX_ITER == 180000 and tuple(cfg.SOLVER.STEPS) == (120000, 160000)
    assert cfg.DATASETS.TRAIN == ("coco_2017_train",) and cfg.DATASETS.TEST == ("coco_2017_val",)
    assert get_num_classes(cfg) == 80
    model = build_model(cfg)
    if cfg.MODEL.META_ARCHITECTURE == "DistillRetinaNet":
        assert model.teacher.input_format == "BGR" and model.input_format == "RGB"
        assert len(model.teacher.backbone.bottom_up.res4) == 23
        losses = set(model.logit_losses) | set(model.feature_losses)
        assert losses == set(cfg.MODEL.DISTILL.LOSSES)
    if "vitdet" in path:  # ViTDet: a plain ViT-B in a simple feature pyramid, RGB
        assert model.teacher.input_format == "RGB" and model.input_format == "RGB"
        assert len(model.teacher.backbone.net.blocks) == 12
    elif cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
        # the zoo teachers are caffe2-style BGR; the students torchvision-style RGB
        assert model.teacher.input_format == "BGR" and model.input_format == "RGB"
        expected = {"r101": 101, "r50_": 50}
        depth = next(v for k, v in expected.items() if k in os.path.basename(path))
        assert len(model.teacher.backbone.bottom_up.res4) == {101: 23, 50: 6}[depth]
        if "reviewkd" in path:
            assert "reviewkd" in model.feature_losses
        if "cascade" in path:  # a 3-stage Cascade teacher for a Faster R-CNN student
            assert len(model.teacher.roi_heads.box_predictor) == 3
            assert not isinstance(model.roi_heads.box_predictor, torch.nn.ModuleList)
        if "COCO-InstanceSegmentation" in path:
            assert model.roi_heads.mask_on and model.teacher.roi_heads.mask_on


@pytest.mark.parametrize("path", DIGITS, ids=os.path.basename)
def test_digits_config_builds_and_takes_a_training_step(path, tmp_path_factory):
    cfg = _load(path, str(tmp_path_factory.getbasetemp()))
    model = build_model(cfg)
    model.train()
    from tiny import batch

    inputs = batch(2, size=128, num_classes=10, masks=cfg.MODEL.MASK_ON)
    with EventStorage(100):
        losses = model(inputs)
    assert ("loss_mask" in losses) == cfg.MODEL.MASK_ON
    assert any(k.startswith("loss_cls_stage") for k in losses) == (
        "cascade" in path and "luminet" not in path
    )
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    distilled = cfg.MODEL.META_ARCHITECTURE in TEACHER_ARCHITECTURE
    for name in cfg.MODEL.DISTILL.LOSSES if distilled else []:
        assert f"loss_{name}" in losses


def test_unknown_key_names_the_nearest_valid_one(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("MODEL:\n  DISTILL:\n    LOSES: ['luminet']\n")
    with pytest.raises(
        ValueError, match=r"MODEL.DISTILL.LOSES .* Did you mean MODEL.DISTILL.LOSSES"
    ):
        load_config(str(path))
    ok = tmp_path / "ok.yaml"
    ok.write_text("MODEL:\n  DEVICE: cpu\n")
    with pytest.raises(ValueError, match=r"MODEL.DISTILL.LUMINET.TEMPERATUR .*TEMPERATURE"):
        load_config(str(ok), ["MODEL.DISTILL.LUMINET.TEMPERATUR", "2.0"])


def test_relative_teacher_config_resolves_against_the_config_file():
    cfg = load_config(os.path.join(ROOT, "configs", "Digits-Detection", "luminet_R50_R18.yaml"))
    assert cfg.MODEL.DISTILL.TEACHER_CONFIG == os.path.join(
        ROOT, "configs", "Digits-Detection", "teacher_R_50_FPN.yaml"
    )
