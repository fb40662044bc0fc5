"""`roadmap run`: train and measure every planned run, skip finished ones, resume killed ones."""
import datetime
import platform
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import timm
import torch

from . import data as D
from .config import ArchConfig
from .errors import RoadmapError
from .model import stem_stride
from .plan import RunSpec
from .recipe import Recipe
from .results import ResultsDir, read_results, run_key, thread_mix
from .train import Dist, NonFiniteLoss, configure_cuda, resolve_device, scale_config, train_run


def data_identity(ds: D.Dataset) -> Dict:
    # Name, split sizes and a content hash, not the path: the same data mounted elsewhere is
    # the same data, and the same folder name with other images is not.
    return dict(name=ds.name, train=ds.num_train, val=ds.num_val, classes=ds.num_classes,
                content=ds.fingerprint())


# Committed reference runs live in the repository's results/; a user's runs go to runs/
# (git-ignored), so a rerun never overwrites the reference it is drawn against.
REFERENCE_ROOT = Path(__file__).resolve().parent.parent / "results"


def default_out_dir(preset: str, ds: D.Dataset) -> Path:
    return Path("runs") / f"{preset}-{ds.name}"


def reference_dir(preset: str, ds: D.Dataset, out: Path) -> Optional[ResultsDir]:
    """The committed reference folder of this preset and data, if there is one (and it is not `out`)."""
    ref = REFERENCE_ROOT / f"{preset}-{ds.name}"
    if not (ref / "runs").is_dir() or ref.resolve() == Path(out).resolve():
        return None
    return ResultsDir(ref)


def key_for(cfg: ArchConfig, recipe: Recipe, data_id: Dict, seed: int, world_size: int = 1) -> str:
    """The key of one run (`cfg` already scaled by the recipe)."""
    training = recipe.training_key()
    if world_size > 1:  # the process count sets the global batch and lr; 1 keeps the old keys
        training["world_size"] = world_size
    return run_key(cfg.to_dict(), training, data_id, seed)


def log(msg: str, dist: Dist):
    if dist.is_main:
        print(msg, flush=True)


def warn(msg: str, dist: Dist):
    if dist.is_main:
        print(f"roadmap: warning: {msg}", file=sys.stderr, flush=True)


class RunsFailed(RoadmapError):
    """Some runs failed, each recorded with its error; the command exits 1 (2 is for bad input)."""
    exit_code = 1


def min_img_size(cfg: ArchConfig) -> int:
    """The smallest input `cfg`'s model takes: its total stride (the stem's, x2 per later stage)."""
    return stem_stride(cfg) * 2 ** (len(cfg.depths) - 1)


def check_plan(specs: Sequence[RunSpec], recipe: Recipe):
    """What would fail every run of the plan, found before any data is loaded."""
    for spec in specs:
        need = min_img_size(scale_config(spec.cfg, recipe, num_classes=2))
        if recipe.img_size < need:
            raise RoadmapError(f"img_size={recipe.img_size} is too small for step {spec.name}: its model "
                               f"downsamples {need}x, so images need at least {need} px "
                               f"(--set img_size={need} or more)")


def error_line(e: BaseException) -> str:
    """A run's error as one line: our own message as is, anything else with its type.

    An error raised in a DataLoader worker comes back with the worker's traceback in its
    message; its last line is the error itself.
    """
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        head, _, rest = last.partition(": ")
        text = rest if rest and head.replace(".", "").replace("_", "").isalnum() else last
    text = " ".join(text.split())
    return text if isinstance(e, RoadmapError) else f"{type(e).__name__}: {text}"


def run_plan(specs: Sequence[RunSpec], recipe: Recipe, preset: str, data: str = "fashion-mnist",
             seeds: Sequence[int] = (0,), out: Optional[str] = None, device: str = "auto",
             dist: Dist = Dist(), progress: bool = True, plot: bool = True,
             tensorboard: bool = False, retry_failed: bool = False,
             use_reference: bool = True) -> Path:
    """Run every (spec, seed) not yet finished in `out`; return the results folder.

    A run that raises is recorded as failed with its error, and the next run goes on; at the
    end RunsFailed names the failures (also those recorded by an earlier call, which are
    retried only with `retry_failed`).
    """
    check_plan(specs, recipe)
    dev = resolve_device(device)
    if dev.type == "cuda" and dist.world_size > 1:
        dev = torch.device("cuda", dist.local_rank)
    if dev.type == "cuda":
        configure_cuda(recipe)
    if out is not None and dist.is_main:
        ResultsDir(out).check_writable()  # before the data: a bad --out costs nothing
    ds = D.load_dataset(data).subset(recipe.train_subset, recipe.val_subset)
    D.check_classes(ds, " with --set train_subset/val_subset" if recipe.train_subset or recipe.val_subset else "")
    if D.batches_per_epoch(ds, recipe.batch_size, dist.world_size) < 1:
        raise RoadmapError(f"{ds.num_train} training images cannot fill one global batch of "
                           f"{recipe.batch_size * dist.world_size}; lower --set batch_size")
    folder = Path(out) if out else default_out_dir(preset, ds)
    results = ResultsDir(folder)
    if dist.is_main:
        if out is None:
            results.check_writable("results folder")
        stale = results.sweep_temp_files()
        if stale:
            log(f"removed {len(stale)} stale temporary file(s) of an earlier, killed run: "
                + ", ".join(p.name for p in stale[:3]) + (" ..." if len(stale) > 3 else ""), dist)
    reference = reference_dir(preset, ds, folder) if use_reference else None
    data_id = data_identity(ds)
    todo = [(s, seed) for s in specs for seed in seeds]
    log(f"roadmap run: {len(specs)} step(s) x {len(seeds)} seed(s) on {ds.name} "
        f"({ds.num_train} train / {ds.num_val} val), preset {preset}, device {dev}"
        + (f" x {dist.world_size} processes" if dist.world_size > 1 else "") + f" -> {folder}", dist)

    failed: List[str] = []
    for i, (spec, seed) in enumerate(todo, 1):
        cfg = scale_config(spec.cfg, recipe, ds.num_classes)
        key = key_for(cfg, recipe, data_id, seed, dist.world_size)
        tag = f"[{i}/{len(todo)}] {spec.name} seed {seed}"
        # rank 0 decides: every rank skips or none
        status = dist.gather(results.status(key) if dist.is_main else None)[0]
        if status == "ok":
            log(f"{tag}: done earlier, skipped ({results.run_file(key)})", dist)
            continue
        if status == "failed" and not retry_failed:
            error = (results.load(key).get("error") or "no message") if dist.is_main else ""
            log(f"{tag}: failed earlier: {error}; --retry-failed to try again", dist)
            failed.append(f"{spec.name} seed {seed} (earlier): {error}")
            continue
        if reference is not None and reference.status(key) == "ok":
            # The same key is the same configuration, recipe, data content and seed.
            if dist.is_main:
                results.record(reference.load(key))
            log(f"{tag}: in the committed reference, skipped ({reference.run_file(key)})", dist)
            continue
        ckpt = results.checkpoints / f"{key}.pt"
        if status == "failed":
            log(f"{tag}: failed earlier; trying again (--retry-failed)", dist)
        if ckpt.exists():
            log(f"{tag}: resuming from {ckpt}", dist)
        row = dict(order=spec.order, run=spec.name, step=spec.step, variant=spec.variant,
                   phase=spec.phase, roadmap=spec.roadmap, seed=seed, paper_top1=spec.paper_top1,
                   paper_top1_sd=spec.paper_top1_sd, paper_gflops=spec.paper_gflops,
                   preset=preset, data=ds.name, device=str(dev), world_size=dist.world_size,
                   threads=torch.get_num_threads(),
                   key=key, recipe=recipe.to_dict(), config=cfg.to_dict(),
                   versions=dict(python=platform.python_version(), torch=torch.__version__,
                                 timm=timm.__version__))
        writer, keep_checkpoint = None, False
        try:
            if dist.is_main:
                results.checkpoints.mkdir(parents=True, exist_ok=True)
            writer = _tensorboard_writer(folder, spec.name, seed) if tensorboard and dist.is_main else None
            # cfg is final (scaled above); the recipe serves as the execution switches too
            metrics = train_run(spec.name, cfg, recipe, recipe, ds, seed, dev, str(ckpt), dist,
                                progress=progress, on_update=_logger(writer))
            if writer is not None:
                writer.add_scalar("val/top1", metrics["top1"], metrics["updates"])
            row.update(metrics, status="ok", error="")
            summary = (f"{tag}: top-1 {metrics['top1']:.2f}%"
                       + (f" (EMA {metrics['top1_ema']:.2f})" if metrics.get("top1_ema") is not None else "")
                       + (f" | paper {spec.paper_top1:.2f}" if spec.paper_top1 else "")
                       + f" | {metrics['params_m']:.2f} M params, {metrics['gflops']:.3f} GFLOPs"
                       f" @{recipe.img_size}px | train {metrics['train_img_s']:.0f} img/s, "
                       f"infer {metrics['infer_img_s']:.0f} img/s | {metrics['wall_s']:.0f} s")
        except NonFiniteLoss as e:  # every rank sees the same loss: all record it and go on
            row.update(status="failed", error=str(e))
            summary = f"{tag}: FAILED - {e}"
        except Exception as e:
            if dist.world_size > 1:
                raise  # the other ranks wait in a collective: one rank alone cannot go on
            row.update(status="failed", error=error_line(e))
            summary = f"{tag}: FAILED - {row['error']}"
            keep_checkpoint = True  # unlike a NaN, an OS error or a bad file may pass
        finally:
            if writer is not None:
                writer.close()
        row["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
        if dist.is_main:
            results.record(row)
            results.write_tables()
            # The row holds the result; the weights of a finished run are not kept. A run that
            # failed otherwise than by NaN keeps its checkpoint: --retry-failed resumes from it.
            if not keep_checkpoint and ckpt.exists():
                ckpt.unlink()
        if row["status"] != "ok":
            failed.append(f"{spec.name} seed {seed}: {row['error']}")
        log(summary, dist)
        if dist.world_size > 1:
            torch.distributed.barrier()

    if dist.is_main:
        table = results.write_tables()
        mix = thread_mix(table)
        if mix:
            warn(f"{folder}: {mix}", dist)
        if plot and len(table):
            from .plot import plot_trajectory
            from .report import plot_deltas, reference_band
            # a run drawn against the committed reference: its means and 95% intervals
            band = reference_band(read_results(reference.root)) if reference is not None else None
            paths = plot_trajectory(folder, deltas=plot_deltas(table), reference=band)
            log(f"results: {folder / 'results.csv'}, {folder / 'summary.csv'}; figure: {paths[0]}", dist)
    if failed:
        more = f" (and {len(failed) - 1} more, see {folder / 'results.csv'})" if len(failed) > 1 else ""
        raise RunsFailed(f"{len(failed)} of {len(todo)} run(s) failed: {failed[0]}{more}; the "
                         "others are saved. Fix the cause, then rerun with --retry-failed")
    return folder


def _tensorboard_writer(folder: Path, run: str, seed: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RoadmapError("--log tensorboard needs the tensorboard package: "
                           "pip install -e '.[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter(str(folder / "tensorboard" / f"{run.replace('/', '_')}-seed{seed}"))


def _logger(writer):
    if writer is None:
        return None

    def on_update(m):
        u = m["update"]
        writer.add_scalar("train/loss", m["loss"], u)
        writer.add_scalar("train/lr", m["lr"], u)
        writer.add_scalar("train/img_s", m["img_s"], u)
    return on_update
