"""The pure-torch core of luminet_det: distillation losses and LumiNet's statistics.

Imports nothing else of the package and never imports detectron2.

* :mod:`.functional` — the losses as functions (:func:`perception`, :func:`luminet_loss`,
  :func:`kd_loss`, :func:`logit_std_kd_loss`, :func:`dkd_loss`, :func:`hcl_loss`): the numbers are computed there.
* :mod:`.dense` — the same for dense sigmoid classifiers (one-stage detectors:
  :func:`sigmoid_luminet_loss`, :func:`sigmoid_kd_loss`).
* :mod:`.modules` — the logit losses as modules with one call signature
  ``loss(student_logits, teacher_logits, targets)``, built by name with
  :func:`build_logit_loss`; the detector and the classifier build theirs only through it.
* :mod:`.statistics` — where LumiNet's column statistics come from (batch / sync / global).
* :mod:`.calibration` — calibration losses that can replace the student's cross-entropy with
  the labels (:func:`softmax_focal_loss`, :func:`dual_focal_loss`).
"""

from . import calibration, dense, functional, modules, statistics
from .calibration import *  # noqa: F401,F403
from .dense import *  # noqa: F401,F403  (the names of dense.__all__)
from .functional import *  # noqa: F401,F403  (the names of functional.__all__)
from .modules import *  # noqa: F401,F403
from .statistics import STATS_MODES, RunningMoments, batch_moments, sync_moments

__all__ = (
    functional.__all__
    + calibration.__all__
    + dense.__all__
    + modules.__all__
    + [
        "STATS_MODES",
        "RunningMoments",
        "batch_moments",
        "sync_moments",
    ]
)
