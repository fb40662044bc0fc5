"""Train and measure one run (one step, one seed): a straight line, top to bottom.

data -> model -> optimizer/schedule/mixup/EMA (timm) -> updates (checkpointed) -> measure.
Every update's randomness is seeded from (seed, update), so a run resumed from a
checkpoint takes exactly the path an uninterrupted one would.
"""
import base64
import contextlib
import errno
import math
import os
import random
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Dict, Optional

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
from .errors import RoadmapError
from .measure import count_gflops, count_params
from .model import RoadmapNet
from .recipe import Recipe


class NonFiniteLoss(RoadmapError):
    """The loss became NaN/inf; the run is recorded as failed."""


@dataclass
class Dist:
    """Where this process sits in a (torchrun) process group; world_size 1 without one."""
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather(self, value) -> list:
        """`value` from every rank, in rank order (a collective: every rank must call it)."""
        if self.world_size == 1:
            return [value]
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, value)
        return out

    def mean(self, t: torch.Tensor) -> float:
        """The mean of a scalar over the ranks: the same float on every rank."""
        t = t.detach().float().reshape(1)
        if self.world_size > 1:
            t = t.clone()
            torch.distributed.all_reduce(t)
            t /= self.world_size
        return t.item()


def scale_config(cfg: ArchConfig, recipe: Recipe, num_classes: int) -> ArchConfig:
    """The step's final configuration (see `Recipe.apply`)."""
    return recipe.apply(cfg, num_classes)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise RoadmapError(f"--device {device}: not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise RoadmapError(f"--device {device}: roadmap trains on cpu or cuda; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RoadmapError(f"--device {device}: no CUDA device is visible; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RoadmapError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are "
                           "visible (cuda:0 ...)")
    return dev


def seed_update(seed: int, update: int):
    """Seed every RNG the update touches (torch: drop path; numpy: mixup; random: erasing)."""
    s = (seed * 1_000_003 + update) % (2 ** 31)
    torch.manual_seed(s)
    np.random.seed(s)
    random.seed(s)


def atomic_torch_save(obj, path: str):
    """Write `path` whole or not at all; the temporary file goes on any failure.

    Saving into a Python file object makes a full disk an OSError (ENOSPC), not a C++
    `inline_container.cc` message; it becomes "no space left on <path>".
    """
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RoadmapError(f"no space left on {os.path.dirname(os.path.abspath(path))} "
                               f"(writing the checkpoint {os.path.basename(path)})") from None
        raise


class BadCheckpoint(Exception):
    """A checkpoint that cannot be loaded or applied; it is moved aside and the run restarts."""


def set_aside(path: str, reason, dist: "Dist"):
    """Move a bad checkpoint to `<path>.bad` (rank 0) and say so; every rank then starts over."""
    bad = f"{path}.bad"
    if dist.is_main:
        os.replace(path, bad)
        print(f"roadmap: warning: checkpoint {path} could not be loaded ({_one_line(reason)}); moved "
              f"it to {bad} and starting this run from scratch", file=sys.stderr, flush=True)
    if dist.world_size > 1:
        torch.distributed.barrier()


def _one_line(e) -> str:
    text = " ".join(str(e).split())
    return (f"{type(e).__name__}: {text}" if isinstance(e, BaseException) else text)[:300]


def configure_cuda(ex):
    """cuDNN autotuning (a recipe switch) and TF32 matmuls and convolutions."""
    torch.backends.cudnn.benchmark = ex.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    if device.type != "cuda" or not enabled:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_for(device: torch.device, enabled: bool):
    dtype = amp_dtype(device, enabled)
    return nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def make_optimizer(model, recipe: Recipe, lr: float):
    return create_optimizer_v2(model, "adamw", lr=lr, weight_decay=recipe.weight_decay,
                               betas=tuple(recipe.betas))


def load_checkpoint(path: Optional[str], device: torch.device, dist: Dist) -> Optional[Dict]:
    """The run's checkpoint, loaded by every rank or by none (ranks must not diverge).

    `weights_only=True`: a checkpoint holds only tensors and plain numbers, and torch's
    restricted unpickler refuses anything else, so a crafted file cannot run code. One that
    does not load is moved aside (`<path>.bad`) and the run starts from scratch.
    """
    seen = dist.gather(bool(path) and os.path.exists(path))
    if any(seen) and not all(seen):
        raise RoadmapError(
            f"checkpoint {path} is visible to ranks {[r for r, s in enumerate(seen) if s]} but not "
            f"to {[r for r, s in enumerate(seen) if not s]}: put --out on a filesystem every node shares")
    if not all(seen):
        return None
    ckpt, error = None, None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(ckpt, dict) or not {"model", "optimizer", "state"} <= set(ckpt):
            raise BadCheckpoint("not a roadmap checkpoint (no model, optimizer and state)")
    except Exception as e:  # a truncated zip, a foreign pickle, a refused global alike
        error = e
    failed = dist.gather(error is not None)
    if any(failed):
        set_aside(path, error if error is not None else "another rank could not load it", dist)
        return None
    return ckpt


@torch.no_grad()
def evaluate(model, ds: D.Dataset, recipe: Recipe, ex, device: torch.device) -> Dict[str, float]:
    """Top-1/top-5 on the validation split and inference img/s (timed over the whole pass)."""
    model.eval()
    fmt = torch.channels_last if ex.channels_last else torch.contiguous_format
    if ds.in_memory:
        batches = D.memory_eval_batches(ds, recipe.img_size, ex.eval_batch_size, str(device))
    else:
        batches = D.folder_loader(ds, recipe.img_size, ex.eval_batch_size, False, ex.workers)
    correct1 = correct5 = seen = 0
    compute_s = 0.0
    hits = []  # per-image top-1 correctness, in the validation set's order
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x = x.contiguous(memory_format=fmt)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast_for(device, recipe.amp):
            logits = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        compute_s += time.perf_counter() - t0
        top = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hit = top[:, 0] == y
        hits.append(hit.cpu())
        correct1 += hit.sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
        seen += len(y)
    return dict(top1=100.0 * correct1 / seen, top5=100.0 * correct5 / seen,
                infer_img_s=seen / max(compute_s, 1e-9),
                val_correct=pack_bits(torch.cat(hits).numpy()) if hits else "")


def pack_bits(correct: np.ndarray) -> str:
    """Per-image correctness as text for a JSON record: one bit an image (10,000 -> 1,668 chars)."""
    return base64.b64encode(np.packbits(correct.astype(bool), bitorder="little")).decode("ascii")


def unpack_bits(text: str, n: int) -> np.ndarray:
    """The boolean array `pack_bits` wrote, `n` images long."""
    raw = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    # CPU: the process's peak resident set (Linux reports KiB); it includes the data in memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_run(name: str, cfg: ArchConfig, recipe: Recipe, ex, ds: D.Dataset, seed: int,
              device: torch.device, ckpt_path: Optional[str] = None, dist: Dist = Dist(),
              progress: bool = True, on_update: Optional[Callable[[Dict], None]] = None) -> Dict:
    """Train the final configuration `cfg` with `recipe` on `ds`, executed as `ex` says;
    return the run's measurements (raises NonFiniteLoss)."""
    wall0 = time.time()
    torch.manual_seed(seed)
    model = RoadmapNet(cfg).to(device)
    params, gflops = count_params(model), count_gflops(model, recipe.img_size)
    gflops_224 = count_gflops(model, 224) if recipe.img_size != 224 else gflops
    fmt = torch.channels_last if ex.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)

    global_batch = recipe.batch_size * dist.world_size
    per_epoch = D.batches_per_epoch(ds, recipe.batch_size, dist.world_size)
    if per_epoch < 1:
        raise RoadmapError(f"{ds.num_train} training images cannot fill one global batch of "
                           f"{global_batch}; lower --set batch_size")
    total = max(1, round(recipe.epochs * per_epoch))
    if recipe.max_updates:
        total = min(total, recipe.max_updates)
    warmup = min(round(recipe.warmup_epochs * per_epoch), total - 1)
    lr = recipe.scaled_lr(global_batch)

    optimizer = make_optimizer(model, recipe, lr)
    # fp16 (GPUs without bf16) needs loss scaling; a disabled scaler passes everything through.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device, recipe.amp) == torch.float16)
    # Cosine over the updates after a linear warmup (warmup_prefix), stepped every update.
    scheduler = CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=recipe.min_lr,
                                  warmup_t=warmup, warmup_lr_init=min(1e-6, lr), warmup_prefix=True,
                                  t_in_epochs=False)
    mixup = None
    if recipe.mixup > 0 or recipe.cutmix > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                      label_smoothing=recipe.smoothing, num_classes=ds.num_classes)
        criterion = SoftTargetCrossEntropy()
    elif recipe.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(recipe.smoothing)
    else:
        criterion = torch.nn.CrossEntropyLoss()
    fast_path = ds.in_memory and not recipe.randaug
    erasing = (RandomErasing(recipe.reprob, mode="pixel", device=str(device))
               if fast_path and recipe.reprob > 0 else None)

    train_model = model
    if dist.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    eval_model = model
    if ex.compile:
        train_model, eval_model = torch.compile(train_model), torch.compile(model)
    ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema_decay else None

    # wall_s: seconds of every process this run has had (a resumed run adds up its parts).
    state = dict(update=0, epoch=0, batch=0, train_s=0.0, images=0, loss_sum=0.0, loss_n=0,
                 resumed=0, wall_s=0.0)
    ckpt = load_checkpoint(ckpt_path, device, dist)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            if ema is not None and ckpt.get("ema") is not None:
                ema.load_state_dict(ckpt["ema"])
            state.update(ckpt["state"])
        except Exception as e:  # it loaded, but is not this run's: the model is half-written now
            set_aside(ckpt_path, e, dist)
            return train_run(name, cfg, recipe, ex, ds, seed, device, ckpt_path, dist, progress,
                             on_update)
        state["resumed"] += 1
        scheduler.step_update(state["update"])
        threads = ckpt.get("threads")
        if device.type == "cpu" and threads and threads != torch.get_num_threads() and dist.is_main:
            print(f"roadmap: warning: {name}: its checkpoint was made with {threads} CPU thread(s), "
                  f"this process has {torch.get_num_threads()}; CPU results depend on the thread "
                  "count, so the resumed run may differ slightly from an uninterrupted one "
                  f"(--threads {threads} to match)", file=sys.stderr, flush=True)
    wall_before = state["wall_s"]

    def save():
        if ckpt_path and dist.is_main:
            state["wall_s"] = wall_before + time.time() - wall0
            atomic_torch_save(dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                   ema=ema.state_dict() if ema is not None else None,
                                   scaler=scaler.state_dict(), threads=torch.get_num_threads(),
                                   state=dict(state)), ckpt_path)

    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=state["update"], desc=f"{name}", unit="upd",
                   dynamic_ncols=True, leave=False)
    last_save = time.time()
    train_model.train()
    n_epochs = math.ceil(total / per_epoch)
    while state["update"] < total and state["epoch"] < n_epochs:
        epoch, start = state["epoch"], state["batch"]
        if fast_path:
            batches = D.memory_train_batches(ds, recipe.img_size, recipe.batch_size, seed, epoch,
                                             start, recipe.max_shift, recipe.hflip, str(device),
                                             dist.world_size, dist.rank)
        else:
            batches = D.folder_loader(ds, recipe.img_size, recipe.batch_size, True, ex.workers,
                                      seed, epoch, start, recipe.randaug, recipe.reprob,
                                      recipe.hflip, dist.world_size, dist.rank)
        t0 = time.perf_counter()
        for x, y in batches:
            if state["update"] >= total:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            seed_update(seed * 1009 + dist.rank, state["update"])
            target = y
            if mixup is not None:
                x, target = mixup(x, y)
            if erasing is not None:
                x = erasing(x)
            x = x.contiguous(memory_format=fmt)
            with autocast_for(device, recipe.amp):
                loss = criterion(train_model(x), target)
            # The global batch's loss, so every rank stops on the same update if it is NaN.
            loss_value = dist.mean(loss)
            if not math.isfinite(loss_value):
                raise NonFiniteLoss(
                    f"step {name}: the training loss became {loss_value} at update "
                    f"{state['update'] + 1}/{total} (lr {optimizer.param_groups[0]['lr']:.2e}, peak "
                    f"lr {lr:.2e}). Lower the learning rate (--set lr=...) or lengthen the warmup "
                    "(--set warmup_epochs=...).")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            state["update"] += 1
            state["batch"] += 1
            scheduler.step_update(state["update"])
            if ema is not None:
                ema.update(model, step=state["update"])
            state["images"] += len(x) * dist.world_size
            state["loss_sum"] += loss_value
            state["loss_n"] += 1
            now = time.perf_counter()
            state["train_s"] += now - t0
            t0 = now
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.1e}",
                                img_s=f"{state['images'] / max(state['train_s'], 1e-9):.0f}")
            if on_update is not None:
                on_update(dict(update=state["update"], loss=loss_value,
                               lr=optimizer.param_groups[0]["lr"],
                               img_s=state["images"] / max(state["train_s"], 1e-9)))
            if time.time() - last_save >= ex.ckpt_every_s:
                save()
                last_save = time.time()
                t0 = time.perf_counter()
        if state["update"] < total or state["batch"] >= per_epoch:
            state["epoch"] += 1
            state["batch"] = 0
        save()
    if bar is not None:
        bar.close()

    metrics = evaluate(eval_model, ds, recipe, ex, device)
    if ema is not None:
        metrics["top1_ema"] = evaluate(ema.module, ds, recipe, ex, device)["top1"]
    return dict(
        top1=metrics["top1"], top5=metrics["top5"], top1_ema=metrics.get("top1_ema"),
        val_correct=metrics["val_correct"], val_n=ds.num_val,
        train_loss=state["loss_sum"] / max(state["loss_n"], 1),
        params_m=params / 1e6, gflops=gflops, gflops_224=gflops_224,
        train_img_s=state["images"] / max(state["train_s"], 1e-9),
        infer_img_s=metrics["infer_img_s"], peak_mem_mb=peak_memory_mb(device),
        updates=state["update"], epochs=state["update"] / per_epoch, lr=lr,
        global_batch=global_batch, resumed=state["resumed"],
        wall_s=wall_before + time.time() - wall0,
    )
