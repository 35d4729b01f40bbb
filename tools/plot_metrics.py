#!/usr/bin/env python
"""Loss and AP / accuracy curves of runs: ``luminet-plot``
(:mod:`luminet_det.cli.plot`, which documents the flags), runnable from a clone."""

import sys

from luminet_det.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
