"""Train and measure one run (one step, one seed), in four parts a reader can take in order:

    setup      model, DDP/compile, optimizer, schedule, loss scaler, EMA, loss and mixup
    state      where the run is (what its checkpoint holds); the running loss on the device
    batches    uint8 to the device, normalized and augmented there (`data`)
    the loop   `train_run`: a straight line, one host sync every LOG_EVERY updates

Every update's randomness is seeded from (seed, update) and every batch from (seed, epoch,
batch), so a run resumed from a checkpoint takes exactly the path an uninterrupted one would.
"""

import base64
import contextlib
import errno
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3

from . import data as D
from .config import ArchConfig
from .env import (  # noqa: F401
    Dist,
    amp_dtype,
    autocast_for,
    configure_cuda,
    env_int,
    loader_workers,
    memory_format,  # Dist ... resolve_device: re-exported
    resolve_device,
    sync,
)
from .errors import RoadmapError
from .measure import model_cost, peak_memory_mb, reset_peak_memory
from .model import RoadmapNet
from .schema import temp_path

LOG_EVERY = 10  # updates between host syncs: the loss's finiteness, progress, on_update
WARMUP_UPDATES = 2  # untimed in each process: compiling, cuDNN autotuning, first allocations
EVAL_WARMUP = 1  # untimed passes over the first validation batch before timing inference


class NonFiniteLoss(RoadmapError):
    """The loss became NaN/inf; the run is recorded as failed."""


def scale_config(cfg: ArchConfig, recipe, num_classes: int) -> ArchConfig:
    """The step's final configuration (see `Recipe.apply`)."""
    return recipe.apply(cfg, num_classes)


def seed_update(seed: int, update: int):
    """Seed every RNG the update touches (torch: drop path, erasing; numpy: mixup; random: erasing)."""
    s = (seed * 1_000_003 + update) % (2**31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


# ---------------------------------------------------------------------------- setup


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

    @property
    def current_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def schedule_length(ds: D.Dataset, recipe, dist: Dist) -> Tuple[int, int, int]:
    """(updates per epoch, updates in all, warmup updates)."""
    per_epoch = D.batches_per_epoch(ds, recipe.batch_size, dist.world_size)
    if per_epoch < 1:
        raise RoadmapError(
            f"{ds.num_train} training images cannot fill one global batch of "
            f"{recipe.batch_size * dist.world_size}; lower --set batch_size"
        )
    total = max(1, round(recipe.epochs * per_epoch))
    if recipe.max_updates:
        total = min(total, recipe.max_updates)
    return per_epoch, total, min(round(recipe.warmup_epochs * per_epoch), total - 1)


def make_optimizer(model, recipe, lr: float):
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=recipe.weight_decay, betas=tuple(recipe.betas))


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
    global_batch = recipe.batch_size * dist.world_size
    lr = recipe.scaled_lr(global_batch)
    optimizer = make_optimizer(model, recipe, lr)
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
    )


def train_step(s: Setup, x: torch.Tensor, y: torch.Tensor, update: int) -> torch.Tensor:
    """Update `update` + 1 on a batch on the device; its loss, left on the device."""
    if s.erasing is not None:
        x = s.erasing(x)
    target = y
    if s.mixup is not None:
        x, target = s.mixup(x, y)
    x = x.contiguous(memory_format=s.fmt)
    with autocast_for(s.device, s.amp):
        loss = s.criterion(s.train_model(x), target)
    s.optimizer.zero_grad(set_to_none=True)
    s.scaler.scale(loss).backward()
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.scheduler.step_update(update + 1)
    if s.ema is not None:
        s.ema.update(s.model, step=update + 1)
    return loss


# ---------------------------------------------------------------------------- state

SAVED = ("update", "images", "loss_sum", "resumed", "wall_s", "train_s", "timed_images", "data_wait_s", "curve")


@dataclass
class TrainState:
    """Where a run is: what its checkpoint holds beside the weights.

    `loss_sum` (the sum of every update's global-batch loss) stays on the device in float64,
    so its mean equals a host sum of the same float32 losses, and is read only every
    LOG_EVERY updates and at checkpoints. Seconds and images add up over resumed processes.
    """

    update: int = 0
    images: int = 0
    loss_sum: torch.Tensor = None
    resumed: int = 0
    wall_s: float = 0.0  # seconds of every process the run has had
    train_s: float = 0.0  # timed training seconds (after each process's warm-up)
    timed_images: int = 0
    data_wait_s: float = 0.0  # of train_s, waiting for the next batch
    checked: Tuple[int, float] = (0, 0.0)  # (update, loss_sum) at the last finiteness check
    curve: List[Dict] = field(default_factory=list)  # (epoch, top1, top1_ema) at each epoch's end
    started: float = field(default_factory=time.time)

    @classmethod
    def of(cls, device: torch.device, saved: Optional[Dict] = None) -> "TrainState":
        """A fresh state, or one from a checkpoint's `state` (older checkpoints' extra keys,
        epoch, batch and loss_n, follow from `update`)."""
        st = cls(**{k: v for k, v in (saved or {}).items() if k in SAVED})
        loss = float(st.loss_sum or 0.0)
        st.loss_sum = torch.tensor(loss, dtype=torch.float64, device=device)
        st.checked = (st.update, loss)
        return st

    def add(self, loss: torch.Tensor, images: int, dist: Dist):
        # the global batch's loss, so every rank sees the same sum: none syncs for it
        self.loss_sum += dist.mean_on_device(loss).double().reshape(())
        self.update += 1
        self.images += images

    def check_finite(self, name: str, s: Setup) -> float:
        """The mean loss since the last check; raises NonFiniteLoss naming the updates."""
        total = self.loss_sum.item()
        (since, before), self.checked = self.checked, (self.update, total)
        if not math.isfinite(total):
            raise NonFiniteLoss(
                f"step {name}: the training loss became {total} in updates {since + 1}-"
                f"{self.update} of {s.total} (lr {s.current_lr:.2e}, peak lr {s.lr:.2e}). Lower the "
                "learning rate (--set lr=...) or lengthen the warmup (--set warmup_epochs=...)."
            )
        return (total - before) / max(1, self.update - since)

    def save(self, path: str, s: Setup, name: str):
        """Rank 0 writes the checkpoint, never of a non-finite loss: one process raises; in
        DDP, where rank 0 alone must not, every rank raises at the next check instead."""
        if not s.dist.is_main:
            return
        if not math.isfinite(self.loss_sum.item()):
            if s.dist.world_size == 1:
                self.check_finite(name, s)  # raises, naming the updates since the last check
            return
        state = {k: getattr(self, k) for k in SAVED}
        state.update(loss_sum=self.loss_sum.item(), wall_s=self.wall_s + time.time() - self.started)
        atomic_torch_save(
            dict(
                model=s.model.state_dict(),
                optimizer=s.optimizer.state_dict(),
                ema=s.ema.state_dict() if s.ema is not None else None,
                scaler=s.scaler.state_dict(),
                threads=torch.get_num_threads(),
                state=state,
            ),
            path,
        )

    def summary(self, s: Setup) -> Dict:
        compute_s = self.train_s - self.data_wait_s
        return dict(
            train_loss=self.loss_sum.item() / max(self.update, 1),
            train_img_s=self.timed_images / self.train_s if self.train_s > 0 else None,
            compute_img_s=self.timed_images / compute_s if compute_s > 0 else None,
            data_wait_s=self.data_wait_s,
            updates=self.update,
            epochs=self.update / s.per_epoch,
            lr=s.lr,
            global_batch=s.global_batch,
            resumed=self.resumed,
            wall_s=self.wall_s + time.time() - self.started,
            **({"curve": self.curve} if self.curve else {}),
        )


def atomic_torch_save(obj, path: str):
    """Write `path` whole or not at all; the temporary file goes on any failure.

    Saving into a Python file object makes a full disk an OSError (ENOSPC), not a C++
    `inline_container.cc` message; it becomes "no space left on <path>".
    """
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RoadmapError(
                f"no space left on {os.path.dirname(os.path.abspath(path))} "
                f"(writing the checkpoint {os.path.basename(path)})"
            ) from None
        raise


class BadCheckpoint(Exception):
    """A checkpoint that cannot be loaded or applied; it is moved aside and the run restarts."""


def set_aside(path: str, reason, dist: Dist):
    """Move a bad checkpoint to `<path>.bad` (rank 0) and say so; every rank then starts over."""
    bad = f"{path}.bad"
    if dist.is_main:
        os.replace(path, bad)
        print(
            f"roadmap: warning: checkpoint {path} could not be loaded ({_one_line(reason)}); moved "
            f"it to {bad} and starting this run from scratch",
            file=sys.stderr,
            flush=True,
        )
    if dist.world_size > 1:
        torch.distributed.barrier()


def _one_line(e) -> str:
    text = " ".join(str(e).split())
    return (f"{type(e).__name__}: {text}" if isinstance(e, BaseException) else text)[:300]


def load_checkpoint(path: Optional[str], dist: Dist = Dist()) -> Optional[Dict]:
    """The run's checkpoint, loaded by every rank or by none (ranks must not diverge).

    On the CPU: load_state_dict copies weights to the device, and AdamW's step counters stay
    on the host where it expects them. `weights_only=True`: a checkpoint holds only tensors
    and plain numbers, and torch's restricted unpickler refuses anything else, so a crafted
    file cannot run code. One that does not load is moved aside (`<path>.bad`).
    """
    seen = dist.gather(bool(path) and os.path.exists(path))
    if any(seen) and not all(seen):
        raise RoadmapError(
            f"checkpoint {path} is visible to ranks {[r for r, s in enumerate(seen) if s]} but not "
            f"to {[r for r, s in enumerate(seen) if not s]}: put --out on a filesystem every node shares"
        )
    if not all(seen):
        return None
    ckpt, error = None, None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "state"} <= set(ckpt):
            raise BadCheckpoint("not a roadmap checkpoint (no model, optimizer and state)")
    except Exception as e:  # a truncated zip, a foreign pickle, a refused global alike
        error = e
    failed = dist.gather(error is not None)
    if any(failed):
        set_aside(path, error if error is not None else "another rank could not load it", dist)
        return None
    return ckpt


def restore(ckpt: Dict, s: Setup) -> TrainState:
    """Apply a loaded checkpoint to `s`; its state, counted as one more resume."""
    s.model.load_state_dict(ckpt["model"])
    s.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        s.scaler.load_state_dict(ckpt["scaler"])
    if s.ema is not None and ckpt.get("ema") is not None:
        s.ema.load_state_dict(ckpt["ema"])
    st = TrainState.of(s.device, ckpt["state"])
    st.resumed += 1
    s.scheduler.step_update(st.update)
    return st


def start(
    name: str,
    cfg: ArchConfig,
    recipe,
    ex,
    ds: D.Dataset,
    seed: int,
    device: torch.device,
    ckpt_path: Optional[str],
    dist: Dist,
) -> Tuple[Setup, TrainState]:
    """The run's setup and state, from its checkpoint if it has a good one."""
    s = setup(cfg, recipe, ex, ds, seed, device, dist)
    ckpt = load_checkpoint(ckpt_path, dist)
    if ckpt is None:
        return s, TrainState.of(device)
    try:
        st = restore(ckpt, s)
    except Exception as e:  # it loaded, but is not this run's: the model is half-written now
        set_aside(ckpt_path, e, dist)
        return setup(cfg, recipe, ex, ds, seed, device, dist), TrainState.of(device)
    threads = ckpt.get("threads")
    if device.type == "cpu" and threads and threads != torch.get_num_threads() and dist.is_main:
        print(
            f"roadmap: warning: {name}: its checkpoint was made with {threads} CPU thread(s), "
            f"this process has {torch.get_num_threads()}; CPU results depend on the thread "
            "count, so the resumed run may differ slightly from an uninterrupted one "
            f"(--threads {threads} to match)",
            file=sys.stderr,
            flush=True,
        )
    return s, st


# ---------------------------------------------------------------------------- batches


def workers_for(ex, dist: Dist) -> int:
    """The execution's loader workers, within this process's share of its node's CPUs."""
    return loader_workers(ex.workers, env_int("LOCAL_WORLD_SIZE", dist.world_size, minimum=1))


def batches(ds: D.Dataset, recipe, ex, seed: int, start_update: int, total: int, device: torch.device, dist: Dist):
    """The batches of updates start_update..total-1, normalized on the device: in-memory
    data augmented there too; a DataLoader of timm's transforms for folders or RandAugment."""
    if ds.in_memory and not recipe.randaug:
        return D.memory_run_batches(
            ds,
            recipe.img_size,
            recipe.batch_size,
            seed,
            start_update,
            total,
            recipe.max_shift,
            recipe.hflip,
            str(device),
            dist.world_size,
            dist.rank,
        )
    loader = D.folder_loader(
        ds,
        recipe.img_size,
        recipe.batch_size,
        True,
        workers_for(ex, dist),
        seed,
        start_update,
        total,
        recipe.randaug,
        recipe.hflip,
        dist.world_size,
        dist.rank,
        pin=device.type == "cuda",
    )
    return D.OnDevice(loader, ds, recipe.img_size, device)


class ValBatches:
    """The validation split in order, normalized on the device; iterated once per model
    evaluated (a folder's DataLoader and its workers are built once)."""

    def __init__(self, ds: D.Dataset, recipe, ex, device: torch.device, dist: Dist = Dist()):
        self.ds, self.img_size, self.batch_size, self.device = ds, recipe.img_size, ex.eval_batch_size, device
        self.loader = (
            None
            if ds.in_memory
            else D.OnDevice(
                D.folder_loader(
                    ds, recipe.img_size, ex.eval_batch_size, False, workers_for(ex, dist), pin=device.type == "cuda"
                ),
                ds,
                recipe.img_size,
                device,
            )
        )

    def __iter__(self):
        if self.loader is not None:
            return iter(self.loader)
        return D.memory_eval_batches(self.ds, self.img_size, self.batch_size, str(self.device))


# ---------------------------------------------------------------------------- the loop


class Meter:
    """The loop's clock and its reports.

    Timed: each process's updates after its first WARMUP_UPDATES, checkpoints excepted (the
    clock stops on a device sync, so queued work counts where it ran). Data wait: the part of
    that spent waiting for the next batch. Reports (progress bar, on_update) use host values:
    the update count, the lr, and the loss read by the last check.
    """

    def __init__(
        self, name: str, s: Setup, st: TrainState, progress: bool, on_update: Optional[Callable[[Dict], None]]
    ):
        self.s, self.st, self.on_update = s, st, on_update
        left = s.total - st.update
        self.warm_until = st.update + min(WARMUP_UPDATES, max(0, left - 1))
        self.t = None  # the end of the last timed update; None while warming up
        if left > 0 and self.warm_until == st.update:  # one update left: time it, warm or not
            sync(s.device)
            self.t = time.perf_counter()
        self.last_save = time.time()
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=s.total, initial=st.update, desc=name, unit="upd", dynamic_ncols=True, leave=False)

    def wait(self, source):
        """`source`'s batches, timing the wait for each."""
        it = iter(source)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                return
            if self.t is not None:
                self.st.data_wait_s += time.perf_counter() - t0
            yield batch

    def tick(self, images: int):
        if self.bar is not None:
            self.bar.update(1)
        if self.t is not None:
            now = time.perf_counter()
            self.st.train_s += now - self.t
            self.st.timed_images += images
            self.t = now
        elif self.st.update >= self.warm_until:
            sync(self.s.device)
            self.t = time.perf_counter()

    def log(self, loss: float):
        st = self.st
        img_s = st.timed_images / st.train_s if st.train_s > 0 else math.nan
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.s.current_lr:.1e}", img_s=f"{img_s:.0f}")
        if self.on_update is not None:
            self.on_update(dict(update=st.update, loss=loss, lr=self.s.current_lr, img_s=img_s))

    def due(self, every_s: float) -> bool:
        return time.time() - self.last_save >= every_s

    @contextlib.contextmanager
    def paused(self):
        """Checkpoint time is not training time."""
        self.stop()
        yield
        self.last_save = time.time()
        if self.t is not None:
            self.t = time.perf_counter()

    def stop(self):
        if self.t is not None:
            sync(self.s.device)
            self.st.train_s += time.perf_counter() - self.t

    def close(self):
        self.stop()
        if self.bar is not None:
            self.bar.close()


def train_run(
    name: str,
    cfg: ArchConfig,
    recipe,
    ex,
    ds: D.Dataset,
    seed: int,
    device: torch.device,
    ckpt_path: Optional[str] = None,
    dist: Dist = Dist(),
    progress: bool = True,
    on_update: Optional[Callable[[Dict], None]] = None,
) -> Dict:
    """Train `cfg` (final: widths already scaled) with `recipe` on `ds`, run as `ex` says;
    return the run's measurements (raises NonFiniteLoss). on_update: every LOG_EVERY updates."""
    (params, gflops), gflops_224 = model_cost(cfg, recipe.img_size), model_cost(cfg, 224)[1]
    memory = reset_peak_memory(device)  # after counting: the model fvcore traces is not the run's
    s, st = start(name, cfg, recipe, ex, ds, seed, device, ckpt_path, dist)
    meter = Meter(name, s, st, progress and dist.is_main, on_update)
    source = batches(ds, recipe, ex, seed, st.update, s.total, device, dist)
    val = ValBatches(ds, recipe, ex, device, dist)  # built once: the curve's and the final scores
    s.train_model.train()
    for x, y in meter.wait(source):
        seed_update(seed * 1009 + dist.rank, st.update)
        st.add(train_step(s, x, y, st.update), len(x) * dist.world_size, dist)
        meter.tick(len(x) * dist.world_size)
        if st.update % LOG_EVERY == 0 or st.update == s.total:
            meter.log(st.check_finite(name, s))  # the one host sync per LOG_EVERY updates
        if ex.curve and st.update % s.per_epoch == 0 and st.update < s.total:
            with meter.paused():  # the last epoch's point is the final evaluation's
                st.curve.append(score_epoch(s, st, val))
        if ckpt_path and (meter.due(ex.ckpt_every_s) or st.update % s.per_epoch == 0 or st.update == s.total):
            with meter.paused():
                st.save(ckpt_path, s, name)
    meter.close()

    metrics = evaluate(s.eval_model, val, s)
    metrics["top1_ema"] = evaluate(s.ema.module, val, s)["top1"] if s.ema is not None else None
    if ex.curve:
        st.curve.append(dict(epoch=st.update / s.per_epoch, top1=metrics["top1"], top1_ema=metrics["top1_ema"]))
    return dict(
        **metrics,
        **st.summary(s),
        val_n=ds.num_val,
        params_m=params / 1e6,
        gflops=gflops,
        gflops_224=gflops_224,
        peak_mem_mb=peak_memory_mb(device, memory),
        peak_mem_method=memory,
    )


# ---------------------------------------------------------------------------- evaluation


def score_epoch(s: Setup, st: TrainState, val) -> Dict:
    """The learning curve's point at an epoch's end. Scoring draws no random numbers the
    run uses (each update reseeds), so the run's path and final numbers are unchanged."""
    point = dict(epoch=st.update / s.per_epoch, top1=evaluate(s.eval_model, val, s)["top1"])
    point["top1_ema"] = evaluate(s.ema.module, val, s)["top1"] if s.ema is not None else None
    s.train_model.train()
    return point


@torch.no_grad()
def evaluate(model, val, s: Setup) -> Dict:
    """Top-1/top-5 on the validation split, per-image top-1 hits, and inference img/s: the
    forward passes of full-size batches, after EVAL_WARMUP untimed passes of the first."""
    model.eval()
    hits1, hits5, timed_n, timed_s, first = [], [], 0, 0.0, None
    for x, y in val:
        x = x.contiguous(memory_format=s.fmt)
        if first is None:
            first = len(x)
            for _ in range(EVAL_WARMUP):
                with autocast_for(s.device, s.amp):
                    model(x)
        sync(s.device)
        t0 = time.perf_counter()
        with autocast_for(s.device, s.amp):
            logits = model(x)
        sync(s.device)
        if len(x) == first:  # a smaller last batch is a new shape: compiled or tuned anew
            timed_s, timed_n = timed_s + time.perf_counter() - t0, timed_n + len(x)
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits1.append(top[:, 0] == y)
        hits5.append((top == y[:, None]).any(dim=1))
    hit1, seen = torch.cat(hits1).cpu(), sum(len(h) for h in hits1)
    return dict(
        top1=100.0 * int(hit1.sum()) / seen,
        top5=100.0 * int(torch.cat(hits5).sum()) / seen,
        infer_img_s=timed_n / max(timed_s, 1e-9),
        val_correct=pack_bits(hit1.numpy()),
    )


def pack_bits(correct: np.ndarray) -> str:
    """Per-image correctness as text for a JSON record: one bit an image (10,000 -> 1,668 chars)."""
    return base64.b64encode(np.packbits(correct.astype(bool), bitorder="little")).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """The boolean array `pack_bits` wrote, `n` images long."""
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)
