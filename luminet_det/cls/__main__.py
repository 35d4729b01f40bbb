"""luminet-cls (python -m luminet_det.cls) {train,eval} --config FILE [KEY=VALUE ...]

train: trains MODEL.STUDENT with METHOD.NAME (ce = alone, which is also how teachers are
       trained; kd / dkd / luminet distil from MODEL.TEACHER_WEIGHTS). --resume continues
       from OUTPUT_DIR/last.pth. Several processes: torchrun --nproc_per_node N -m
       luminet_det.cls train ...
eval:  prints top-1, top-5, ECE, MCE and FPR95 of --checkpoint on DATA's validation split.
probe: linear probing: --checkpoint, frozen, gives features of DATA (a downstream set, e.g.
       DATA.NAME=tiny_imagenet DATA.INPUT_SIZE=32); a linear classifier (PROBE.*) is trained on
       the training split's and scored on the validation split's; writes OUTPUT_DIR/probe.json.
"""

import argparse
import json
import logging
import sys

from luminet_det.errors import UserInputError
from luminet_det.runio import UnsafeCheckpointError

from .config import load_config
from .engine import Trainer, evaluate_checkpoint
from .probe import probe_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="luminet-cls", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a student (or a teacher with METHOD.NAME=ce)")
    train.add_argument("--config", default="", help="YAML config")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth")
    train.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    train.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    ev = sub.add_parser("eval", help="evaluate a checkpoint")
    ev.add_argument("--config", default="", help="YAML config (DATA.*)")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--arch", default=None, help="model name if the checkpoint does not say")
    ev.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    pr = sub.add_parser("probe", help="linear probing of a frozen checkpoint on DATA")
    pr.add_argument("--config", default="", help="YAML config (DATA.*, PROBE.*, OUTPUT_DIR)")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("--arch", default=None, help="model name if the checkpoint does not say")
    pr.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S"
    )
    try:
        if args.command == "train":
            cfg = load_config(args.config, args.overrides)
            result = Trainer(cfg, resume=args.resume, progress=not args.no_progress).train()
        else:
            overrides = list(args.overrides)
            if not any(o.startswith("METHOD.NAME=") for o in overrides):
                overrides.append("METHOD.NAME=ce")  # evaluation needs no teacher
            cfg = load_config(args.config, overrides)
            if args.command == "probe":
                result = probe_checkpoint(cfg, args.checkpoint, args.arch)
            else:
                result = evaluate_checkpoint(cfg, args.checkpoint, args.arch)
    except (UserInputError, FileNotFoundError, UnsafeCheckpointError) as e:
        # problems with the user's files or settings: the message says what to fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
