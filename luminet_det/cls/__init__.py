"""luminet_det.cls: classification distillation (CE / KD / DKD / logitstd / LumiNet) on torchvision.

Never imports detectron2: it stands on the pure-torch core (:mod:`luminet_det.losses`, whose
``build_logit_loss`` builds the detector's losses too, and :mod:`luminet_det.metrics`).
Command line::

    python -m luminet_det.cls train --config configs/CIFAR-100/luminet/res32x4_res8x4.yaml
    python -m luminet_det.cls eval --config ... --checkpoint output/.../best.pth
"""

from luminet_det.metrics import classification_report, ece_mce, fpr_at_95_tpr, topk_accuracy

from .config import METHODS, get_cfg, load_config
from .engine import Trainer, distillation_loss, evaluate, evaluate_checkpoint
from .models import MODELS, build_model

__all__ = [
    "METHODS",
    "MODELS",
    "Trainer",
    "build_model",
    "classification_report",
    "distillation_loss",
    "ece_mce",
    "evaluate",
    "evaluate_checkpoint",
    "fpr_at_95_tpr",
    "get_cfg",
    "load_config",
    "topk_accuracy",
]
