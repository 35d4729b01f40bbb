"""LazyConfig (.py) teachers: detectron2's zoo "new baseline" Mask R-CNN R-50 (SyncBN, 4conv1fc
box head) and ViTDet, instantiated at a tiny size with random weights saved to a file, teach a
tiny YAML Faster R-CNN student on its own sampled ROIs; and the clear errors of a wrong class
count, missing weights, an unknown override key and a .py without a model. (MViTv2 and Swin
have no model config in detectron2's packaged zoo, only in its projects/: not tested here.)"""

import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch, distill_cfg

from luminet_det.errors import ConfigError
from luminet_det.modeling import box_logits
from luminet_det.modeling.lazy_teacher import load_lazy_teacher_cfg

_SMALL_HEADS = [
    "model.backbone.out_channels=32",
    "model.proposal_generator.head.in_channels=32",
    "model.proposal_generator.head.conv_dims=[-1]",
    "model.proposal_generator.anchor_generator.sizes=[[8],[16],[32],[64],[128]]",
    "model.proposal_generator.pre_nms_topk=[200,200]",
    "model.proposal_generator.post_nms_topk=[64,32]",
    "model.roi_heads.num_classes=3",
    "model.roi_heads.batch_size_per_image=32",
    "model.roi_heads.box_head.input_shape.channels=32",
    "model.roi_heads.box_head.conv_dims=[16,16]",
    "model.roi_heads.box_head.fc_dims=[32]",
    "model.roi_heads.box_predictor.input_shape.channels=32",
    "model.roi_heads.mask_head.input_shape.channels=32",
    "model.roi_heads.mask_head.conv_dims=[16,16]",
]
FAMILIES = {
    # the new baselines: SyncBN backbone and FPN, NaiveSyncBatchNorm 4conv1fc box head
    "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py": _SMALL_HEADS,
    # ViTDet: a plain ViT, a simple feature pyramid, LayerNorm heads, RGB input
    "common/models/mask_rcnn_vitdet.py": [
        "model.backbone.net.img_size=64",
        "model.backbone.net.embed_dim=32",
        "model.backbone.net.depth=2",
        "model.backbone.net.num_heads=2",
        "model.backbone.net.window_size=4",
        "model.backbone.net.window_block_indexes=[0]",
        "model.backbone.net.drop_path_rate=0.0",
        "model.backbone.square_pad=64",
        *_SMALL_HEADS,
    ],
}


def _save_random_teacher(tmp_path, config, opts, seed=7):
    torch.manual_seed(seed)
    model = instantiate(load_lazy_teacher_cfg(config, opts).model)
    path = str(tmp_path / f"{os.path.basename(config)}.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.mark.parametrize("config", sorted(FAMILIES), ids=lambda c: c.split("/")[0])
def test_a_lazyconfig_teacher_teaches_a_yaml_student(config, tmp_path):
    opts = FAMILIES[config]
    cfg = distill_cfg(
        config, _save_random_teacher(tmp_path, config, opts), losses=["luminet", "kd"]
    )
    cfg.MODEL.DISTILL.TEACHER_OPTS = opts
    if "vitdet" in config:
        # ViTDet pads to a square (64 px here): the student's images must fit in it
        with pytest.raises(ConfigError, match=r"pads every image to a 64 x 64 square.*1333"):
            build_model(cfg)
        cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = 64
    torch.manual_seed(0)
    model = build_model(cfg).train()
    teacher = model.teacher
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    for it in range(2):
        with EventStorage(it):
            torch.manual_seed(it)
            losses, record = model.forward_student(batch(seed=it))
            outputs = model.teacher_outputs(batch(seed=it), record)
            losses.update(model.distillation_losses(record, outputs))
        assert all(torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()
    # rows aligned: the teacher scored exactly the student's sampled ROIs
    with torch.no_grad():
        images = [dict(x, image=x["image"]) for x in batch(seed=1)]
        if teacher.input_format != cfg.INPUT.FORMAT:
            images = [dict(x, image=x["image"].flip(0)) for x in images]
        features = teacher.backbone(teacher.preprocess_image(images).tensor)
        again = box_logits(teacher, features, [p.proposal_boxes for p in record.proposals])
    torch.testing.assert_close(again, outputs.logits)
    assert all(p.grad is None for p in teacher.parameters())
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_lazyconfig_teacher_errors_name_the_file_and_the_fix(tmp_path):
    config = "new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py"
    opts = FAMILIES[config]
    weights = _save_random_teacher(tmp_path, config, opts)

    def build(teacher_opts=opts, teacher_weights=weights, teacher_config=config):
        cfg = distill_cfg(teacher_config, teacher_weights)
        cfg.MODEL.DISTILL.TEACHER_OPTS = teacher_opts
        return build_model(cfg)

    wrong = [o for o in opts if "num_classes" not in o] + ["model.roi_heads.num_classes=5"]
    with pytest.raises(ConfigError, match=r"class counts differ.*5 classes.*model.roi_heads"):
        build(teacher_opts=wrong)
    with pytest.raises(Exception, match="Teacher weights .* not found"):
        build(teacher_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match=r"has no key 'model.roi_heads.box_heads'"):
        build(teacher_opts=opts + ["model.roi_heads.box_heads.fc_dims=[8]"])
    with pytest.raises(ConfigError, match="are 'key=value' strings"):
        build(teacher_opts=["MODEL.ROI_HEADS.NUM_CLASSES", 3])
    empty = tmp_path / "no_model.py"
    empty.write_text("train = dict(max_iter=1)\n")
    with pytest.raises(ConfigError, match=r"no_model.py' defines no `model`"):
        build(teacher_config=str(empty))
    with pytest.raises(ConfigError, match="neither an existing LazyConfig file"):
        build(teacher_config="new_baselines/no_such_model.py")
