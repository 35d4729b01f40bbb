"""Half precision: the frozen teacher under autocast (MODEL.DISTILL.TEACHER_DTYPE /
MODEL.TEACHER_DTYPE) with its outputs handed to the losses in float32; the student's own mixed
precision region with the distillation losses kept in float32; clear errors for what cannot
run. On CPU (bfloat16, float16 where the operators have kernels); CUDA in tests/gpu."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch, distill_cfg, save_teacher, tiny_retinanet_cfg

from luminet_det.precision import check_dtype, teacher_precision, to_float32


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    return save_teacher(tmp_path_factory.mktemp("t"))


def _model(teacher_files, dtype, losses=("luminet", "kd", "dkd")):
    cfg = distill_cfg(*teacher_files, losses=losses)
    cfg.MODEL.DISTILL.TEACHER_DTYPE = dtype
    torch.manual_seed(0)
    return build_model(cfg).train()


def _teacher_and_losses(model, inputs):
    with EventStorage(5):
        torch.manual_seed(42)
        _, record = model.forward_student(inputs)
        teacher = model.teacher_outputs(inputs, record)
        losses = model.distillation_losses(record, teacher)
    return teacher, losses


@pytest.mark.parametrize("dtype,tolerance", [("bfloat16", 0.1), ("float16", 0.02)])
def test_a_half_precision_teacher_gives_float32_logits_close_to_float32(
    teacher_files, dtype, tolerance
):
    """Tolerance: the largest logit difference, relative to the logits' range (bfloat16 keeps
    8 bits of mantissa, float16 11)."""
    inputs = batch()
    reference, ref_losses = _teacher_and_losses(_model(teacher_files, "float32"), inputs)
    teacher, losses = _teacher_and_losses(_model(teacher_files, dtype), inputs)
    assert teacher.logits.dtype == torch.float32
    assert all(f.dtype == torch.float32 for f in teacher.features.values())
    spread = (reference.logits.max() - reference.logits.min()).item()
    assert (teacher.logits - reference.logits).abs().max().item() <= tolerance * spread
    assert not torch.equal(teacher.logits, reference.logits)  # it did run in half precision
    for name, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
        assert value.item() == pytest.approx(ref_losses[name].item(), rel=0.2, abs=1e-3), name


def test_a_retinanet_teacher_in_bfloat16(tmp_path):
    files = save_teacher(tmp_path, tiny_retinanet_cfg(depth=34))
    cfg = tiny_retinanet_cfg()
    cfg.MODEL.META_ARCHITECTURE = "DistillRetinaNet"
    cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS = files
    cfg.MODEL.DISTILL.LOSSES = ["luminet", "kd"]
    cfg.MODEL.DISTILL.TEACHER_DTYPE = "bfloat16"
    model = build_model(cfg).train()
    with EventStorage(5):
        losses = model(batch())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_unknown_or_unsupported_dtypes_are_refused_clearly(teacher_files):
    with pytest.raises(ValueError, match=r"TEACHER_DTYPE must be one of \['float32', 'bfloat16'"):
        _model(teacher_files, "float64")
    with pytest.raises(ValueError, match="must be one of"):
        check_dtype("half", "cpu")
    # an operator without a float16 kernel on the device: a ValueError naming the key
    with pytest.raises(ValueError, match=r"MODEL.DISTILL.TEACHER_DTYPE 'float16'.*Use bfloat16"):
        with teacher_precision("float16", "cpu", "MODEL.DISTILL.TEACHER_DTYPE"):
            raise RuntimeError("\"baddbmm_cpu\" not implemented for 'Half'")
    # any other error passes through unchanged
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with teacher_precision("bfloat16", "cpu"):
            raise RuntimeError("shape mismatch")


def test_the_student_under_autocast_keeps_the_distillation_losses_in_float32(teacher_files):
    """What detectron2's AMPTrainer does on CUDA, with CPU's bfloat16: the student's forward
    in the autocast region; the distillation terms computed in float32, finite, with
    gradients into the student; a float32 teacher stays float32 inside the region."""
    model = _model(teacher_files, "float32", losses=("luminet", "kd", "dkd", "reviewkd"))
    with EventStorage(5), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(42)
        _, record = model.forward_student(batch())
        teacher = model.teacher_outputs(batch(), record)
        losses = model.distillation_losses(record, teacher)
    assert record.logits.dtype == torch.bfloat16  # the student did run in bfloat16
    assert teacher.logits.dtype == torch.float32
    for name, value in losses.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0


def test_to_float32_converts_nested_half_tensors_only():
    x = {"a": [torch.ones(2, dtype=torch.bfloat16)], "b": torch.ones(1, dtype=torch.int64)}
    out = to_float32(x)
    assert out["a"][0].dtype == torch.float32 and out["b"].dtype == torch.int64


@pytest.mark.parametrize(
    "extra",
    [
        ["MODEL.TEACHER_DTYPE=bfloat16"],
        ["SOLVER.AMP.ENABLED=True", "SOLVER.AMP.PRECISION=bfloat16"],
    ],
)
def test_the_classifier_with_a_bfloat16_teacher_or_student(extra, tmp_path):
    from luminet_det.cls import build_model as build_cls
    from luminet_det.cls import load_config
    from luminet_det.cls.engine import Trainer

    teacher = tmp_path / "t.pth"
    torch.save({"model": build_cls("resnet8", 10).state_dict()}, teacher)
    opts = [
        "DATA.NAME=digits",
        "DATA.NUM_WORKERS=0",
        "MODEL.STUDENT=resnet8",
        "MODEL.TEACHER=resnet8",
        f"MODEL.TEACHER_WEIGHTS={teacher}",
        "METHOD.NAME=luminet",
        f"OUTPUT_DIR={tmp_path / 'run'}",
    ]
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    values = []
    for options in (opts, opts + extra):
        torch.manual_seed(0)
        trainer = Trainer(load_config("", options), progress=False)
        trainer.model.eval()  # BatchNorm with its running statistics: the same in both
        values.append(trainer.losses(x, y))
    (ref, ref_ce, ref_distill), (loss, ce, distill) = values
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert distill.item() == pytest.approx(ref_distill.item(), rel=0.1)
    assert ce.item() == pytest.approx(ref_ce.item(), rel=0.05)
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION must be"):
        load_config("", ["SOLVER.AMP.PRECISION=float32"])
