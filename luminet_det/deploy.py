"""Deployable students: a stock detectron2 student (the output of :func:`~luminet_det.export.
export_student`) traced into TorchScript, which runs with torch and torchvision alone (no
detectron2, no luminet_det), or into ONNX (ONNX Runtime).

The traced module takes one image tensor and returns a tuple of tensors::

    import torch, torchvision  # torchvision registers the NMS and ROIAlign operators
    outputs = torch.jit.load("student.ts")(image)   # image: (3, H, W) float32
    # outputs, in the order of OUTPUT_NAMES (student.deploy.json lists them):
    #   pred_boxes (R, 4) XYXY, pred_classes (R,), [pred_masks (R, 1, M, M)], scores (R,),
    #   image_size (2,)

``image`` is what detectron2 feeds the model after its test-time transform: the picture in the
config's ``INPUT.FORMAT`` channel order (BGR or RGB), 0-255 floats, resized so that its short
side is ``INPUT.MIN_SIZE_TEST`` (long side at most ``MAX_SIZE_TEST``); the boxes are in the
coordinates of that resized image. Normalisation (PIXEL_MEAN / PIXEL_STD) and padding happen
inside. An R-CNN's masks are the per-box ``M x M`` masks of its mask head (paste them into
the image as detectron2's ``paste_masks_in_image`` does); a RetinaNet's boxes are clipped to
the image. The trace is made with detectron2's :class:`~detectron2.export.TracingAdapter`
(data-dependent control flow such as NMS is recorded for the traced image, and detectron2's
tracing support keeps the graph valid for other image sizes).
"""

from __future__ import annotations

import json
import warnings
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import CfgNode
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN, RetinaNet
from torch import nn

from .modeling.distiller import Distiller

__all__ = [
    "FORMATS",
    "traceable",
    "trace_student",
    "save_torchscript",
    "save_onnx",
    "manifest",
    "write_manifest",
]

#: the formats of luminet-export
FORMATS = ("detectron2", "torchscript", "onnx")


def traceable(model: nn.Module, image: torch.Tensor) -> Tuple[TracingAdapter, List[str]]:
    """A :class:`TracingAdapter` of a stock student in eval mode and the names of its flat
    outputs, for one sample ``image`` (3, H, W) as described in the module docstring.

    Raises:
        ValueError: a model that is neither a GeneralizedRCNN nor a RetinaNet (export the
            student first: a DistillRCNN holds its teacher).
    """
    if isinstance(model, Distiller):
        raise ValueError(
            f"{type(model).__name__} holds its teacher and distillation modules: export the "
            "student first (luminet-export --format detectron2 writes student.yaml / "
            "student.pth), then trace the stock model built from them."
        )
    if isinstance(model, GeneralizedRCNN):

        def inference(m, inputs):
            # do_postprocess=False: boxes in the input image, masks per box (traceable)
            return [{"instances": m.inference(inputs, do_postprocess=False)[0]}]

    elif isinstance(model, RetinaNet):
        inference = None  # its forward: detector_postprocess to the input size (a clip)
    else:
        raise ValueError(
            f"Only stock GeneralizedRCNN and RetinaNet students can be traced, got "
            f"{type(model).__name__}; export the student first (luminet-export --format "
            "detectron2 writes student.yaml / student.pth)."
        )
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}.")
    model.eval()
    adapter = TracingAdapter(model, [{"image": image.float()}], inference).eval()
    with torch.no_grad():
        outputs = adapter(*adapter.flattened_inputs)  # records the output schema
    instances = adapter.outputs_schema.schemas[0].schemas[0]  # list -> dict -> Instances
    names = list(instances.keys) + ["image_size"]
    assert len(names) == len(outputs), f"{names} vs {len(outputs)} outputs"
    return adapter, names


def trace_student(model: nn.Module, image: torch.Tensor) -> Tuple[torch.jit.ScriptModule, List]:
    """(TorchScript module, output names) of a stock student traced on ``image``."""
    adapter, names = traceable(model, image)
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer's notes on detectron2's shape checks and Python scalars: expected; and
        # torch 2.14's deprecation of torch.jit.trace: TorchScript is the format asked for
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)
        traced = torch.jit.trace(adapter, adapter.flattened_inputs, check_trace=False)
    return traced, names


def save_torchscript(model: nn.Module, image: torch.Tensor, path: str) -> List[str]:
    """Trace ``model`` on ``image`` and save the TorchScript module to ``path``; returns the
    output names."""
    traced, names = trace_student(model, image)
    traced.save(path)
    return names


def save_onnx(model: nn.Module, image: torch.Tensor, path: str, opset: int = 17) -> List[str]:
    """Export ``model`` traced on ``image`` to ONNX at ``path`` (height and width dynamic);
    returns the output names.

    Raises:
        ImportError: the ``onnx`` package is missing (``pip install onnx``, or the ``onnx``
            extra of luminet-det).
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ImportError(
            "Exporting to ONNX needs the onnx package: pip install onnx (pip install "
            "'luminet-det[onnx]' also installs onnxruntime to run the file)."
        ) from None
    adapter, names = traceable(model, image)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", r"`torch\.jit\.trace", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)  # the exporter's notes on dynamic axes
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            adapter,
            adapter.flattened_inputs,
            path,
            dynamo=False,  # the traced graph (detectron2's TracingAdapter), not torch.export
            opset_version=opset,
            input_names=["image"],
            output_names=names,
            dynamic_axes={"image": {1: "height", 2: "width"}},
        )
    model.eval()  # the exporter restores the adapter's mode; keep the student in eval
    return names


def manifest(cfg: CfgNode, names: Sequence[str], files: Dict[str, str]) -> Dict[str, object]:
    """What a serving program needs to know about an exported student (student.deploy.json):
    the input convention, the outputs, the classes and the files."""
    from detectron2.data import MetadataCatalog

    dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else ""
    classes = list(MetadataCatalog.get(dataset).get("thing_classes", [])) if dataset else []
    return {
        "input": {
            "tensor": "image (3, H, W) float32, 0-255",
            "channel_order": cfg.INPUT.FORMAT,
            "resize_short_side_to": cfg.INPUT.MIN_SIZE_TEST,
            "max_long_side": cfg.INPUT.MAX_SIZE_TEST,
        },
        "outputs": list(names),
        "boxes": "XYXY in the coordinates of the resized input image",
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "score_threshold": (
            cfg.MODEL.RETINANET.SCORE_THRESH_TEST
            if cfg.MODEL.META_ARCHITECTURE == "RetinaNet"
            else cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
        ),
        "classes": classes,
        "files": dict(files),
    }


def write_manifest(path: str, content: Dict[str, object]) -> None:
    """Write :func:`manifest`'s content as JSON."""
    with open(path, "w") as f:
        json.dump(content, f, indent=1)
        f.write("\n")
