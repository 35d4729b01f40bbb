"""luminet_det: LumiNet distillation for Detectron2 Faster R-CNN FPN detectors.

Importing this package registers the plugin's components in detectron2's registries:
``DistillRCNN`` (META_ARCH_REGISTRY), ``build_mobilenetv2_fpn_backbone`` and
``build_mobilenetv2_backbone`` (BACKBONE_REGISTRY), and the built-in digits datasets
(DatasetCatalog / MetadataCatalog).

``luminet_det.losses`` and ``luminet_det.cls`` (classification) never import detectron2 and
work where it is not installed; the detectron2 parts below are then simply not available.
"""

__version__ = "0.1.0"

try:
    import detectron2  # noqa: F401
except ImportError:  # classification-only installs: luminet_det.losses / luminet_det.cls
    pass
else:
    from .config import add_luminet_config, load_config, resolve_teacher_config_path
    from .export import export_student

    # Imported for their side effects as well: registering the meta-architecture and the
    # backbones in detectron2's registries, and the built-in datasets in its catalogs.
    from .modeling import DistillRCNN, ReviewKD, build_mobilenetv2_fpn_backbone
    from . import data  # noqa: F401  isort: skip

    __all__ = [
        "add_luminet_config",
        "load_config",
        "resolve_teacher_config_path",
        "export_student",
        "DistillRCNN",
        "ReviewKD",
        "build_mobilenetv2_fpn_backbone",
    ]
