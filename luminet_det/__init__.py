"""luminet_det: LumiNet distillation for Detectron2 Faster R-CNN FPN detectors.

Importing this package registers the plugin's components in detectron2's registries:
``DistillRCNN`` (META_ARCH_REGISTRY), ``build_mobilenetv2_fpn_backbone`` and
``build_mobilenetv2_backbone`` (BACKBONE_REGISTRY), and the built-in demo datasets
(DatasetCatalog / MetadataCatalog). ``luminet_det.losses`` and ``luminet_det.cls`` do not need
detectron2.
"""
__version__ = "0.1.0"

from .config import add_luminet_config, load_config, resolve_teacher_config_path
from .export import export_student

# Imported for their side effects: registering the meta-architecture and backbones, and the
# built-in datasets, in detectron2's registries and catalogs.
from .modeling import DistillRCNN, ReviewKD, build_mobilenetv2_fpn_backbone  # noqa: F401
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
