"""``luminet-lazy-train`` (``python tools/lazyconfig_train_net.py``): train or evaluate a
LazyConfig (``.py``) student, distilled as its ``distill`` section says (luminet_det/lazy.py),
the way detectron2's tools/lazyconfig_train_net.py trains LazyConfig models.

    luminet-lazy-train --config-file configs/COCO-Detection/lsj_luminet_r18_from_r101.py \\
        --num-gpus 8 [--resume] [--check-teacher] [key=value ...]
    luminet-lazy-train --config-file ... --eval-only train.init_checkpoint=path/model.pth

AMPTrainer (``train.amp.enabled``) or SimpleTrainer, detectron2's checkpointer (atomic writes,
no teacher in the checkpoints), its hooks and evaluator (``dataloader.evaluator``), ``--resume``,
``--eval-only`` (the student alone), ``launch`` for several processes (CPU processes too).
``--check-teacher`` evaluates each teacher through the student's test loader first and refuses
one below ``--min-teacher-ap``. Export the student with ``luminet-export --config-file
<this .py> --checkpoint ...``.
"""

import logging
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from luminet_det.config import DEFAULT_ROI_ALIGN_CPU_GRAD
from luminet_det.engine import cpu_ddp, make_atomic
from luminet_det.errors import TeacherTooWeakError, UserInputError
from luminet_det.lazy import build_lazy_model, distill_cfgnode, resolve_lazy_teacher_paths
from luminet_det.modeling.roi_align import set_roi_align_cpu_grad

logger = logging.getLogger("luminet_det")


def do_test(cfg, model):
    """The evaluation of ``dataloader.evaluator`` on ``dataloader.test`` (None without one)."""
    if "evaluator" in cfg.dataloader:
        ret = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
        print_csv_format(ret)
        return ret
    return None


def check_teachers(cfg, model, min_ap: float) -> None:
    """Evaluate each teacher of a distilled LazyConfig student through the student's test
    loader (flipping RGB <-> BGR where their formats differ) and refuse one whose box AP is
    below ``min_ap``: the same decision on every process."""
    from luminet_det.engine.teacher_eval import _InStudentFormat

    module = model.module if hasattr(model, "module") else model
    for i, teacher in enumerate(module.teachers):
        results = do_test(cfg, _InStudentFormat(teacher, module.input_format)) or {}
        ap = comm.all_gather(results.get("bbox", {}).get("AP", float("nan")))[0]
        if not ap >= min_ap:
            raise TeacherTooWeakError(
                f"Teacher {i} ({cfg.distill.teacher_config if i == 0 else 'ensemble'}) reaches "
                f"box AP {ap:.2f} on the student's test set, below the minimum {min_ap}: "
                "distilling from it would teach the student noise. Check its weights, class "
                "order and input format (or lower --min-teacher-ap)."
            )
        logger.info(f"Teacher {i}: box AP {ap:.2f} (minimum {min_ap}).")


def do_train(args, cfg):
    if "distill" in cfg:
        stats = str(cfg.distill.get("luminet", {}).get("stats", "batch"))
        if stats == "global":
            raise UserInputError(
                "distill.luminet.stats 'global' needs a teacher pass over a YAML config's "
                "training set before step 0; with a LazyConfig student use 'batch', 'sync' or "
                "'running'."
            )
    model = build_lazy_model(cfg)
    grad = DEFAULT_ROI_ALIGN_CPU_GRAD  # distill.roi_align_cpu_grad, as MODEL.DISTILL's key
    if "distill" in cfg:
        grad = distill_cfgnode(cfg).MODEL.DISTILL.ROI_ALIGN_CPU_GRAD
    set_roi_align_cpu_grad(model, grad)
    model.to(cfg.train.device)
    if args.check_teacher and "distill" in cfg:  # before the writers open their files
        check_teachers(cfg, model, args.min_teacher_ap)
    cfg.optimizer.params.model = model  # detectron2's param groups skip frozen parameters
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)
    from detectron2.engine.defaults import create_ddp_model

    with cpu_ddp():  # several CPU processes (gloo) where there is no CUDA
        model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(
        model, train_loader, optimizer
    )
    checkpointer = make_atomic(DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer))
    main_process = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            (
                hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
                if main_process
                else None
            ),
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            (
                hooks.PeriodicWriter(
                    default_writers(cfg.train.output_dir, cfg.train.max_iter),
                    period=cfg.train.log_period,
                )
                if main_process
                else None
            ),
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    start = trainer.iter + 1 if args.resume and checkpointer.has_checkpoint() else 0
    trainer.train(start, cfg.train.max_iter)
    return trainer


def setup(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    resolve_lazy_teacher_paths(cfg, args.config_file)
    if cfg.train.device.startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
        logger.warning("No CUDA device: training on the CPU.")
    default_setup(cfg, args)
    return cfg


def main(args):
    try:
        cfg = setup(args)
        if args.eval_only:  # the student alone, as it is deployed
            model = instantiate(cfg.model).to(cfg.train.device).eval()
            DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
            return do_test(cfg, model)
        return do_train(args, cfg)
    except UserInputError as e:  # the message says what to fix: no traceback
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def argument_parser():
    parser = default_argument_parser()
    parser.prog = "luminet-lazy-train"
    parser.add_argument(
        "--check-teacher",
        action="store_true",
        help="evaluate the teacher on the student's test set first; stop if its AP is low",
    )
    parser.add_argument("--min-teacher-ap", type=float, default=1.0)
    return parser


def cli(argv=None) -> None:
    """``luminet-lazy-train``: parse the arguments and launch :func:`main`."""
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
