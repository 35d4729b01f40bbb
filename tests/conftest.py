"""Shared helpers of the tests: tiny Faster R-CNN FPN configs and teachers on CPU (tiny.py)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


@pytest.fixture(scope="session")
def root_dir():
    return ROOT
