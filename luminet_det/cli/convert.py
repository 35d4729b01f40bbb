"""``luminet-convert`` (``python tools/convert_torchvision_to_d2.py``): torchvision ImageNet
checkpoints -> detectron2 backbone checkpoints.

detectron2's model zoo has no R-18 and no MobileNetV2 ImageNet backbone; the paper's students
start from torchvision's. This tool maps a torchvision state dict onto the names of
detectron2's ResNet (R-18/34/50/101) or of luminet_det's MobileNetV2, under
``backbone.bottom_up.``, and writes a ``.pth`` checkpoint for ``MODEL.WEIGHTS`` that
detectron2 reads with ``torch.load(weights_only=True)``:

    luminet-convert --arch resnet18 --output checkpoints/R-18.pth \
        [--input resnet18-f37072fd.pth]

The file also lists the config values the weights need (RGB input with torchvision's mean and
std; for resnet50/101 ``MODEL.RESNETS.STRIDE_IN_1X1 False``, torchvision's block layout), and
luminet-train refuses a config that contradicts them before training. Without --input,
torchvision's ImageNet weights are fetched by torchvision (internet needed). Every input key
must map (the classifier is dropped on purpose); unmatched keys are reported and make the tool
fail.
"""

import argparse
import os
import sys

import torch

from luminet_det.convert import ARCHS, convert_torchvision_state_dict, converted_checkpoint
from luminet_det.runio import TRUST_PICKLE_HELP, load_checkpoint


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="luminet-convert", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("--arch", required=True, choices=list(ARCHS))
    parser.add_argument("--input", help="torchvision checkpoint (.pth); default: download")
    parser.add_argument("--output", required=True, help="detectron2 checkpoint (.pth)")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    args = parser.parse_args(argv)
    if not args.output.endswith(".pth"):
        parser.error(
            f"--output {args.output!r} must end in .pth: detectron2 reads .pth files with "
            "torch.load(weights_only=True); a .pkl would be read with pickle, which can run code."
        )
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
    checkpoint = converted_checkpoint(converted, args.arch)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    torch.save(checkpoint, args.output)
    needs = ", ".join(f"{k} {v}" for k, v in checkpoint["__luminet_requires__"].items())
    print(f"Wrote {len(converted)} tensors to {args.output}; the config must set: {needs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
