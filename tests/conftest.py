"""Shared helpers of the tests: tiny Faster R-CNN FPN configs and teachers on CPU (tiny.py)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


@pytest.fixture(scope="session")
def root_dir():
    return ROOT


if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the tests in one worker per core (pytest-xdist): each worker, and every
    # process it starts, computes on one thread, so that two workers never oversubscribe the
    # cores (two 2-thread torch processes on 2 cores run several times slower, not 2x)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
