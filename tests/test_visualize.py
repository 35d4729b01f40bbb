"""The numbers behind each picture and report, and that each PNG is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from luminet_det.losses import perception
from luminet_det.visualize import (
    calibration_report,
    confirmation_bias_report,
    per_class_error,
    perception_figure,
    plot_metrics,
)


def _png_ok(path):
    assert os.path.isfile(path) and os.path.getsize(path) > 1000
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_perception_figure_plots_perception_of_the_inputs(tmp_path):
    torch.manual_seed(0)
    logits = torch.randn(16, 12) * torch.arange(1, 13.0)
    out = perception_figure(logits, 3, str(tmp_path / "p.png"), temperature=2.0)
    _png_ok(tmp_path / "p.png")
    np.testing.assert_allclose(out["raw"], logits[3].numpy())
    np.testing.assert_allclose(out["perception"], perception(logits)[3].numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        out["softmax_perception"], torch.softmax(perception(logits)[3] / 2.0, 0).numpy(), rtol=1e-6
    )
    top = np.argsort(-logits[3].numpy())[:10]
    assert list(out["top10"]) == list(top)
    assert out["relation_raw"][0, 1] == pytest.approx(float(logits[3, top[0]] - logits[3, top[1]]))
    with pytest.raises(ValueError, match="at least 2 rows"):
        perception_figure(logits[:1], 0, str(tmp_path / "x.png"))


def test_plot_metrics_reads_detectron2_and_cls_metrics(tmp_path):
    det = tmp_path / "det"
    det.mkdir()
    rows = [
        {"iteration": 19, "total_loss": 1.5, "loss_cls": 0.7, "loss_luminet": 0.3},
        {"iteration": 39, "total_loss": 1.0, "loss_cls": 0.5, "loss_luminet": 0.2},
        {"iteration": 39, "bbox/AP": 12.5, "bbox/AP50": 30.0},
    ]
    (det / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))
    cls = tmp_path / "cls.json"
    cls.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"epoch": 0, "teacher_top1": 90.0},
                {"epoch": 1, "loss": 2.0, "top1": 40.0},
                {"epoch": 2, "loss": 1.0, "top1": 60.0},
            ]
        )
    )
    out = plot_metrics({"det": str(det), "cls": str(cls)}, str(tmp_path / "m.png"))
    _png_ok(tmp_path / "m.png")
    assert out["det"]["loss_luminet"] == [(19, 0.3), (39, 0.2)]
    assert out["det"]["bbox/AP"] == [(39, 12.5)]
    assert out["cls"]["top1"] == [(1, 40.0), (2, 60.0)]
    (tmp_path / "bad.json").write_text('{"iteration": 1}\n{oops\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        plot_metrics({"bad": str(tmp_path / "bad.json")}, str(tmp_path / "b.png"))


def test_per_class_error_and_confirmation_bias_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 2])
    # teacher: class 0 1/2 wrong, class 1 2/2 wrong, class 2 1/4 wrong
    t_pred = torch.tensor([0, 1, 0, 2, 2, 2, 2, 0])
    # student: class 0 0/2 wrong, class 1 1/2 wrong, class 2 2/4 wrong
    s_pred = torch.tensor([0, 0, 1, 0, 2, 2, 1, 1])
    onehot = lambda p: torch.nn.functional.one_hot(p, 3).float()  # noqa: E731
    np.testing.assert_allclose(per_class_error(onehot(t_pred), labels, 3), [50.0, 100.0, 25.0])
    table = confirmation_bias_report((onehot(t_pred), labels), {"S": (onehot(s_pred), labels)}, 2)
    lines = table.splitlines()
    assert lines[2] == "| 1 | 100.0 | 50.0 |"  # worst teacher class first
    assert lines[3] == "| 0 | 50.0 | 0.0 |"
    assert lines[4] == "| mean of these | 75.0 | 25.0 |"


def test_calibration_report_table_and_png(tmp_path):
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.55, 0.45], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 0, 1])
    table = calibration_report({"m": (probs.log(), labels)}, str(tmp_path / "r.png"))
    _png_ok(tmp_path / "r.png")
    assert "| m | 75.00 | 42.50 | 45.00 |" in table  # values worked out in test_cls


def test_cls_report_tool_on_the_builtin_set(tmp_path, root_dir):
    from luminet_det.cls import build_model

    paths = {}
    for name, arch, seed in (("t", "resnet20", 0), ("s", "resnet8", 1)):
        torch.manual_seed(seed)
        paths[name] = str(tmp_path / f"{name}.pth")
        torch.save({"model": build_model(arch, 10).state_dict()}, paths[name])
    stem = str(tmp_path / "report")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(root_dir, "tools", "cls_report.py"),
            "--data",
            "digits",
            "--teacher",
            f"resnet20={paths['t']}",
            "--student",
            f"S=resnet8={paths['s']}",
            "--output",
            stem,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = open(stem + ".md").read()
    assert "## Calibration" in md and "teacher's 5 worst classes" in md
    _png_ok(stem + "_reliability.png")


def test_last_box_ap_is_the_last_row_with_a_box_ap(tmp_path):
    from luminet_det.runio import last_box_ap

    rows = [{"iteration": 9, "bbox/AP": 1.5}, {"iteration": 19, "total_loss": 2.0}]
    rows += [{"iteration": 19, "bbox/AP": 7.25}, {"iteration": 20, "lr": 0.1}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert last_box_ap(str(tmp_path)) == {"iteration": 19, "bbox/AP": 7.25}
    assert last_box_ap(str(tmp_path / "metrics.json"))["bbox/AP"] == 7.25
    assert last_box_ap(str(tmp_path / "absent")) is None
    (tmp_path / "metrics.json").write_text(json.dumps(rows[1]) + "\n")
    assert last_box_ap(str(tmp_path)) is None
