"""Training and evaluation loop of luminet_det.cls (CE / KD / DKD / LumiNet)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Dict, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from luminet_det.errors import TeacherTooWeakError, WeightsUnavailableError
from luminet_det.losses import LogitLoss, build_logit_loss, hard_label_loss
from luminet_det.metrics import classification_report
from luminet_det.precision import autocast_for, check_dtype, teacher_precision
from luminet_det.rng import preserved_rng
from luminet_det.runio import atomic_save, load_checkpoint

from .config import loss_kwargs
from .data import build_dataset, input_size, num_classes
from .models import ResizedInput, build_model
from .solver import build_optimizer, build_scheduler

__all__ = [
    "Trainer",
    "evaluate",
    "evaluate_checkpoint",
    "distillation_loss",
    "shard",
    "teacher_minimum",
]

logger = logging.getLogger("luminet_det.cls")
_DTYPE_KEY = "MODEL.TEACHER_DTYPE"


def distillation_loss(cfg, num_classes: int) -> Optional[LogitLoss]:
    """The unweighted distillation loss of ``cfg.METHOD.NAME`` (built by name through
    :func:`luminet_det.losses.build_logit_loss`), or None for "ce"."""
    if cfg.METHOD.NAME == "ce":
        return None
    return build_logit_loss(cfg.METHOD.NAME, num_classes=num_classes, **loss_kwargs(cfg))


def _device(cfg) -> torch.device:
    if cfg.DEVICE == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.DEVICE)


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, distributed: bool = False
) -> Dict[str, float]:
    """top1, top5, ECE, MCE (15 bins) and FPR95 of ``model`` on ``loader`` (all percent).

    With ``distributed`` every process calls it with a loader over its own shard of the set
    (:func:`shard`) and gets the report of the whole set (counts all-reduced,
    :func:`luminet_det.metrics.classification_report`)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device))[0].float().cpu())
        labels.append(y)
    model.train(was_training)
    if not logits:  # an empty shard
        return classification_report(
            torch.zeros(0, _classes(model)),
            torch.zeros(0, dtype=torch.long),
            distributed=distributed,
        )
    return classification_report(torch.cat(logits), torch.cat(labels), distributed=distributed)


def _classes(model: nn.Module) -> int:
    """The output width of a classifier (its last Linear layer)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def shard(dataset, world: int, rank: int):
    """Rank ``rank``'s share of ``dataset`` for evaluation: every ``world``-th item, no item
    twice and none padded (DistributedSampler would repeat items to equalise the shards)."""
    return dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))


class Trainer:
    """Trains ``cfg.MODEL.STUDENT`` with ``cfg.METHOD`` against a frozen teacher.

    Writes ``OUTPUT_DIR/last.pth`` every epoch (student, optimizer, scheduler, epoch; atomic),
    ``OUTPUT_DIR/best.pth`` (the student with the best validation top-1) and one JSON line per
    epoch to ``OUTPUT_DIR/metrics.json``. Under ``torchrun`` (WORLD_SIZE > 1) the student is
    wrapped in DistributedDataParallel and the batch is split over the processes.
    """

    def __init__(self, cfg, resume: bool = False, progress: bool = True):
        self.cfg, self.progress = cfg, progress
        self.world, self.rank = _dist_info()
        if self.world > 1 and not torch.distributed.is_initialized():
            # NCCL for the CUDA tensors of training, gloo for the CPU tensors of evaluation
            backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = _device(cfg)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.manual_seed(cfg.SEED + self.rank)
        self.num_classes = classes = num_classes(cfg.DATA.NAME, cfg.DATA.ROOT)
        data = (cfg.DATA.NAME, cfg.DATA.ROOT)
        self.train_set = build_dataset(
            *data,
            train=True,
            size=cfg.DATA.INPUT_SIZE,
            autoaugment=cfg.DATA.AUTOAUGMENT,
            randaugment=cfg.DATA.RANDAUGMENT,
            random_erasing=cfg.DATA.RANDOM_ERASING,
        )
        self.val_set = build_dataset(*data, train=False, size=cfg.DATA.INPUT_SIZE)
        trusted = set(cfg.MODEL.TRUSTED_CHECKPOINTS)
        self.student = build_model(
            cfg.MODEL.STUDENT,
            classes,
            cfg.MODEL.STUDENT_WEIGHTS or None,
            trusted=cfg.MODEL.STUDENT_WEIGHTS in trusted,
            img_size=input_size(cfg.DATA.NAME, cfg.DATA.INPUT_SIZE),
            drop_path=cfg.MODEL.DROP_PATH,
        )
        self.student.to(self.device)
        self.distill = distillation_loss(cfg, classes)
        if self.distill is not None:  # a module: e.g. LumiNet's running teacher statistics
            self.distill.to(self.device)
            # labels come from the data set, in range by construction: not read back per step
            self.distill.check_targets = False
        check_dtype(cfg.MODEL.TEACHER_DTYPE, self.device.type, _DTYPE_KEY)
        amp = cfg.SOLVER.AMP
        if amp.ENABLED:
            check_dtype(amp.PRECISION, self.device.type, "SOLVER.AMP.PRECISION")
        fp16_cuda = amp.ENABLED and amp.PRECISION == "float16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if fp16_cuda else None
        self.teacher = None
        if self.distill is not None:
            _check_teacher_file(cfg)
            with preserved_rng():  # so every method draws the same augmentations per seed
                self.teacher = build_model(
                    cfg.MODEL.TEACHER,
                    classes,
                    cfg.MODEL.TEACHER_WEIGHTS,
                    trusted=cfg.MODEL.TEACHER_WEIGHTS in trusted,
                )
            if cfg.MODEL.TEACHER_INPUT_SIZE:  # e.g. a 224-px ViT's batch, 32 px for its teacher
                self.teacher = ResizedInput(self.teacher, size=cfg.MODEL.TEACHER_INPUT_SIZE)
            self.teacher.to(self.device).eval().requires_grad_(False)
        self.model = self.student
        if self.world > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.student, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        per_process = max(1, cfg.SOLVER.BATCH_SIZE // self.world)
        sampler = (
            torch.utils.data.DistributedSampler(
                self.train_set, self.world, self.rank, seed=cfg.SEED
            )
            if self.world > 1
            else None
        )
        generator = torch.Generator().manual_seed(cfg.SEED)
        self.train_loader = DataLoader(
            self.train_set,
            per_process,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=cfg.DATA.NUM_WORKERS,
            drop_last=True,
            generator=generator,
            pin_memory=self.device.type == "cuda",
        )
        # every process evaluates its own shard; the counts are all-reduced (evaluate)
        self.val_loader = DataLoader(
            shard(self.val_set, self.world, self.rank), 256, num_workers=cfg.DATA.NUM_WORKERS
        )
        self.optimizer = build_optimizer(cfg.SOLVER, self.student)
        self.scheduler = build_scheduler(cfg.SOLVER, self.optimizer)
        self.start_epoch, self.best_top1 = 1, -1.0
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        self.last_path = os.path.join(cfg.OUTPUT_DIR, "last.pth")
        self.best_path = os.path.join(cfg.OUTPUT_DIR, "best.pth")
        if resume:
            self._resume()

    # ------------------------------------------------------------------------ checkpoints
    def _resume(self) -> None:
        if not os.path.isfile(self.last_path):
            logger.warning(f"--resume: no {self.last_path}; starting from epoch 1.")
            return
        state = load_checkpoint(self.last_path, map_location=self.device)  # written by us
        self.student.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.distill is not None and "distill" in state:
            self.distill.load_state_dict(state["distill"])
        self.start_epoch, self.best_top1 = state["epoch"] + 1, state["best_top1"]
        logger.info(f"Resumed from {self.last_path} at epoch {self.start_epoch}.")

    def _save(self, epoch: int, metrics: Dict[str, float]) -> None:
        if self.rank != 0:
            return
        if metrics["top1"] > self.best_top1:
            self.best_top1 = metrics["top1"]
            atomic_save(
                {
                    "model": self.student.state_dict(),
                    "epoch": epoch,
                    "metrics": metrics,
                    "arch": self.cfg.MODEL.STUDENT,
                },
                self.best_path,
            )
        atomic_save(
            {
                "model": self.student.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "epoch": epoch,
                "best_top1": self.best_top1,
                "arch": self.cfg.MODEL.STUDENT,
                "config": self.cfg.dump(),
                "distill": self.distill.state_dict() if self.distill is not None else {},
            },
            self.last_path,
        )

    # ------------------------------------------------------------------------ training
    def _warmup(self, epoch: int) -> float:
        w = self.cfg.METHOD.WARMUP_EPOCHS
        return 1.0 if w <= 0 else min(epoch / w, 1.0)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, m = self.cfg, self.cfg.METHOD
        self.model.train()
        if self.distill is not None:
            self.distill.train()
        if isinstance(self.train_loader.sampler, torch.utils.data.DistributedSampler):
            self.train_loader.sampler.set_epoch(epoch)
        n = 0
        batches = self.train_loader
        if self.progress and self.rank == 0:
            from tqdm import tqdm

            batches = tqdm(
                batches, desc=f"epoch {epoch}/{cfg.SOLVER.EPOCHS}", leave=False, dynamic_ncols=True
            )
        factor = self._warmup(epoch)
        totals = torch.zeros(3, device=self.device)  # kept on the device: no wait per step
        for it, (x, y) in enumerate(batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss, loss_ce, loss_distill = self.losses(x, y, factor)
            self._ensure_finite(loss, loss_ce, loss_distill, epoch, it)  # one host sync
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:  # float16 on CUDA: scaled gradients
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            totals += torch.stack([loss, loss_ce, loss_distill]).detach()
            n += 1
            if hasattr(batches, "set_postfix") and it % 10 == 0:
                batches.set_postfix(loss=f"{loss.item():.3f}")
        values = (totals / max(n, 1)).tolist()
        return dict(zip(("loss", "loss_ce", "loss_distill"), values))

    def losses(self, x: torch.Tensor, y: torch.Tensor, factor: float = 1.0):
        """(total, cross-entropy, distillation) of one batch: the student's forward (under
        autocast when SOLVER.AMP.ENABLED), the teacher's (under MODEL.TEACHER_DTYPE, no
        gradient), the losses in float32 with their weights and the warm-up ``factor``."""
        m = self.cfg.METHOD
        with self.student_precision():
            logits, _ = self.model(x)
        logits = logits.float()
        loss_ce = hard_label_loss(m.HARD_LOSS, logits, y, m.HARD_GAMMA) * m.CE_WEIGHT
        loss_distill = torch.zeros((), device=self.device)
        if self.distill is not None:
            with teacher_precision(self.cfg.MODEL.TEACHER_DTYPE, self.device.type, _DTYPE_KEY):
                t_logits, _ = self.teacher(x)
            loss_distill = self.distill(logits, t_logits.float(), y) * (m.WEIGHT * factor)
        return loss_ce + loss_distill, loss_ce, loss_distill

    def student_precision(self):
        """The student's forward: autocast in SOLVER.AMP.PRECISION when SOLVER.AMP.ENABLED,
        else plain float32."""
        amp = self.cfg.SOLVER.AMP
        return autocast_for(amp.PRECISION if amp.ENABLED else "float32", self.device.type)

    @staticmethod
    def _ensure_finite(loss, loss_ce, loss_distill, epoch: int, it: int) -> None:
        """FloatingPointError naming the terms if the loss is not finite: one host
        synchronisation per step, the terms read only when it fires."""
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"Loss became {loss.item()} at epoch {epoch}, iteration {it} (loss_ce="
                f"{loss_ce.item():.4g}, loss_distill={loss_distill.item():.4g}); stopped before "
                "the optimizer step. Lower SOLVER.LR or METHOD.WEIGHT, then --resume."
            )

    def _broadcast_buffers(self) -> None:
        """Give every process rank 0's buffers (BatchNorm running statistics) before each
        process evaluates its shard: DistributedDataParallel broadcasts them at the start of
        each forward, so after the last training step every process holds the statistics of
        its own last batch, and rank 0's are the ones saved."""
        if self.world > 1:
            for buf in self.student.buffers():
                torch.distributed.broadcast(buf, 0)

    def check_teacher(self, metrics_path: str) -> Dict[str, float]:
        """Evaluate the teacher once on the validation set (each process its shard; every
        process gets the same report and takes the same decision), print its top-1 and refuse
        a teacher below :func:`teacher_minimum`."""
        cfg = self.cfg
        t = evaluate(self.teacher, self.val_loader, self.device, distributed=self.world > 1)
        classes = self.num_classes
        minimum, why = teacher_minimum(cfg, classes)
        logger.info(
            f"teacher {cfg.MODEL.TEACHER} ({cfg.MODEL.TEACHER_WEIGHTS}): top-1 {t['top1']:.2f} "
            f"on the validation set (minimum {minimum:.2f}: {why})"
        )
        if self.rank == 0:
            _append(metrics_path, {"epoch": 0, **{f"teacher_{k}": v for k, v in t.items()}})
        if t["top1"] < minimum:
            expected = cfg.MODEL.TEACHER_EXPECTED_TOP1
            if expected > 0 and cfg.MODEL.TEACHER_MIN_TOP1 < 0:
                advice = (
                    f"The file may not be the checkpoint the config names, or may have been "
                    f"trained with other data or normalisation. For a teacher of your own, set "
                    f"MODEL.TEACHER_EXPECTED_TOP1 to its top-1 (or -1 for the chance-level check "
                    f"only), or MODEL.TEACHER_MIN_TOP1=0.0 to skip this check."
                )
            else:
                advice = (
                    "Check that the weights are those of this architecture and data set (or set "
                    "MODEL.TEACHER_MIN_TOP1=0.0 to skip this check)."
                )
            raise TeacherTooWeakError(
                f"The teacher {cfg.MODEL.TEACHER} from {cfg.MODEL.TEACHER_WEIGHTS!r} reaches "
                f"top-1 {t['top1']:.2f} % on the validation set, below the minimum "
                f"{minimum:.2f} % ({why}; chance is {100.0 / classes:.2f} %): distilling from it "
                f"would teach the student something other than the teacher you meant. {advice}"
            )
        return t

    @torch.no_grad()
    def precompute_teacher_stats(self) -> int:
        """``METHOD.STATS "global"`` (the paper's "Ours++"): the teacher's logit statistics over
        every training image (as the training set yields them, augmentation included), once
        before the first epoch; saved in ``last.pth``, so a resumed run keeps them. The images
        are split over the processes; the run's random state is left as it was. Returns the
        rows counted (0 when nothing was needed)."""
        if self.distill is None or not getattr(self.distill, "needs_teacher_stats", False):
            return 0
        n = len(self.train_set)
        per = max(1, self.cfg.SOLVER.BATCH_SIZE // self.world)
        steps = math.ceil(math.ceil(n / self.world) / per)  # the same on every process
        mine = Subset(self.train_set, range(self.rank, n, self.world))
        loader = DataLoader(mine, per, shuffle=False, num_workers=self.cfg.DATA.NUM_WORKERS)
        logger.info(f"METHOD.STATS global: the teacher's statistics over {n} training images.")
        with preserved_rng():
            batches = iter(loader)  # draws the loader's base seed: inside preserved_rng
            if self.progress and self.rank == 0:
                from tqdm import tqdm

                batches = tqdm(batches, total=steps, desc="teacher statistics", leave=False)
            for _ in range(steps):
                x = next(batches, None)
                logits = (
                    self.teacher(x[0].to(self.device))[0].float()
                    if x is not None
                    else torch.zeros(0, self.num_classes, device=self.device)
                )
                self.distill.accumulate_teacher_stats(logits)  # all-reduced over processes
        rows = int(self.distill.running.count.item())
        logger.info(f"METHOD.STATS global: computed from {rows} images; saved in last.pth.")
        return rows

    def train(self) -> Dict[str, float]:
        cfg = self.cfg
        metrics_path = os.path.join(cfg.OUTPUT_DIR, "metrics.json")
        if self.start_epoch == 1 and self.rank == 0 and os.path.isfile(metrics_path):
            os.remove(metrics_path)  # a new run (not --resume) starts a new metrics file
        if self.teacher is not None and self.start_epoch == 1:
            self.check_teacher(metrics_path)
        self.precompute_teacher_stats()
        start, result = time.time(), {}
        for epoch in range(self.start_epoch, cfg.SOLVER.EPOCHS + 1):
            lr = self.optimizer.param_groups[0]["lr"]
            losses = self.train_epoch(epoch)
            self.scheduler.step()
            # every process evaluates its shard (no process waits idle in a collective for
            # rank 0 to evaluate the whole set, which can exceed NCCL's timeout on ImageNet)
            self._broadcast_buffers()
            result = evaluate(self.student, self.val_loader, self.device, self.world > 1)
            if self.rank == 0:
                self._save(epoch, result)
                row = {"epoch": epoch, "lr": lr, **losses, **result, "time": time.time() - start}
                _append(metrics_path, row)
                done = epoch - self.start_epoch + 1
                eta = (time.time() - start) / done * (cfg.SOLVER.EPOCHS - epoch)
                logger.info(
                    f"epoch {epoch}/{cfg.SOLVER.EPOCHS}  loss {losses['loss']:.3f}  top-1 "
                    f"{result['top1']:.2f}  ECE {result['ece']:.2f}  best {self.best_top1:.2f}  "
                    f"eta {time.strftime('%H:%M:%S', time.gmtime(eta))}"
                )
        return result


#: where the released CIFAR-100 teachers come from (the official LumiNet README points there)
RELEASE = "https://github.com/megvii-research/mdistiller/releases/tag/checkpoints"


def teacher_minimum(cfg, classes: int):
    """(minimum top-1 in %, why) of the teacher check: MODEL.TEACHER_MIN_TOP1 when set (>= 0);
    else TEACHER_EXPECTED_TOP1 - TEACHER_TOP1_TOLERANCE when the published top-1 is known;
    else twice chance level."""
    m = cfg.MODEL
    if m.TEACHER_MIN_TOP1 >= 0:
        return m.TEACHER_MIN_TOP1, "MODEL.TEACHER_MIN_TOP1"
    if m.TEACHER_EXPECTED_TOP1 > 0:
        return (
            m.TEACHER_EXPECTED_TOP1 - m.TEACHER_TOP1_TOLERANCE,
            f"its published top-1 {m.TEACHER_EXPECTED_TOP1:.2f} % "
            f"(MODEL.TEACHER_EXPECTED_TOP1) minus {m.TEACHER_TOP1_TOLERANCE:g} points",
        )
    return 200.0 / classes, "twice chance level; no MODEL.TEACHER_EXPECTED_TOP1 known"


def _check_teacher_file(cfg) -> None:
    """A missing MODEL.TEACHER_WEIGHTS file: say where to get it, or how to train one."""
    path = cfg.MODEL.TEACHER_WEIGHTS
    if os.path.isfile(path):
        return
    train = (
        f"python -m luminet_det.cls train --config configs/CIFAR-100/teachers/{cfg.MODEL.TEACHER}"
        f".yaml, then MODEL.TEACHER_WEIGHTS=output/cls/cifar100/teachers/{cfg.MODEL.TEACHER}/best.pth"
    )
    if "cifar_teachers" in path.replace(os.sep, "/"):
        root = path.replace(os.sep, "/").split("cifar_teachers")[0] or "./"
        raise WeightsUnavailableError(
            f"Teacher weights {path!r} not found. The paper's CIFAR-100 teachers are mdistiller's "
            f"release: download cifar_teachers.tar from {RELEASE} and unpack it in {root!r} "
            f"(it creates cifar_teachers/<name>_vanilla/ckpt_epoch_240.pth). Or train your own "
            f"teacher (240 epochs): {train}."
        )
    raise WeightsUnavailableError(
        f"Teacher weights {path!r} not found (MODEL.TEACHER_WEIGHTS). Give the path of a trained "
        f"teacher, or train one with METHOD.NAME=ce (CIFAR-100: {train})."
    )


def _append(path: str, row: Dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def evaluate_checkpoint(cfg, checkpoint: str, arch: Optional[str] = None) -> Dict[str, float]:
    """Evaluate a checkpoint of this module (or a torchvision state dict) on DATA's val split."""
    trusted = checkpoint in set(cfg.MODEL.TRUSTED_CHECKPOINTS)
    opt_in = f"MODEL.TRUSTED_CHECKPOINTS=['{checkpoint}']"
    state = load_checkpoint(checkpoint, trusted=trusted, opt_in=opt_in)
    arch = arch or (state.get("arch") if isinstance(state, dict) else None) or cfg.MODEL.STUDENT
    device = _device(cfg)
    classes = num_classes(cfg.DATA.NAME, cfg.DATA.ROOT)
    size = input_size(cfg.DATA.NAME, cfg.DATA.INPUT_SIZE)
    model = build_model(arch, classes, checkpoint, trusted=trusted, loaded=state, img_size=size)
    model.to(device)
    loader = DataLoader(
        build_dataset(cfg.DATA.NAME, cfg.DATA.ROOT, train=False, size=cfg.DATA.INPUT_SIZE),
        256,
        num_workers=cfg.DATA.NUM_WORKERS,
    )
    return evaluate(model, loader, device)
