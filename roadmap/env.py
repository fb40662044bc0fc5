"""Where a run executes: device, process group, amp, CUDA flags, memory format, CPUs.

Nothing here changes what a run computes, only where and how fast: the training loop and
`distributed` read these helpers; they import nothing of roadmap's but its errors.
"""

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import RoadmapError


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
        """The mean of a scalar over the ranks: the same float on every rank (a host sync)."""
        return self.mean_on_device(t).item()

    def mean_on_device(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over the ranks, left on the device: NCCL queues the reduction
        behind the computation, so the host does not wait for it."""
        t = t.detach().float().reshape(1)
        if self.world_size > 1:
            t = t.clone()
            torch.distributed.all_reduce(t)
            t /= self.world_size
        return t


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
        raise RoadmapError(
            f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible (cuda:0 ...)"
        )
    return dev


def configure_cuda(ex):
    """cuDNN autotuning (an execution switch) and TF32 matmuls and convolutions."""
    torch.backends.cudnn.benchmark = ex.cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """bf16 where the GPU computes it natively (Ampere on), else fp16 (with loss scaling).

    `including_emulation=False`: torch otherwise says yes on GPUs that emulate bf16 slowly.
    """
    if device.type != "cuda" or not enabled:
        return None
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def autocast_for(device: torch.device, enabled: bool):
    dtype = amp_dtype(device, enabled)
    return nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype)


def memory_format(ex) -> torch.memory_format:
    """NHWC (channels_last) makes convolutions faster with cuDNN and oneDNN alike."""
    return torch.channels_last if ex.channels_last else torch.contiguous_format


def sync(device: torch.device):
    """Wait for the device's queued work (a timed interval must end with it on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpus_available() -> int:
    """CPUs this process may run on: its affinity mask (what Slurm or taskset grant), not the
    machine's core count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def loader_workers(requested: int, procs_per_node: int = 1) -> int:
    """DataLoader workers: the request, capped at this process's share of its CPUs less one
    (the training process itself), so workers never fight the loop for a core."""
    share = cpus_available() // max(1, procs_per_node)
    return max(0, min(requested, share - 1))


def cpus_per_task(workers: int) -> int:
    """CPUs to ask a scheduler (submitit's cpus_per_task) for one training process with
    `workers` loader workers: one each, plus the process itself."""
    return workers + 1


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """An integer the launcher put in the environment (torchrun's WORLD_SIZE, RANK, ...):
    unset or empty (a scheduler's template left blank) is `default`; anything else that is
    not an integer >= `minimum` is one RoadmapError naming the variable."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise RoadmapError(
            f"{name}={os.environ[name]!r} in the environment is not an integer >= {minimum}; "
            f"unset it, or launch with torchrun, which sets it"
        )
    return value
