"""DistillRCNN with Cascade R-CNN and Mask R-CNN heads: per-stage distillation, combined
stages, masks that train as usual, exports that stock detectron2 loads, clear refusals."""

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch
from tiny import build as _build
from tiny import distill_cfg, save_teacher, tiny_cfg
from tiny import train_step as _train_step

from luminet_det import export_student
from luminet_det.losses import luminet_loss


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("teacher"))


def _mask_cfg(cfg):
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    return cfg


def test_mask_rcnn_student_and_teacher_distil_box_logits_and_train_masks(tmp_path):
    """Mask R-CNN on both sides: the box logits are distilled, the student's mask head trains
    as usual, and the exported student predicts in stock detectron2 exactly what DistillRCNN
    predicts (boxes, scores and masks)."""
    teacher = save_teacher(tmp_path, _mask_cfg(tiny_cfg()))
    cfg = _mask_cfg(distill_cfg(*teacher, losses=["luminet"]))
    model = _build(cfg)
    model.train()
    losses = _train_step(model, batch(masks=True))
    assert {"loss_mask", "loss_luminet"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.mask_head.predictor.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    DetectionCheckpointer(model, save_dir=str(ckpt)).save("model_final")
    weights, config = export_student(cfg, str(ckpt / "model_final.pth"), str(tmp_path / "export"))
    model.eval()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep every detection
    model.roi_heads.box_predictor.test_score_thresh = 0.0
    inputs = [{"image": x["image"], "height": 64, "width": 64} for x in batch(2, seed=5)]
    with torch.no_grad():
        expected = [o["instances"] for o in model(inputs)]
    plain = build_model(tiny_cfg_from(config))
    DetectionCheckpointer(plain).load(weights)
    plain.roi_heads.box_predictor.test_score_thresh = 0.0
    plain.eval()
    with torch.no_grad():
        got = [o["instances"] for o in plain(inputs)]
    for a, b in zip(expected, got):
        assert len(a) > 0 and len(a) == len(b)
        assert torch.equal(a.scores, b.scores) and torch.equal(
            a.pred_boxes.tensor, b.pred_boxes.tensor
        )
        assert torch.equal(a.pred_masks, b.pred_masks)


def tiny_cfg_from(path):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(path)
    assert cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and cfg.MODEL.MASK_ON
    return cfg


def _cascade(cfg, ious=(0.5, 0.6, 0.7)):
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = list(ious)
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS = [(10.0, 10.0, 5.0, 5.0)] * len(ious)
    return cfg


def _step_parts(model, inputs, iteration=19):
    """One step's parts at ``iteration`` (19: a logging iteration, see LOG_PERIOD)."""
    with EventStorage(iteration) as storage:
        torch.manual_seed(42)
        losses, record = model.forward_student(inputs)
        teacher = model.teacher_outputs(inputs, record)
        distill = model.distillation_losses(record, teacher)
    return losses, record, teacher, distill, storage


def test_cascade_to_cascade_distils_every_stage_from_the_same_teacher_stage(tmp_path):
    teacher_files = save_teacher(tmp_path, _cascade(tiny_cfg()), name="cascade")
    cfg = _cascade(distill_cfg(*teacher_files, losses=["luminet", "dkd"]))
    cfg.MODEL.DISTILL.LUMINET.WEIGHT = 2.0
    model = _build(cfg)
    model.train()
    t_heads = model.teacher.roi_heads
    pooled, used = [], []
    t_heads.box_pooler.register_forward_pre_hook(lambda m, i: pooled.append(i[1]))
    for k, predictor in enumerate(t_heads.box_predictor):
        predictor.register_forward_hook(lambda m, i, o, k=k: used.append(k))
    losses, record, teacher, distill, storage = _step_parts(model, batch())
    assert len(record.stages) == len(teacher.stage_logits) == 3
    assert {"loss_cls_stage0", "loss_cls_stage2"} <= set(losses)
    # the rows the teacher scores are the student's stage-k ROIs, scored by its stage-k head
    assert used == [0, 1, 2] and len(pooled) == 3
    for k, stage in enumerate(record.stages):
        for mine, theirs in zip(stage.boxes, pooled[k]):
            assert torch.equal(mine.tensor, theirs.tensor)
        assert stage.logits.shape == teacher.stage_logits[k].shape
    # loss_<name> is the mean over stages of the per-stage loss, each logged
    per_stage = [
        luminet_loss(s.logits, t, 4.0).item() for s, t in zip(record.stages, teacher.stage_logits)
    ]
    assert distill["loss_luminet"].item() == pytest.approx(2.0 * sum(per_stage) / 3, rel=1e-5)
    logged = storage.latest()
    for k in range(3):
        assert logged[f"loss_luminet_stage{k}"][0] == pytest.approx(2.0 * per_stage[k], rel=1e-5)
    # on the iterations detectron2 does not log, nothing is read back from the device
    *_, quiet = _step_parts(model, batch(), iteration=3)
    assert not any("_stage" in k and "luminet" in k for k in quiet.latest())
    # every stage's classifier learns from the distillation loss alone; the teacher does not
    distill["loss_luminet"].backward()
    for predictor in model.roi_heads.box_predictor:
        assert predictor.cls_score.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert not any(m.training for m in model.teacher.modules())


@pytest.mark.parametrize("combine", ["mean_logits", "mean_probs"])
def test_cascade_teacher_scores_a_plain_students_rois_with_its_stages_combined(tmp_path, combine):
    """MODEL.DISTILL.CASCADE_COMBINE "mean_logits": the mean of the three stages' logits;
    "mean_probs": logits whose softmax is the mean of their probabilities (cascade inference's
    score), centred per row."""
    teacher_files = save_teacher(tmp_path, _cascade(tiny_cfg()), name="cascade")
    cfg = distill_cfg(*teacher_files, losses=["kd"])
    cfg.MODEL.DISTILL.CASCADE_COMBINE = combine
    model = _build(cfg)
    model.train()
    _, record, teacher, distill, _ = _step_parts(model, batch())
    assert len(record.stages) == len(teacher.stage_logits) == 1
    heads = model.teacher.roi_heads
    with torch.no_grad():
        images = model.teacher.preprocess_image(batch())
        features = model.teacher.backbone(images.tensor)
        pooled = heads.box_pooler(
            [features[f] for f in heads.box_in_features], record.stages[0].boxes
        )
        logits = torch.stack(
            [heads.box_predictor[k](heads.box_head[k](pooled))[0] for k in range(3)]
        )
    assert torch.isfinite(distill["loss_kd"])
    if combine == "mean_logits":
        torch.testing.assert_close(teacher.logits, logits.mean(0))
        return
    combined = logits.softmax(2).mean(0)
    torch.testing.assert_close(teacher.logits.softmax(1), combined, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        teacher.logits.mean(1), torch.zeros(len(combined)), atol=1e-5, rtol=0
    )


def test_an_unknown_cascade_combination_is_refused_naming_the_allowed_ones(teacher_files):
    cfg = distill_cfg(*teacher_files)
    cfg.MODEL.DISTILL.CASCADE_COMBINE = "mean"
    with pytest.raises(
        ValueError,
        match=r"CASCADE_COMBINE must be one of \['mean_logits', 'mean_probs'\], got 'mean'",
    ):
        _build(cfg)


def test_a_plain_teacher_scores_every_stage_of_a_cascade_student(teacher_files):
    model = _build(_cascade(distill_cfg(*teacher_files, losses=["kd"])))
    model.train()
    calls = []
    model.teacher.roi_heads.box_predictor.register_forward_hook(lambda m, i, o: calls.append(o[0]))
    _, record, teacher, distill, _ = _step_parts(model, batch())
    assert len(calls) == len(teacher.stage_logits) == len(record.stages) == 3
    for mine, theirs in zip(teacher.stage_logits, calls):
        assert torch.equal(mine, theirs)


def test_unsupported_heads_and_combinations_are_refused_naming_what_is_supported(
    teacher_files, tmp_path
):
    from luminet_det.errors import ConfigError
    from luminet_det.modeling import require_box_branch

    with pytest.raises(ValueError, match=r"student's ROI heads \(Module\) have no \['box_pooler'"):
        require_box_branch(torch.nn.Module(), "student")
    two = save_teacher(tmp_path, _cascade(tiny_cfg(), ious=(0.5, 0.6)), name="two")
    with pytest.raises(ConfigError, match="has 2 stages and the Cascade student 3"):
        _build(_cascade(distill_cfg(*two)))
    cfg = _cascade(distill_cfg(*teacher_files))
    cfg.MODEL.DISTILL.LUMINET.STATS = "running"
    with pytest.raises(ConfigError, match="use 'batch' or 'sync' with CascadeROIHeads"):
        _build(cfg)


def test_exported_cascade_student_predicts_what_distillrcnn_predicts(teacher_files, tmp_path):
    cfg = _cascade(distill_cfg(*teacher_files, losses=["luminet"]))
    model = _build(cfg, seed=4)
    (tmp_path / "run").mkdir()
    DetectionCheckpointer(model, save_dir=str(tmp_path / "run")).save("model_final")
    weights, config = export_student(
        cfg, str(tmp_path / "run" / "model_final.pth"), str(tmp_path / "x")
    )
    from detectron2.config import get_cfg

    plain_cfg = get_cfg()
    plain_cfg.merge_from_file(config)
    assert plain_cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    plain = build_model(plain_cfg)
    DetectionCheckpointer(plain).load(weights)
    inputs = [{"image": x["image"], "height": 64, "width": 64} for x in batch(2, seed=6)]
    for m in (model, plain):
        m.eval()
        for predictor in m.roi_heads.box_predictor:
            predictor.test_score_thresh = 0.0  # random weights: keep every detection
    with torch.no_grad():
        a, b = model(inputs), plain(inputs)
    for x, y in zip(a, b):
        assert len(x["instances"]) > 0
        assert torch.equal(x["instances"].scores, y["instances"].scores)
        assert torch.equal(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)
