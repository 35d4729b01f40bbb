#!/usr/bin/env python
"""Convert torchvision ImageNet weights into a detectron2 backbone checkpoint: ``luminet-convert``
(:mod:`luminet_det.cli.convert`, which documents the flags), runnable from a clone.

    python tools/convert_torchvision_to_d2.py --arch resnet18 --output checkpoints/R-18.pth
"""

import sys

from luminet_det.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
