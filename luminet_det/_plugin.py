"""Registering the plugin in detectron2 without importing detectron2 early.

``import luminet_det`` must register the meta-architecture, the backbones and the built-in
datasets (that is how detectron2 plugins are used), while ``import luminet_det.cls`` (which
imports ``luminet_det`` first) must never import detectron2. So registration runs when
detectron2 itself is imported: at once if it already is, otherwise right after its top-level
package has loaded (a finder on ``sys.meta_path`` wraps that one import). detectron2's
registries cannot be used before ``import detectron2``, so nothing can look them up early.

One cycle needs care: when ``luminet_det.config`` is the first module to import detectron2,
registration would import ``luminet_det.modeling``, which needs the half-loaded config. Then
registration waits, and ``luminet_det/config.py`` completes it as its last statement.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings

__all__ = ["register_when_detectron2_loads", "register_pending", "silence_known_warnings"]

_TARGET = "detectron2"
_pending = False


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


def silence_known_warnings() -> None:
    """Hide what detectron2 makes torch print under torch 2.14 that is known to be harmless,
    and nothing else: the FutureWarnings of ``torch.jit.script`` at import (detectron2 and
    fvcore.nn), the UserWarning of ``torch.meshgrid`` without ``indexing`` (detectron2's anchor
    generator; its default is the behaviour detectron2 relies on), torch.fx's ``is_fx_tracing``
    notice (detectron2 calls it in every forward), and torch's "No CUDA runtime is found" notice
    when detectron2 imports torch.utils.cpp_extension on a machine without CUDA (the "No CUDA
    device" warning of tools/train_net.py says that once, in our words), and fvcore's
    "yaml.unsafe_load" notice for the configs of detectron2's own model zoo (RetinaNet's)."""
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning
    )
    # detectron2's BitMasks from RLE masks (MASK_FORMAT "bitmask") wrap read-only arrays it
    # never writes to
    warnings.filterwarnings(
        "ignore", message=r"The given NumPy array is not writable", category=UserWarning
    )
    # detectron2.model_zoo imports pkg_resources (zoo teachers); setuptools is pinned < 81
    warnings.filterwarnings(
        "ignore", message=r"pkg_resources is deprecated as an API", category=UserWarning
    )
    for name, keep in (
        ("torch.fx._symbolic_trace", _not_fx_tracing_notice),
        ("torch.utils.cpp_extension", _not_no_cuda_notice),
        ("fvcore.common.config", _not_zoo_unsafe_load_notice),
    ):
        log = logging.getLogger(name)
        if keep not in log.filters:
            log.addFilter(keep)


def _loading(name: str) -> bool:
    """Whether module ``name`` is being executed right now (importlib marks its spec)."""
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _register(config_complete: bool = False) -> None:
    global _pending
    if not config_complete and _loading("luminet_det.config"):  # see the module docstring
        _pending = True
        return
    _pending = False
    # imported for their side effects: registering DistillRCNN, DistillRetinaNet and the
    # MobileNetV2 backbones in detectron2's registries, and the built-in datasets in its catalogs
    importlib.import_module("luminet_det.modeling")
    importlib.import_module("luminet_det.data")


def register_pending() -> None:
    """Complete a registration that had to wait for ``luminet_det.config`` (called as its last
    statement: every name of it is defined by then)."""
    if _pending:
        _register(config_complete=True)


class _Loader(importlib.abc.Loader):
    """Delegates to detectron2's own loader, then registers the plugin."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # give the module its own loader back before it runs (importlib.resources and
        # pkg_resources look at it)
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _register()


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)  # once; and lets find_spec below ask the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


def register_when_detectron2_loads() -> None:
    """Register the plugin now if detectron2 is imported, else as soon as it is."""
    if _TARGET in sys.modules:
        _register()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
