"""``luminet-perception`` (``python tools/visualize_perception.py``): raw vs perception logits
of one sample, as one PNG (paper Figure 1 d-e).

Detector (the ROI logits of chosen images; rows = the RPN's proposals of those images):
    luminet-perception detector --config-file configs/Digits-Detection/teacher_R_50_FPN.yaml \
        --weights output/digits/teacher_R_50_FPN/model_final.pth --images 0 1 \
        --output perception_det.png
Classifier (a batch of the validation split):
    luminet-perception classifier --arch resnet56 --weights output/cls/.../best.pth \
        --data digits --output perception_cls.png
"""

import argparse
import sys

import torch

from luminet_det.visualize import perception_figure


@torch.no_grad()
def detector_logits(config_file, weights, dataset, images, opts):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from detectron2.modeling import build_model

    from luminet_det.config import load_config
    from luminet_det.modeling import box_logits  # the package registers datasets and backbones

    cfg = load_config(config_file, opts)
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.MODEL.META_ARCHITECTURE != "GeneralizedRCNN":
        raise ValueError(
            f"Give the config of a plain R-CNN detector (a teacher or an exported student), not "
            f"META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}."
        )
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(weights)
    name = dataset or cfg.DATASETS.TEST[0]
    dicts = DatasetCatalog.get(name)
    mapper = DatasetMapper(cfg, is_train=False)
    inputs = [mapper(dicts[i]) for i in images]
    x = model.preprocess_image(inputs)
    features = model.backbone(x.tensor)
    proposals, _ = model.proposal_generator(x, features, None)
    logits = box_logits(model, features, [p.proposal_boxes for p in proposals])
    classes = list(MetadataCatalog.get(name).thing_classes) + ["background"]
    return logits, classes


@torch.no_grad()
def classifier_logits(arch, weights, data, root, batch):
    from torch.utils.data import DataLoader

    from luminet_det.cls.data import build_dataset, num_classes
    from luminet_det.cls.models import build_model

    classes = num_classes(data, root)
    model = build_model(arch, classes, weights).eval()
    x, y = next(iter(DataLoader(build_dataset(data, root, train=False), batch, shuffle=False)))
    return model(x)[0], [str(i) for i in range(classes)], y


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="luminet-perception", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    sub = parser.add_subparsers(dest="kind", required=True)
    d = sub.add_parser("detector")
    d.add_argument("--config-file", required=True)
    d.add_argument("--weights", required=True)
    d.add_argument("--dataset", default=None, help="default: DATASETS.TEST[0]")
    d.add_argument("--images", type=int, nargs="+", default=[0, 1])
    d.add_argument("opts", nargs=argparse.REMAINDER)
    c = sub.add_parser("classifier")
    c.add_argument("--arch", required=True)
    c.add_argument("--weights", required=True)
    c.add_argument("--data", default="digits")
    c.add_argument("--root", default="")
    c.add_argument("--batch", type=int, default=64)
    for p in (d, c):
        p.add_argument("--row", type=int, default=None, help="sample row (default: most confident)")
        p.add_argument("--temperature", type=float, default=4.0)
        p.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    target = None
    if args.kind == "detector":
        logits, names = detector_logits(
            args.config_file, args.weights, args.dataset, args.images, args.opts
        )
        fg = torch.softmax(logits, 1)[:, :-1]
        row = int(fg.max(1).values.argmax()) if args.row is None else args.row
    else:
        logits, names, labels = classifier_logits(
            args.arch, args.weights, args.data, args.root, args.batch
        )
        row = int(torch.softmax(logits, 1).max(1).values.argmax()) if args.row is None else args.row
        target = int(labels[row])
    perception_figure(
        logits,
        row,
        args.output,
        names,
        args.temperature,
        target,
        title=f"{args.kind}: row {row} of {logits.shape[0]} (batch perception)",
    )
    print(f"wrote {args.output} (row {row} of {tuple(logits.shape)})")


if __name__ == "__main__":
    sys.exit(main())
