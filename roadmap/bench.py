"""`roadmap bench`: speed and memory of our built models against timm's, and of our runner.

Two comparisons, on the current device, in one process:

- built model vs timm: for the endpoints, `build("resnet50")` vs `timm.create_model("resnet50")`
  and `build("separate_downsampling")` vs `timm.create_model("convnext_tiny")` (random
  weights, nothing downloaded): training img/s (forward, backward, AdamW step), inference
  img/s and the memory one training / inference step allocates on top of the weights and
  optimizer state. Other steps are measured alone.
- runner vs bare loop: `train_run` (the code `roadmap run` trains with) against a bare loop
  over the same model, optimizer and batches; the difference is the runner's overhead
  (batch assembly, loss bookkeeping, schedule).

Measurements alternate between the contenders and keep the best of --repeats, so load
from other processes on a shared machine hurts both alike.
"""
import ctypes
import itertools
import platform
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional

import torch

from .errors import RoadmapError

TIMM_TWINS = {"resnet50": "resnet50", "separate_downsampling": "convnext_tiny"}
NUM_CLASSES = 1000


# ---------------------------------------------------------------------------- measuring

def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def img_per_s(step: Callable[[], None], images: int, warmup: int, iters: int,
              device: torch.device) -> float:
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return images * iters / (time.perf_counter() - t0)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def step_memory_mb(step: Callable[[], None], device: torch.device) -> Optional[float]:
    """Peak memory one call of `step` allocates above what is live before it.

    CUDA: the caching allocator's peak. CPU (Linux): the peak resident set, after returning
    freed heap pages to the OS and resetting the high-water mark; None elsewhere.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        step()
        return (_status_kb("VmHWM") - base) / 1024
    except OSError:
        return None


def prepare(model, recipe, device: torch.device):
    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt)
    return model, (torch.compile(model) if recipe.compile else model)


def train_step(model, run_model, batches, recipe, device):
    """One update per call, cycling through `batches`, as the runner does it (same optimizer,
    loss and autocast) and nothing else."""
    from timm.loss import LabelSmoothingCrossEntropy

    from .train import autocast_for, make_optimizer

    optimizer = make_optimizer(model, recipe, recipe.scaled_lr(recipe.batch_size))
    criterion = LabelSmoothingCrossEntropy(recipe.smoothing)
    feed = itertools.cycle(batches)

    def step():
        x, y = next(feed)
        with autocast_for(device, recipe.amp):
            loss = criterion(run_model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def infer_step(run_model, x, recipe, device):
    from .train import autocast_for

    def step():
        with torch.no_grad(), autocast_for(device, recipe.amp):
            run_model(x)
    return step


def measure(model, x, y, recipe, device, warmup, iters, memory: bool) -> Dict[str, Optional[float]]:
    model, run_model = prepare(model, recipe, device)
    model.train()
    train = train_step(model, run_model, [(x, y)], recipe, device)
    out = dict(train_img_s=img_per_s(train, len(x), warmup, iters, device),
               train_mb=step_memory_mb(train, device) if memory else None)
    model.eval()
    infer = infer_step(run_model, x, recipe, device)
    out.update(infer_img_s=img_per_s(infer, len(x), warmup, iters, device),
               infer_mb=step_memory_mb(infer, device) if memory else None)
    model.train()
    return out


def best(runs: List[Dict]) -> Dict:
    """Fastest speed and smallest memory over repeats (load from elsewhere only slows down)."""
    out = {}
    for k in runs[0]:
        values = [r[k] for r in runs if r[k] is not None]
        out[k] = ((max if k.endswith("img_s") else min)(values)) if values else None
    return out


# ---------------------------------------------------------------------------- the two comparisons

def bench_recipe(batch_size: int, resolution: int, overrides=None):
    """The paper's recipe without augmentation or stochastic depth (timm's models have none
    by default); the speed switches (amp, channels_last, compile) as in `roadmap run`."""
    from .recipe import get_preset

    recipe = replace(get_preset("imagenet"), description="roadmap bench", img_size=resolution,
                     batch_size=batch_size, epochs=1, warmup_epochs=0, randaug=None, mixup=0.0,
                     cutmix=0.0, reprob=0.0, drop_path=0.0, max_shift=0, hflip=False,
                     eval_batch_size=batch_size, workers=0, ckpt_every_s=1e9)  # never: only epoch ends
    return recipe.with_overrides(overrides)


def compare_with_timm(step: str, recipe, device, warmup, iters, repeats) -> List[Dict]:
    """Rows for our model (and timm's twin, if the step has one) on the same batch."""
    import timm

    import roadmap

    g = torch.Generator().manual_seed(0)
    x = torch.randn(recipe.batch_size, 3, recipe.img_size, recipe.img_size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (recipe.batch_size,), generator=g)
    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    x, y = x.to(device).contiguous(memory_format=fmt), y.to(device)
    models = {"ours": roadmap.build(step, num_classes=NUM_CLASSES)}
    if step in TIMM_TWINS:
        models[f"timm {TIMM_TWINS[step]}"] = timm.create_model(TIMM_TWINS[step], pretrained=False,
                                                               num_classes=NUM_CLASSES)
    runs = {name: [] for name in models}
    for r in range(repeats):
        # alternate who goes first: the first measured pays the process's first-touch costs;
        # memory in the last two repeats, so once in each order
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            runs[name].append(measure(models[name], x, y, recipe, device, warmup, iters,
                                      memory=(r >= repeats - 2)))
    return [dict(step=step, model=name, **best(r)) for name, r in runs.items()]


def synthetic_dataset(recipe, n: int):
    """Random uint8 images in memory: the runner's fast path, no disk in the measurement."""
    from . import data as D

    g = torch.Generator().manual_seed(0)
    size = (3, recipe.img_size, recipe.img_size)
    images = lambda k: torch.randint(0, 256, (k, *size), dtype=torch.uint8, generator=g)
    labels = lambda k: torch.randint(0, NUM_CLASSES, (k,), generator=g)
    return D.Dataset("synthetic", "roadmap bench", NUM_CLASSES, D.IMAGENET_MEAN, D.IMAGENET_STD,
                     images(n), labels(n), images(recipe.batch_size), labels(recipe.batch_size))


def runner_img_s(step: str, recipe, ds, device, warmup: int) -> float:
    """img/s of `train_run` itself over its updates after `warmup`, by its own clock."""
    from .registry import config_for
    from .train import train_run

    train_s = {0: 0.0}  # update -> training seconds so far (on_update gives cumulative img/s)
    record = lambda m: train_s.__setitem__(m["update"], m["update"] * recipe.batch_size / m["img_s"])
    train_run(step, config_for(step), recipe, ds, 0, device, progress=False, on_update=record)
    last = max(train_s)
    return (last - warmup) * recipe.batch_size / (train_s[last] - train_s[warmup])


def bare_img_s(step: str, recipe, ds, device, warmup: int, iters: int) -> float:
    """The same model (seed, width, memory format), optimizer and batches in a bare loop."""
    from . import data as D
    from .model import RoadmapNet
    from .registry import config_for
    from .train import scale_config

    torch.manual_seed(0)
    model = RoadmapNet(scale_config(config_for(step), recipe, ds.num_classes))
    model, run_model = prepare(model, recipe, device)
    fmt = torch.channels_last if recipe.channels_last else torch.contiguous_format
    batches = [(x.contiguous(memory_format=fmt), y) for x, y in D.memory_train_batches(
        ds, recipe.img_size, recipe.batch_size, 0, 0, 0, recipe.max_shift, recipe.hflip,
        str(device))]
    step_fn = train_step(model, run_model, batches, recipe, device)
    return img_per_s(step_fn, recipe.batch_size, warmup, iters, device)


def runner_overhead(step: str, recipe, device, warmup, iters, repeats) -> Dict:
    ds = synthetic_dataset(recipe, (warmup + iters) * recipe.batch_size)
    runner, bare = [], []
    for _ in range(repeats):
        bare.append(bare_img_s(step, recipe, ds, device, warmup, iters))
        runner.append(runner_img_s(step, recipe, ds, device, warmup))
    r, b = max(runner), max(bare)
    return dict(step=step, runner_img_s=r, bare_img_s=b, ratio=r / b)


# ---------------------------------------------------------------------------- command line

def device_line(device: torch.device) -> str:
    import timm

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_model()}, {torch.get_num_threads()} threads"
    return f"{device} ({name}); torch {torch.__version__}, timm {timm.__version__}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(v, spec=".1f", unit=""):
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def format_timm_table(rows: List[Dict]) -> str:
    cols = ("train img/s", "infer img/s", "train MB", "infer MB")
    keys = ("train_img_s", "infer_img_s", "train_mb", "infer_mb")
    lines = [f"{'step':24s} {'model':22s}" + "".join(f"{c:>13s}" for c in cols)]
    for row in rows:
        lines.append(f"{row['step']:24s} {row['model']:22s}"
                     + "".join(f"{_fmt(row[k]):>13s}" for k in keys))
        if row["model"] != "ours":
            ours = next(r for r in rows if r["step"] == row["step"] and r["model"] == "ours")
            lines.append(f"{'':24s} {'ours / timm':22s}" + "".join(
                f"{_fmt(_ratio(ours[k], row[k]), '.2f', 'x'):>13s}" for k in keys))
    return "\n".join(lines)


def format_runner_table(rows: List[Dict]) -> str:
    lines = [f"{'step':24s} {'runner img/s':>13s} {'bare img/s':>11s} {'runner / bare':>14s} "
             f"{'overhead':>9s}"]
    for r in rows:
        lines.append(f"{r['step']:24s} {r['runner_img_s']:13.1f} {r['bare_img_s']:11.1f} "
                     f"{r['ratio']:13.3f}x {100 * (1 - r['ratio']):8.1f}%")
    return "\n".join(lines)


def cmd_bench(args):
    from .plan import paper_plan
    from .train import configure_cuda, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = [s.name for s in paper_plan(only=[t.strip() for t in args.steps.split(",") if t.strip()])]
    # A CPU takes seconds per ResNet-50 update at 224 px: smaller defaults there.
    default = lambda value, on_cuda, on_cpu: value if value is not None else (on_cuda if cuda else on_cpu)
    batch = default(args.batch_size, 64, 8)
    iters, warmup, repeats = default(args.iters, 20, 2), default(args.warmup, 5, 1), default(args.repeats, 3, 5)
    if min(batch, iters, repeats) < 1 or warmup < 0:
        raise RoadmapError("--batch-size, --iters and --repeats must be at least 1, --warmup at least 0")
    recipe = bench_recipe(batch, args.resolution, args.set)
    if cuda:
        configure_cuda(recipe)  # as `roadmap run` does
    if cuda:
        torch.backends.cudnn.benchmark = recipe.cudnn_benchmark
    print(f"roadmap bench on {device_line(device)}")
    print(f"batch {batch} at {args.resolution} px, {iters} timed iterations after {warmup} warm-up, "
          f"best of {repeats}; amp {recipe.amp and cuda}, channels_last {recipe.channels_last}, "
          f"compile {recipe.compile}", flush=True)
    rows = [row for step in steps
            for row in compare_with_timm(step, recipe, device, warmup, iters, repeats)]
    print("\nbuilt model vs timm (MB: what one step allocates above weights and optimizer state)")
    print(format_timm_table(rows), flush=True)
    if not args.no_runner:
        overhead = [runner_overhead(step, recipe, device, warmup, iters, repeats) for step in steps]
        print("\nrunner (train_run) vs a bare loop: same model, optimizer and batches")
        print(format_runner_table(overhead))
