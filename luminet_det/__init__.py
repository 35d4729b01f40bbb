"""luminet_det: LumiNet distillation for Detectron2 detectors, and for torchvision classifiers.

``import luminet_det`` registers the plugin in detectron2: ``DistillRCNN`` and
``DistillRetinaNet`` (META_ARCH_REGISTRY), the MobileNetV2(-FPN) backbones (BACKBONE_REGISTRY) and the built-in
digits datasets (DatasetCatalog / MetadataCatalog). It does so when detectron2 is imported
(at once if it already is), so that ``luminet_det.cls`` and the pure-torch core
(``luminet_det.losses``, ``luminet_det.metrics``) never import detectron2.

The detector's public API is importable from here (loaded on first use)::

    from luminet_det import add_luminet_config, load_config, DistillRCNN, export_student
"""

import importlib

from ._plugin import register_when_detectron2_loads, silence_known_warnings

__version__ = "0.1.0"

# name -> submodule that defines it; imported on first access (PEP 562)
_LAZY = {
    "add_luminet_config": "config",
    "load_config": "config",
    "resolve_teacher_config_path": "config",
    "export_student": "export",
    "DistillRCNN": "modeling",
    "DistillRetinaNet": "modeling",
    "ReviewKD": "modeling",
    "build_mobilenetv2_fpn_backbone": "modeling",
    "build_logit_loss": "losses",
}
__all__ = list(_LAZY)

silence_known_warnings()
register_when_detectron2_loads()


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
