"""``luminet-train`` (``python tools/train_net.py``): train or evaluate a (distilled) detector
with detectron2's trainer.

    luminet-train --config-file configs/COCO-Detection/luminet_r101_r18.yaml \
        --num-gpus 8 [--resume] [--check-teacher] [KEY VALUE ...]
    luminet-train --config-file ... --eval-only MODEL.WEIGHTS path/to/model.pth

Extra flags beyond detectron2's ``default_argument_parser``:
    --register NAME JSON IMAGE_ROOT   register a COCO-format set (repeatable); NUM_CLASSES is
                                      taken from its categories
    --check-teacher                   evaluate the teacher first and refuse to distill from one
                                      whose box AP is below --min-teacher-ap (default 1.0)
On a machine without CUDA, ``--num-gpus N`` starts N CPU processes (gloo) sharing the cores.
"""

import logging
import os
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator, verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import luminet_det.modeling  # noqa: F401  (registers the plugin's models and datasets)
from luminet_det.config import TEACHER_ARCHITECTURE, load_config
from luminet_det.data import (
    CheckedDatasetMapper,
    check_dataset_files,
    check_num_classes,
    register_user_datasets,
)
from luminet_det.engine import (
    check_student_weights,
    cpu_ddp,
    evaluate_teacher,
    make_atomic,
    precompute_teacher_stats,
)
from luminet_det.errors import UserInputError
from luminet_det.modeling.roi_align import set_roi_align_cpu_grad


class Trainer(DefaultTrainer):
    """DefaultTrainer with COCO evaluation, atomic checkpoint writes and data loaders that name
    unreadable images. The optimizer gets
    the parameters that require gradients: the student's and the distillation adapters'
    (the teacher is frozen)."""

    def __init__(self, cfg):
        with cpu_ddp():  # --num-gpus N without GPUs: N CPU processes (gloo)
            super().__init__(cfg)
        make_atomic(self.checkpointer)

    @classmethod
    def build_model(cls, cfg):
        """detectron2's model, its ROIAlign modules set by MODEL.DISTILL.ROI_ALIGN_CPU_GRAD."""
        model = super().build_model(cfg)
        set_roi_align_cpu_grad(model, cfg.MODEL.DISTILL.ROI_ALIGN_CPU_GRAD)
        return model

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=CheckedDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=CheckedDatasetMapper(cfg, False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    no_cuda = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if no_cuda:
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu" and comm.get_local_size() > 1:
        # N processes on one machine share its cores instead of each claiming all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    register_user_datasets(cfg, args.register)
    check_num_classes(cfg)
    check_dataset_files(cfg)  # before any model is built or weight downloaded
    check_student_weights(cfg, args.resume)
    cfg.freeze()
    default_setup(cfg, args)
    # our own messages (teacher checks, data cleaning) go to the console and log.txt too
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="luminet_det")
    if no_cuda:
        logging.getLogger("luminet_det").warning(
            f"No CUDA device: training on the CPU ({comm.get_world_size()} process(es))."
        )
    return cfg


def main(args):
    try:
        return _main(args)
    except UserInputError as e:  # the message says what to fix: no traceback
        logger = logging.getLogger("luminet_det")
        if logger.handlers:  # set up: console and log.txt
            logger.error(str(e))
        else:
            print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def _main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            raise ValueError("TEST.AUG is not supported by this tool.")
        verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    if args.check_teacher and cfg.MODEL.META_ARCHITECTURE in TEACHER_ARCHITECTURE:
        evaluate_teacher(cfg, trainer.model, min_ap=args.min_teacher_ap)
    trainer.resume_or_load(resume=args.resume)
    precompute_teacher_stats(cfg, trainer.model)  # LUMINET.STATS "global", unless resumed
    return trainer.train()


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument(
        "--register",
        nargs=3,
        action="append",
        metavar=("NAME", "JSON", "IMAGE_ROOT"),
        help="register a COCO-format detection set under NAME (repeatable)",
    )
    parser.add_argument(
        "--check-teacher",
        action="store_true",
        help="evaluate the teacher on DATASETS.TEST[0] before training; stop if its AP is low",
    )
    parser.add_argument("--min-teacher-ap", type=float, default=1.0)
    return parser


def cli(argv=None) -> None:
    """``luminet-train``: parse the arguments and launch :func:`main` on ``--num-gpus``
    processes (detectron2's ``launch``)."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    cli()
