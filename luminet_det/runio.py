"""What runs write and read: atomic file writes, and the ``metrics.json`` of a run.

Pure Python and torch (no detectron2): the detector's trainer, the classifier's trainer, the
exporter, the dataset generator, the demo and the benchmark all write through
:func:`atomic_write` / :func:`atomic_save` and read runs through :func:`read_metrics` /
:func:`last_box_ap`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from typing import IO, Dict, Iterator, List, Optional

import torch

__all__ = [
    "atomic_write",
    "atomic_save",
    "load_checkpoint",
    "UnsafeCheckpointError",
    "TRUST_PICKLE_HELP",
    "read_metrics",
    "last_box_ap",
]


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open ``path + ".tmp"`` for writing; on a clean exit flush, fsync and rename it onto
    ``path``; on an exception delete it. A writer killed half-way never leaves a partial file
    under the real name (at most a ``.tmp`` file beside it).

    Args:
        path (str): the final file.
        mode (str): a writing mode of :func:`open` ("w", "wb", "x", ...).
        kwargs: passed to :func:`open` (e.g. ``encoding``).
    """
    if not any(m in mode for m in "wxa"):
        raise ValueError(f"atomic_write needs a writing mode, got {mode!r}.")
    tmp = f"{path}.tmp"
    f = open(tmp, mode, **kwargs)
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        f.close()
        os.remove(tmp)
        raise
    f.close()
    os.replace(tmp, path)


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`atomic_write`."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


#: the help of the command-line tools' --trust-pickle flag
TRUST_PICKLE_HELP = (
    "the checkpoint comes from a source you trust: unpickle it even if it holds more than "
    "tensors (by default it is read as data only, so it cannot run code)"
)


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that can only be read by unpickling arbitrary Python objects."""


def load_checkpoint(path: str, map_location="cpu", *, trusted: bool = False, opt_in: str = ""):
    """``torch.load`` as data: tensors, numbers, strings and containers only
    (``weights_only=True``), so a downloaded file cannot run code while it is read. Every
    checkpoint luminet_det writes loads this way.

    Args:
        path (str): the file.
        map_location: as for :func:`torch.load`.
        trusted (bool): the user trusts the file's source: unpickle it fully.
        opt_in (str): how the user sets ``trusted`` (for the error message).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file needs full unpickling and is not trusted.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint {path!r} not found.")
    if trusted:
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()
        detail = next((line for line in reason if "GLOBAL" in line.upper()), reason[0])
        raise UnsafeCheckpointError(
            f"{path!r} holds Python objects besides tensors and plain containers ({detail.strip()}"
            "); reading it would run code from the file, so it was not read. If you trust where "
            f"it comes from, allow it with {opt_in or 'trusted=True'}."
        ) from None


def read_metrics(path: str) -> List[Dict]:
    """The JSON lines of a detectron2 ``metrics.json`` or of luminet_det.cls's metrics.json
    (a directory holding one is accepted).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not JSON (with its number).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No metrics.json at {path!r}.")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {i} is not JSON ({e.msg}).") from None
    return rows


def last_box_ap(path: str) -> Optional[Dict]:
    """The last row with a COCO box AP (``"bbox/AP"``) of a detectron2 ``metrics.json`` (or
    of the directory holding one); None if there is no such file or row."""
    file = os.path.join(path, "metrics.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        return None
    rows = [r for r in read_metrics(file) if "bbox/AP" in r]
    return rows[-1] if rows else None
