"""The CUDA lane: what only a GPU can show. Skipped, with the reason, where
``torch.cuda.is_available()`` is false (run it with scripts/gpu_check.sh on a GPU machine).

A training step of each meta-architecture and of the classifier with teacher and student on
the device, with mixed precision and each teacher dtype; the losses equal their CPU values;
no synchronisation inside the distillation path but the one finiteness check (caught with
``torch.cuda.set_sync_debug_mode``); a student trained on CUDA exports and predicts the same on
the CPU."""

import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU (the CUDA lane; scripts/gpu_check.sh runs it on a GPU machine)",
)

from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from tiny import batch, distill_cfg, save_teacher, tiny_cfg, tiny_retinanet_cfg  # noqa: E402

from luminet_det.losses import build_logit_loss  # noqa: E402


def _cascade(cfg):
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = [0.5, 0.6, 0.7]
    return cfg


def _configs(tmp_path):
    rcnn = distill_cfg(*save_teacher(tmp_path, name="rcnn"), losses=["luminet", "kd", "dkd"])
    cascade = _cascade(
        distill_cfg(*save_teacher(tmp_path, _cascade(tiny_cfg()), name="c"), losses=["luminet"])
    )
    retina = tiny_retinanet_cfg()
    retina.MODEL.META_ARCHITECTURE = "DistillRetinaNet"
    teacher = save_teacher(tmp_path, tiny_retinanet_cfg(depth=34), name="r")
    retina.MODEL.DISTILL.TEACHER_CONFIG, retina.MODEL.DISTILL.TEACHER_WEIGHTS = teacher
    retina.MODEL.DISTILL.LOSSES = ["luminet", "kd"]
    return {"rcnn": rcnn, "cascade": cascade, "retinanet": retina}


def _on_cuda(cfg, dtype="float32"):
    cfg = cfg.clone()
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.DISTILL.TEACHER_DTYPE = dtype
    torch.manual_seed(0)
    return build_model(cfg).train()


def _cuda_batch():
    return [dict(x, image=x["image"].cuda()) for x in batch()]


@pytest.mark.parametrize("arch", ["rcnn", "cascade", "retinanet"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("amp", [False, True])
def test_a_training_step_on_cuda(arch, dtype, amp, tmp_path):
    model = _on_cuda(_configs(tmp_path)[arch], dtype)
    assert next(model.teacher.parameters()).is_cuda and next(model.backbone.parameters()).is_cuda
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    with EventStorage(5), torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        losses = model(_cuda_batch())
    for name, value in losses.items():
        assert torch.isfinite(value), name
        if name in ("loss_luminet", "loss_kd", "loss_dkd"):
            assert value.dtype == torch.float32, name  # computed outside the autocast region
    scaler.scale(sum(losses.values())).backward()
    assert all(p.grad is None for p in model.teacher.parameters())


@pytest.mark.parametrize("name", ["luminet", "kd", "dkd", "logitstd"])
def test_softmax_losses_equal_their_cpu_values(name):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(256, 81, generator=g) * 3, torch.randn(256, 81, generator=g) * 3
    y = torch.randint(0, 81, (256,), generator=g)
    loss = build_logit_loss(name, num_classes=81)
    cpu = loss(s, t, y)
    gpu = loss.cuda()(s.cuda(), t.cuda(), y.cuda())
    assert gpu.item() == pytest.approx(cpu.item(), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["luminet_sigmoid", "kd_sigmoid"])
def test_sigmoid_losses_equal_their_cpu_values(name):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(700, 80, generator=g), torch.randn(700, 80, generator=g)
    y = torch.full((700,), 80)
    y[:50] = 3
    loss = build_logit_loss(name, num_classes=80)
    assert loss(s.cuda(), t.cuda(), y.cuda()).item() == pytest.approx(
        loss(s, t, y).item(), rel=1e-4
    )


@pytest.mark.parametrize("arch", ["rcnn", "cascade", "retinanet"])
def test_the_distillation_path_synchronises_once(arch, tmp_path):
    """set_sync_debug_mode("warn") warns at every synchronising CUDA call; inside the losses
    of distillation only the combined finiteness check may (RetinaNet: also the selection of
    the relevant anchors, a boolean mask, which needs their count)."""
    model = _on_cuda(_configs(tmp_path)[arch])
    inputs = _cuda_batch()
    with EventStorage(5):
        _, record = model.forward_student(inputs)
        teacher = model.teacher_outputs(inputs, record)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.distillation_losses(record, teacher)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) <= (2 if arch == "retinanet" else 1), [str(w.message) for w in syncs]


def test_a_cuda_trained_student_exports_and_predicts_the_same_on_cpu(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg

    from luminet_det import export_student

    cfg = _configs(tmp_path)["rcnn"]
    cfg.MODEL.DEVICE = "cuda"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = _on_cuda(cfg)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for it in range(2):
        with EventStorage(it):
            loss = sum(model(_cuda_batch()).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({"model": model.state_dict()}, tmp_path / "m.pth")
    weights, config = export_student(cfg, str(tmp_path / "m.pth"), str(tmp_path / "export"))
    stock_cfg = get_cfg()
    stock_cfg.merge_from_file(config)
    image = batch()[0]["image"]
    outputs = {}
    for device in ("cuda", "cpu"):
        stock_cfg.MODEL.DEVICE = device
        stock = build_model(stock_cfg).eval()
        DetectionCheckpointer(stock).load(weights)
        with torch.no_grad():
            outputs[device] = stock([{"image": image.to(device)}])[0]["instances"].to("cpu")
    torch.testing.assert_close(outputs["cuda"].scores, outputs["cpu"].scores, atol=1e-3, rtol=0)


def test_the_classifier_trains_on_cuda_with_amp_and_a_half_teacher(tmp_path):
    from luminet_det.cls import build_model as build_cls
    from luminet_det.cls import load_config
    from luminet_det.cls.engine import Trainer

    teacher = tmp_path / "t.pth"
    torch.save({"model": build_cls("resnet8", 10).state_dict()}, teacher)
    for extra in (["SOLVER.AMP.ENABLED=True"], ["MODEL.TEACHER_DTYPE=float16"]):
        cfg = load_config(
            "",
            [
                "DATA.NAME=digits",
                "DATA.NUM_WORKERS=0",
                "DEVICE=cuda",
                "MODEL.STUDENT=resnet8",
                "MODEL.TEACHER=resnet8",
                f"MODEL.TEACHER_WEIGHTS={teacher}",
                "MODEL.TEACHER_MIN_TOP1=0.0",
                "METHOD.NAME=luminet",
                "SOLVER.EPOCHS=1",
                f"OUTPUT_DIR={tmp_path / 'run'}",
                *extra,
            ],
        )
        result = Trainer(cfg, progress=False).train_epoch(1)
        assert all(v == v and abs(v) < float("inf") for v in result.values()), result
