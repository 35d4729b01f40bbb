"""What tools/train_net.py adds to detectron2's trainer, one concern per module.

* :mod:`.checkpoint` — atomic checkpoint writes (``make_atomic``);
* :mod:`.teacher_eval` — evaluating the teachers before distilling (``--check-teacher``);
* :mod:`.teacher_stats` — LumiNet's ``STATS "global"``: the teacher's statistics over the
  training set before step 0;
* :mod:`.ddp` — ``--num-gpus N`` on machines without CUDA (``cpu_ddp``).

Dataset registration lives in :mod:`luminet_det.data`.
"""

from ..rng import preserved_rng
from .checkpoint import (
    AtomicWritePathManager,
    check_converted_weights,
    check_student_weights,
    make_atomic,
)
from .ddp import cpu_ddp
from .teacher_eval import TeacherTooWeakError, evaluate_teacher
from .teacher_stats import losses_needing_teacher_stats, precompute_teacher_stats

__all__ = [
    "AtomicWritePathManager",
    "make_atomic",
    "check_student_weights",
    "check_converted_weights",
    "cpu_ddp",
    "TeacherTooWeakError",
    "evaluate_teacher",
    "preserved_rng",
    "losses_needing_teacher_stats",
    "precompute_teacher_stats",
]
