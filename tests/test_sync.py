"""Distillation waits for the device at most once per training step: the operations that force
a device-to-host synchronisation on CUDA (``aten._local_scalar_dense``: ``.item()``, ``bool()``,
``int()`` of a tensor) are counted with a dispatch mode on CPU in one step (forward + backward),
distilled and stock, and the difference is pinned for each meta-architecture and each loss. The
one left is the combined finiteness check of the distillation terms."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from tiny import batch, distill_cfg, save_teacher, tiny_cfg, tiny_retinanet_cfg
from torch.utils._python_dispatch import TorchDispatchMode


class SyncCounter(TorchDispatchMode):
    """Counts the reads of a tensor's value by the host."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_step(model, inputs, iteration=5):
    """Syncs of one training step (forward and backward) at a non-logging iteration, after one
    step that fills what is computed once."""
    model.train()
    counts = []
    for _ in range(2):
        with EventStorage(iteration):
            torch.manual_seed(0)
            with SyncCounter() as counter:
                losses = model(inputs)
                sum(losses.values()).backward()
        counts.append(counter.count)
    return counts[-1]


def _cascade(cfg):
    cfg.MODEL.ROI_HEADS.NAME = "CascadeROIHeads"
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = True
    cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS = [0.5, 0.6, 0.7]
    return cfg


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("teachers")
    return {
        "rcnn": save_teacher(tmp, name="rcnn"),
        "cascade": save_teacher(tmp, _cascade(tiny_cfg()), name="cascade"),
        "retinanet": save_teacher(tmp, tiny_retinanet_cfg(depth=34), name="retinanet"),
    }


def _stock(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


@pytest.mark.parametrize(
    "losses,stats",
    [
        (["luminet"], "batch"),
        (["luminet"], "running"),
        (["luminet"], "sync"),
        (["kd"], "batch"),
        (["dkd"], "batch"),
        (["logitstd"], "batch"),
        (["reviewkd"], "batch"),
        (["luminet", "kd", "dkd"], "batch"),
    ],
)
def test_distill_rcnn_adds_one_sync_per_step(teachers, losses, stats):
    cfg = distill_cfg(*teachers["rcnn"], losses=losses)
    cfg.MODEL.DISTILL.LUMINET.STATS = stats
    stock = count_step(_stock(tiny_cfg()), batch())
    assert count_step(_stock(cfg), batch()) - stock == 1


def test_distill_rcnn_with_global_statistics_adds_one_sync_per_step(teachers):
    cfg = distill_cfg(*teachers["rcnn"], losses=["luminet"])
    cfg.MODEL.DISTILL.LUMINET.STATS = "global"
    model = _stock(cfg)
    model.logit_losses["luminet"].accumulate_teacher_stats(torch.randn(20, 4))
    assert count_step(model, batch()) - count_step(_stock(tiny_cfg()), batch()) == 1


def test_cascade_student_adds_one_sync_per_step_off_the_logging_iterations(teachers):
    cfg = _cascade(distill_cfg(*teachers["cascade"], losses=["luminet", "dkd"]))
    stock = count_step(_stock(_cascade(tiny_cfg())), batch())
    model = _stock(cfg)
    assert count_step(model, batch()) - stock == 1
    # on a logging iteration each stage's value is read back to be written (2 losses x 3)
    assert count_step(model, batch(), iteration=19) - stock == 1 + 6


@pytest.mark.parametrize("losses", [["luminet"], ["kd"], ["luminet", "kd"]])
def test_distill_retinanet_adds_one_sync_per_step(teachers, losses):
    cfg = tiny_retinanet_cfg()
    cfg.MODEL.META_ARCHITECTURE = "DistillRetinaNet"
    cfg.MODEL.DISTILL.TEACHER_CONFIG, cfg.MODEL.DISTILL.TEACHER_WEIGHTS = teachers["retinanet"]
    cfg.MODEL.DISTILL.LOSSES = losses
    stock = count_step(_stock(tiny_retinanet_cfg()), batch())
    assert count_step(_stock(cfg), batch()) - stock == 1


@pytest.mark.parametrize("method", ["kd", "dkd", "logitstd", "luminet"])
def test_classifier_distillation_adds_no_sync_to_its_step(method, tmp_path):
    from luminet_det.cls import build_model as build_cls
    from luminet_det.cls import load_config
    from luminet_det.cls.engine import Trainer

    teacher = tmp_path / "t.pth"
    torch.save({"model": build_cls("resnet8", 10).state_dict()}, teacher)

    def step_syncs(name):
        cfg = load_config(
            "",
            [
                "DATA.NAME=digits",
                "DATA.NUM_WORKERS=0",
                "MODEL.STUDENT=resnet8",
                "MODEL.TEACHER=resnet8",
                f"MODEL.TEACHER_WEIGHTS={teacher}",
                f"METHOD.NAME={name}",
                f"OUTPUT_DIR={tmp_path / name}",
            ],
        )
        trainer = Trainer(cfg, progress=False)
        x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
        with SyncCounter() as counter:
            loss, ce, distill = trainer.losses(x, y)
            trainer._ensure_finite(loss, ce, distill, 1, 0)
            loss.backward()
        return counter.count

    assert step_syncs("ce") == 1  # the finiteness check
    assert step_syncs(method) == 1
