"""luminet_det: LumiNet distillation for Detectron2 detectors, and for torchvision classifiers.

Importing this package changes nothing outside it (no registration, no warning or logging
filters) and does not import detectron2, so that :mod:`luminet_det.cls` and the pure-torch core
(:mod:`luminet_det.losses`, :mod:`luminet_det.metrics`) stand without it. The detector's
public API is importable from here; the first access to any of its names imports the modules
that register the plugin in detectron2 (as importing a Detectron2 project does)::

    from luminet_det import add_luminet_config, load_config, DistillRCNN, export_student

Registration, by module: :mod:`luminet_det.modeling` registers ``DistillRCNN`` and
``DistillRetinaNet`` (META_ARCH_REGISTRY) and the MobileNetV2(-FPN) backbones
(BACKBONE_REGISTRY), and imports :mod:`luminet_det.data`, which registers the built-in digits
sets (DatasetCatalog / MetadataCatalog). ``import luminet_det.modeling`` is all a script that
loads an exported MobileNetV2 student needs.
"""

__version__ = "0.1.0"

_CONFIG = ("add_luminet_config", "load_config", "resolve_teacher_config_path")
_MODELING = ("DistillRCNN", "DistillRetinaNet", "ReviewKD", "build_mobilenetv2_fpn_backbone")
__all__ = [*_CONFIG, "export_student", *_MODELING, "build_logit_loss"]


def __getattr__(name):
    """The detector's API on first use (PEP 562); it registers the plugin in detectron2."""
    if name == "build_logit_loss":
        from .losses import build_logit_loss

        return build_logit_loss
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import modeling  # registers the models, and (through luminet_det.data) the datasets

    if name in _CONFIG:
        from . import config

        return getattr(config, name)
    if name == "export_student":
        from .export import export_student

        return export_student
    return getattr(modeling, name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
