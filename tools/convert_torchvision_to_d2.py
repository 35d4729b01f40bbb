#!/usr/bin/env python
"""Convert torchvision ImageNet checkpoints into detectron2 backbone checkpoints.

detectron2's model zoo has no R-18 and no MobileNetV2 ImageNet backbone; the paper's students
start from torchvision's. This tool maps a torchvision state dict onto the names of
detectron2's ResNet (R-18/34/50/101) or of luminet_det's MobileNetV2, under
``backbone.bottom_up.``, and writes a detectron2 ``.pkl`` (``MODEL.WEIGHTS``):

    python tools/convert_torchvision_to_d2.py --arch resnet18 --output checkpoints/R-18.pkl \
        [--input resnet18-f37072fd.pth]

Without --input, torchvision's ImageNet weights are fetched by torchvision (internet needed).
Every input key must map (the classifier is dropped on purpose); unmatched keys are reported
and make the tool fail.
"""

import argparse
import pickle
import sys

from luminet_det.convert import convert_torchvision_state_dict
from luminet_det.runio import TRUST_PICKLE_HELP, load_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        required=True,
        choices=["resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"],
    )
    parser.add_argument("--input", help="torchvision checkpoint (.pth); default: download")
    parser.add_argument("--output", required=True, help="detectron2 checkpoint (.pkl)")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    args = parser.parse_args(argv)
    if args.input:
        state = load_checkpoint(args.input, trusted=args.trust_pickle, opt_in="--trust-pickle")
        state = state.get("state_dict", state.get("model", state))
    else:
        import torchvision

        state = torchvision.models.get_model(args.arch, weights="DEFAULT").state_dict()
    converted, unmatched = convert_torchvision_state_dict(state, args.arch)
    if unmatched:
        print(f"Unmatched torchvision keys ({len(unmatched)}): {unmatched}", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        pickle.dump(
            {
                "model": {k: v.numpy() for k, v in converted.items()},
                "__author__": f"torchvision {args.arch} (luminet_det converter)",
                "matching_heuristics": False,
            },
            f,
        )
    print(f"Wrote {len(converted)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
