"""Half precision for the frozen teacher and the student (pure torch; the detector and the
classifier share it).

The teacher only runs forward (no gradient, so no loss scaling), which makes it the cheapest
place for half precision: ``MODEL.DISTILL.TEACHER_DTYPE`` (detector) and
``MODEL.TEACHER_DTYPE`` (classifier) run its forward under ``torch.autocast`` in that dtype,
and its logits and features are handed to the losses in float32. ``float32`` runs it with
autocast *off*, also inside the student's mixed-precision region (detectron2's AMPTrainer),
so a float32 teacher is exactly float32 whatever the student does.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["DTYPES", "check_dtype", "autocast_for", "teacher_precision", "to_float32"]

#: the accepted dtype names
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(name: str, device_type: str, key: str = "TEACHER_DTYPE") -> torch.dtype:
    """The torch dtype of ``name`` for a forward under autocast on ``device_type``.

    Raises:
        ValueError: an unknown name (the allowed ones are listed), a device without autocast,
            or bfloat16 on a CUDA device that lacks it (``key`` names the config key).
    """
    if name not in DTYPES:
        raise ValueError(f"{key} must be one of {list(DTYPES)}, got {name!r}.")
    if name == "float32":
        return torch.float32
    if not torch.amp.is_autocast_available(device_type):
        raise ValueError(
            f"{key} {name!r} needs torch.autocast on the device, which {device_type!r} does not "
            "support; use float32."
        )
    if device_type == "cuda" and name == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"{key} 'bfloat16' is not supported by this GPU ({torch.cuda.get_device_name()}); "
            "use float16 or float32."
        )
    return DTYPES[name]


def autocast_for(name: str, device_type: str):
    """``torch.autocast`` in dtype ``name`` on ``device_type``; for float32, autocast off."""
    if name == "float32":
        return torch.autocast(device_type=device_type, enabled=False)
    return torch.autocast(device_type=device_type, dtype=DTYPES[name])


@contextlib.contextmanager
def teacher_precision(name: str, device_type: str, key: str = "TEACHER_DTYPE") -> Iterator[None]:
    """The frozen teacher's forward in dtype ``name`` (:func:`autocast_for`) without gradients.
    An operator of the teacher that has no kernel for that dtype on the device becomes a
    ValueError naming ``key`` and what to use instead."""
    with torch.no_grad(), autocast_for(name, device_type):
        try:
            yield
        except (RuntimeError, NotImplementedError) as e:
            if name == "float32" or not _unsupported_dtype(e):
                raise
            raise ValueError(
                f"{key} {name!r}: an operator of the teacher has no {name} kernel on "
                f"{device_type} ({str(e).splitlines()[0]}). Use "
                f"{'bfloat16' if name == 'float16' else 'float16'} or float32."
            ) from e


def _unsupported_dtype(error: Exception) -> bool:
    text = str(error)
    return "not implemented for" in text and ("Half" in text or "BFloat16" in text)


def to_float32(value):
    """Half-precision tensors (also inside dicts, lists and tuples) as float32; anything else
    unchanged."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, dict):
        return {k: to_float32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    return value
