#!/usr/bin/env python
"""Raw vs perception logits of one sample: ``luminet-perception``
(:mod:`luminet_det.cli.perception`, which documents the flags), runnable from a clone."""

import sys

from luminet_det.cli.perception import main

if __name__ == "__main__":
    sys.exit(main())
