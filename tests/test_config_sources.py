"""Configs that claim a source equal it: our copies of detectron2's base files merge to exactly
detectron2's own, and every COCO student has the architecture of detectron2's zoo config of its
family (heads, pooler, norms, anchors, input sizes), apart from its backbone and the
differences docs/recipes.md names."""

import glob
import os
import re

import pytest
from detectron2 import model_zoo
from detectron2.config import get_cfg
from tiny import ROOT

from luminet_det import load_config

CONFIGS = os.path.join(ROOT, "configs")
_CLAIM = re.compile(r"the same as detectron2's configs/(\S+\.yaml)")


def _flat(node, prefix=""):
    out = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _detectron2(name):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(name))
    return cfg


def _claimed_copies():
    """(our file, the detectron2 file its header says it equals)."""
    out = []
    for path in sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))):
        header = "".join(line for line in open(path) if line.startswith("#"))
        match = _CLAIM.search(" ".join(header.replace("#", " ").split()))
        if match:
            out.append((path, match.group(1)))
    return out


def test_every_base_file_is_checked():
    claimed = {os.path.basename(p): name for p, name in _claimed_copies()}
    assert claimed == {
        "Base-RCNN-FPN.yaml": "Base-RCNN-FPN.yaml",
        "Base-RetinaNet.yaml": "Base-RetinaNet.yaml",
    }


@pytest.mark.parametrize("ours,theirs", _claimed_copies(), ids=lambda x: os.path.basename(x))
def test_our_copy_of_a_detectron2_base_file_merges_to_exactly_the_same_config(ours, theirs):
    mine = get_cfg()
    mine.merge_from_file(ours)
    a, b = _flat(mine), _flat(_detectron2(theirs))
    differ = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
    assert differ == {}, f"{os.path.basename(ours)} vs detectron2's {theirs}: {differ}"


#: keys that describe the backbone (or how its pretrained weights expect their input), not
#: the detector's architecture: they may differ from the zoo's R-50
_BACKBONE_KEYS = {
    "MODEL.WEIGHTS",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "MODEL.BACKBONE.NAME",
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "INPUT.FORMAT",
}
#: differences docs/recipes.md names: key -> (the phrase of recipes.md that names it, which
#: configs it applies to)
_VITDET = lambda cfg: "vitdet" in cfg.MODEL.DISTILL.TEACHER_CONFIG  # noqa: E731
_DOCUMENTED = {
    "MODEL.BACKBONE.FREEZE_AT": (
        "MobileNetV2 `FREEZE_AT`",
        lambda cfg: cfg.MODEL.BACKBONE.NAME == "build_mobilenetv2_fpn_backbone",
    ),
    "INPUT.MAX_SIZE_TRAIN": ("ViTDet teacher: `INPUT.MAX_SIZE_TRAIN`", _VITDET),
    "INPUT.MAX_SIZE_TEST": ("ViTDet teacher: `INPUT.MAX_SIZE_TRAIN` / `MAX_SIZE_TEST`", _VITDET),
}
_STUDENTS = sorted(
    p
    for folder in ("COCO-Detection", "COCO-InstanceSegmentation")
    for p in glob.glob(os.path.join(CONFIGS, folder, "*.yaml"))
    if not os.path.basename(p).startswith("Base")
)


def _zoo_family(cfg) -> str:
    if cfg.MODEL.META_ARCHITECTURE in ("RetinaNet", "DistillRetinaNet"):
        return "COCO-Detection/retinanet_R_50_FPN_3x.yaml"
    if cfg.MODEL.MASK_ON:
        return "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    return "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"


def test_the_documented_differences_are_in_recipes():
    recipes = open(os.path.join(ROOT, "docs", "recipes.md")).read()
    for key, (phrase, _) in _DOCUMENTED.items():
        assert phrase in recipes, (key, phrase)


@pytest.mark.parametrize("path", _STUDENTS, ids=os.path.basename)
def test_coco_student_has_the_architecture_of_its_zoo_family(path):
    cfg = load_config(path)
    zoo_name = _zoo_family(cfg)
    ours, zoo = _flat(cfg), _flat(_detectron2(zoo_name))
    keys = {
        k
        for k in set(ours) | set(zoo)
        if k.startswith(("MODEL.", "INPUT."))
        and not k.startswith("MODEL.DISTILL.")
        and k not in _BACKBONE_KEYS
        and k not in ("MODEL.META_ARCHITECTURE", "MODEL.DEVICE")
    }
    allowed = {k for k, (_, applies) in _DOCUMENTED.items() if applies(cfg)}
    differ = {k: (ours.get(k), zoo.get(k)) for k in keys - allowed if ours.get(k) != zoo.get(k)}
    assert differ == {}, f"{os.path.basename(path)} vs the zoo's {zoo_name}: {differ}"
    stock = cfg.MODEL.META_ARCHITECTURE.replace("DistillRCNN", "GeneralizedRCNN")
    assert stock.replace("DistillRetinaNet", "RetinaNet") == zoo["MODEL.META_ARCHITECTURE"]


def test_a_mask_student_gets_the_zoo_mask_head():
    """The defect this file guards against: a base without ROI_MASK_HEAD gave every COCO Mask
    R-CNN student detectron2's code default of no mask-head convolutions."""
    cfg = load_config(os.path.join(CONFIGS, "COCO-InstanceSegmentation", "mask_rcnn_R_18_FPN.yaml"))
    assert cfg.MODEL.ROI_MASK_HEAD.NUM_CONV == 4 and cfg.MODEL.ROI_MASK_HEAD.NAME == (
        "MaskRCNNConvUpsampleHead"
    )
