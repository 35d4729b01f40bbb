"""What tools/train_net.py adds to detectron2's trainer, one concern per module.

* :mod:`.checkpoint` — atomic checkpoint writes (``make_atomic``);
* :mod:`.teacher_eval` — evaluating the teachers before distilling (``--check-teacher``);
* :mod:`.ddp` — ``--num-gpus N`` on machines without CUDA (``cpu_ddp``).

Dataset registration lives in :mod:`luminet_det.data`.
"""

from .checkpoint import AtomicWritePathManager, make_atomic
from .ddp import cpu_ddp
from .teacher_eval import TeacherTooWeakError, evaluate_teacher, preserved_rng

__all__ = [
    "AtomicWritePathManager",
    "make_atomic",
    "cpu_ddp",
    "TeacherTooWeakError",
    "evaluate_teacher",
    "preserved_rng",
]
