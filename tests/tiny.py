"""Tiny detectron2 models for CPU tests (a few hundred ms per step)."""

import os

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from luminet_det import add_luminet_config
from luminet_det.testing import toy_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "Base-RCNN-FPN.yaml")


def _small_resnet_fpn(base, depth, sizes=(8, 16, 32, 64, 128)):
    """``base`` (a config file) with the plugin's node, on CPU, from scratch, a ResNet of
    ``depth`` with FPN 32 and one anchor size per level."""
    cfg = get_cfg()
    add_luminet_config(cfg)
    cfg.merge_from_file(base)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth in (18, 34) else 256
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s] for s in sizes]
    return cfg


def tiny_cfg(num_classes=3, depth=18, fmt="BGR", norm="FrozenBN", seed_offset=0):
    """A GeneralizedRCNN R-18 FPN config with small heads, CPU, 64 px images."""
    cfg = _small_resnet_fpn(BASE, depth)
    cfg.MODEL.RESNETS.NORM = norm
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 32
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.INPUT.FORMAT = fmt
    if fmt == "RGB":
        cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
        cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    return cfg


def tiny_retinanet_cfg(num_classes=3, depth=18, sizes=(8, 16, 32, 64, 128)):
    """A RetinaNet config (configs/Base-RetinaNet.yaml) with a one-conv head, CPU, from scratch."""
    cfg = _small_resnet_fpn(os.path.join(ROOT, "configs", "Base-RetinaNet.yaml"), depth, sizes)
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    return cfg


def save_teacher(tmp_path, cfg=None, seed=123, name="teacher"):
    """Build a (random, but *loaded from disk*) teacher; return (config path, weights path)."""
    cfg = cfg if cfg is not None else tiny_cfg()
    torch.manual_seed(seed)
    model = build_model(cfg)
    weights = os.path.join(str(tmp_path), f"{name}.pth")
    torch.save({"model": model.state_dict()}, weights)
    config = os.path.join(str(tmp_path), f"{name}.yaml")
    with open(config, "w") as f:
        f.write(cfg.dump())
    return config, weights


def distill_cfg(teacher_config, teacher_weights, losses=("luminet",), **kwargs):
    cfg = tiny_cfg(**kwargs)
    cfg.MODEL.META_ARCHITECTURE = "DistillRCNN"
    cfg.MODEL.DISTILL.TEACHER_CONFIG = teacher_config
    cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher_weights
    cfg.MODEL.DISTILL.LOSSES = list(losses)
    return cfg


def batch(n=2, size=64, num_classes=3, seed=0, masks=False):
    """Random images with two boxes each (and their masks), as DatasetMapper gives them."""
    return toy_batch(n, size, num_classes, boxes_per_image=2, seed=seed, masks=masks)


def build(cfg, seed=0):
    """build_model(cfg) after seeding torch: the same seed, the same random weights."""
    torch.manual_seed(seed)
    return build_model(cfg)


def train_step(model, inputs, it=0):
    """One training forward inside an EventStorage at iteration ``it`` (the ROI sampler and
    RPN sampling draw random numbers: seeded)."""
    from detectron2.utils.events import EventStorage

    with EventStorage(it):
        torch.manual_seed(42)
        return model(inputs)
