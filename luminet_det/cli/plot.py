"""``luminet-plot`` (``python tools/plot_metrics.py``): loss terms and AP / accuracy over
iterations (detectron2's metrics.json) or epochs (luminet_det.cls's metrics.json), several runs
overlaid, as one PNG.

    luminet-plot --run alone=output/digits/student_R_18_FPN \
        --run luminet=output/digits/luminet_r50_r18 --output curves.png
"""

import argparse
import sys

from luminet_det.visualize import plot_metrics


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="luminet-plot", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="a run's metrics.json or OUTPUT_DIR (repeatable)",
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    runs = {}
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--run takes LABEL=PATH, got {item!r}")
        runs[label] = path
    plot_metrics(runs, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
