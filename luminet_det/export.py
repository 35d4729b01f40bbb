"""Export the student of a DistillRCNN / DistillRetinaNet training run as a stock detectron2
model."""

from __future__ import annotations

import os
from typing import Tuple

from detectron2.config import CfgNode

from .config import TEACHER_ARCHITECTURE
from .modeling.distiller import student_state_dict
from .runio import UnsafeCheckpointError, atomic_save, atomic_write, load_checkpoint

__all__ = ["export_student", "student_config"]


def student_config(cfg: CfgNode, weights: str = "") -> CfgNode:
    """A copy of a DistillRCNN (DistillRetinaNet) config as a stock ``GeneralizedRCNN``
    (``RetinaNet``) config: META_ARCHITECTURE replaced, the ``MODEL.DISTILL`` node removed,
    ``MODEL.WEIGHTS`` set to ``weights``. Stock detectron2's ``get_cfg().merge_from_file``
    accepts the dump."""
    out = cfg.clone()
    out.defrost()
    out.MODEL.pop("DISTILL", None)
    arch = out.MODEL.META_ARCHITECTURE
    out.MODEL.META_ARCHITECTURE = TEACHER_ARCHITECTURE.get(arch, arch)
    out.MODEL.WEIGHTS = weights
    return out


def export_student(
    cfg: CfgNode, checkpoint: str, output_dir: str, *, trusted: bool = False
) -> Tuple[str, str]:
    """Write ``student.pth`` (``{"model": state_dict}``, student keys only) and
    ``student.yaml`` into ``output_dir``.

    Args:
        cfg (CfgNode): the training config (with ``MODEL.DISTILL``).
        checkpoint (str): a training checkpoint of DistillRCNN (e.g. ``model_final.pth``).
        output_dir (str): created if missing.
        trusted (bool): unpickle a checkpoint that is not plain data (tools/export_student.py
            --trust-pickle); otherwise it is read with ``weights_only=True``.

    Returns:
        (str, str): paths of the weights and of the config.
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"Checkpoint {checkpoint!r} not found; give a training checkpoint such as "
            "OUTPUT_DIR/model_final.pth."
        )
    try:
        data = load_checkpoint(checkpoint, trusted=trusted, opt_in="--trust-pickle")
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f"Could not read checkpoint {checkpoint!r}: {e}") from e
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state:
        raise RuntimeError(f"{checkpoint!r} holds no model state dict (keys: {list(data)[:5]}).")
    os.makedirs(output_dir, exist_ok=True)
    weights_path = os.path.join(output_dir, "student.pth")
    config_path = os.path.join(output_dir, "student.yaml")
    atomic_save({"model": student_state_dict(state), "__author__": "luminet_det"}, weights_path)
    with atomic_write(config_path) as f:
        f.write(student_config(cfg, weights_path).dump())
    return weights_path, config_path
