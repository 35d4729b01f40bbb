"""``luminet-export`` (``python tools/export_student.py``): the student of a DistillRCNN
(DistillRetinaNet) run as a stock detectron2 model, and for serving as TorchScript or ONNX.

    luminet-export --config-file configs/COCO-Detection/luminet_r101_r18.yaml \
        --checkpoint output/coco/luminet_r101_r18/model_final.pth --output export/ \
        [--format detectron2|torchscript|onnx] [--sample-image IMG] [KEY VALUE ...]

Every format writes OUTPUT/student.pth (student weights only: no teacher, no distillation
adapters) and OUTPUT/student.yaml (the student's config without MODEL.DISTILL), which stock
detectron2 loads:

    cfg = get_cfg(); cfg.merge_from_file("export/student.yaml")
    model = build_model(cfg); DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)

(a MobileNetV2 student needs ``import luminet_det.modeling`` first: it registers the
backbone). ``--format torchscript`` adds OUTPUT/student.ts, which runs with
``torch.jit.load`` alone; ``--format onnx`` adds OUTPUT/student.onnx (needs the onnx
package). Both come with OUTPUT/student.deploy.json: the input convention (channel order,
test-time resize) and the names of the outputs (luminet_det/deploy.py). They are traced on
one image: ``--sample-image``, or else the first image of DATASETS.TEST[0].
"""

import argparse
import os
import sys

from luminet_det.config import load_config
from luminet_det.errors import UserInputError
from luminet_det.export import export_student
from luminet_det.runio import TRUST_PICKLE_HELP


def sample_image(cfg, path: str = ""):
    """One image as the exported student's input: ``path`` read and resized as at test time,
    or the first image of DATASETS.TEST[0] through detectron2's test mapper."""
    from detectron2.data import DatasetCatalog, DatasetMapper
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T

    if path:
        if not os.path.isfile(path):
            raise UserInputError(f"--sample-image {path!r} not found.")
        image = utils.read_image(path, format=cfg.INPUT.FORMAT)
        resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        image = resize.get_transform(image).apply_image(image)
        import torch

        return torch.as_tensor(image.transpose(2, 0, 1).copy()).float()
    name = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else ""
    try:
        first = DatasetCatalog.get(name)[0]
    except Exception as e:  # noqa: BLE001 - unregistered, not generated, unreadable
        raise UserInputError(
            f"Tracing needs one sample image: --sample-image PATH, or a readable first image of "
            f"DATASETS.TEST[0] {name!r} ({type(e).__name__}: {e})."
        ) from None
    return DatasetMapper(cfg, is_train=False)(first)["image"].float()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="luminet-export", description=__doc__.split("\n\n")[0].replace("``", "")
    )
    parser.add_argument("--config-file", required=True, help="the training config")
    parser.add_argument("--checkpoint", required=True, help="e.g. OUTPUT_DIR/model_final.pth")
    parser.add_argument("--output", required=True, help="directory for the exported files")
    parser.add_argument(
        "--format",
        choices=["detectron2", "torchscript", "onnx"],
        default="detectron2",
        help="detectron2 (student.pth/.yaml, always written), torchscript (+ student.ts) or "
        "onnx (+ student.onnx)",
    )
    parser.add_argument("--sample-image", default="", help="the image to trace on")
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_PICKLE_HELP)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    try:
        if args.config_file.endswith(".py"):  # a LazyConfig student (luminet-lazy-train)
            from detectron2.config import LazyConfig

            from luminet_det.lazy import export_lazy_student, resolve_lazy_teacher_paths

            lazy = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
            resolve_lazy_teacher_paths(lazy, args.config_file)
            weights, config = export_lazy_student(
                lazy, args.checkpoint, args.output, trusted=args.trust_pickle
            )
        else:
            cfg = load_config(args.config_file, args.opts)
            weights, config = export_student(
                cfg, args.checkpoint, args.output, trusted=args.trust_pickle
            )
        print(f"Student weights: {weights}\nStudent config:  {config}")
        if args.format != "detectron2":
            export_traced(config, args.format, args.output, args.sample_image)
    except (UserInputError, FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def export_traced(student_config: str, fmt: str, output: str, image_path: str = "") -> str:
    """Build the exported stock student, trace it and write student.ts / student.onnx and
    student.deploy.json into ``output``; returns the model file's path."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from luminet_det.deploy import manifest, save_onnx, save_torchscript, write_manifest

    lazy = _is_lazy_dump(student_config)
    if lazy:  # the stock student of a LazyConfig: instantiated, traced on --sample-image
        from detectron2.config import LazyConfig, instantiate

        lazy_cfg = LazyConfig.load(student_config)
        model = instantiate(lazy_cfg.model).eval()
        DetectionCheckpointer(model).load(lazy_cfg.train.init_checkpoint)
        if not image_path:
            raise UserInputError("A LazyConfig student is traced on --sample-image IMAGE.")
        cfg = _yaml_view(model, lazy_cfg)
    else:
        cfg = get_cfg()
        cfg.merge_from_file(student_config)
        cfg.MODEL.DEVICE = "cpu"
        model = build_model(cfg).eval()
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    image = sample_image(cfg, image_path)
    path = os.path.join(output, "student.ts" if fmt == "torchscript" else "student.onnx")
    save = save_torchscript if fmt == "torchscript" else save_onnx
    names = save(model, image, path)
    info = os.path.join(output, "student.deploy.json")
    write_manifest(info, manifest(cfg, names, {fmt: os.path.basename(path)}))
    print(f"{fmt}: {path} (outputs {', '.join(names)})\nServing notes: {info}")
    return path


def _is_lazy_dump(path: str) -> bool:
    """Whether a student.yaml was written by LazyConfig.save (it has a top-level ``model``
    with a ``_target_``) rather than by a YACS config's dump."""
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    return isinstance(data.get("model"), dict) and "_target_" in data["model"]


def _yaml_view(model, lazy_cfg):
    """The few YACS keys the sample image and the serving notes read, from a LazyConfig
    student: its channel order, test-time resize, score threshold and test set."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.INPUT.FORMAT = model.input_format
    cfg.MODEL.META_ARCHITECTURE = type(model).__name__
    test = lazy_cfg.get("dataloader", {}).get("test", {})
    for aug in (test.get("mapper", {}) or {}).get("augmentations", []) or []:
        if "short_edge_length" in aug:
            cfg.INPUT.MIN_SIZE_TEST = int(aug["short_edge_length"])
            cfg.INPUT.MAX_SIZE_TEST = int(aug.get("max_size", cfg.INPUT.MAX_SIZE_TEST))
    names = (test.get("dataset", {}) or {}).get("names", "")
    cfg.DATASETS.TEST = (names,) if isinstance(names, str) and names else ()
    return cfg


if __name__ == "__main__":
    sys.exit(main())
