"""The one config node of the plugin: ``MODEL.DISTILL``."""

from __future__ import annotations

import os
from typing import Optional

from detectron2.config import CfgNode as CN

from .errors import ConfigError
from .losses import logit_loss_names
from .precision import DTYPES

__all__ = [
    "add_luminet_config",
    "load_config",
    "resolve_teacher_config_path",
    "check_distill_config",
    "logit_loss_kwargs",
    "LOGIT_LOSSES",
    "FEATURE_LOSSES",
    "DENSE_LOGIT_LOSSES",
    "DENSE_HEAD_LOSSES",
    "DENSE_ANCHORS",
    "CASCADE_COMBINE",
    "TEACHER_DTYPES",
    "ROI_ALIGN_CPU_GRADS",
    "DEFAULT_ROI_ALIGN_CPU_GRAD",
    "TEACHER_ARCHITECTURE",
    "num_classes_key",
    "get_num_classes",
    "set_num_classes",
]

#: Logit distillation losses computed on the student's sampled ROIs, built by name with
#: luminet_det.losses.build_logit_loss from the keys of their node (see logit_loss_kwargs).
LOGIT_LOSSES = ("luminet", "kd", "dkd", "logitstd", "dist")
#: Feature distillation losses computed on the FPN levels.
FEATURE_LOSSES = ("reviewkd",)
#: Losses of one-stage students only: CrossKD's cross-head predictions (modeling/crosskd.py).
DENSE_HEAD_LOSSES = ("crosskd",)
#: Logit losses of one-stage (RetinaNet) students: per-anchor sigmoid variants, registered as
#: "<name>_sigmoid" (luminet_det/losses/dense.py); DKD and logitstd are softmax-only.
DENSE_LOGIT_LOSSES = ("luminet", "kd", "dist")
#: MODEL.DISTILL.DENSE.ANCHORS values: which anchors of a one-stage head are distilled.
DENSE_ANCHORS = ("relevant", "valid", "foreground")
#: MODEL.DISTILL.TEACHER_DTYPE values (luminet_det/precision.py).
TEACHER_DTYPES = tuple(DTYPES)
#: MODEL.DISTILL.CASCADE_COMBINE values: a Cascade teacher's stages as one single-stage target.
CASCADE_COMBINE = ("mean_logits", "mean_probs")
#: MODEL.DISTILL.ROI_ALIGN_CPU_GRAD values (luminet_det/modeling/roi_align.py).
ROI_ALIGN_CPU_GRADS = ("matmul", "torchvision")
#: its default (also for a LazyConfig trained without a ``distill`` section)
DEFAULT_ROI_ALIGN_CPU_GRAD = "matmul"
#: student META_ARCHITECTURE -> the META_ARCHITECTURE its teachers must have
TEACHER_ARCHITECTURE = {"DistillRCNN": "GeneralizedRCNN", "DistillRetinaNet": "RetinaNet"}
_ONE_STAGE = ("RetinaNet", "DistillRetinaNet")


def num_classes_key(cfg: CN) -> str:
    """The config key holding a detector's class count: MODEL.RETINANET.NUM_CLASSES for
    (Distill)RetinaNet, MODEL.ROI_HEADS.NUM_CLASSES otherwise."""
    if cfg.MODEL.META_ARCHITECTURE in _ONE_STAGE:
        return "MODEL.RETINANET.NUM_CLASSES"
    return "MODEL.ROI_HEADS.NUM_CLASSES"


def get_num_classes(cfg: CN) -> int:
    """The detector's class count K (without background), from :func:`num_classes_key`."""
    node, key = cfg.MODEL, num_classes_key(cfg).split(".")[1]
    return node[key].NUM_CLASSES


def set_num_classes(cfg: CN, n: int) -> None:
    """Set the detector's class count K at :func:`num_classes_key` (in place)."""
    cfg.MODEL[num_classes_key(cfg).split(".")[1]].NUM_CLASSES = n


assert set(LOGIT_LOSSES) <= set(logit_loss_names()), f"{LOGIT_LOSSES} vs {logit_loss_names()}"


def add_luminet_config(cfg: CN) -> None:
    """Add the ``MODEL.DISTILL`` node to a detectron2 config (in place).

    Existing keys and defaults of detectron2 are left untouched. With the defaults
    (``LOSSES: []`` and no teacher) a ``DistillRCNN`` refuses to build; a ``GeneralizedRCNN``
    ignores the node entirely.
    """
    _C = cfg
    _C.MODEL.DISTILL = CN()
    # Detectron2 YAML describing the teacher. One of: a path (absolute, relative to the current
    # directory, or relative to the directory of the student's config file when loaded by
    # tools/train_net.py / luminet_det.load_config); or a model-zoo name such as
    # "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml". Required by DistillRCNN.
    _C.MODEL.DISTILL.TEACHER_CONFIG = ""
    # Teacher checkpoint: local path, URL, "detectron2://..." zoo URL, or "zoo" to take the
    # model-zoo checkpoint that belongs to TEACHER_CONFIG. Required: a teacher whose parameters
    # are not all loaded from this file is an error (a student is never distilled from a random
    # teacher).
    _C.MODEL.DISTILL.TEACHER_WEIGHTS = ""
    # List of KEY VALUE overrides applied to the teacher's config after TEACHER_CONFIG, e.g.
    # ["MODEL.ROI_HEADS.NUM_CLASSES", 10]. MODEL.DEVICE always follows the student's.
    _C.MODEL.DISTILL.TEACHER_OPTS = []
    # Teacher ensemble (paper A.2): configs and weights of further teachers, paired one to one
    # (same forms as TEACHER_CONFIG / TEACHER_WEIGHTS; relative configs resolve like it). Their
    # ROI logits on the student's proposals are averaged with the first teacher's before any
    # logit loss; feature losses use the first teacher. [] = a single teacher.
    _C.MODEL.DISTILL.ENSEMBLE_CONFIGS = []
    _C.MODEL.DISTILL.ENSEMBLE_WEIGHTS = []
    # Distillation losses added to the student's detection losses. Any subset of
    # "luminet", "kd", "dkd", "logitstd", "dist" (logit losses on the student's sampled ROIs)
    # and "reviewkd" (feature loss on the FPN levels); a DistillRetinaNet takes "luminet", "kd"
    # and "dist" (their per-anchor sigmoid forms), "crosskd" (CROSSKD below) and "reviewkd". []
    # trains the student alone (still with a teacher built, e.g. to compare runs). Unknown names
    # are an error.
    _C.MODEL.DISTILL.LOSSES = []
    # The dtype of the frozen teachers' forward: "float32", "bfloat16" or "float16" (run under
    # torch.autocast; the teacher only runs forward, so no loss scaling is needed). Their
    # logits and features reach the losses in float32. "float32" keeps autocast off for the
    # teachers even inside the student's mixed precision (SOLVER.AMP.ENABLED).
    _C.MODEL.DISTILL.TEACHER_DTYPE = "float32"
    # Every distillation weight is multiplied by min(iter / WARMUP_ITERS, 1): a linear ramp
    # from 0 to 1 over the first WARMUP_ITERS iterations. 0 disables the ramp.
    _C.MODEL.DISTILL.WARMUP_ITERS = 0
    # ROIAlign's input gradient when training on the CPU (any model the training command
    # builds, a teacher trained alone too). "matmul": two matrix products per image (all
    # cores) wherever a cost rule expects them to beat torchvision's single-threaded loop, e.g.
    # the FPN levels of small images (luminet_det/modeling/roi_align.py); "torchvision": its
    # loop everywhere. The forward is torchvision's either way and the gradients agree to
    # rounding; GPUs always use torchvision's kernels.
    _C.MODEL.DISTILL.ROI_ALIGN_CPU_GRAD = DEFAULT_ROI_ALIGN_CPU_GRAD

    _C.MODEL.DISTILL.LUMINET = CN()
    # Temperature tau (> 0) of the softmax over perception logits.
    _C.MODEL.DISTILL.LUMINET.TEMPERATURE = 4.0
    # Weight (>= 0) of loss_luminet in the total loss (the paper's lambda).
    _C.MODEL.DISTILL.LUMINET.WEIGHT = 1.0
    # Epsilon (> 0) added to the per-class variance of the perception.
    _C.MODEL.DISTILL.LUMINET.EPS = 1e-5
    # Where the perception statistics come from (luminet_det/losses/statistics.py): "batch"
    # (the paper: each process's own sampled ROIs), "sync" (the ROIs of all processes, gradients
    # as with SyncBatchNorm), "global" (the paper's "Ours++": the teacher's statistics over the
    # training set, computed by a pass of the teacher before step 0 and saved in checkpoints),
    # or "running" (the teacher's statistics over all ROIs seen so far in training, saved in
    # checkpoints). In "global" and "running" the student keeps batch statistics.
    _C.MODEL.DISTILL.LUMINET.STATS = "batch"
    # STATS "global": how many training images (the first of DATASETS.TRAIN) the teacher's
    # statistics are computed over; 0 = all of them.
    _C.MODEL.DISTILL.LUMINET.GLOBAL_STATS_IMAGES = 0

    _C.MODEL.DISTILL.KD = CN()
    # Temperature T (> 0) of Hinton's KD; the loss is scaled by T^2.
    _C.MODEL.DISTILL.KD.TEMPERATURE = 1.0
    # Weight (>= 0) of loss_kd.
    _C.MODEL.DISTILL.KD.WEIGHT = 1.0

    _C.MODEL.DISTILL.LOGITSTD = CN()
    # Logit Standardization KD (Sun et al., CVPR 2024): KD on logits standardised per ROI
    # (over its classes). Temperature T (> 0, the authors' "base temperature"); the loss is
    # scaled by T^2.
    _C.MODEL.DISTILL.LOGITSTD.TEMPERATURE = 2.0
    # Epsilon (> 0) added to each ROI's standard deviation over its classes.
    _C.MODEL.DISTILL.LOGITSTD.EPS = 1e-7
    # Weight (>= 0) of loss_logitstd.
    _C.MODEL.DISTILL.LOGITSTD.WEIGHT = 1.0

    _C.MODEL.DISTILL.DKD = CN()
    # Weight (>= 0) of the target-class term TCKD.
    _C.MODEL.DISTILL.DKD.ALPHA = 1.0
    # Weight (>= 0) of the non-target-class term NCKD (0.25 in DKD's detection recipe).
    _C.MODEL.DISTILL.DKD.BETA = 0.25
    # Temperature T (> 0); both terms are scaled by T^2.
    _C.MODEL.DISTILL.DKD.TEMPERATURE = 1.0
    # Weight (>= 0) of loss_dkd.
    _C.MODEL.DISTILL.DKD.WEIGHT = 1.0

    _C.MODEL.DISTILL.DIST = CN()
    # DIST (Huang et al., NeurIPS 2022): Pearson relations of the teacher's and the student's
    # probabilities. Weight (>= 0) of the inter-class relation (each ROI over its classes).
    _C.MODEL.DISTILL.DIST.BETA = 1.0
    # Weight (>= 0) of the intra-class relation (each class column over the ROIs).
    _C.MODEL.DISTILL.DIST.GAMMA = 1.0
    # Temperature tau (> 0) of the softmax; the loss is scaled by tau^2. The sigmoid form of
    # one-stage students has none (must be 1.0), as the authors' RetinaNet code.
    _C.MODEL.DISTILL.DIST.TAU = 1.0
    # Weight (>= 0) of loss_dist (1.0 and beta = gamma = tau = 1 in the authors' Faster R-CNN
    # and RetinaNet configs, hunto/MasKD mmrazor/configs/distill/dist/).
    _C.MODEL.DISTILL.DIST.WEIGHT = 1.0

    # A Cascade R-CNN teacher for a single-stage (Faster / Mask R-CNN) student: how the
    # teacher's stages score each ROI as one target. "mean_logits": the mean of the stages'
    # box logits (its softmax is the normalised geometric mean of their probabilities);
    # "mean_probs": the mean of their probabilities, as detectron2's cascade inference scores
    # boxes, given as log-probabilities centred per ROI. The two are different distributions
    # (KD's target changes too); LumiNet, which standardises each class column over the ROIs,
    # also depends on the representation: uncentred log-probabilities gave much weaker
    # students (benchmarks/results/README.md, Cascade). Ignored for any other teacher/student pair.
    _C.MODEL.DISTILL.CASCADE_COMBINE = "mean_logits"

    _C.MODEL.DISTILL.DENSE = CN()
    # One-stage students (DistillRetinaNet) only: which anchors enter the logit losses and
    # LumiNet's column statistics. "relevant": the anchors matched to a box plus those the
    # teacher scores at least MODEL.RETINANET.SCORE_THRESH_TEST for some class (what it would
    # report at inference: its hard negatives included, the mass of easy background not);
    # "valid": every anchor the focal loss trains on (all but the ignored ones; with LumiNet
    # the easy background then dominates every column's statistics and the loss); "foreground":
    # only the anchors matched to a box.
    _C.MODEL.DISTILL.DENSE.ANCHORS = "relevant"

    _C.MODEL.DISTILL.CROSSKD = CN()
    # CrossKD (Wang et al., CVPR 2024; DistillRetinaNet only): the student's head features
    # after its k-th convolution run through the teacher's remaining head layers, and those
    # predictions are matched to the teacher's. Defaults: the authors' RetinaNet configs
    # (jbwang1997/CrossKD configs/crosskd/crosskd_r18_retinanet_r50_fpn_1x_coco.py).
    # k (>= 1, at most MODEL.RETINANET.NUM_CONVS): reused_teacher_head_idx.
    _C.MODEL.DISTILL.CROSSKD.REUSED_HEAD_INDEX = 3
    # Exponent (>= 0) of the quality focal loss on the class logits (KDQualityFocalLoss beta).
    _C.MODEL.DISTILL.CROSSKD.BETA = 1.0
    # Weights (>= 0) of the class term (quality focal loss) and of the box term (GIoU).
    _C.MODEL.DISTILL.CROSSKD.CLS_WEIGHT = 1.0
    _C.MODEL.DISTILL.CROSSKD.REG_WEIGHT = 1.0
    # Weight (>= 0) of loss_crosskd.
    _C.MODEL.DISTILL.CROSSKD.WEIGHT = 1.0

    _C.MODEL.DISTILL.REVIEWKD = CN()
    # Weight (>= 0) of loss_reviewkd (mdistiller's detection recipes: 1.2 for R-101 -> R-18,
    # 2.0 for R-50 -> MobileNetV2, 1.0 for R-101 -> R-50).
    _C.MODEL.DISTILL.REVIEWKD.WEIGHT = 1.0
    # Channels of the attention-based fusion modules (ReviewKD's "mid_channel"; > 0).
    _C.MODEL.DISTILL.REVIEWKD.MID_CHANNELS = 256
    # Pyramid-pooling levels of the hierarchical context loss (positive ints, descending).
    _C.MODEL.DISTILL.REVIEWKD.POOL_LEVELS = [4, 2, 1]


#: keys of a loss's node that the trainer reads, not the loss
_NOT_LOSS_ARGS = ("WEIGHT", "GLOBAL_STATS_IMAGES")


def logit_loss_kwargs(cfg: CN, name: str) -> dict:
    """The keyword arguments of ``build_logit_loss(name, ...)``: the keys of the loss's node
    ``MODEL.DISTILL.<NAME>`` lower-cased (e.g. LUMINET.TEMPERATURE -> temperature), but WEIGHT
    and GLOBAL_STATS_IMAGES."""
    node = cfg.MODEL.DISTILL[name.upper()]
    return {k.lower(): v for k, v in node.items() if k not in _NOT_LOSS_ARGS}


def check_distill_config(cfg: CN) -> None:
    """Every check of a DistillRCNN config that needs no teacher (the teacher's own config is
    checked by luminet_det.modeling.teacher). Raises ValueError naming the key, the bad value
    and what is allowed."""
    d = cfg.MODEL.DISTILL
    losses = list(d.LOSSES)
    one_stage = cfg.MODEL.META_ARCHITECTURE in _ONE_STAGE
    allowed = DENSE_LOGIT_LOSSES + DENSE_HEAD_LOSSES if one_stage else LOGIT_LOSSES
    allowed += FEATURE_LOSSES
    unknown = [n for n in losses if n not in allowed]
    if unknown:
        what = (
            f"{cfg.MODEL.META_ARCHITECTURE} (a one-stage, sigmoid head: softmax-only losses "
            "such as 'dkd' and 'logitstd' do not apply) takes"
            if one_stage
            else "allowed:"
        )
        raise ConfigError(
            f"Unknown MODEL.DISTILL.LOSSES {unknown} for this model; {what} {list(allowed)} (or "
            "[] for the student alone)."
        )
    if d.TEACHER_DTYPE not in TEACHER_DTYPES:
        raise ConfigError(
            f"MODEL.DISTILL.TEACHER_DTYPE must be one of {list(TEACHER_DTYPES)}, got "
            f"{d.TEACHER_DTYPE!r}."
        )
    if d.CASCADE_COMBINE not in CASCADE_COMBINE:
        raise ConfigError(
            f"MODEL.DISTILL.CASCADE_COMBINE must be one of {list(CASCADE_COMBINE)}, got "
            f"{d.CASCADE_COMBINE!r}."
        )
    if d.DENSE.ANCHORS not in DENSE_ANCHORS:
        raise ConfigError(
            f"MODEL.DISTILL.DENSE.ANCHORS must be one of {list(DENSE_ANCHORS)}, got "
            f"{d.DENSE.ANCHORS!r}."
        )
    if one_stage and "luminet" in losses and d.LUMINET.STATS == "global":
        raise ConfigError(
            "MODEL.DISTILL.LUMINET.STATS 'global' (a teacher pre-pass over ROIs) is implemented "
            "for DistillRCNN only; with DistillRetinaNet use 'batch', 'sync' or 'running'."
        )
    if len(set(losses)) != len(losses):
        raise ConfigError(f"MODEL.DISTILL.LOSSES lists a loss twice: {losses}")
    for name in losses:
        weight = d[name.upper()].WEIGHT
        if not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"MODEL.DISTILL.{name.upper()}.WEIGHT must be >= 0, got {weight!r}.")
    images = d.LUMINET.GLOBAL_STATS_IMAGES
    if not isinstance(images, int) or images < 0:
        raise ConfigError(
            f"MODEL.DISTILL.LUMINET.GLOBAL_STATS_IMAGES must be an int >= 0 (0 = every training "
            f"image), got {images!r}."
        )
    if not isinstance(d.WARMUP_ITERS, int) or d.WARMUP_ITERS < 0:
        raise ConfigError(
            f"MODEL.DISTILL.WARMUP_ITERS must be an int >= 0, got {d.WARMUP_ITERS!r}."
        )
    if len(d.ENSEMBLE_CONFIGS) != len(d.ENSEMBLE_WEIGHTS):
        raise ConfigError(
            f"MODEL.DISTILL.ENSEMBLE_CONFIGS ({len(d.ENSEMBLE_CONFIGS)} items) and "
            f"ENSEMBLE_WEIGHTS ({len(d.ENSEMBLE_WEIGHTS)} items) must pair up one to one."
        )
    if cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads" and d.LUMINET.STATS in ("global", "running"):
        if "luminet" in losses:
            raise ConfigError(
                f"MODEL.DISTILL.LUMINET.STATS {d.LUMINET.STATS!r} keeps one set of teacher "
                "statistics, but a Cascade student's stages see different ROIs; use 'batch' or "
                "'sync' with CascadeROIHeads."
            )
    if cfg.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES:
        raise ConfigError(
            "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES=True replaces the sampled proposals in place, "
            "so teacher and student ROIs would no longer align; set it to False."
        )


def resolve_teacher_config_path(cfg: CN, student_config_file: str) -> None:
    """Make a relative ``MODEL.DISTILL.TEACHER_CONFIG`` (and ``ENSEMBLE_CONFIGS``) absolute,
    resolving it against the directory of the student's config file when the file exists there
    (in place).

    Zoo names (which exist only inside detectron2's model zoo) and absolute paths are left as
    they are.
    """
    base = os.path.dirname(os.path.abspath(student_config_file))

    def resolve(path: str) -> str:
        if not path or os.path.isabs(path) or "://" in path:
            return path
        candidate = os.path.join(base, path)
        return os.path.normpath(candidate) if os.path.isfile(candidate) else path

    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DISTILL.TEACHER_CONFIG = resolve(cfg.MODEL.DISTILL.TEACHER_CONFIG)
    cfg.MODEL.DISTILL.ENSEMBLE_CONFIGS = [resolve(p) for p in cfg.MODEL.DISTILL.ENSEMBLE_CONFIGS]
    if was_frozen:
        cfg.freeze()


def _all_keys(node: CN, prefix: str = "") -> list:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.extend(_all_keys(v, full + ".") if isinstance(v, CN) else [full])
    return keys


def _explain_key_error(cfg: CN, err: Exception, source: str) -> Optional[ConfigError]:
    """yacs reports an unknown key as KeyError("Non-existent config key: K") from files and
    AssertionError("Non-existent key: K") from KEY VALUE lists; None for other errors."""
    import difflib

    msg = str(err.args[0]) if err.args else str(err)
    if not msg.startswith(("Non-existent config key:", "Non-existent key:")):
        return None
    key = msg.split(":", 1)[1].strip()
    close = difflib.get_close_matches(key, _all_keys(cfg), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]}?" if close else ""
    return ConfigError(f"Config key {key} (from {source}) does not exist.{hint}")


def load_config(config_file: str, opts: list = ()) -> CN:
    """A detectron2 config with the plugin's node, merged from ``config_file`` and ``opts``
    (KEY VALUE list); the relative ``MODEL.DISTILL.TEACHER_CONFIG`` of the file resolved
    against the file's directory. An unknown key raises ValueError naming the nearest valid
    key. The config is returned unfrozen.
    """
    from detectron2.config import get_cfg

    cfg = get_cfg()
    add_luminet_config(cfg)
    if not config_file or not os.path.isfile(config_file):
        raise FileNotFoundError(f"Config file {config_file!r} not found.")
    for source, merge in ((config_file, cfg.merge_from_file), ("the command line", None)):
        try:
            if merge is not None:
                merge(config_file)
                resolve_teacher_config_path(cfg, config_file)
            elif opts:
                if len(opts) % 2:
                    raise ConfigError(f"Overrides must be KEY VALUE pairs, got {list(opts)}")
                cfg.merge_from_list(list(opts))
        except (KeyError, AssertionError) as e:
            explained = _explain_key_error(cfg, e, source)
            if explained is None:
                raise
            raise explained from None
    return cfg
