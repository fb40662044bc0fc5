"""The loop: batches to the device, `train_run` as a straight line with one host sync every
LOG_EVERY updates, and the clock that times it."""

import contextlib
import itertools
import math
import time
from typing import Callable, Dict, Optional

import torch

from .. import data as D
from ..config import ArchConfig
from ..env import Dist, amp_dtype, env_int, loader_workers, sync
from ..measure import matmul_ceiling, model_cost, model_flop_utilisation, peak_memory_mb, reset_peak_memory
from .build import Setup, seed_update, train_step
from .evaluate import evaluate, score_epoch
from .state import TrainState, start

LOG_EVERY = 10  # updates between host syncs: the loss's finiteness, progress, on_update
WARMUP_UPDATES = 2  # untimed in each process: compiling, cuDNN autotuning, first allocations


def workers_for(ex, dist: Dist) -> int:
    """The execution's loader workers, within this process's share of its node's CPUs."""
    return loader_workers(ex.workers, env_int("LOCAL_WORLD_SIZE", dist.world_size, minimum=1))


def batches(ds: D.Dataset, recipe, ex, seed: int, start_update: int, total: int, device: torch.device, dist: Dist):
    """The micro-batches of updates start_update..total-1, normalized on the device: in-memory
    data augmented there too; a DataLoader of timm's transforms for folders or RandAugment.

    Each update's global batch is drawn as one batch of batch_size x micro per process (the
    same images, in the same order, as without accumulation) and handed over as `micro` parts.
    """
    k = recipe.micro_batches(dist.world_size)
    if ds.in_memory and not recipe.randaug:
        source = D.memory_run_batches(
            ds,
            recipe.img_size,
            recipe.batch_size * k,
            seed,
            start_update,
            total,
            recipe.max_shift,
            recipe.hflip,
            str(device),
            dist.world_size,
            dist.rank,
        )
        return Updates(source, k, split=True)
    loader = D.folder_loader(
        ds,
        recipe.img_size,
        recipe.batch_size * k,
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
    if k > 1:  # workers load micro-batches, so the host never holds a whole global batch
        loader = micro_loader(loader, k)
    return Updates(D.OnDevice(loader, ds, recipe.img_size, device), k, split=False)


class Updates:
    """A run's batches grouped per update: lists of `micro` (x, y) pairs on the device, cut
    from one pair (views, no copy) or taken `micro` at a time from the source."""

    def __init__(self, source, micro: int, split: bool):
        self.source, self.micro, self.split = source, micro, split

    def __iter__(self):
        it = iter(self.source)
        if self.split:
            for x, y in it:
                yield list(zip(x.chunk(self.micro), y.chunk(self.micro)))
            return
        while parts := list(itertools.islice(it, self.micro)):
            yield parts


class MicroBatches(torch.utils.data.Sampler):
    """Each batch of `batches` as k consecutive micro-batches of equal size."""

    def __init__(self, batches, k: int):
        self.batches, self.k = batches, k

    def __len__(self):
        return len(self.batches) * self.k

    def __iter__(self):
        for batch in self.batches:
            size = len(batch) // self.k
            yield from (batch[i * size : (i + 1) * size] for i in range(self.k))


def micro_loader(loader: torch.utils.data.DataLoader, k: int) -> torch.utils.data.DataLoader:
    """`loader` with its batches served as k micro-batches each (same images, same order)."""
    return torch.utils.data.DataLoader(
        loader.dataset,
        batch_sampler=MicroBatches(loader.batch_sampler, k),
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers,
        generator=loader.generator,
    )


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
    keep: Optional[Callable[[torch.nn.Module, Optional[torch.nn.Module]], Dict]] = None,
) -> Dict:
    """Train `cfg` (final: widths already scaled) with `recipe` on `ds`, run as `ex` says;
    return the run's measurements (raises NonFiniteLoss). on_update: every LOG_EVERY updates;
    keep(model, ema model or None): called by rank 0 once the run is scored, its fields recorded."""
    (params, gflops), gflops_224 = model_cost(cfg, recipe.img_size), model_cost(cfg, 224)[1]
    memory = reset_peak_memory(device)  # after counting: the model fvcore traces is not the run's
    s, st = start(name, cfg, recipe, ex, ds, seed, device, ckpt_path, dist)
    meter = Meter(name, s, st, progress and dist.is_main, on_update)
    source = batches(ds, recipe, ex, seed, st.update, s.total, device, dist)
    val = ValBatches(ds, recipe, ex, device, dist)  # built once: the curve's and the final scores
    s.train_model.train()
    for parts in meter.wait(source):
        seed_update(seed * 1009 + dist.rank, st.update)
        images = sum(len(x) for x, _ in parts) * dist.world_size
        st.add(train_step(s, parts, st.update), images, dist)
        meter.tick(images)
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
    peak_mb, summary = peak_memory_mb(device, memory), st.summary(s)  # before the matmul below
    kept = keep(s.model, s.ema.module if s.ema is not None else None) if keep and dist.is_main else {}
    return dict(
        **metrics,
        **summary,
        val_n=ds.num_val,
        params_m=params / 1e6,
        gflops=gflops,
        gflops_224=gflops_224,
        peak_mem_mb=peak_mb,
        peak_mem_method=memory,
        **utilisation(gflops, summary["train_img_s"], dist, device, recipe.amp),
        **kept,
    )


def utilisation(gflops: float, img_s: Optional[float], dist: Dist, device: torch.device, amp: bool) -> Dict:
    """The run's model FLOP utilisation against this device's matmul ceiling, measured here in
    the dtype the run computes in (`measure.matmul_ceiling`; after training, untimed)."""
    dtype = amp_dtype(device, amp) or torch.float32
    ceiling = matmul_ceiling(device, dtype)
    return dict(
        mfu=model_flop_utilisation(gflops, img_s, dist.world_size, ceiling),
        matmul_gflops=ceiling,
        matmul_dtype=str(dtype).replace("torch.", ""),
    )
