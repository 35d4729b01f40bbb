"""The package's boundaries and its one loss interface (the redesign's promises)."""

import ast
import os
import subprocess
import sys

import pytest
import torch

from luminet_det.losses import (
    DKDLoss,
    KDLoss,
    LogitLoss,
    LuminetLoss,
    build_logit_loss,
    dkd_loss,
    kd_loss,
    logit_loss_names,
    luminet_loss,
)
from luminet_det.runio import atomic_write

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "luminet_det")


def _python(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# ------------------------------------------------------------------------------ the loss API
def test_every_logit_loss_builds_by_name_and_equals_its_function():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(12, 5, generator=g), torch.randn(12, 5, generator=g) * 2
    y = torch.randint(0, 5, (12,), generator=g)
    expected = {
        "kd": (KDLoss, kd_loss(s, t, 2.0)),
        "dkd": (DKDLoss, dkd_loss(s, t, y, 1.0, 8.0, 2.0)),
        "luminet": (LuminetLoss, luminet_loss(s, t, 2.0)),
    }
    assert set(expected) <= set(logit_loss_names())
    for name, (cls, value) in expected.items():
        loss = build_logit_loss(name, temperature=2.0, num_classes=5)
        assert type(loss) is cls and isinstance(loss, LogitLoss)
        assert loss(s, t, y).item() == pytest.approx(value.item(), rel=1e-6)


def test_unknown_names_and_arguments_are_refused_with_what_is_valid():
    valid = r"\['kd', 'logitstd', 'dkd', 'luminet', 'kd_sigmoid', 'luminet_sigmoid'\]"
    with pytest.raises(ValueError, match=r"'kdd'.*" + valid):
        build_logit_loss("kdd")
    with pytest.raises(ValueError, match=r"'kd' loss takes no argument \['beta'\].*temperature"):
        build_logit_loss("kd", beta=2.0)
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        build_logit_loss("luminet", temperature=0.0)
    with pytest.raises(ValueError, match="STATS must be one of"):
        build_logit_loss("luminet", stats="median")
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        build_logit_loss("dkd", alpha=-1.0)


def test_wrong_class_count_and_missing_targets_are_refused():
    loss = build_logit_loss("kd", num_classes=4)
    with pytest.raises(ValueError, match="built for 4 logit columns"):
        loss(torch.zeros(2, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="needs the targets"):
        build_logit_loss("dkd")(torch.zeros(2, 5), torch.zeros(2, 5))


# ------------------------------------------------------------------------------ boundaries
def _imports(path):
    """Absolute module names a file imports (relative imports resolved)."""
    rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].split(os.sep)
    package = rel[:-1] if rel[-1] != "__init__" else rel[:-1]
    names = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def _files(*parts):
    root = os.path.join(PKG, *parts)
    if root.endswith(".py"):
        return [root]
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".py")]


def test_the_core_imports_nothing_else_of_the_package():
    for path in _files("losses") + _files("metrics.py"):
        inside = [n for n in _imports(path) if n.startswith("luminet_det")]
        bad = [n for n in inside if not n.startswith(("luminet_det.losses", "luminet_det.metrics"))]
        assert not bad, f"{path} imports {bad}"
        assert not any(n.startswith("detectron2") for n in _imports(path)), path


def test_the_detector_library_never_imports_the_classifier():
    files = [p for p in _files() if os.sep + "cls" + os.sep not in p]
    for path in files:
        bad = [n for n in _imports(path) if n.startswith("luminet_det.cls")]
        assert not bad, f"{path} imports {bad}"


def test_import_cls_and_core_load_no_detectron2():
    proc = _python(
        "import sys, luminet_det.cls, luminet_det.losses, luminet_det.metrics\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'detectron2'))"
    )
    assert proc.stdout.strip() == "[]"


def test_import_luminet_det_registers_the_plugin_when_detectron2_loads_and_warns_nothing():
    code = (
        "import luminet_det\n"
        "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY\n"
        "from detectron2.data import DatasetCatalog\n"
        "assert 'DistillRCNN' in META_ARCH_REGISTRY\n"
        "assert 'build_mobilenetv2_fpn_backbone' in BACKBONE_REGISTRY\n"
        "assert 'digits_det_train' in DatasetCatalog.list()\n"
        "import detectron2  # its own loader back, not the plugin's wrapper\n"
        "assert type(detectron2.__loader__).__name__ == 'SourceFileLoader'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FutureWarning" not in proc.stderr, proc.stderr
    # whichever module of ours imports detectron2 first, the plugin ends up registered
    for first in (
        "from luminet_det import load_config",
        "from luminet_det.config import add_luminet_config",
        "import luminet_det.engine",
        "from luminet_det.data import register_coco_detection",
        "from luminet_det.testing import toy_batch",
    ):
        _python(
            f"{first}\nfrom detectron2.modeling import META_ARCH_REGISTRY\n"
            "from detectron2.data import DatasetCatalog\n"
            "assert 'DistillRCNN' in META_ARCH_REGISTRY, 'not registered'\n"
            "assert 'digits_det_val' in DatasetCatalog.list()"
        )
    # detectron2 imported first: registered at `import luminet_det`
    _python(
        "import detectron2.modeling, luminet_det\n"
        "assert 'DistillRCNN' in detectron2.modeling.META_ARCH_REGISTRY"
    )


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_only_on_success(tmp_path):
    path = tmp_path / "f.txt"
    with atomic_write(str(path)) as f:
        f.write("one")
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_write(str(path)) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "one" and sorted(os.listdir(tmp_path)) == ["f.txt"]
    with pytest.raises(ValueError, match="writing mode"):
        with atomic_write(str(path), "r"):
            pass
