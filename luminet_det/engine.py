"""Training helpers used by tools/train_net.py: atomic checkpoints, teacher evaluation, and
registration of users' COCO-format datasets."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Dict, Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from torch import nn

from .data import register_coco_detection

__all__ = [
    "AtomicWritePathManager",
    "make_atomic",
    "register_user_datasets",
    "check_num_classes",
    "evaluate_teacher",
    "TeacherTooWeakError",
    "cpu_ddp",
]

logger = logging.getLogger(__name__)


class _AtomicFile:
    """A file opened for writing at ``path + ".tmp"``, renamed onto ``path`` only when the
    ``with`` block ends without an exception (so a killed writer never leaves a partial file
    under the real name)."""

    def __init__(self, path: str, mode: str):
        self._path = path
        self._tmp = f"{path}.tmp"
        self._file = open(self._tmp, mode)

    def __enter__(self):
        return self._file

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._path)
        else:
            self._file.close()
            os.remove(self._tmp)
        return False


class AtomicWritePathManager:
    """Wraps an iopath PathManager: local files opened for writing are written atomically
    (temporary file, fsync, rename); everything else is delegated unchanged."""

    def __init__(self, path_manager):
        self._pm = path_manager

    def open(self, path: str, mode: str = "r", **kwargs):
        if ("w" in mode or "x" in mode) and "://" not in str(path):
            return _AtomicFile(self._pm.get_local_path(path), mode)
        return self._pm.open(path, mode, **kwargs)

    def __getattr__(self, name):
        return getattr(self._pm, name)


def make_atomic(checkpointer: DetectionCheckpointer) -> DetectionCheckpointer:
    """Make a checkpointer write its checkpoints and ``last_checkpoint`` tag atomically: an
    interrupted save leaves only ``*.tmp`` files, never a truncated checkpoint that
    ``--resume`` would pick up (the tag is written after the checkpoint, also atomically)."""
    if not isinstance(checkpointer.path_manager, AtomicWritePathManager):
        checkpointer.path_manager = AtomicWritePathManager(checkpointer.path_manager)
    return checkpointer


def register_user_datasets(cfg: CfgNode, registrations: Sequence[Sequence[str]]) -> None:
    """Register ``(name, json_file, image_root)`` COCO-format sets and set
    ``MODEL.ROI_HEADS.NUM_CLASSES`` from their categories (all must agree)."""
    counts: Dict[str, int] = {}
    for item in registrations or ():
        if len(item) != 3:
            raise ValueError(f"--register takes NAME JSON IMAGE_ROOT, got {list(item)}")
        name, json_file, image_root = item
        if name in DatasetCatalog.list():  # e.g. registered again in the same process
            counts[name] = len(MetadataCatalog.get(name).thing_classes)
            continue
        counts[name] = len(register_coco_detection(name, json_file, image_root))
    if not counts:
        return
    if len(set(counts.values())) > 1:
        raise ValueError(f"The registered datasets have different class counts: {counts}")
    n = next(iter(counts.values()))
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != n:
        logger.warning(
            f"MODEL.ROI_HEADS.NUM_CLASSES set to {n} (from the categories of {sorted(counts)}) "
            f"instead of {cfg.MODEL.ROI_HEADS.NUM_CLASSES}."
        )
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = n


def check_num_classes(cfg: CfgNode) -> None:
    """Every dataset of DATASETS.TRAIN / TEST whose metadata lists ``thing_classes`` must have
    ``MODEL.ROI_HEADS.NUM_CLASSES`` classes."""
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            raise ValueError(
                f"Dataset {name!r} is not registered. Registered: built-in "
                "digits_det_train/digits_det_val, detectron2's COCO names (coco_2017_train, ...), "
                "or your own with --register NAME JSON IMAGE_ROOT."
            )
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(
                f"Dataset {name!r} has {len(classes)} classes but MODEL.ROI_HEADS.NUM_CLASSES is "
                f"{cfg.MODEL.ROI_HEADS.NUM_CLASSES}; set it to {len(classes)}."
            )


class TeacherTooWeakError(RuntimeError):
    """The teacher's AP on the test set is below the required minimum."""


def evaluate_teacher(cfg: CfgNode, model: nn.Module, min_ap: float = 1.0) -> Dict[str, Dict]:
    """Evaluate the teacher(s) of a built DistillRCNN on ``cfg.DATASETS.TEST[0]``, each with
    its own config (input format, test sizes) and COCO AP, and raise
    :class:`TeacherTooWeakError` if one's box AP is below ``min_ap``. Evaluates the very
    modules the student will learn from (no second build, no extra random draws). Under
    several processes the evaluation is distributed and every process takes the same decision.

    Args:
        cfg (CfgNode): the student's (DistillRCNN) config.
        model (nn.Module): the built DistillRCNN, possibly wrapped in DistributedDataParallel.
        min_ap (float): minimum box AP (0-100) of every teacher.

    Returns:
        dict: per teacher config, detectron2's results ``{"bbox": {"AP": ..., ...}}`` (empty
        on processes other than the main one).
    """
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator
    from detectron2.utils import comm

    from .modeling.teacher import load_teacher_cfg

    model = model.module if hasattr(model, "module") else model
    d = cfg.MODEL.DISTILL
    teachers = [(d.TEACHER_CONFIG, d.TEACHER_OPTS, d.TEACHER_WEIGHTS, model.teacher)]
    teachers += [
        (config, [], weights, t)
        for config, weights, t in zip(d.ENSEMBLE_CONFIGS, d.ENSEMBLE_WEIGHTS, model.extra_teachers)
    ]
    name = cfg.DATASETS.TEST[0]
    out: Dict[str, Dict] = {}
    for i, (config, opts, weights, teacher) in enumerate(teachers):
        tcfg = load_teacher_cfg(config, opts, cfg.MODEL.DEVICE)
        tcfg.DATASETS.TEST = (name,)
        tcfg.DATALOADER.NUM_WORKERS = cfg.DATALOADER.NUM_WORKERS
        folder = os.path.join(cfg.OUTPUT_DIR, "teacher_eval" + (f"_{i}" if i else ""))
        with _preserved_rng():  # e.g. a DataLoader iterator draws its base seed from torch
            results = DefaultTrainer.test(tcfg, teacher, [COCOEvaluator(name, output_dir=folder)])
        # only the main process holds the results: share its AP so all processes agree
        ap = comm.all_gather(results.get("bbox", {}).get("AP", float("nan")))[0]
        if not ap >= min_ap:
            raise TeacherTooWeakError(
                f"The teacher ({config}, weights {weights}) reaches box AP {ap:.2f} on {name}, "
                f"below the minimum {min_ap}. Distilling from it would teach the student noise: "
                "check the weights, the class order and the input format (or lower "
                "--min-teacher-ap)."
            )
        logger.info(f"Teacher {config}: box AP on {name} {ap:.2f} (minimum {min_ap}).")
        out[config] = results
    return out


@contextlib.contextmanager
def _preserved_rng():
    """Restore Python's, NumPy's and torch's (CPU and current CUDA device) random states on
    exit, so that work done in between does not change the training run that follows."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def cpu_ddp():
    """Let detectron2's ``DefaultTrainer`` wrap a CPU model in DistributedDataParallel.

    ``detectron2.engine.defaults.create_ddp_model`` always passes ``device_ids=[local_rank]``,
    which DDP accepts only for CUDA modules (detectron2 issue #5146), so ``--num-gpus N`` on a
    machine without GPUs fails. Inside this block a model whose parameters are on the CPU is
    wrapped with ``device_ids=None`` (what DDP expects for CPU modules, gloo backend); CUDA
    models are wrapped exactly as before.
    """
    from detectron2.engine import defaults

    original = defaults.create_ddp_model

    def create_ddp_model(model, **kwargs):
        if next(model.parameters()).device.type == "cpu":
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original
