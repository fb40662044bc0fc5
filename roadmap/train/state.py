"""State: where a run is (what its checkpoint holds beside the weights), the running loss on
the device, and the checkpoint's writing, loading and restoring."""

import contextlib
import errno
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .. import data as D
from ..config import ArchConfig
from ..env import Dist
from ..errors import RoadmapError
from ..schema import temp_path
from .build import Setup, setup


class NonFiniteLoss(RoadmapError):
    """The loss became NaN/inf; the run is recorded as failed."""


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
            micro_batches=s.micro,
            resumed=self.resumed,
            wall_s=self.wall_s + time.time() - self.started,
            **({"curve": self.curve} if self.curve else {}),
        )


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait until the block is done, then arrive as usual. Raised inside
    torch.save's writer, their exception becomes a C++ RuntimeError ("unexpected pos"): the
    run would be recorded as failed instead of interrupted, and its checkpoint lost."""
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.getsignal(s) for s in sigs}
    if threading.current_thread() is not threading.main_thread() or None in old.values():
        yield  # handlers can only be set in the main thread (and not restored if set in C)
        return
    got: List[int] = []
    for s in sigs:
        signal.signal(s, lambda n, _: got.append(n))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if got:
            signal.raise_signal(got[0])


def atomic_torch_save(obj, path: str):
    """Write `path` whole or not at all; the temporary file goes on any failure, and an
    interrupt waits until the file is whole (`signals_deferred`).

    Saving into a Python file object makes a full disk an OSError (ENOSPC), not a C++
    `inline_container.cc` message; it becomes "no space left on <path>".
    """
    tmp = temp_path(path)
    try:
        with signals_deferred():
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
