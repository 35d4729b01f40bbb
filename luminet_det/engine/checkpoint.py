"""Checkpoints of a training run: atomic writes, and the student's initial weights."""

from __future__ import annotations

import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from ..convert import REQUIRES_KEY, config_mismatches
from ..errors import ConfigError
from ..modeling.weights import local_weights
from ..runio import atomic_write

__all__ = [
    "AtomicWritePathManager",
    "make_atomic",
    "check_student_weights",
    "check_converted_weights",
]


class AtomicWritePathManager:
    """Wraps an iopath PathManager: local files opened for writing are written through
    :func:`luminet_det.runio.atomic_write` (temporary file, fsync, rename); everything else is
    delegated unchanged."""

    def __init__(self, path_manager):
        self._pm = path_manager

    def open(self, path: str, mode: str = "r", **kwargs):
        if ("w" in mode or "x" in mode) and "://" not in str(path):
            return atomic_write(self._pm.get_local_path(path), mode)
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


def check_student_weights(cfg: CfgNode, resume: bool) -> None:
    """Make sure ``MODEL.WEIGHTS`` (the student's initialisation) is on disk, downloading a URL
    once, before any model is built, and that the config has the values a converted
    torchvision backbone needs (:mod:`luminet_det.convert`); nothing to do when it is empty
    (training from scratch) or when ``--resume`` finds a checkpoint in OUTPUT_DIR.

    Raises:
        WeightsUnavailableError: with the file or URL and how to provide it.
        ConfigError: the file was written by tools/convert_torchvision_to_d2.py for config
            values the config contradicts (e.g. a torchvision R-50 with STRIDE_IN_1X1 True).
    """
    if not cfg.MODEL.WEIGHTS:
        return
    if resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    path = local_weights(
        cfg.MODEL.WEIGHTS,
        "MODEL.WEIGHTS",
        hint="The paper's students start from torchvision's ImageNet weights converted with "
        "luminet-convert (tools/convert_torchvision_to_d2.py; docs/detectors.md, The paper's COCO "
        "configs); a path under "
        "output/ is another run's result: train that run first (the config's comment names "
        "it, e.g. the built-in RetinaNet configs start from the Faster R-CNN runs' backbones).",
    )
    check_converted_weights(cfg, path)


def check_converted_weights(cfg: CfgNode, path: str) -> None:
    """Refuse a config that contradicts the values a converted checkpoint at ``path`` needs
    (its ``__luminet_requires__`` entry; other files are not inspected)."""
    if path.endswith((".pkl", ".pyth")):
        return
    import torch

    try:  # memory-mapped: only the small entry is read
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: detectron2 will say what is wrong
        return
    requires = loaded.get(REQUIRES_KEY) if isinstance(loaded, dict) else None
    if not requires:
        return
    wrong = config_mismatches(cfg, requires)
    if wrong:
        fix = " ".join(f"{k} {v!r}" for k, v in requires.items())
        raise ConfigError(
            f"MODEL.WEIGHTS {path!r} is a converted torchvision backbone whose weights only fit "
            f"other config values: {'; '.join(wrong)}. Set them in the config (or on the command "
            f"line: {fix}); with the wrong layout the weights would load without an error into "
            "a different network."
        )
