"""Pictures and reports (pure numpy / torch / matplotlib; no detectron2).

* :mod:`.plots` — perception of a batch of logits, training curves of runs;
* :mod:`.reports` — calibration and confirmation-bias tables of classifiers.
"""

from .plots import perception_figure, plot_metrics
from .reports import calibration_report, confirmation_bias_report, per_class_error

__all__ = [
    "perception_figure",
    "plot_metrics",
    "calibration_report",
    "confirmation_bias_report",
    "per_class_error",
]
