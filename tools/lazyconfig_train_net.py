#!/usr/bin/env python
"""Train or evaluate a LazyConfig (.py) student: ``luminet-lazy-train``
(:mod:`luminet_det.cli.lazy_train`, which documents the flags), runnable from a clone.

    python tools/lazyconfig_train_net.py \
        --config-file configs/COCO-Detection/lsj_luminet_r18_from_r101.py
"""

from luminet_det.cli.lazy_train import cli

if __name__ == "__main__":
    cli()
