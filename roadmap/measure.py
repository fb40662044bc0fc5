"""Model measurements: parameters and fvcore FLOPs (one multiply-add = one FLOP, as in the
paper), and the peak memory of one run or one step alone."""

import ctypes
import functools
import logging
import resource
import time
import warnings
from typing import Optional, Tuple

import pandas as pd
import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore's package init scripts a loss function with torch.jit, which newer torch
    # deprecates; the warning is about fvcore's code, not ours.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

from .config import ArchConfig
from .model import RoadmapNet
from .registry import config_for, get_step, step_names


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, resolution: int = 224, in_chans: int = 3) -> float:
    """fvcore GFLOPs of one image at `resolution` x `resolution` (model put in eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, resolution, resolution, device=device)
    # fvcore logs a warning per op it does not count (e.g. adds, GELU), as the paper's count
    # leaves them out too; silence it so tables stay readable.
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        flops = FlopCountAnalysis(model, x)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = flops.total()
    model.train(was_training)
    return total / 1e9


@functools.lru_cache(maxsize=None)
def model_cost(cfg: ArchConfig, resolution: int) -> Tuple[int, float]:
    """(parameters, GFLOPs at `resolution`) of `cfg`: fvcore traces each configuration once
    per process, however many seeds train it. The model counted is built here, on the CPU,
    without touching the caller's random numbers."""
    with torch.random.fork_rng(devices=[]):
        model = RoadmapNet(cfg)
    return count_params(model), count_gflops(model, resolution)


# ---------------------------------------------------------------------------- peak memory
# CUDA: the caching allocator's peak since a reset. CPU (Linux): the peak resident set
# (VmHWM) since writing "5" to /proc/self/clear_refs, after handing freed heap pages back
# (malloc_trim), so what an earlier run left behind does not count; where that is refused,
# the process's lifetime peak (ru_maxrss), which an earlier, larger run would hide.
CUDA_PEAK, CPU_PEAK, PROCESS_PEAK = "cuda_max_allocated", "cpu_vmhwm_reset", "cpu_process_maxrss"


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak_memory(device: torch.device) -> str:
    """Start a peak-memory measurement here; return its method (one of the names above)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return CUDA_PEAK
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := the current RSS
        _status_kb("VmHWM")
        return CPU_PEAK
    except OSError:  # not Linux, or /proc refused
        return PROCESS_PEAK


def peak_memory_mb(device: torch.device, method: str) -> Optional[float]:
    """The peak since `reset_peak_memory` returned `method`: CUDA memory allocated (the data
    stays on the host), or the process's resident set, the data in memory included."""
    if method == CUDA_PEAK:
        return torch.cuda.max_memory_allocated(device) / 2**20
    if method == CPU_PEAK:
        return _status_kb("VmHWM") / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_memory_mb(device: torch.device, method: str) -> Optional[float]:
    """What is live now, by the same measure (the base a step's own growth starts from)."""
    if method == CUDA_PEAK:
        return torch.cuda.memory_allocated(device) / 2**20
    if method == CPU_PEAK:
        return _status_kb("VmRSS") / 1024
    return None


# ---------------------------------------------------------------------------- utilisation


@functools.lru_cache(maxsize=None)
def _matmul_gflops(device: str, dtype: torch.dtype, threads: int, n: int) -> float:
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, generator=None).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    best, reps = 0.0, 8 if dev.type == "cpu" else 20
    for _ in range(4):  # the first round warms up (threads, cuBLAS handles, clocks)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_ceiling(device: torch.device, dtype: Optional[torch.dtype] = None) -> float:
    """GFLOP/s of a square matmul on `device` in `dtype` (default float32), best of a few
    rounds, measured once per process and thread count: the machine's own dense ceiling,
    which model FLOP utilisation is taken against. On a shared CPU it is as noisy as the
    machine; 512 x 512 on a CPU, 8192 x 8192 on CUDA."""
    with torch.random.fork_rng(devices=[]):
        return _matmul_gflops(
            str(device), dtype or torch.float32, torch.get_num_threads(), 512 if device.type == "cpu" else 8192
        )


def model_flop_utilisation(gflops: float, img_s: Optional[float], processes: int, ceiling: float) -> Optional[float]:
    """Training FLOPs per second per process over the matmul ceiling: 3 (forward, and a backward
    of twice its cost) x 2 FLOPs per multiply-add (fvcore counts multiply-adds, as the paper)
    x GMACs per image x images per second. None where the run timed no update."""
    if not img_s or not ceiling:
        return None
    return 3 * 2 * gflops * img_s / processes / ceiling


def flops_table(resolution: int = 224, steps=None, **overrides) -> pd.DataFrame:
    """One row per step: params, fvcore GFLOPs at `resolution`, the paper's GFLOPs, the difference."""
    rows = []
    for name in steps or step_names():
        step = get_step(name)
        model = RoadmapNet(config_for(name, **overrides))
        gflops = count_gflops(model, resolution)
        rows.append(
            dict(
                step=name,
                phase=step.phase,
                params_m=round(count_params(model) / 1e6, 3),
                gflops=round(gflops, 3),
                paper_gflops=step.paper_gflops,
                diff=round(gflops - step.paper_gflops, 3),
                paper_top1=step.paper_top1,
            )
        )
    return pd.DataFrame(rows)
