"""The command-line entry points of luminet_det (``pip install`` makes them console commands;
``tools/*.py`` are thin wrappers that call the same ``main``):

================== ========================================= ===============================
command            module                                    does
================== ========================================= ===============================
luminet-train      :mod:`luminet_det.cli.train`              train / evaluate a detector
                                                             (detectron2's trainer CLI)
luminet-lazy-train :mod:`luminet_det.cli.lazy_train`         the same for LazyConfig (.py)
                                                             students
luminet-export     :mod:`luminet_det.cli.export`             the distilled student as a stock
                                                             detectron2 model, TorchScript or
                                                             ONNX
luminet-convert    :mod:`luminet_det.cli.convert`            torchvision ImageNet weights ->
                                                             a detectron2 backbone checkpoint
luminet-cls        :mod:`luminet_det.cls.__main__`           classification distillation
luminet-cls-report :mod:`luminet_det.cli.cls_report`         calibration / confirmation-bias
                                                             reports of classifiers
luminet-plot       :mod:`luminet_det.cli.plot`               loss and AP curves of runs
luminet-perception :mod:`luminet_det.cli.perception`         raw vs perception logits figure
================== ========================================= ===============================

This package is for commands, not for libraries: importing it (or any of its modules) hides
the dependency warnings listed in :func:`silence_known_warnings` for the rest of the process,
before the command imports detectron2. Importing :mod:`luminet_det` or its library modules
changes no filter.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["silence_known_warnings"]


def _not_fx_tracing_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("is_fx_tracing will return true")


def _not_no_cuda_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("No CUDA runtime is found")


def _not_zoo_unsafe_load_notice(record: logging.LogRecord) -> bool:
    # fvcore's notice for detectron2's own model-zoo configs (Base-RetinaNet.yaml, the base of
    # the RetinaNet zoo teachers, has a python tag); a notice about any other file is kept
    msg = record.getMessage()
    return not (
        msg.startswith("Loading config ")
        and "with yaml.unsafe_load" in msg
        and "/detectron2/model_zoo/configs/" in msg.replace(os.sep, "/")
    )


#: (message regex, category) of the warnings hidden by the commands: each known to be harmless
KNOWN_WARNINGS = (
    # torch 2.14 deprecates torch.jit.script, which detectron2 and fvcore.nn call at import
    (r"`torch\.jit\.script` is deprecated", FutureWarning),
    # detectron2's anchor generator calls torch.meshgrid without `indexing`; its default is
    # the behaviour detectron2 relies on
    (r"torch\.meshgrid: in an upcoming release", UserWarning),
    # detectron2's BitMasks from RLE masks (MASK_FORMAT "bitmask") wrap read-only arrays it
    # never writes to
    (r"The given NumPy array is not writable", UserWarning),
    # detectron2.model_zoo imports pkg_resources (zoo teachers); setuptools is pinned < 81
    (r"pkg_resources is deprecated as an API", UserWarning),
    # detectron2's ViT / MViTv2 / Swin import DropPath and Mlp from timm's old module path
    (r"Importing from timm\.models\.layers is deprecated", FutureWarning),
)


def silence_known_warnings() -> None:
    """Hide what detectron2 makes torch print under torch 2.14 that is known to be harmless,
    and nothing else: the warnings of :data:`KNOWN_WARNINGS`, torch.fx's ``is_fx_tracing``
    notice (detectron2 calls it in every forward), torch's "No CUDA runtime is found" notice
    when detectron2 imports torch.utils.cpp_extension on a machine without CUDA (the "No CUDA
    device" warning of luminet-train says that once, in our words), and fvcore's
    "yaml.unsafe_load" notice for the configs of detectron2's own model zoo (RetinaNet's).
    Idempotent."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, keep in (
        ("torch.fx._symbolic_trace", _not_fx_tracing_notice),
        ("torch.utils.cpp_extension", _not_no_cuda_notice),
        ("fvcore.common.config", _not_zoo_unsafe_load_notice),
    ):
        log = logging.getLogger(name)
        if keep not in log.filters:
            log.addFilter(keep)


silence_known_warnings()  # a command package: see the module docstring
