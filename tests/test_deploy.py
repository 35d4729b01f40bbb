"""Deployable students: TorchScript (and ONNX where onnxruntime is installed) traced from the
exported stock student give the detectron2 student's boxes, classes, scores (and masks) on the
built-in set's images, also at an image size other than the traced one; luminet-export writes
them, and the TorchScript file runs with torch and torchvision alone (torch.jit.load)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import detection_utils as utils
from detectron2.modeling import build_model
from tiny import distill_cfg, save_teacher, tiny_cfg, tiny_retinanet_cfg

from luminet_det.data import generate_digits_detection
from luminet_det.data.digits import digits_paths
from luminet_det.deploy import save_onnx, save_torchscript, traceable


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three of the built-in set's validation images (128 px), and the middle one at 96 x 112
    (another size than the one traced)."""
    root = str(tmp_path_factory.mktemp("digits"))
    generate_digits_detection(root, num_train=1, num_val=3, seed=5)
    _, image_root = digits_paths(root, "val")
    files = sorted(os.listdir(image_root))
    out = [utils.read_image(os.path.join(image_root, f), format="BGR") for f in files]
    tensors = [torch.as_tensor(np.ascontiguousarray(im.transpose(2, 0, 1))).float() for im in out]
    tensors[1] = torch.nn.functional.interpolate(tensors[1][None], (96, 112))[0]
    return tensors, [os.path.join(image_root, f) for f in files]


def _cascade(cfg):
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = (0.5, 0.6, 0.7)
    return cfg


def _mask(cfg):
    cfg.MODEL.MASK_ON = True
    return cfg


def _student(kind):
    if kind == "retinanet":
        cfg = tiny_retinanet_cfg(num_classes=10)
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    else:
        cfg = tiny_cfg(num_classes=10)
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # random weights: keep every detection
        cfg = {"faster": lambda c: c, "mask": _mask, "cascade": _cascade}[kind](cfg)
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _reference(model, image):
    with torch.no_grad():
        adapter, names = traceable(model, image)
        return dict(zip(names, adapter(image)))


def _assert_same(got, ref, atol=1e-4):
    assert set(got) == set(ref)
    assert ref["pred_boxes"].shape[0] > 0  # something to compare
    torch.testing.assert_close(got["pred_classes"], ref["pred_classes"])
    for key in set(ref) - {"pred_classes"}:
        torch.testing.assert_close(got[key].float(), ref[key].float(), atol=atol, rtol=1e-4)


# torch 2.14 deprecates TorchScript in favour of torch.export; the TorchScript format is what the
# user asks for with --format torchscript (docs/deploy.md)
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("kind", ["faster", "mask", "cascade", "retinanet"])
def test_torchscript_student_equals_the_detectron2_student(kind, images, tmp_path):
    model = _student(kind)
    path = str(tmp_path / "student.ts")
    names = save_torchscript(model, images[0][0], path)
    assert names[:2] == ["pred_boxes", "pred_classes"] and names[-2:] == ["scores", "image_size"]
    assert ("pred_masks" in names) == (kind == "mask")
    loaded = torch.jit.load(path)
    for image in images[0]:
        with torch.no_grad():
            got = dict(zip(names, loaded(image)))
        _assert_same(got, _reference(model, image))
    # and the detectron2 student's own predictions are those boxes (R-CNN: before the
    # optional rescaling to "height" / "width", which is not asked for here)
    with torch.no_grad():
        stock = model([{"image": images[0][2]}])[0]["instances"]
        traced = dict(zip(names, loaded(images[0][2])))
    torch.testing.assert_close(traced["scores"], stock.scores)
    torch.testing.assert_close(traced["pred_boxes"], stock.pred_boxes.tensor, atol=1e-3, rtol=0)


@pytest.mark.parametrize("kind", ["faster", "retinanet"])
def test_onnx_student_equals_the_detectron2_student_in_onnxruntime(kind, images, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    model = _student(kind)
    path = str(tmp_path / "student.onnx")
    names = save_onnx(model, images[0][0], path)
    session = ort.InferenceSession(path)
    for image in images[0]:
        got = dict(zip(names, map(torch.as_tensor, session.run(None, {"image": image.numpy()}))))
        _assert_same(got, _reference(model, image), atol=1e-3)


def test_the_export_command_writes_a_torchscript_student_that_runs_without_detectron2(
    images, tmp_path
):
    from luminet_det.cli.export import main

    teacher = save_teacher(tmp_path, tiny_cfg(num_classes=10))
    cfg = distill_cfg(*teacher, num_classes=10)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(1)
    model = build_model(cfg)
    torch.save({"model": model.state_dict(), "iteration": 0}, tmp_path / "model_final.pth")
    config = tmp_path / "train.yaml"
    config.write_text(cfg.dump())
    out = tmp_path / "export"
    argv = ["--config-file", str(config), "--checkpoint", str(tmp_path / "model_final.pth")]
    argv += ["--output", str(out), "--format", "torchscript", "--sample-image", images[1][0]]
    assert main(argv) == 0
    assert sorted(os.listdir(out)) == [
        "student.deploy.json",
        "student.pth",
        "student.ts",
        "student.yaml",
    ]
    info = json.load(open(out / "student.deploy.json"))
    assert info["input"]["channel_order"] == "BGR" and info["files"] == {
        "torchscript": "student.ts"
    }
    assert info["outputs"] == ["pred_boxes", "pred_classes", "scores", "image_size"]
    # a process that imports neither detectron2 nor luminet_det: torch, and torchvision for
    # its detection operators (NMS, ROIAlign)
    torch.save(images[0][2], tmp_path / "x.pt")
    code = (
        "import sys, torch, torchvision\n"
        f"m = torch.jit.load({str(out / 'student.ts')!r})\n"
        f"boxes, classes, scores, size = m(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        "assert not [k for k in sys.modules if k.split('.')[0] in ('detectron2', 'luminet_det')]\n"
        f"torch.save((boxes, classes, scores), {str(tmp_path / 'y.pt')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    boxes, classes, scores = torch.load(tmp_path / "y.pt")
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg

    stock_cfg = get_cfg()
    stock_cfg.merge_from_file(str(out / "student.yaml"))
    stock = build_model(stock_cfg).eval()
    DetectionCheckpointer(stock).load(str(out / "student.pth"))
    ref = _reference(stock, images[0][2])
    torch.testing.assert_close(boxes, ref["pred_boxes"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(classes, ref["pred_classes"])
    torch.testing.assert_close(scores, ref["scores"], atol=1e-4, rtol=1e-4)


def test_export_errors_say_what_to_do(tmp_path, capsys):
    from luminet_det.cli.export import main

    teacher = save_teacher(tmp_path, tiny_cfg())
    cfg = distill_cfg(*teacher)
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "m.pth")
    (tmp_path / "c.yaml").write_text(cfg.dump())
    argv = ["--config-file", str(tmp_path / "c.yaml"), "--checkpoint", str(tmp_path / "m.pth")]
    argv += ["--output", str(tmp_path / "o"), "--format", "torchscript"]
    assert main(argv + ["--sample-image", str(tmp_path / "nope.png")]) == 2
    assert "--sample-image" in capsys.readouterr().err
    with pytest.raises(ValueError, match="export the student first"):
        traceable(build_model(cfg).eval(), torch.zeros(3, 64, 64))
