#!/usr/bin/env python
"""Train or evaluate a (distilled) detector with detectron2's trainer: ``luminet-train``
(:mod:`luminet_det.cli.train`, which documents the flags), runnable from a clone.

    python tools/train_net.py --config-file configs/COCO-Detection/luminet_r101_r18.yaml \
        --num-gpus 8 [--resume] [--check-teacher] [KEY VALUE ...]
"""

from luminet_det.cli.train import cli

if __name__ == "__main__":
    cli()
