"""Configuration of luminet_det.cls (a yacs CfgNode; YAML files in configs/CIFAR-100,
configs/ImageNet and configs/Digits-Classification)."""

from __future__ import annotations

import os
from typing import Sequence

from fvcore.common.config import CfgNode as CN  # yacs + _BASE_ inheritance

from luminet_det.errors import ConfigError
from luminet_det.losses import HARD_LOSSES, STATS_MODES, logit_loss_names
from luminet_det.precision import DTYPES

__all__ = ["get_cfg", "load_config", "loss_kwargs", "METHODS", "LOSS_ARGS"]

#: For each distillation method: the keyword arguments of luminet_det.losses.build_logit_loss
#: and the METHOD key each is read from.
LOSS_ARGS = {
    "kd": {"temperature": "TEMPERATURE"},
    "dkd": {"alpha": "DKD_ALPHA", "beta": "DKD_BETA", "temperature": "TEMPERATURE"},
    "luminet": {"temperature": "TEMPERATURE", "eps": "EPS", "stats": "STATS"},
    "logitstd": {"temperature": "TEMPERATURE"},  # its eps: the authors' 1e-7
    "dist": {"beta": "DIST_BETA", "gamma": "DIST_GAMMA", "tau": "TEMPERATURE"},
}
assert set(LOSS_ARGS) <= set(logit_loss_names()), f"{LOSS_ARGS} vs {logit_loss_names()}"
#: ce: the student alone (also how teachers are trained); the others distil from MODEL.TEACHER.
METHODS = ("ce",) + tuple(LOSS_ARGS)


def get_cfg() -> CN:
    """The defaults, every key commented."""
    c = CN()
    c.MODEL = CN()
    # Student architecture: a name of luminet_det.cls.models.MODELS (e.g. "resnet8x4").
    c.MODEL.STUDENT = "resnet8x4"
    # Optional checkpoint to initialise the student from ("" = random initialisation).
    c.MODEL.STUDENT_WEIGHTS = ""
    # Teacher architecture (ignored by METHOD.NAME "ce").
    c.MODEL.TEACHER = "resnet32x4"
    # Teacher checkpoint: required by every method except "ce"; a checkpoint written by this
    # module (best.pth / last.pth) or a torchvision state dict for ImageNet models.
    c.MODEL.TEACHER_WEIGHTS = ""
    # Before distilling, the teacher is evaluated on the validation set and refused below this
    # top-1 (%): -1 = automatic (TEACHER_EXPECTED_TOP1 - TEACHER_TOP1_TOLERANCE when an
    # expected top-1 is known, else twice chance level, 200 / classes), 0 = no check.
    c.MODEL.TEACHER_MIN_TOP1 = -1.0
    # The published top-1 (%) of the checkpoint in TEACHER_WEIGHTS, when known (e.g. 79.42 for
    # the released CIFAR-100 resnet32x4); -1 = unknown. A weight file that loads but computes
    # something else (a foreign checkpoint matched by position, the wrong normalisation) lands
    # far below it, where the chance-level floor would still accept it.
    c.MODEL.TEACHER_EXPECTED_TOP1 = -1.0
    # How many points below TEACHER_EXPECTED_TOP1 the teacher may evaluate (>= 0).
    c.MODEL.TEACHER_TOP1_TOLERANCE = 3.0
    # The dtype of the frozen teacher's forward: "float32", "bfloat16" or "float16" (under
    # torch.autocast; no gradient, so no loss scaling). Its logits reach the loss in float32.
    c.MODEL.TEACHER_DTYPE = "float32"
    # Checkpoint files (paths as given in STUDENT_WEIGHTS / TEACHER_WEIGHTS or to `eval
    # --checkpoint`) that may be fully unpickled. Every other file is read as data only
    # (tensors and plain containers): a checkpoint from the internet cannot run code while it
    # is read. List a file here only if you trust its source.
    c.MODEL.TRUSTED_CHECKPOINTS = []
    # Stochastic depth (drop path) of the vision-transformer students (deit_ti, pit_ti, pvt_ti,
    # pvtv2_b0): the last block's rate, linear in depth; 0.1 in the paper's Table 7 recipe.
    # Other students have none (a value > 0 is refused for them).
    c.MODEL.DROP_PATH = 0.0
    # The teacher's input size in pixels: 0 = the images as loaded; N = the batch is resized
    # (bilinear) to N x N for the teacher only. Table 7 (Li et al. 2022b's recipe): a ViT
    # student sees CIFAR-100 upscaled to 224 px (DATA.INPUT_SIZE 224), its CIFAR CNN teacher the
    # batch resized back to 32.
    c.MODEL.TEACHER_INPUT_SIZE = 0

    c.DATA = CN()
    # One of "cifar100", "imagenet", "tiny_imagenet", "digits" (built-in, no download) or
    # "folder" (your own images: DATA.ROOT/train/<class>/* and DATA.ROOT/val/<class>/*, any
    # format Pillow reads; the class count is the number of class folders).
    c.DATA.NAME = "cifar100"
    # Folder that holds the dataset (see luminet_det.cls.data.build_dataset for layouts).
    c.DATA.ROOT = "datasets/cifar100"
    # Input size in pixels; 0 = the dataset's standard size (32 CIFAR-100, 224 ImageNet and
    # "folder", 64 Tiny-ImageNet, 16 digits).
    c.DATA.INPUT_SIZE = 0
    # DataLoader worker processes.
    c.DATA.NUM_WORKERS = 2
    # Training images also go through torchvision's AutoAugment (CIFAR-10 policy, Cubuk et
    # al. 2019) after the crop and flip: the paper's Table 6. Image datasets only.
    c.DATA.AUTOAUGMENT = False
    # Training images through timm's DeiT-style pipeline instead of the crop and flip: a
    # random-resized crop (bicubic) and flip, RandAugment with this timm policy string (e.g.
    # "rand-m9-mstd0.5-inc1", Li et al. 2022b's, the paper's Table 7), then random erasing
    # (RANDOM_ERASING). "" = off. Image datasets only.
    c.DATA.RANDAUGMENT = ""
    # Probability of timm's random erasing (per-pixel noise) after RANDAUGMENT (0.25 in
    # Table 7's recipe); used only with RANDAUGMENT.
    c.DATA.RANDOM_ERASING = 0.0

    c.METHOD = CN()
    # "ce" (student alone), "kd", "dkd", "luminet", "logitstd" (Logit Standardization KD) or
    # "dist" (DIST).
    c.METHOD.NAME = "luminet"
    # Weight of the cross-entropy with the labels (of HARD_LOSS, whichever it is).
    c.METHOD.CE_WEIGHT = 1.0
    # The student's term with the labels: "ce" (cross-entropy), "focal" (focal loss for
    # calibration, Mukhoti et al. 2020) or "dual_focal" (dual focal loss, Tao et al. 2023);
    # the paper's Table 5 baselines replace the cross-entropy with one of the last two.
    c.METHOD.HARD_LOSS = "ce"
    # The focusing exponent gamma of "focal" / "dual_focal" (>= 0; 0 gives the cross-entropy).
    c.METHOD.HARD_GAMMA = 3.0
    # Weight of the distillation term (LumiNet's official recipes use alpha**2: 33**2 on
    # CIFAR-100 res32x4->res8x4, 2**2 on ImageNet).
    c.METHOD.WEIGHT = 1.0
    # Temperature of the distillation softmax (> 0).
    c.METHOD.TEMPERATURE = 4.0
    # The distillation weight ramps as min(epoch / WARMUP_EPOCHS, 1), epochs counted from 1;
    # 0 disables the ramp.
    c.METHOD.WARMUP_EPOCHS = 0
    # DKD's target (alpha) and non-target (beta) weights.
    c.METHOD.DKD_ALPHA = 1.0
    c.METHOD.DKD_BETA = 8.0
    # DIST's inter-class (beta) and intra-class (gamma) relation weights.
    c.METHOD.DIST_BETA = 1.0
    c.METHOD.DIST_GAMMA = 1.0
    # Variance epsilon of LumiNet's perception.
    c.METHOD.EPS = 1e-5
    # Where LumiNet's statistics come from: "batch" (the paper), "sync" (all processes' batches
    # under torchrun), "global" (the paper's "Ours++": the teacher's statistics over every
    # training image, computed before epoch 1 and saved in last.pth) or "running" (the teacher's
    # statistics over the training batches seen so far, saved in last.pth). See
    # luminet_det/losses/statistics.py.
    c.METHOD.STATS = "batch"

    c.SOLVER = CN()
    # Images per optimisation step (summed over processes under torchrun).
    c.SOLVER.BATCH_SIZE = 64
    c.SOLVER.EPOCHS = 240
    c.SOLVER.LR = 0.05
    # Epochs after which the LR is multiplied by GAMMA.
    c.SOLVER.LR_STEPS = [150, 180, 210]
    c.SOLVER.GAMMA = 0.1
    c.SOLVER.WEIGHT_DECAY = 5e-4
    c.SOLVER.MOMENTUM = 0.9
    # "sgd" (with MOMENTUM; the CNN tables) or "adamw" (betas 0.9, 0.999; Table 7's ViTs).
    c.SOLVER.OPTIMIZER = "sgd"
    # "multistep" (x GAMMA at LR_STEPS) or "cosine" (from LR to MIN_LR over EPOCHS, after a
    # linear warm-up of LR_WARMUP_EPOCHS from LR_WARMUP_FACTOR * LR; set per epoch as timm's
    # CosineLRScheduler does, luminet_det/cls/solver.py).
    c.SOLVER.LR_SCHEDULE = "multistep"
    # The cosine schedule's final LR.
    c.SOLVER.MIN_LR = 0.0
    # Epochs of the cosine schedule's linear LR warm-up (0 = none); not METHOD.WARMUP_EPOCHS,
    # which ramps the distillation weight.
    c.SOLVER.LR_WARMUP_EPOCHS = 0
    # The warm-up's first LR as a fraction of LR.
    c.SOLVER.LR_WARMUP_FACTOR = 0.001
    # No weight decay on biases, norms (1-D parameters) and the ViTs' class tokens and position
    # embeddings (Li et al. 2022b's optimizer); False = decay on every parameter (mdistiller's).
    c.SOLVER.NO_DECAY_NORM_BIAS = False
    c.SOLVER.AMP = CN()
    # Mixed precision for the student: its forward under torch.autocast in PRECISION; the
    # losses are computed in float32, and float16 on CUDA scales the gradients (GradScaler).
    c.SOLVER.AMP.ENABLED = False
    # "float16" or "bfloat16".
    c.SOLVER.AMP.PRECISION = "float16"

    c.PROBE = CN()
    # Linear probing (`luminet-cls probe`): a linear classifier on the frozen network's
    # features of DATA (the downstream set), trained with SGD (momentum 0.9, cosine LR) on
    # features standardised per dimension; these are this module's defaults, not a paper's.
    c.PROBE.EPOCHS = 30
    c.PROBE.LR = 0.1
    c.PROBE.BATCH_SIZE = 256
    c.PROBE.WEIGHT_DECAY = 0.0

    # Where checkpoints (last.pth, best.pth) and metrics.json go.
    c.OUTPUT_DIR = "output/cls/run"
    c.SEED = 0
    # "cuda" when available, else "cpu"; or set explicitly.
    c.DEVICE = "auto"
    return c


def loss_kwargs(cfg: CN) -> dict:
    """The keyword arguments of ``build_logit_loss(cfg.METHOD.NAME, ...)`` (not for "ce")."""
    return {arg: cfg.METHOD[key] for arg, key in LOSS_ARGS[cfg.METHOD.NAME].items()}


def load_config(path: str = "", overrides: Sequence[str] = ()) -> CN:
    """Defaults, then ``path`` (YAML), then ``KEY=VALUE`` overrides; validated."""
    cfg = get_cfg()
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Config file {path!r} not found.")
        cfg.merge_from_file(path)
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Overrides are KEY=VALUE, got {item!r} (e.g. SOLVER.EPOCHS=10).")
        key, value = item.split("=", 1)
        pairs += [key, value]
    try:
        cfg.merge_from_list(pairs)
    except (KeyError, AssertionError) as e:
        raise ConfigError(f"{e}. Valid keys: see luminet_det/cls/config.py.") from None
    from .data import DATASETS

    if cfg.DATA.NAME not in DATASETS:
        raise ConfigError(f"DATA.NAME must be one of {list(DATASETS)}, got {cfg.DATA.NAME!r}.")
    if cfg.DATA.INPUT_SIZE < 0:
        raise ConfigError(
            f"DATA.INPUT_SIZE must be >= 0 (0 = standard), got {cfg.DATA.INPUT_SIZE}."
        )
    if cfg.METHOD.NAME not in METHODS:
        raise ConfigError(f"METHOD.NAME must be one of {list(METHODS)}, got {cfg.METHOD.NAME!r}.")
    if cfg.DATA.AUTOAUGMENT and cfg.DATA.NAME in ("digits", "digits_hard"):
        raise ConfigError(
            f"DATA.AUTOAUGMENT works on image datasets (cifar100, imagenet, tiny_imagenet, "
            f"folder), not on the built-in {cfg.DATA.NAME!r} set; set DATA.AUTOAUGMENT=False."
        )
    _check_vit_keys(cfg)
    if cfg.METHOD.HARD_LOSS not in HARD_LOSSES:
        raise ConfigError(
            f"METHOD.HARD_LOSS must be one of {list(HARD_LOSSES)}, got {cfg.METHOD.HARD_LOSS!r}."
        )
    if cfg.METHOD.HARD_GAMMA < 0:
        raise ConfigError(f"METHOD.HARD_GAMMA must be >= 0, got {cfg.METHOD.HARD_GAMMA}.")
    if cfg.METHOD.STATS not in STATS_MODES:
        raise ConfigError(
            f"METHOD.STATS must be one of {list(STATS_MODES)}, got {cfg.METHOD.STATS!r}."
        )
    if cfg.MODEL.TEACHER_TOP1_TOLERANCE < 0:
        raise ConfigError(
            f"MODEL.TEACHER_TOP1_TOLERANCE must be >= 0 (points of top-1), got "
            f"{cfg.MODEL.TEACHER_TOP1_TOLERANCE}."
        )
    if cfg.MODEL.TEACHER_DTYPE not in DTYPES:
        raise ConfigError(
            f"MODEL.TEACHER_DTYPE must be one of {list(DTYPES)}, got {cfg.MODEL.TEACHER_DTYPE!r}."
        )
    if cfg.SOLVER.AMP.PRECISION not in ("float16", "bfloat16"):
        raise ConfigError(
            f"SOLVER.AMP.PRECISION must be 'float16' or 'bfloat16', got "
            f"{cfg.SOLVER.AMP.PRECISION!r}."
        )
    p = cfg.PROBE
    if p.EPOCHS < 1 or p.BATCH_SIZE < 1 or p.LR <= 0 or p.WEIGHT_DECAY < 0:
        raise ConfigError(
            f"PROBE needs EPOCHS >= 1, BATCH_SIZE >= 1, LR > 0 and WEIGHT_DECAY >= 0; got "
            f"EPOCHS={p.EPOCHS}, BATCH_SIZE={p.BATCH_SIZE}, LR={p.LR}, "
            f"WEIGHT_DECAY={p.WEIGHT_DECAY}."
        )
    if cfg.METHOD.TEMPERATURE <= 0:
        raise ConfigError(f"METHOD.TEMPERATURE must be > 0, got {cfg.METHOD.TEMPERATURE}.")
    if cfg.METHOD.NAME != "ce" and not cfg.MODEL.TEACHER_WEIGHTS:
        raise ConfigError(
            f"METHOD.NAME={cfg.METHOD.NAME!r} needs MODEL.TEACHER_WEIGHTS (a trained teacher); "
            "train one with METHOD.NAME=ce first."
        )
    return cfg


def _check_vit_keys(cfg: CN) -> None:
    """The keys of the Table 7 recipe (solver, augmentation, ViT students)."""
    from .models import VIT_MODELS
    from .solver import OPTIMIZERS, SCHEDULES

    s = cfg.SOLVER
    if s.OPTIMIZER not in OPTIMIZERS:
        raise ConfigError(
            f"SOLVER.OPTIMIZER must be one of {list(OPTIMIZERS)}, got {s.OPTIMIZER!r}."
        )
    if s.LR_SCHEDULE not in SCHEDULES:
        raise ConfigError(
            f"SOLVER.LR_SCHEDULE must be one of {list(SCHEDULES)}, got {s.LR_SCHEDULE!r}."
        )
    if s.LR <= 0 or s.MIN_LR < 0 or s.MIN_LR > s.LR:
        raise ConfigError(
            f"Need SOLVER.LR > 0 and 0 <= SOLVER.MIN_LR <= SOLVER.LR, got LR {s.LR}, MIN_LR "
            f"{s.MIN_LR}."
        )
    if s.LR_WARMUP_EPOCHS < 0 or not 0 < s.LR_WARMUP_FACTOR <= 1:
        raise ConfigError(
            f"Need SOLVER.LR_WARMUP_EPOCHS >= 0 and 0 < SOLVER.LR_WARMUP_FACTOR <= 1, got "
            f"{s.LR_WARMUP_EPOCHS} and {s.LR_WARMUP_FACTOR}."
        )
    if s.LR_WARMUP_EPOCHS and s.LR_SCHEDULE != "cosine":
        raise ConfigError(
            f"SOLVER.LR_WARMUP_EPOCHS ({s.LR_WARMUP_EPOCHS}) belongs to the cosine schedule; set "
            "SOLVER.LR_SCHEDULE=cosine or SOLVER.LR_WARMUP_EPOCHS=0."
        )
    if not 0 <= cfg.MODEL.DROP_PATH < 1:
        raise ConfigError(f"MODEL.DROP_PATH must be in [0, 1), got {cfg.MODEL.DROP_PATH}.")
    if cfg.MODEL.DROP_PATH > 0 and cfg.MODEL.STUDENT not in VIT_MODELS:
        raise ConfigError(
            f"MODEL.DROP_PATH={cfg.MODEL.DROP_PATH} applies to the vision-transformer students "
            f"{sorted(VIT_MODELS)}, not to {cfg.MODEL.STUDENT!r}; set MODEL.DROP_PATH=0."
        )
    if cfg.MODEL.TEACHER_INPUT_SIZE < 0:
        raise ConfigError(
            f"MODEL.TEACHER_INPUT_SIZE must be >= 0 (0 = as loaded), got "
            f"{cfg.MODEL.TEACHER_INPUT_SIZE}."
        )
    if cfg.DATA.RANDAUGMENT and cfg.DATA.NAME in ("digits", "digits_hard"):
        raise ConfigError(
            f"DATA.RANDAUGMENT works on image datasets (cifar100, imagenet, tiny_imagenet, "
            f"folder), not on the built-in {cfg.DATA.NAME!r} set; set DATA.RANDAUGMENT=''."
        )
    if cfg.DATA.RANDAUGMENT:  # a policy timm does not know fails here, not after set-up
        from .data import _timm_train

        _timm_train(32, cfg.DATA.RANDAUGMENT, 0.0, (0.0,) * 3, (1.0,) * 3)
    if not 0 <= cfg.DATA.RANDOM_ERASING <= 1 or (
        cfg.DATA.RANDOM_ERASING and not cfg.DATA.RANDAUGMENT
    ):
        raise ConfigError(
            f"DATA.RANDOM_ERASING ({cfg.DATA.RANDOM_ERASING}) is a probability used with "
            "DATA.RANDAUGMENT; set DATA.RANDAUGMENT (e.g. rand-m9-mstd0.5-inc1) or "
            "DATA.RANDOM_ERASING=0."
        )
