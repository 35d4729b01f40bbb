"""Atomic checkpoint writes for detectron2's checkpointer."""

from __future__ import annotations

from detectron2.checkpoint import DetectionCheckpointer

from ..runio import atomic_write

__all__ = ["AtomicWritePathManager", "make_atomic"]


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
