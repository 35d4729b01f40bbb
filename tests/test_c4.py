"""C4 models (Res5ROIHeads, detectron2's `*_C4_*` zoo configs): a C4 teacher scores the
sampled ROIs of an FPN student with its res5 head, and the reverse; a distilled C4 student
exports to stock detectron2 and predicts identically."""

import pytest
import torch
from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch, save_teacher, tiny_cfg

from luminet_det import add_luminet_config, export_student
from luminet_det.modeling import box_logits


def tiny_c4_cfg(num_classes=3):
    """detectron2's Base-RCNN-C4.yaml at a tiny size: R-50 trunk to res4, the res5 stage in the
    ROI head, 64 px images, CPU, from scratch."""
    cfg = get_cfg()
    add_luminet_config(cfg)
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-C4.yaml"))
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 128  # a slim R-50: res4 512, res5 1024 channels
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 32
    cfg.MODEL.RESNETS.NORM = "GN"  # random weights stay in range through the 16 blocks
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[16, 32]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200, 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST, cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 200, 32
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    return cfg


def _distill(student_cfg, teacher_files, losses=("luminet", "kd", "dkd")):
    cfg = student_cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "DistillRCNN"
    cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teacher_files
    cfg.MODEL.DISTILL.LOSSES = list(losses)
    torch.manual_seed(0)
    return build_model(cfg).train()


def _step(model, it=5):
    with EventStorage(it):
        torch.manual_seed(42)
        losses, record = model.forward_student(batch())
        teacher = model.teacher_outputs(batch(), record)
        losses.update(model.distillation_losses(record, teacher))
    return losses, record, teacher


@pytest.mark.parametrize("direction", ["C4 teacher -> FPN student", "FPN teacher -> C4 student"])
def test_c4_and_fpn_teach_each_other_on_the_students_rois(direction, tmp_path):
    c4_teacher = direction.startswith("C4")
    teacher_cfg, student_cfg = (
        (tiny_c4_cfg(), tiny_cfg()) if c4_teacher else (tiny_cfg(), tiny_c4_cfg())
    )
    model = _distill(student_cfg, save_teacher(tmp_path, teacher_cfg))
    assert (type(model.teacher.roi_heads).__name__ == "Res5ROIHeads") == c4_teacher
    losses, record, teacher = _step(model)
    # the teacher scored exactly the student's sampled ROIs, row by row
    assert teacher.logits.shape == record.logits.shape and record.logits.shape[1] == 4
    assert record.logits.shape[0] >= 4  # the sampled proposals and the ground truth boxes
    with torch.no_grad():
        images = model.teacher.preprocess_image(
            [dict(x, image=x["image"]) for x in batch()]  # both BGR here
        )
        features = model.teacher.backbone(images.tensor)
        again = box_logits(model.teacher, features, [p.proposal_boxes for p in record.proposals])
    torch.testing.assert_close(again, teacher.logits)
    for name in ("loss_luminet", "loss_kd", "loss_dkd"):
        assert torch.isfinite(losses[name]) and losses[name].item() > 0, name
    sum(losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_a_distilled_c4_student_exports_and_predicts_as_stock_detectron2(tmp_path):
    cfg = tiny_c4_cfg()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = _distill(cfg, save_teacher(tmp_path, tiny_c4_cfg(), name="c4"))
    losses, *_ = _step(model)
    sum(losses.values()).backward()
    torch.save({"model": model.state_dict()}, tmp_path / "m.pth")
    dcfg = model_cfg = cfg.clone()
    dcfg.MODEL.META_ARCHITECTURE = "DistillRCNN"
    dcfg.MODEL.DISTILL.TEACHER_CONFIG = str(tmp_path / "c4.yaml")
    weights, config = export_student(dcfg, str(tmp_path / "m.pth"), str(tmp_path / "export"))
    stock_cfg = get_cfg()
    stock_cfg.merge_from_file(config)
    stock = build_model(stock_cfg).eval()
    DetectionCheckpointer(stock).load(weights)
    model.eval()
    image = batch()[0]["image"]
    with torch.no_grad():
        mine = model([{"image": image}])[0]["instances"]
        theirs = stock([{"image": image}])[0]["instances"]
    assert type(stock.roi_heads).__name__ == "Res5ROIHeads" and len(theirs) > 0
    torch.testing.assert_close(mine.pred_boxes.tensor, theirs.pred_boxes.tensor)
    torch.testing.assert_close(mine.scores, theirs.scores)
    del model_cfg
