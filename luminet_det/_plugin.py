"""Registering the plugin in detectron2 without importing detectron2 early.

``import luminet_det`` must register the meta-architecture, the backbones and the built-in
datasets (that is how detectron2 plugins are used), while ``import luminet_det.cls`` (which
imports ``luminet_det`` first) must never import detectron2. So registration runs when
detectron2 itself is imported: at once if it already is, otherwise right after its top-level
package has loaded (a finder on ``sys.meta_path`` wraps that one import). detectron2's
registries cannot be used before ``import detectron2``, so nothing can look them up early.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__all__ = ["register_when_detectron2_loads", "silence_known_warnings"]

_TARGET = "detectron2"


def silence_known_warnings() -> None:
    """Hide the two FutureWarnings that importing detectron2 (and fvcore.nn) prints under
    torch >= 2.10 (``torch.jit.script`` at module level); nothing else."""
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )


def _register() -> None:
    # imported for their side effects: registering DistillRCNN and the MobileNetV2 backbones in
    # detectron2's registries, and the built-in datasets in its catalogs
    importlib.import_module("luminet_det.modeling")
    importlib.import_module("luminet_det.data")


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
