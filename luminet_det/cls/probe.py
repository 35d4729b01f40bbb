"""Linear probing (the paper's Fig. 3a transfer experiment): a trained network, frozen, gives
one feature vector per image of a downstream dataset (the input of its last linear layer);
a linear classifier is trained on those features and its top-1 on the downstream validation
split is the score of the representation.

Features are computed once per image, with the validation transforms (no augmentation), and
kept in memory: the probe's epochs then cost a matrix product each. Each feature dimension is
standardised with the training features' mean and standard deviation before the classifier.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from luminet_det.errors import ConfigError
from luminet_det.metrics import topk_accuracy
from luminet_det.runio import load_checkpoint

from .data import build_dataset, input_size, num_classes
from .models import build_model

__all__ = ["extract_features", "train_linear_probe", "probe_checkpoint", "checkpoint_classes"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: DataLoader, device: torch.device, desc: str = ""
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D) float32 on the CPU, labels (N,)) of every image of ``loader`` through
    ``model`` in eval mode (models of this module return ``(logits, features)``); with
    ``desc``, a progress bar with ETA under that name."""
    model.eval()
    feats, labels = [], []
    batches = loader
    if desc:
        from tqdm import tqdm

        batches = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for x, y in batches:
        feats.append(model(x.to(device))[1].float().cpu())
        labels.append(y)
    if not feats:
        raise ConfigError("The probe's dataset is empty: no image to compute features of.")
    return torch.cat(feats), torch.cat(labels)


def train_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    classes: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int = 0,
) -> Dict[str, float]:
    """Train ``nn.Linear(D, classes)`` on standardised features with SGD (momentum 0.9, cosine
    learning rate over ``epochs``, cross-entropy) and return the validation top-1 / top-5 (%)
    and the last epoch's training loss.

    Args:
        train_feats (Tensor): (N, D) training features; train_labels (Tensor): (N,).
        val_feats (Tensor): (M, D); val_labels (Tensor): (M,).
        classes (int): the downstream class count.
    """
    if train_feats.dim() != 2 or train_feats.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"train_feats must be (N, D) with N = len(train_labels), got {tuple(train_feats.shape)}"
            f" and {tuple(train_labels.shape)}."
        )
    if epochs < 1 or batch_size < 1 or lr <= 0 or weight_decay < 0:
        raise ValueError(
            f"epochs and batch_size must be >= 1, lr > 0 and weight_decay >= 0; got epochs="
            f"{epochs}, batch_size={batch_size}, lr={lr}, weight_decay={weight_decay}."
        )
    mean = train_feats.mean(0)
    std = train_feats.std(0, unbiased=False).clamp_min(1e-6)
    x_train, x_val = (train_feats - mean) / std, (val_feats - mean) / std
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(train_feats.shape[1], classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head.reset_parameters()
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * math.ceil(x_train.shape[0] / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss = torch.zeros(())
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=generator)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(head(x_train[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        logits = head(x_val)
    acc = topk_accuracy(logits, val_labels, (1, 5))
    return {"top1": acc[1], "top5": acc[5], "train_loss": float(loss.detach())}


def checkpoint_classes(state) -> int:
    """The class count of a classifier checkpoint: the output width of its last 2-D weight
    (the classifier is the last layer of every model of this module and of torchvision's)."""
    weights = state.get("model", state) if isinstance(state, dict) else state
    matrices = [v for k, v in weights.items() if k.endswith("weight") and v.dim() == 2]
    if not matrices:
        raise ConfigError("The checkpoint has no linear layer: is it a classifier's checkpoint?")
    return int(matrices[-1].shape[0])


def probe_checkpoint(cfg, checkpoint: str, arch: Optional[str] = None) -> Dict[str, float]:
    """Linear probing of ``checkpoint`` (frozen) on DATA (the downstream set) with the PROBE
    settings; writes ``OUTPUT_DIR/probe.json`` and returns the same dictionary."""
    trusted = checkpoint in set(cfg.MODEL.TRUSTED_CHECKPOINTS)
    state = load_checkpoint(
        checkpoint, trusted=trusted, opt_in=f"MODEL.TRUSTED_CHECKPOINTS=['{checkpoint}']"
    )
    arch = arch or (state.get("arch") if isinstance(state, dict) else None) or cfg.MODEL.STUDENT
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.DEVICE == "auto" else cfg.DEVICE
    )
    source_classes = checkpoint_classes(state)
    # a ViT is built for the probe's input size (DATA.INPUT_SIZE: the size it was trained at)
    size = input_size(cfg.DATA.NAME, cfg.DATA.INPUT_SIZE)
    model = build_model(
        arch, source_classes, checkpoint, trusted=trusted, loaded=state, img_size=size
    )
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    data, size = (cfg.DATA.NAME, cfg.DATA.ROOT), cfg.DATA.INPUT_SIZE
    p = cfg.PROBE
    start = time.time()
    val = build_dataset(*data, train=False, size=size)
    splits = {}
    for split, dataset in (("train", _without_augmentation(cfg, val)), ("val", val)):
        loader = DataLoader(dataset, 256, num_workers=cfg.DATA.NUM_WORKERS)
        splits[split] = extract_features(model, loader, device, desc=f"{split} features")
        logger.info(
            f"probe: {split} features {tuple(splits[split][0].shape)} after "
            f"{time.time() - start:.0f} s"
        )
    result = train_linear_probe(
        *splits["train"],
        *splits["val"],
        num_classes(*data),
        epochs=p.EPOCHS,
        lr=p.LR,
        batch_size=p.BATCH_SIZE,
        weight_decay=p.WEIGHT_DECAY,
        seed=cfg.SEED,
    )
    result.update(
        checkpoint=checkpoint,
        arch=arch,
        dataset=cfg.DATA.NAME,
        feature_dim=int(splits["train"][0].shape[1]),
        train_images=int(splits["train"][0].shape[0]),
        val_images=int(splits["val"][0].shape[0]),
        seconds=round(time.time() - start, 1),
    )
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(cfg.OUTPUT_DIR, "probe.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def _without_augmentation(cfg, val_dataset):
    """The training split of DATA, each image given as the validation split gives its images
    (no random crop, flip or noise): one deterministic feature per image."""
    from .data import DigitsClassification

    train = build_dataset(cfg.DATA.NAME, cfg.DATA.ROOT, train=True, size=cfg.DATA.INPUT_SIZE)
    if isinstance(train, DigitsClassification):
        train.train = False  # no shift and noise; "hard" corruptions fixed per image
    else:
        train.transform = val_dataset.transform
    return train
