#!/usr/bin/env python
"""Export the student of a DistillRCNN (DistillRetinaNet) run as a stock detectron2
GeneralizedRCNN (RetinaNet).

    python tools/export_student.py --config-file configs/COCO-Detection/luminet_r101_r18.yaml \
        --checkpoint output/coco/luminet_r101_r18/model_final.pth --output export/ [KEY VALUE ...]

Writes OUTPUT/student.pth (student weights only: no teacher, no distillation adapters) and
OUTPUT/student.yaml (the student's config without MODEL.DISTILL). Stock detectron2 loads them:

    cfg = get_cfg(); cfg.merge_from_file("export/student.yaml")
    model = build_model(cfg); DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)

A MobileNetV2 student needs `import luminet_det` first (it registers the backbone).
"""

import argparse
import sys

from luminet_det import export_student, load_config
from luminet_det.runio import TRUST_PICKLE_HELP


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, help="the training config")
    parser.add_argument("--checkpoint", required=True, help="e.g. OUTPUT_DIR/model_final.pth")
    parser.add_argument("--output", required=True, help="directory for student.pth/.yaml")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config_file, args.opts)
    weights, config = export_student(cfg, args.checkpoint, args.output, trusted=args.trust_pickle)
    print(f"Student weights: {weights}\nStudent config:  {config}")


if __name__ == "__main__":
    sys.exit(main())
