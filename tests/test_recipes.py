"""Every paper-row config equals its source. One table: config -> expected values, each row
citing the file it was read from (docs/recipes.md has the same values with reasons).

L = ismail31416/LumiNet (official LumiNet code, HEAD), M = megvii-research/mdistiller.
"""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: config -> {key: value}; the comment names the source file of the values
# DIST's published recipes: CIFAR-100 (dist_cifar.yaml: kd 'dist_t4', ori 1, kd 2) and ImageNet
# (resnet_dist.yaml: kd 'dist', ori 1, kd 2); beta = gamma = 1 in both (kd_loss.py)
_DIST_CIFAR = {
    "T": 4.0,
    "CE": 1.0,
    "METHOD.WEIGHT": 2.0,
    "METHOD.DIST_BETA": 1.0,
    "METHOD.DIST_GAMMA": 1.0,
    "METHOD.NAME": "dist",
    "METHOD.WARMUP_EPOCHS": 0,
}
_DIST_IMAGENET = {**_DIST_CIFAR, "T": 1.0}

RECIPES = {
    # --- detection (M detection/configs/*, detection/model/{config,rcnn}.py) -----------------
    "COCO-Detection/kd_r101_r18.yaml": {"MODEL.DISTILL.WARMUP_ITERS": 0},  # M rcnn.py: no ramp
    "COCO-Detection/kd_r50_mv2.yaml": {"MODEL.DISTILL.WARMUP_ITERS": 0},
    "COCO-Detection/dkd_r101_r18.yaml": {  # M DKD/DKD-R18-R101.yaml, model/config.py KD.DKD
        "MODEL.DISTILL.WARMUP_ITERS": 0,
        "MODEL.DISTILL.DKD.ALPHA": 1.0,
        "MODEL.DISTILL.DKD.BETA": 0.25,
        "MODEL.DISTILL.DKD.TEMPERATURE": 1.0,
        "MODEL.DISTILL.DKD.WEIGHT": 1.0,
    },
    "COCO-Detection/dkd_r50_mv2.yaml": {  # M DKD/DKD-MV2-R50.yaml
        "MODEL.DISTILL.WARMUP_ITERS": 0,
        "MODEL.DISTILL.DKD.BETA": 0.25,
        "MODEL.BACKBONE.FREEZE_AT": 0,
    },
    "COCO-Detection/luminet_reviewkd_r101_r18.yaml": {  # M ReviewKD/ReviewKD-R18-R101.yaml
        "MODEL.DISTILL.REVIEWKD.WEIGHT": 1.2,
    },
    "COCO-Detection/luminet_reviewkd_r50_mv2.yaml": {  # M ReviewKD/ReviewKD-MV2-R50.yaml
        "MODEL.DISTILL.REVIEWKD.WEIGHT": 2.0,
        "MODEL.BACKBONE.FREEZE_AT": 0,
    },
    "COCO-Detection/faster_rcnn_MV2_FPN.yaml": {"MODEL.BACKBONE.FREEZE_AT": 0},  # M *MV2*.yaml
    "COCO-Detection/faster_rcnn_R_18_FPN.yaml": {  # paper A.9; M Base-Distillation.yaml
        "SOLVER.IMS_PER_BATCH": 8,
        "SOLVER.BASE_LR": 0.01,
        "SOLVER.MAX_ITER": 180000,
        "SOLVER.STEPS": (120000, 160000),
        "INPUT.MIN_SIZE_TRAIN": (640, 672, 704, 736, 768, 800),
    },
    # --- CIFAR-100 LumiNet (L configs/cifar100/luminet/<pair>.yaml; warm-up: L
    # mdistiller/engine/cfg.py LUMINET.WARMUP = 20) ------------------------------------------
    "CIFAR-100/luminet/res32x4_res8x4.yaml": {"alpha": 33, "T": 4.0, "CE": 2.0, "LR": 0.05},
    "CIFAR-100/luminet/vgg13_vgg8.yaml": {"alpha": 70, "T": 8.0, "CE": 1.0, "LR": 0.05},
    "CIFAR-100/luminet/wrn40_2_shuv1.yaml": {"alpha": 35, "T": 4.0, "CE": 1.0, "LR": 0.01},
    "CIFAR-100/luminet/res50_mv2.yaml": {"alpha": 70, "T": 8.0, "CE": 2.0, "LR": 0.01},
    "CIFAR-100/luminet/vgg13_mv2.yaml": {"alpha": 70, "T": 8.0, "CE": 2.0, "LR": 0.01},
    "CIFAR-100/luminet/wrn40_2_wrn40_1.yaml": {"alpha": 75, "T": 8.0, "CE": 1.0, "LR": 0.05},
    # pairs without an official config borrow a named pair's values
    "CIFAR-100/luminet/res56_res20.yaml": {"alpha": 33, "T": 4.0, "CE": 2.0, "LR": 0.05},
    "CIFAR-100/luminet/res110_res32.yaml": {"alpha": 33, "T": 4.0, "CE": 2.0, "LR": 0.05},
    "CIFAR-100/luminet/res32x4_shuv1.yaml": {"alpha": 35, "T": 4.0, "CE": 1.0, "LR": 0.01},
    "CIFAR-100/luminet/res32x4_shuv2.yaml": {"alpha": 35, "T": 4.0, "CE": 1.0, "LR": 0.01},
    "CIFAR-100/luminet/wrn40_2_wrn16_2.yaml": {"alpha": 75, "T": 8.0, "CE": 1.0, "LR": 0.05},
    # --- CIFAR-100 DKD (M configs/cifar100/dkd/<pair>.yaml; defaults M engine/cfg.py) ---------
    "CIFAR-100/dkd/res56_res20.yaml": {"beta": 2.0, "LR": 0.05},
    "CIFAR-100/dkd/res110_res32.yaml": {"beta": 2.0, "LR": 0.05},
    "CIFAR-100/dkd/vgg13_vgg8.yaml": {"beta": 6.0, "LR": 0.05},
    "CIFAR-100/dkd/vgg13_mv2.yaml": {"beta": 6.0, "LR": 0.01},
    "CIFAR-100/dkd/wrn40_2_wrn16_2.yaml": {"beta": 6.0, "LR": 0.05},
    "CIFAR-100/dkd/wrn40_2_wrn40_1.yaml": {"beta": 6.0, "LR": 0.05},
    "CIFAR-100/dkd/res32x4_res8x4.yaml": {"beta": 8.0, "LR": 0.05},
    "CIFAR-100/dkd/res32x4_shuv1.yaml": {"beta": 8.0, "LR": 0.01},
    "CIFAR-100/dkd/res32x4_shuv2.yaml": {"beta": 8.0, "LR": 0.01},
    "CIFAR-100/dkd/res50_mv2.yaml": {"beta": 8.0, "LR": 0.01},
    "CIFAR-100/dkd/wrn40_2_shuv1.yaml": {"beta": 8.0, "LR": 0.01},
    # --- CIFAR-100 Logit Standardization (sunshangquan/logit-standardization-KD
    # configs/cifar100/kd/<pair>.yaml run with --logit-stand --base-temp 2 --kd-weight 9;
    # CE_WEIGHT 0.1: its mdistiller/engine/cfg.py) ------------------------------------------
    **{
        f"CIFAR-100/logitstd/{pair}.yaml": {"T": 2.0, "CE": 0.1, "METHOD.WEIGHT": 9.0, "LR": lr}
        for pair, lr in (
            ("res56_res20", 0.05),
            ("res110_res32", 0.05),
            ("res32x4_res8x4", 0.05),
            ("vgg13_vgg8", 0.05),
            ("wrn40_2_wrn16_2", 0.05),
            ("wrn40_2_wrn40_1", 0.05),
            ("res32x4_shuv1", 0.01),
            ("res32x4_shuv2", 0.01),
            ("wrn40_2_shuv1", 0.01),
            ("vgg13_mv2", 0.01),
            ("res50_mv2", 0.01),
        )
    },
    # --- ImageNet --------------------------------------------------------------------------
    "ImageNet/r34_r18/luminet.yaml": {  # L configs/imagenet/r34_r18/luminet.yaml
        "alpha": 2,
        "T": 0.7,
        "CE": 1.0,
        "METHOD.WARMUP_EPOCHS": 1,
        "SOLVER.BATCH_SIZE": 512,
        "LR": 0.2,
    },
    "ImageNet/r34_r18/dkd.yaml": {  # M configs/imagenet/r34_r18/dkd.yaml (+ cfg.py ALPHA 1)
        "METHOD.DKD_ALPHA": 1.0,
        "METHOD.DKD_BETA": 0.5,
        "T": 1.0,
        "CE": 1.0,
        "METHOD.WARMUP_EPOCHS": 1,
    },
    "ImageNet/r34_r18/kd.yaml": {"CE": 0.5, "METHOD.WEIGHT": 0.5, "T": 1.0},  # M r34_r18/kd.yaml
    "ImageNet/r50_mv1/luminet.yaml": {  # L configs/imagenet/r50_mv1/luminet.yaml
        "MODEL.STUDENT": "mobilenet_v1",
        "alpha": 2,
        "T": 0.7,
        "CE": 1.0,
        "METHOD.WARMUP_EPOCHS": 1,
        "SOLVER.BATCH_SIZE": 256,
        "LR": 0.1,
    },
    "ImageNet/r50_mv1/kd.yaml": {  # M configs/imagenet/r50_mv1/kd.yaml
        "MODEL.STUDENT": "mobilenet_v1",
        "CE": 0.5,
        "METHOD.WEIGHT": 0.5,
        "T": 1.0,
        "SOLVER.BATCH_SIZE": 512,
        "LR": 0.2,
    },
    "ImageNet/r50_mv1/dkd.yaml": {  # M configs/imagenet/r50_mv1/dkd.yaml
        "MODEL.STUDENT": "mobilenet_v1",
        "CE": 1.0,
        "METHOD.DKD_ALPHA": 1.0,
        "METHOD.DKD_BETA": 2.0,
        "T": 1.0,
        "METHOD.WARMUP_EPOCHS": 1,
    },
    # --- DIST (D: hunto/image_classification_sota configs/strategies/distill/*.yaml and
    # lib/models/losses/kd_loss.py; hunto/MasKD mmrazor/configs/distill/dist/*.py) -----------
    "ImageNet/r34_r18/dist.yaml": {**_DIST_IMAGENET},  # D resnet_dist.yaml: kd 'dist'
    "ImageNet/r50_mv1/dist.yaml": {**_DIST_IMAGENET, "MODEL.STUDENT": "mobilenet_v1"},
    "CIFAR-100/dist/res110_res32.yaml": {**_DIST_CIFAR, "LR": 0.05},
    "CIFAR-100/dist/res32x4_res8x4.yaml": {**_DIST_CIFAR, "LR": 0.05},
    "CIFAR-100/dist/res32x4_shuv1.yaml": {**_DIST_CIFAR, "LR": 0.01},
    "CIFAR-100/dist/res32x4_shuv2.yaml": {**_DIST_CIFAR, "LR": 0.01},
    "CIFAR-100/dist/res50_mv2.yaml": {**_DIST_CIFAR, "LR": 0.01},
    "CIFAR-100/dist/res56_res20.yaml": {**_DIST_CIFAR, "LR": 0.05},
    "CIFAR-100/dist/vgg13_mv2.yaml": {**_DIST_CIFAR, "LR": 0.01},
    "CIFAR-100/dist/vgg13_vgg8.yaml": {**_DIST_CIFAR, "LR": 0.05},
    "CIFAR-100/dist/wrn40_2_shuv1.yaml": {**_DIST_CIFAR, "LR": 0.01},
    "CIFAR-100/dist/wrn40_2_wrn16_2.yaml": {**_DIST_CIFAR, "LR": 0.05},
    "CIFAR-100/dist/wrn40_2_wrn40_1.yaml": {**_DIST_CIFAR, "LR": 0.05},
    "COCO-Detection/dist_r101_r18.yaml": {  # MasKD dist_cascade_mask_rcnn_x101-fpn_x50_coco.py
        "MODEL.DISTILL.DIST.BETA": 1.0,
        "MODEL.DISTILL.DIST.GAMMA": 1.0,
        "MODEL.DISTILL.DIST.TAU": 1.0,
        "MODEL.DISTILL.DIST.WEIGHT": 1.0,
        "MODEL.DISTILL.WARMUP_ITERS": 0,
    },
    "COCO-Detection/dist_retinanet_r101_r18.yaml": {  # MasKD dist_retinanet_x101-...coco.py
        "MODEL.DISTILL.DIST.BETA": 1.0,
        "MODEL.DISTILL.DIST.GAMMA": 1.0,
        "MODEL.DISTILL.DIST.TAU": 1.0,
        "MODEL.DISTILL.DIST.WEIGHT": 1.0,
    },
    "COCO-Detection/crosskd_retinanet_r101_r18.yaml": {  # CrossKD crosskd_r18_retinanet_*.py
        "MODEL.DISTILL.CROSSKD.REUSED_HEAD_INDEX": 3,
        "MODEL.DISTILL.CROSSKD.BETA": 1.0,
        "MODEL.DISTILL.CROSSKD.CLS_WEIGHT": 1.0,
        "MODEL.DISTILL.CROSSKD.REG_WEIGHT": 1.0,
        "MODEL.DISTILL.CROSSKD.WEIGHT": 1.0,
    },
}

_SHORT = {"T": "METHOD.TEMPERATURE", "CE": "METHOD.CE_WEIGHT", "LR": "SOLVER.LR"}


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return tuple(cfg) if isinstance(cfg, (list, tuple)) else cfg


def _load(rel):
    path = os.path.join(ROOT, "configs", rel)
    if rel.startswith("COCO"):
        from luminet_det import load_config

        return load_config(path)
    from luminet_det.cls import load_config

    return load_config(path, ["MODEL.TEACHER_WEIGHTS=unused"])


@pytest.mark.parametrize("rel", sorted(RECIPES))
def test_config_equals_its_source(rel):
    cfg = _load(rel)
    for key, expected in RECIPES[rel].items():
        if key == "alpha":
            assert cfg.METHOD.WEIGHT == expected**2, rel  # the official code's alpha ** 2
        elif key == "beta":
            assert cfg.METHOD.DKD_BETA == expected and cfg.METHOD.DKD_ALPHA == 1.0, rel
        else:
            assert _get(cfg, _SHORT.get(key, key)) == expected, (rel, key)
    if rel.startswith(("CIFAR-100/luminet/", "CIFAR-100/dkd/")):  # they ramp over 20 epochs
        assert cfg.METHOD.WARMUP_EPOCHS == 20 and cfg.SOLVER.WEIGHT_DECAY == 5e-4, rel
        if "/dkd/" in rel:
            assert cfg.METHOD.TEMPERATURE == 4.0 and cfg.METHOD.CE_WEIGHT == 1.0, rel


def test_every_paper_row_config_is_in_the_table():
    import glob

    shipped = {
        os.path.relpath(p, os.path.join(ROOT, "configs"))
        for pattern in (
            "CIFAR-100/luminet/*",
            "CIFAR-100/dkd/*",
            "CIFAR-100/logitstd/*",
            "CIFAR-100/dist/*",
            "ImageNet/r34_r18/*",
            "ImageNet/r50_mv1/*",
        )
        for p in glob.glob(os.path.join(ROOT, "configs", pattern))
    }
    assert shipped <= set(RECIPES), shipped - set(RECIPES)


def test_mobilenet_v1_has_the_upstream_parameter_count():
    from luminet_det.cls import build_model

    model = build_model("mobilenet_v1", 1000)
    assert sum(p.numel() for p in model.parameters()) == 4_231_976  # M mobilenetv1.py
    assert [k for k in model.state_dict() if k.startswith("fc.")] == ["fc.weight", "fc.bias"]
