#!/usr/bin/env python
"""Export the student of a distillation run: ``luminet-export`` (:mod:`luminet_det.cli.export`,
which documents the flags and formats), runnable from a clone.

    python tools/export_student.py --config-file configs/COCO-Detection/luminet_r101_r18.yaml \
        --checkpoint output/coco/luminet_r101_r18/model_final.pth --output export/
"""

import sys

from luminet_det.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
