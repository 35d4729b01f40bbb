#!/usr/bin/env python
"""Calibration and confirmation-bias reports of classifiers: ``luminet-cls-report``
(:mod:`luminet_det.cli.cls_report`, which documents the flags), runnable from a clone."""

import sys

from luminet_det.cli.cls_report import main

if __name__ == "__main__":
    sys.exit(main())
