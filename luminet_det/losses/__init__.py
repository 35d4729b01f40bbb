"""The pure-torch core of luminet_det: distillation losses and LumiNet's statistics.

Imports nothing else of the package and never imports detectron2.

* :mod:`.functional` — the losses as functions (:func:`perception`, :func:`luminet_loss`,
  :func:`kd_loss`, :func:`logit_std_kd_loss`, :func:`dkd_loss`, :func:`hcl_loss`): the numbers are computed there.
* :mod:`.modules` — the logit losses as modules with one call signature
  ``loss(student_logits, teacher_logits, targets)``, built by name with
  :func:`build_logit_loss`; the detector and the classifier build theirs only through it.
* :mod:`.statistics` — where LumiNet's column statistics come from (batch / sync / global).
"""

from .functional import dkd_loss, hcl_loss, kd_loss, logit_std_kd_loss, luminet_loss, perception
from .modules import (
    DKDLoss,
    KDLoss,
    LogitLoss,
    LogitStdKDLoss,
    LuminetLoss,
    build_logit_loss,
    logit_loss_names,
    register_logit_loss,
)
from .statistics import STATS_MODES, RunningMoments, batch_moments, sync_moments

__all__ = [
    "perception",
    "luminet_loss",
    "kd_loss",
    "logit_std_kd_loss",
    "dkd_loss",
    "hcl_loss",
    "LogitLoss",
    "KDLoss",
    "LogitStdKDLoss",
    "DKDLoss",
    "LuminetLoss",
    "build_logit_loss",
    "logit_loss_names",
    "register_logit_loss",
    "STATS_MODES",
    "RunningMoments",
    "batch_moments",
    "sync_moments",
]
