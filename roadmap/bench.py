"""`roadmap bench`: speed and memory of every step, of our built models against timm's, and
of our runner.

- per step: training img/s (forward, backward, AdamW step), inference img/s and the memory
  one training / inference step allocates on top of the weights and optimizer state, beside
  params and fvcore GFLOPs, each as a ratio to resnet50 (`--steps all`: the whole roadmap).
- built model vs timm: for the endpoints, `build("resnet50")` vs `timm.create_model("resnet50")`
  and `build("separate_downsampling")` vs `timm.create_model("convnext_tiny")` (random
  weights, nothing downloaded), on the same batch.
- roofline: each step's training GFLOP/s against a matmul ceiling measured in the same
  run (which steps are memory-bound, and by how much).
- runner vs bare loop: `train_run` (the code `roadmap run` trains with) against a bare loop
  over the same model, optimizer and batches; the difference is the runner's overhead
  (batch assembly, loss bookkeeping, schedule).

Measurements alternate their order between repeats and keep the best of --repeats, so load
from other processes on a shared machine hurts all contenders alike.
"""

import itertools
import platform
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional

import torch

from . import tables
from .env import amp_dtype, autocast_for, memory_format, sync
from .errors import RoadmapError
from .measure import (
    PROCESS_PEAK,
    current_memory_mb,
    matmul_ceiling,
    model_cost,
    peak_memory_mb,
    reset_peak_memory,
)

TIMM_TWINS = {"resnet50": "resnet50", "separate_downsampling": "convnext_tiny"}
NUM_CLASSES = 1000
BASELINE = "resnet50"


# ---------------------------------------------------------------------------- measuring


def img_per_s(step: Callable[[], None], images: int, warmup: int, iters: int, device: torch.device) -> float:
    """Images per second over `iters` calls of `step`, after `warmup` untimed ones (the first
    compiles, autotunes and allocates)."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return images * iters / (time.perf_counter() - t0)


def step_memory_mb(step: Callable[[], None], device: torch.device) -> Optional[float]:
    """Peak memory one call of `step` allocates above what is live before it, measured as a
    run's peak is (`measure.reset_peak_memory`); None where only a process peak exists."""
    method = reset_peak_memory(device)
    if method == PROCESS_PEAK:
        return None
    base = current_memory_mb(device, method)
    step()
    sync(device)
    return peak_memory_mb(device, method) - base


def prepare(model, ex, device: torch.device):
    model = model.to(device).to(memory_format=memory_format(ex))
    return model, (torch.compile(model) if ex.compile else model)


def train_step(model, run_model, batches, recipe, device):
    """One update per call, cycling through `batches`, as the runner does it (same optimizer,
    loss and autocast) and nothing else."""
    from timm.loss import LabelSmoothingCrossEntropy

    from .train import make_optimizer

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
    def step():
        with torch.no_grad(), autocast_for(device, recipe.amp):
            run_model(x)

    return step


def measure(model, x, y, recipe, ex, device, warmup, iters, memory: bool) -> Dict[str, Optional[float]]:
    model, run_model = prepare(model, ex, device)
    model.train()
    train = train_step(model, run_model, [(x, y)], recipe, device)
    out = dict(
        train_img_s=img_per_s(train, len(x), warmup, iters, device),
        train_mb=step_memory_mb(train, device) if memory else None,
    )
    model.eval()
    infer = infer_step(run_model, x, recipe, device)
    out.update(
        infer_img_s=img_per_s(infer, len(x), warmup, iters, device),
        infer_mb=step_memory_mb(infer, device) if memory else None,
    )
    model.train()
    model.zero_grad(set_to_none=True)  # the gradients go with the optimizer: the next one starts even
    return out


def best(runs: List[Dict]) -> Dict:
    """Fastest speed and smallest memory over repeats (load from elsewhere only slows down)."""
    out = {}
    for k in runs[0]:
        values = [r[k] for r in runs if r[k] is not None]
        out[k] = ((max if k.endswith("img_s") else min)(values)) if values else None
    return out


# ---------------------------------------------------------------------------- the comparisons


def bench_recipe(batch_size: int, resolution: int, overrides=None):
    """(recipe, execution): the paper's recipe without augmentation or stochastic depth
    (timm's models have none by default); the speed switches (amp, channels_last, compile)
    as in `roadmap run`."""
    from .recipe import apply_overrides, get_execution, get_preset

    recipe = replace(
        get_preset("imagenet"),
        description="roadmap bench",
        img_size=resolution,
        batch_size=batch_size,
        epochs=1,
        warmup_epochs=0,
        randaug=None,
        mixup=0.0,
        cutmix=0.0,
        reprob=0.0,
        drop_path=0.0,
        max_shift=0,
        hflip=False,
        global_batch=None,  # one batch an update: bench times single updates
    )
    ex = replace(
        get_execution("imagenet"), eval_batch_size=batch_size, workers=0, ckpt_every_s=1e9
    )  # never: only epoch ends
    return apply_overrides(recipe, ex, overrides)


def contenders(steps: List[str]) -> Dict[tuple, Callable[[], torch.nn.Module]]:
    """(step, model) -> a builder: ours for every step, timm's twin where the step has one."""
    import timm

    import roadmap

    out = {}
    for step in steps:
        out[(step, "ours")] = lambda step=step: roadmap.build(step, num_classes=NUM_CLASSES)
        if step in TIMM_TWINS:
            out[(step, f"timm {TIMM_TWINS[step]}")] = lambda step=step: timm.create_model(
                TIMM_TWINS[step], pretrained=False, num_classes=NUM_CLASSES
            )
    return out


def measure_all(steps: List[str], recipe, ex, device, warmup, iters, repeats) -> List[Dict]:
    """One row per (step, model): the best of `repeats`, the order reversed every other
    repeat (the first measured pays the process's first-touch costs); memory in the last
    two repeats, so once in each order."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(recipe.batch_size, 3, recipe.img_size, recipe.img_size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (recipe.batch_size,), generator=g)
    x, y = x.to(device).contiguous(memory_format=memory_format(ex)), y.to(device)
    builders = contenders(steps)
    models = {c: build() for c, build in builders.items()}
    runs = {c: [] for c in models}
    for r in range(repeats):
        for c in list(models) if r % 2 == 0 else list(models)[::-1]:
            runs[c].append(measure(models[c], x, y, recipe, ex, device, warmup, iters, memory=(r >= repeats - 2)))
    return [dict(step=step, model=name, **best(runs[(step, name)])) for step, name in models]


def step_rows(rows: List[Dict], resolution: int) -> List[Dict]:
    """Our rows with params and GFLOPs, and every number as a ratio to resnet50's."""
    from .registry import config_for

    ours = []
    for row in rows:
        if row["model"] == "ours":
            params, gflops = model_cost(config_for(row["step"], num_classes=NUM_CLASSES), resolution)
            ours.append(dict(row, params_m=params / 1e6, gflops=gflops))
    base = next((r for r in ours if r["step"] == BASELINE), None)
    for r in ours:
        for k in ("gflops", "train_img_s", "infer_img_s", "train_mb", "infer_mb"):
            r[f"{k}_ratio"] = _ratio(r[k], base[k]) if base is not None else None
    return ours


def synthetic_dataset(recipe, n: int):
    """Random uint8 images in memory: the runner's fast path, no disk in the measurement."""
    from . import data as D

    g = torch.Generator().manual_seed(0)
    size = (3, recipe.img_size, recipe.img_size)
    images = lambda k: torch.randint(0, 256, (k, *size), dtype=torch.uint8, generator=g)
    labels = lambda k: torch.randint(0, NUM_CLASSES, (k,), generator=g)
    return D.Dataset(
        "synthetic",
        "roadmap bench",
        NUM_CLASSES,
        D.IMAGENET_MEAN,
        D.IMAGENET_STD,
        images(n),
        labels(n),
        images(recipe.batch_size),
        labels(recipe.batch_size),
    )


def runner_img_s(step: str, recipe, ex, ds, device) -> float:
    """img/s of `train_run` itself, by its own clock (its first updates are warm-up)."""
    from .registry import config_for
    from .train import scale_config, train_run

    cfg = scale_config(config_for(step), recipe, ds.num_classes)
    return train_run(step, cfg, recipe, ex, ds, 0, device, progress=False)["train_img_s"]


def bare_img_s(step: str, recipe, ex, ds, device, warmup: int, iters: int) -> float:
    """The same model (seed, width, memory format), optimizer and batches in a bare loop."""
    from . import data as D
    from .model import RoadmapNet
    from .registry import config_for
    from .train import scale_config

    torch.manual_seed(0)
    model = RoadmapNet(scale_config(config_for(step), recipe, ds.num_classes))
    model, run_model = prepare(model, ex, device)
    fmt = memory_format(ex)
    batches = [
        (x.contiguous(memory_format=fmt), y)
        for x, y in D.memory_train_batches(
            ds, recipe.img_size, recipe.batch_size, 0, 0, 0, recipe.max_shift, recipe.hflip, str(device)
        )
    ]
    step_fn = train_step(model, run_model, batches, recipe, device)
    return img_per_s(step_fn, recipe.batch_size, warmup, iters, device)


def runner_overhead(step: str, recipe, ex, device, warmup, iters, repeats) -> Dict:
    from .train import WARMUP_UPDATES

    # the runner's own warm-up, then as many timed updates as the bare loop's
    ds = synthetic_dataset(recipe, (WARMUP_UPDATES + iters) * recipe.batch_size)
    runner, bare = [], []
    for _ in range(repeats):
        bare.append(bare_img_s(step, recipe, ex, ds, device, warmup, iters))
        runner.append(runner_img_s(step, recipe, ex, ds, device))
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


def format_step_table(rows: List[Dict]) -> str:
    """Per step: params, GFLOPs, speed and memory; then each as a ratio to resnet50."""
    keys = ("gflops", "train_img_s", "infer_img_s", "train_mb", "infer_mb")
    cols = ("GFLOPs", "train img/s", "infer img/s", "train MB", "infer MB")
    cells = [
        {"step": r["step"], "params M": f"{r['params_m']:.2f}", "GFLOPs": f"{r['gflops']:.3f}"}
        | {c: _fmt(r[k]) for c, k in zip(cols[1:], keys[1:])}
        | {f"{c} x": _fmt(r[k + "_ratio"], ".2f", "x") for c, k in zip(cols, keys)}
        for r in rows
    ]
    return tables.terminal(cells, right=["params M", *cols, *(f"{c} x" for c in cols)])


def format_roofline_table(rows: List[Dict], ceiling: float) -> str:
    """Per step: training GFLOP/s (3 x 2 x fvcore multiply-adds x img/s: forward, a backward
    of twice its cost, two FLOPs a multiply-add) and its share of the matmul ceiling. A step
    far below the others does little arithmetic per byte it moves (depthwise convolutions,
    LayerNorm, GELU): memory-bound, not compute-bound."""
    lines = [f"{'step':24s} {'GFLOPs/img':>11s} {'train img/s':>12s} {'train GFLOP/s':>14s} {'of ceiling':>11s}"]
    for r in rows:
        flops = training_gflops_per_s(r["gflops"], r["train_img_s"])
        share = _fmt(None if flops is None else 100 * flops / ceiling, ".1f", "%")
        lines.append(
            f"{r['step']:24s} {r['gflops']:11.3f} {_fmt(r['train_img_s']):>12s} {_fmt(flops):>14s} {share:>11s}"
        )
    return "\n".join(lines)


def training_gflops_per_s(gmacs: float, img_s: Optional[float]) -> Optional[float]:
    return None if img_s is None else 3 * 2 * gmacs * img_s


def format_timm_table(rows: List[Dict]) -> str:
    cols = ("train img/s", "infer img/s", "train MB", "infer MB")
    keys = ("train_img_s", "infer_img_s", "train_mb", "infer_mb")
    cells = []
    for row in rows:
        cells.append({"step": row["step"], "model": row["model"]} | {c: _fmt(row[k]) for c, k in zip(cols, keys)})
        if row["model"] != "ours":
            ours = next(r for r in rows if r["step"] == row["step"] and r["model"] == "ours")
            ratios = {c: _fmt(_ratio(ours[k], row[k]), ".2f", "x") for c, k in zip(cols, keys)}
            cells.append({"step": "", "model": "ours / timm"} | ratios)
    return tables.terminal(cells, right=cols)


def format_runner_table(rows: List[Dict]) -> str:
    cells = [
        {
            "step": r["step"],
            "runner img/s": f"{r['runner_img_s']:.1f}",
            "bare img/s": f"{r['bare_img_s']:.1f}",
            "runner / bare": f"{r['ratio']:.3f}x",
            "overhead": f"{100 * (1 - r['ratio']):.1f}%",
        }
        for r in rows
    ]
    return tables.terminal(cells, right=("runner img/s", "bare img/s", "runner / bare", "overhead"))


def bench_steps(text: str) -> List[str]:
    """`--steps`: comma-separated step names, or `all` (the whole roadmap, in order)."""
    from .plan import paper_plan

    names = [t.strip() for t in text.split(",") if t.strip()]
    return [s.name for s in paper_plan(only=None if names == ["all"] else names)]


def cmd_bench(args):
    from .env import configure_cuda, resolve_device

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = bench_steps(args.steps)
    # A CPU takes seconds per ResNet-50 update at 224 px: smaller defaults there.
    default = lambda value, on_cuda, on_cpu: value if value is not None else (on_cuda if cuda else on_cpu)
    batch = default(args.batch_size, 64, 8)
    iters, warmup, repeats = default(args.iters, 20, 2), default(args.warmup, 5, 1), default(args.repeats, 3, 5)
    if min(batch, iters, repeats) < 1 or warmup < 0:
        raise RoadmapError("--batch-size, --iters and --repeats must be at least 1, --warmup at least 0")
    recipe, ex = bench_recipe(batch, args.resolution, args.set)
    if cuda:
        configure_cuda(ex)  # as `roadmap run` does
    print(f"roadmap bench on {device_line(device)}")
    print(
        f"batch {batch} at {args.resolution} px, {iters} timed iterations after {warmup} warm-up, "
        f"best of {repeats}; amp {recipe.amp and cuda}, channels_last {ex.channels_last}, "
        f"compile {ex.compile}",
        flush=True,
    )
    rows = measure_all(steps, recipe, ex, device, warmup, iters, repeats)
    print(f"\nper step (MB: what one step allocates above weights and optimizer state; x: ratio to {BASELINE})")
    ours = step_rows(rows, args.resolution)
    print(format_step_table(ours), flush=True)
    dtype = amp_dtype(device, recipe.amp) or torch.float32
    ceiling = matmul_ceiling(device, dtype)
    print(
        f"\nroofline: training GFLOP/s per step against this machine's ceiling, a square "
        f"{str(dtype).replace('torch.', '')} matmul measured here: {ceiling:,.0f} GFLOP/s"
    )
    print(format_roofline_table(ours, ceiling), flush=True)
    if any(r["model"] != "ours" for r in rows):
        print("\nbuilt model vs timm")
        print(format_timm_table([r for r in rows if r["step"] in TIMM_TWINS]), flush=True)
    if not args.no_runner:
        overhead = [runner_overhead(step, recipe, ex, device, warmup, iters, repeats) for step in steps]
        print("\nrunner (train_run) vs a bare loop: same model, optimizer and batches")
        print(format_runner_table(overhead))
