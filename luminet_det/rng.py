"""Work that must not change a run's random draws (pure Python / numpy / torch)."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["preserved_rng"]


@contextlib.contextmanager
def preserved_rng():
    """Restore Python's, NumPy's and torch's (CPU and current CUDA device) random states on
    exit, so that work done in between (evaluating the teacher, computing its statistics) does
    not change the training run that follows."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
