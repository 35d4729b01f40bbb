"""Multi-process training on machines without CUDA."""

from __future__ import annotations

import contextlib

__all__ = ["cpu_ddp"]


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
