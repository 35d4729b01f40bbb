"""LumiNet's ``STATS: "global"`` (the paper's "Ours++"): the teacher's statistics over the
training set, computed once before step 0 and kept in the checkpoint."""

from __future__ import annotations

import logging
import math
import time
from typing import List

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from detectron2.utils.events import EventStorage
from torch import nn

from ..data import CheckedDatasetMapper
from ..rng import preserved_rng

__all__ = ["losses_needing_teacher_stats", "precompute_teacher_stats"]

logger = logging.getLogger(__name__)


def losses_needing_teacher_stats(model: nn.Module) -> List[nn.Module]:
    """The logit losses of a DistillRCNN (possibly DDP-wrapped) whose ``"global"`` statistics
    are still to be computed (none after resuming from a checkpoint that holds them)."""
    model = model.module if hasattr(model, "module") else model
    losses = getattr(model, "logit_losses", {})
    return [loss for loss in losses.values() if getattr(loss, "needs_teacher_stats", False)]


def precompute_teacher_stats(cfg: CfgNode, model: nn.Module, *, log_every: int = 20) -> int:
    """Run the frozen teacher over the training set (``MODEL.DISTILL.LUMINET.
    GLOBAL_STATS_IMAGES`` images of ``DATASETS.TRAIN``, 0 = all) on ROIs sampled as in
    training (see ``DistillRCNN.teacher_logits_on_sampled_rois``) and accumulate the mean and
    variance of every class column into the losses that need them. The images are split over
    the processes; the random state of the run is left as it was. No-op when nothing needs
    statistics.

    Returns:
        int: the number of ROI rows the statistics were computed from (0 when skipped).
    """
    losses = losses_needing_teacher_stats(model)
    if not losses:
        return 0
    model = model.module if hasattr(model, "module") else model
    dicts = [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]
    limit = cfg.MODEL.DISTILL.LUMINET.GLOBAL_STATS_IMAGES
    if limit > 0:
        dicts = dicts[:limit]
    world, rank = comm.get_world_size(), comm.get_rank()
    per_step = max(1, cfg.SOLVER.IMS_PER_BATCH // world)
    steps = math.ceil(len(dicts) / (world * per_step))  # the same on every process
    mine = dicts[rank::world]
    mapper = CheckedDatasetMapper(cfg, True)  # the training augmentation
    logger.info(
        f"LumiNet STATS 'global': the teacher's statistics over {len(dicts)} training images "
        f"({steps} batches of {per_step} per process) before the first step."
    )
    start, was_training = time.perf_counter(), model.training
    model.train()  # the ROI sampler samples only in training mode; the teachers stay in eval
    with preserved_rng(), EventStorage(0), torch.no_grad():
        for step in range(steps):
            inputs = [mapper(d) for d in mine[step * per_step : (step + 1) * per_step]]
            logits = (
                model.teacher_logits_on_sampled_rois(inputs)
                if inputs
                else torch.zeros(0, model.roi_heads.num_classes + 1, device=model.device)
            )
            for loss in losses:
                loss.accumulate_teacher_stats(logits)  # all-reduced: every process calls it
            if (step + 1) % log_every == 0 or step + 1 == steps:
                elapsed = time.perf_counter() - start
                eta = elapsed / (step + 1) * (steps - step - 1)
                logger.info(
                    f"  teacher statistics: batch {step + 1}/{steps}, "
                    f"{time.strftime('%H:%M:%S', time.gmtime(elapsed))} elapsed, "
                    f"eta {time.strftime('%H:%M:%S', time.gmtime(eta))}"
                )
    model.train(was_training)
    rows = int(losses[0].running.count.item())
    logger.info(f"LumiNet STATS 'global': computed from {rows} ROIs; saved with the checkpoints.")
    return rows
