"""``luminet-cls-report`` (``python tools/cls_report.py``): calibration (paper Table 10) and
confirmation-bias (paper Table 8) reports of classifiers.

    luminet-cls-report --data digits \
        --teacher resnet56=output/cls/digits/teacher_resnet56/best.pth \
        --student KD=resnet8=output/cls/digits/kd_resnet56_resnet8/best.pth \
        --student LumiNet=resnet8=output/cls/digits/luminet_resnet56_resnet8/best.pth \
        --output report   # -> report.md and report_reliability.png
"""

import argparse
import sys

import torch
from torch.utils.data import DataLoader

from luminet_det.cls.data import build_dataset, num_classes
from luminet_det.cls.models import build_model
from luminet_det.visualize import calibration_report, confirmation_bias_report


@torch.no_grad()
def collect(arch, weights, loader, num_classes):
    model = build_model(arch, num_classes, weights).eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x)[0])
        labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="luminet-cls-report", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default="")
    parser.add_argument("--teacher", required=True, metavar="ARCH=CKPT")
    parser.add_argument("--student", action="append", required=True, metavar="NAME=ARCH=CKPT")
    parser.add_argument("--worst", type=int, default=5, help="the teacher's N worst classes")
    parser.add_argument("--output", required=True, help="path stem of the .md and .png")
    args = parser.parse_args(argv)
    n = num_classes(args.data, args.root)
    loader = DataLoader(build_dataset(args.data, args.root, train=False), 256)
    t_arch, t_ckpt = args.teacher.split("=", 1)
    teacher = collect(t_arch, t_ckpt, loader, n)
    students = {}
    for item in args.student:
        name, arch, ckpt = item.split("=", 2)
        students[name] = collect(arch, ckpt, loader, n)
    png = args.output + "_reliability.png"
    calib = calibration_report({f"teacher {t_arch}": teacher, **students}, png)
    bias = confirmation_bias_report(teacher, students, args.worst)
    md = (
        f"# Classifier report ({args.data} validation split)\n\n## Calibration (15 bins)\n\n"
        f"{calib}\n\n![reliability]({png.split('/')[-1]})\n\n## Confirmation bias: the teacher's "
        f"{args.worst} worst classes\n\n{bias}\n"
    )
    with open(args.output + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    sys.exit(main())
