"""Setup: what a run trains with, built once from its configuration, recipe and execution
(model, DDP/compile, optimizer, schedule, loss scaler, EMA, loss and mixup), and one update."""

import contextlib
import random
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

from .. import data as D
from ..config import ArchConfig
from ..env import Dist, amp_dtype, autocast_for, memory_format
from ..errors import RoadmapError
from ..model import RoadmapNet


def scale_config(cfg: ArchConfig, recipe, num_classes: int) -> ArchConfig:
    """The step's final configuration (see `Recipe.apply`)."""
    return recipe.apply(cfg, num_classes)


def seed_update(seed: int, update: int):
    """Seed every RNG the update touches (torch: drop path, erasing; numpy: mixup; random: erasing)."""
    s = (seed * 1_000_003 + update) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


@dataclass
class Setup:
    """What a run trains with, built once from its configuration, recipe and execution."""

    model: torch.nn.Module  # the weights: what checkpoints and the EMA hold
    train_model: torch.nn.Module  # the model in DDP and/or compiled
    eval_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    ema: Optional[ModelEmaV3]
    criterion: torch.nn.Module
    mixup: Optional[Mixup]
    erasing: Optional[RandomErasing]
    device: torch.device
    dist: Dist
    amp: bool
    fmt: torch.memory_format
    per_epoch: int
    total: int
    lr: float
    global_batch: int
    clip_grad: Optional[float] = None
    micro: int = 1  # micro-batches accumulated per update (each of the recipe's batch_size)

    @property
    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def schedule_length(ds: D.Dataset, recipe, dist: Dist) -> Tuple[int, int, int]:
    """(updates per epoch, updates in all, warmup updates)."""
    global_batch = recipe.global_batch_size(dist.world_size)
    per_epoch = D.batches_per_epoch(ds, global_batch // dist.world_size, dist.world_size)
    if per_epoch < 1:
        raise RoadmapError(
            f"{ds.num_train} training images cannot fill one global batch of {global_batch}; lower "
            + ("--set global_batch" if recipe.global_batch else "--set batch_size")
        )
    total = max(1, round(recipe.epochs * per_epoch))
    if recipe.max_updates:
        total = min(total, recipe.max_updates)
    return per_epoch, total, min(round(recipe.warmup_epochs * per_epoch), total - 1)


def make_optimizer(model, recipe, lr: float, fused: bool = False):
    """timm's AdamW (no weight decay on norms and biases); `fused` (on CUDA): one kernel for
    every parameter, its step counters on the device. The CPU keeps torch's default, so the
    committed CPU runs' numbers stay those of their records."""
    extra = dict(fused=True) if fused else {}
    return create_optimizer_v2(
        model, "adamw", lr=lr, weight_decay=recipe.weight_decay, betas=tuple(recipe.betas), **extra
    )


def make_loss(recipe, num_classes: int):
    """(mixup or None, the criterion): soft targets under mixup/cutmix, else smoothed labels."""
    if recipe.mixup > 0 or recipe.cutmix > 0:
        return (
            Mixup(
                mixup_alpha=recipe.mixup,
                cutmix_alpha=recipe.cutmix,
                label_smoothing=recipe.smoothing,
                num_classes=num_classes,
            ),
            SoftTargetCrossEntropy(),
        )
    if recipe.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(recipe.smoothing)
    return None, torch.nn.CrossEntropyLoss()


def setup(cfg: ArchConfig, recipe, ex, ds: D.Dataset, seed: int, device: torch.device, dist: Dist) -> Setup:
    torch.manual_seed(seed)
    model = RoadmapNet(cfg).to(device).to(memory_format=memory_format(ex))
    per_epoch, total, warmup = schedule_length(ds, recipe, dist)
    global_batch = recipe.global_batch_size(dist.world_size)
    lr = recipe.scaled_lr(global_batch)
    optimizer = make_optimizer(model, recipe, lr, fused=device.type == "cuda")
    # fp16 (GPUs without native bf16) needs loss scaling; a disabled scaler passes through.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device, recipe.amp) == torch.float16)
    # Cosine over the updates after a linear warmup (warmup_prefix), stepped every update.
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(1, total - warmup),
        lr_min=recipe.min_lr,
        warmup_t=warmup,
        warmup_lr_init=min(1e-6, lr),
        warmup_prefix=True,
        t_in_epochs=False,
    )
    mixup, criterion = make_loss(recipe, ds.num_classes)
    # on the device, batch by batch, as timm's prefetcher does it (seeded by seed_update)
    erasing = RandomErasing(recipe.reprob, mode="pixel", device=str(device)) if recipe.reprob > 0 else None
    train_model = eval_model = model
    if dist.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if ex.compile:
        train_model, eval_model = torch.compile(train_model), torch.compile(model)
    ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema_decay else None
    return Setup(
        model,
        train_model,
        eval_model,
        optimizer,
        scheduler,
        scaler,
        ema,
        criterion,
        mixup,
        erasing,
        device,
        dist,
        recipe.amp,
        memory_format(ex),
        per_epoch,
        total,
        lr,
        global_batch,
        recipe.clip_grad,
        recipe.micro_batches(dist.world_size),
    )


def train_step(s: Setup, parts: Sequence[Tuple[torch.Tensor, torch.Tensor]], update: int) -> torch.Tensor:
    """Update `update` + 1 on the device from the update's micro-batches (one without gradient
    accumulation); the update's loss, left on the device.

    k micro-batches of b images make the update of one batch of k x b: each loss is divided
    by k, so the summed gradients are the mean over all k x b images; DDP reduces them once,
    after the last (`no_sync` before).
    """
    k = len(parts)
    s.optimizer.zero_grad(set_to_none=True)
    total = None
    for i, (x, y) in enumerate(parts):
        if s.erasing is not None:
            x = s.erasing(x)
        target = y
        if s.mixup is not None:
            x, target = s.mixup(x, y)
        x = x.contiguous(memory_format=s.fmt)
        last = i == k - 1
        sync_grads = last or s.dist.world_size == 1 or not hasattr(s.train_model, "no_sync")
        with contextlib.nullcontext() if sync_grads else s.train_model.no_sync():
            with autocast_for(s.device, s.amp):
                loss = s.criterion(s.train_model(x), target)
            if k > 1:
                loss = loss / k
            s.scaler.scale(loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if s.clip_grad is not None:
        s.scaler.unscale_(s.optimizer)  # clip the true gradients (a no-op without fp16)
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.clip_grad)  # no host sync
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step_update(update + 1)
    if s.ema is not None:
        s.ema.update(s.model, step=update + 1)
    return total
