"""`roadmap run`: train and measure every planned run, skip finished ones, resume killed ones.

For each run, in plan order: skip it (finished or failed here earlier), reuse it (the
committed reference holds the same key), or train it; then record it. The tables and
figures are written at the end by `outputs.write_outputs`.
"""

import datetime
import errno
import json
import platform
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pandas as pd
import timm
import torch

from . import data as D
from . import tables, trained
from .config import ArchConfig
from .env import Dist, amp_dtype, configure_cuda, resolve_device
from .errors import RoadmapError
from .model import stem_stride
from .plan import Run, RunSpec, data_identity, default_out_dir, plan_runs
from .recipe import Execution, Recipe, get_execution
from .results import ResultsDir, check_labels, read_results, thread_mix
from .speed import Occupancy, measured_flag
from .stats import range_half
from .train import NonFiniteLoss, train_run


class RunsFailed(RoadmapError):
    """Some runs failed, each recorded with its error; the command exits 1 (2 is for bad input)."""

    exit_code = 1


@dataclass
class Options:
    """How `run_plan` runs a plan (what it trains is the specs, recipe and seeds)."""

    ex: Optional[Execution] = None  # default: the preset's
    data: str = "fashion-mnist"
    seeds: Sequence[int] = (0,)
    out: Optional[str] = None  # default: default_out_dir
    roadmap: Optional[str] = None  # a custom roadmap's name, for the default folder
    device: str = "auto"
    progress: bool = True
    plot: bool = True
    tensorboard: bool = False
    retry_failed: bool = False
    use_reference: bool = True
    keep_weights: bool = True  # a finished run's final (and EMA) weights, as safetensors
    # every seed a sequential design may still ask for: their checkpoints are not strays
    design_seeds: Sequence[int] = ()


def log(msg: str, dist: Dist):
    if dist.is_main:
        print(msg, flush=True)


def warn(msg: str, dist: Dist):
    if dist.is_main:
        print(f"roadmap: warning: {msg}", file=sys.stderr, flush=True)


def min_img_size(cfg: ArchConfig) -> int:
    """The smallest input `cfg`'s model takes: its total stride (the stem's, x2 per later stage)."""
    return stem_stride(cfg) * 2 ** (len(cfg.depths) - 1)


def check_plan(specs: Sequence[RunSpec], recipe: Recipe, world_size: int = 1):
    """What would fail every run of the plan, found before any data is loaded."""
    for spec in specs:
        need = min_img_size(recipe.apply(spec.cfg, num_classes=2))
        if recipe.img_size < need:
            raise RoadmapError(
                f"img_size={recipe.img_size} is too small for step {spec.name}: its model "
                f"downsamples {need}x, so images need at least {need} px "
                f"(--set img_size={need} or more)"
            )
    global_batch = recipe.global_batch_size(world_size)  # an error if it is not whole batches
    lr = recipe.scaled_lr(global_batch)
    if recipe.min_lr >= lr:
        raise RoadmapError(
            f"--set min_lr={recipe.min_lr:g}: the cosine decays to min_lr from the peak "
            f"lr {lr:g} (lr scaled to the global batch {global_batch}); "
            "min_lr must be below it"
        )


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


def labels(spec: RunSpec, preset: str) -> Dict:
    """The row labels a run is recorded with: those of the roadmap that runs it."""
    return dict(
        order=spec.order,
        run=spec.name,
        step=spec.step,
        variant=spec.variant,
        phase=spec.phase,
        roadmap=spec.roadmap,
        paper_top1=spec.paper_top1,
        paper_top1_sd=spec.paper_top1_sd,
        paper_gflops=spec.paper_gflops,
        preset=preset,
    )


def load_data(data: str, recipe: Recipe, dist: Dist) -> D.Dataset:
    ds = D.load_dataset(data).subset(recipe.train_subset, recipe.val_subset)
    D.check_recipe_fits(ds, recipe)
    D.check_classes(ds, " with --set train_subset/val_subset" if recipe.train_subset or recipe.val_subset else "")
    if D.batches_per_epoch(ds, recipe.batch_size, dist.world_size) < 1:
        raise RoadmapError(
            f"{ds.num_train} training images cannot fill one global batch of "
            f"{recipe.batch_size * dist.world_size}; lower --set batch_size"
        )
    return ds


def open_folder(folder: Path, dist: Dist, flag: str) -> ResultsDir:
    """The results folder, proven writable, its stale temporary files swept (rank 0)."""
    results = ResultsDir(folder)
    if not dist.is_main:
        return results
    results.check_writable(flag)
    if results.holds_foreign_table():
        raise RoadmapError(
            f"{folder} holds a results.csv but no runs/: its rows cannot be rebuilt "
            "from records, and a run here would replace them. Use another --out"
        )
    stale = results.sweep_temp_files()
    if stale:
        log(
            f"removed {len(stale)} stale temporary file(s) of an earlier, killed run: "
            + ", ".join(p.name for p in stale[:3])
            + (" ..." if len(stale) > 3 else ""),
            dist,
        )
    return results


def check_folder_models(
    results: ResultsDir, runs: Sequence[Run], recipe: Recipe, preset: str, data_id: Dict, dist: Dist
):
    """Refuse, before training, a plan that would put into one folder runs of different
    models under one label, or of different recipes or data: the tables would average them
    as seeds of one step, and a change between steps would mix a recipe change into it."""
    if not (dist.is_main and results.runs.is_dir() and any(results.runs.glob("*.json"))):
        return
    have = read_results(results.root)
    planned = pd.DataFrame(
        [
            dict(
                labels(r.spec, preset),
                seed=r.seed,
                key=r.key,
                status="ok",
                config=json.dumps(r.cfg.to_dict()),
                recipe=json.dumps(recipe.to_dict()),
                data=data_id["name"],
                data_id=json.dumps(data_id),
                world_size=dist.world_size,
            )
            for r in runs
        ]
    )
    new = planned[~planned["key"].isin(set(have["key"].dropna()))]
    check_labels(pd.concat([have, new], ignore_index=True), results.root)


def note_unresumable(results: ResultsDir, runs: Sequence[Run], data_id: Dict, dist: Dist):
    """One line when the folder keeps checkpoints of no planned run: their runs were of other
    data, recipe or steps (a changed dataset gives new keys), so what would resume restarts."""
    if not dist.is_main or not results.checkpoints.is_dir():
        return
    planned = {r.key for r in runs}
    stray = sorted(p.name[: -len(".pt")] for p in results.checkpoints.glob("*.pt") if p.stem not in planned)
    if not stray:
        return
    named, other_data = [], 0
    for key in stray:
        try:
            record = json.loads(results.run_file(key).read_text())
            named.append(f"{record['run']} seed {record['seed']}")
            other_data += (record.get("data_id") or {}).get("content") != data_id.get("content")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            named.append(key)
    why = (
        f"{other_data} of them on other data: {data_id['name']}'s images changed since"
        if other_data
        else "other steps, or their data, recipe or configuration changed since"
    )
    warn(
        f"{results.checkpoints} holds {len(stray)} checkpoint(s) of no run planned here "
        f"({', '.join(named[:3])}{', ...' if len(named) > 3 else ''}; {why}): a run of this plan "
        "without its own checkpoint starts from zero instead of resuming",
        dist,
    )


def _record_base(
    run: Run, preset: str, recipe: Recipe, ex: Execution, data_id: Dict, dev: torch.device, dist: Dist
) -> Dict:
    return dict(
        labels(run.spec, preset),
        seed=run.seed,
        data=data_id["name"],
        device=str(dev),
        world_size=dist.world_size,
        threads=torch.get_num_threads(),
        key=run.key,
        model_key=run.model_key,
        training=run.training,
        recipe=recipe.to_dict(),
        execution=ex.to_dict(),
        config=run.cfg.to_dict(),
        data_id=data_id,
        versions=dict(python=platform.python_version(), torch=torch.__version__, timm=timm.__version__),
    )


def run_plan(specs: Sequence[RunSpec], recipe: Recipe, preset: str, dist: Dist = Dist(), **options) -> Path:
    """Run every (spec, seed) not yet finished in the results folder; return the folder.

    `options` are `Options` fields. A run that raises is recorded as failed with its error,
    and the next run goes on; at the end RunsFailed names the failures (also those recorded
    by an earlier call, which are retried only with `retry_failed`).
    """
    o = Options(**options)
    ex = o.ex or get_execution(preset)
    check_plan(specs, recipe, dist.world_size)
    dev = _device(o.device, dist, ex)
    if o.out is not None and dist.is_main:
        ResultsDir(o.out).check_writable()  # before the data: a bad --out costs nothing
    ds = load_data(o.data, recipe, dist)
    folder = Path(o.out) if o.out else default_out_dir(preset, ds.name, o.roadmap)
    results = open_folder(folder, dist, "--out" if o.out else "results folder")
    data_id = data_identity(ds)
    autocast = amp_dtype(dev, recipe.amp)
    plan = partial(
        plan_runs,
        specs,
        recipe,
        data_id,
        world_size=dist.world_size,
        autocast=str(autocast).replace("torch.", "") if autocast is not None else None,
    )
    runs = plan(o.seeds)
    check_folder_models(results, runs, recipe, preset, data_id, dist)
    note_unresumable(results, runs + plan(o.design_seeds), data_id, dist)
    reference = _reference(preset, ds.name, folder, o.use_reference, dist)
    log(
        f"roadmap run: {len(specs)} step(s) x {len(o.seeds)} seed(s) on {ds.name} "
        f"({ds.num_train} train / {ds.num_val} val), preset {preset}, device {dev}"
        + (f" x {dist.world_size} processes" if dist.world_size > 1 else "")
        + f" -> {folder}",
        dist,
    )

    failed: List[str] = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.spec.name} seed {run.seed}"
        if _skip(run, results, tag, o.retry_failed, failed, dist):
            continue
        if _reuse(run, results, reference, preset, tag, dist):
            continue
        row = _train(
            run, results, _record_base(run, preset, recipe, ex, data_id, dev, dist), recipe, ex, ds, dev, dist, tag, o
        )
        if row["status"] != "ok":
            failed.append(f"{run.spec.name} seed {run.seed}: {row['error']}")
    _finish(results, o.plot, dist, len(runs), failed)
    return folder


def _device(device: str, dist: Dist, ex: Execution) -> torch.device:
    dev = resolve_device(device)
    if dev.type == "cuda" and dist.world_size > 1:
        dev = torch.device("cuda", dist.local_rank)
    if dev.type == "cuda":
        configure_cuda(ex)
    return dev


def _reference(preset: str, data_name: str, folder: Path, use: bool, dist: Dist) -> Optional[ResultsDir]:
    from .outputs import REFERENCE_ROOT, reference_folder

    ref = reference_folder(preset, data_name, exclude=folder) if use else None
    if use and not REFERENCE_ROOT.is_dir():
        log(
            "note: the committed reference runs ship with a checkout of the repository, not with "
            "an installed package; every run here is trained",
            dist,
        )
    return ResultsDir(ref) if ref is not None else None


def _skip(run: Run, results: ResultsDir, tag: str, retry_failed: bool, failed: List[str], dist: Dist) -> bool:
    """Whether `run` is done here already: finished, or failed without --retry-failed."""
    status = dist.gather(results.status(run.key) if dist.is_main else None)[0]  # rank 0 decides
    if status == "ok":
        log(f"{tag}: done earlier, skipped ({results.run_file(run.key)})", dist)
        return True
    if status == "failed" and not retry_failed:
        error = (results.load(run.key).get("error") or "no message") if dist.is_main else ""
        log(f"{tag}: failed earlier: {error}; --retry-failed to try again", dist)
        failed.append(f"{run.spec.name} seed {run.seed} (earlier): {error}")
        return True
    if status == "failed":
        log(f"{tag}: failed earlier; trying again (--retry-failed)", dist)
    return False


def _reuse(run: Run, results: ResultsDir, reference: Optional[ResultsDir], preset: str, tag: str, dist: Dist) -> bool:
    """Copy the committed reference's run of the same key, under this roadmap's labels."""
    if reference is None or reference.status(run.key) != "ok":
        return False
    # The same key is the same configuration, recipe, data content and seed; the labels
    # (name, order, roadmap, variant) are the reusing roadmap's.
    if dist.is_main:
        record = reference.load(run.key)
        record.update(
            labels(run.spec, preset),
            model_key=run.model_key,
            training=run.training,
            reused_from=str(reference.run_file(run.key)),
        )
        results.record(record)
    log(f"{tag}: in the committed reference, skipped ({reference.run_file(run.key)})", dist)
    return True


def _train(
    run: Run,
    results: ResultsDir,
    row: Dict,
    recipe: Recipe,
    ex: Execution,
    ds: D.Dataset,
    dev: torch.device,
    dist: Dist,
    tag: str,
    o: Options,
) -> Dict:
    """Train one run, record it (finished or failed) and say how it went."""
    ckpt = results.checkpoints / f"{run.key}.pt"
    if ckpt.exists():
        log(f"{tag}: resuming from {ckpt}", dist)
    writer, keep_checkpoint = None, False
    try:
        if dist.is_main:
            results.checkpoints.mkdir(parents=True, exist_ok=True)
        writer = _tensorboard_writer(results.root, run.spec.name, run.seed) if o.tensorboard and dist.is_main else None
        with Occupancy() as machine:  # whether the run had the machine: roadmap.speed
            metrics = train_run(
                run.spec.name,
                run.cfg,
                recipe,
                ex,
                ds,
                run.seed,
                dev,
                str(ckpt),
                dist,
                progress=o.progress,
                on_update=_logger(writer),
                keep=partial(trained.keep, results.root / "weights", run.key, run.spec.step, run.cfg)
                if o.keep_weights
                else None,
            )
        if writer is not None:
            log_scores(writer, metrics)
        row.update(metrics, **machine.fields(row["threads"]), status="ok", error="")
        summary = _summary_line(tag, run.spec, recipe, metrics)
        if measured_flag(row):  # said now, and its speed is left out of the tables
            summary += f" | speed not counted: {measured_flag(row)}"
    except NonFiniteLoss as e:  # every rank sees the same loss: all record it and go on
        row.update(status="failed", error=str(e))
        summary = f"{tag}: FAILED - {e}"
    except Exception as e:
        if dist.world_size > 1:
            raise  # the other ranks wait in a collective: one rank alone cannot go on
        if _disk_full(e):
            raise  # every next run would fail alike: stop with the one line; the checkpoint stays
        row.update(status="failed", error=error_line(e))
        summary = f"{tag}: FAILED - {row['error']}"
        keep_checkpoint = True  # unlike a NaN, an OS error or a bad file may pass
    finally:
        if writer is not None:
            writer.close()
    _record(results, row, ckpt, keep_checkpoint, dist)
    log(summary, dist)
    if dist.world_size > 1:
        torch.distributed.barrier()
    return row


def _disk_full(e: BaseException) -> bool:
    """A full disk (or quota), raised as is or as our own "no space left on ..." line."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(e, RoadmapError) and str(e).startswith("no space left on ")


def _record(results: ResultsDir, row: Dict, ckpt: Path, keep_checkpoint: bool, dist: Dist):
    row["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    if dist.is_main:
        results.record(row)
        results.write_tables()
        # The row holds the result, weights/ the final weights (trained.keep, unless
        # --no-weights), so the checkpoint goes. A run that failed otherwise than by NaN
        # keeps its checkpoint: --retry-failed resumes from it.
        if not keep_checkpoint and ckpt.exists():
            ckpt.unlink()


def _summary_line(tag: str, spec: RunSpec, recipe: Recipe, m: Dict) -> str:
    return (
        f"{tag}: top-1 {m['top1']:.2f}%"
        + (f" (EMA {m['top1_ema']:.2f})" if m.get("top1_ema") is not None else "")
        + (f" | paper {spec.paper_top1:.2f}" if spec.paper_top1 else "")
        + f" | {m['params_m']:.2f} M params, {m['gflops']:.3f} GFLOPs @{recipe.img_size}px"
        f" | train {m['train_img_s']:.0f} img/s, infer {m['infer_img_s']:.0f} img/s | {m['wall_s']:.0f} s"
    )


def _finish(results: ResultsDir, plot: bool, dist: Dist, total: int, failed: List[str]):
    """Tables and figures of the whole folder, then the failures, if any."""
    if dist.is_main:
        from .outputs import write_outputs

        written = write_outputs(results.root, figures=plot)
        mix = thread_mix(written["table"])
        if mix:
            warn(f"{results.root}: {mix}", dist)
        if len(written["summary"]):
            log("\n" + step_lines(written["summary"], written.get("band")) + "\n", dist)
        figure = f"; figure: {written['figures'][0]}" if written["figures"] else ""
        log(f"results: {results.root / 'results.csv'}, {results.root / 'summary.csv'}{figure}", dist)
    if failed:
        more = f" (and {len(failed) - 1} more, see {results.root / 'results.csv'})" if len(failed) > 1 else ""
        raise RunsFailed(
            f"{len(failed)} of {total} run(s) failed: {failed[0]}{more}; the "
            "others are saved. Fix the cause, then rerun with --retry-failed"
        )


def step_lines(summary: pd.DataFrame, band: Optional[pd.DataFrame] = None) -> str:
    """The folder's steps as a terminal table: mean top-1 (± sd over seeds), its change from
    the row before, params and GFLOPs at 224 px (the paper's scale) for the trained width;
    with a reference `band`, the reference's mean and the 95% range a mean of this many runs
    falls in, marked `ok` inside it and `OUT` outside."""
    ref = band.set_index("model_key") if band is not None and len(band) else None
    rows, before = [], None
    for _, r in summary.iterrows():
        mean, sd = r["top1_mean"], r["top1_std"]
        row = {
            "step": r["run"],
            "seeds": str(int(r["seeds"])),
            "top1 %": "-" if pd.isna(mean) else f"{mean:.2f}" + (f" ± {sd:.2f}" if pd.notna(sd) else ""),
            "Δ": "" if before is None or pd.isna(mean) else f"{mean - before:+.2f}",
            "params M": _fmt(r["params_m"], ".2f"),
            "GFLOPs@224": _fmt(r["gflops_224"], ".3f"),
        }
        if ref is not None:
            row["reference (95% range)"] = row[""] = ""
            if r.get("model_key") in ref.index and pd.notna(mean):
                b = ref.loc[r["model_key"]]
                half = range_half(b, int(r["seeds"]))
                row["reference (95% range)"] = f"{b['mean']:.2f} ± {half:.2f}"
                row[""] = "ok" if abs(mean - b["mean"]) <= half else "OUT"
        rows.append(row)
        before = mean if pd.notna(mean) else before
    return tables.terminal(rows, right=("seeds", "top1 %", "Δ", "params M", "GFLOPs@224", ""))


def _fmt(value, spec: str) -> str:
    value = pd.to_numeric(value, errors="coerce")
    return "-" if pd.isna(value) else format(value, spec)


def _tensorboard_writer(folder: Path, run: str, seed: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RoadmapError(
            "--log tensorboard needs the tensorboard package: "
            "pip install -e '.[tensorboard]' (or pip install tensorboard)"
        ) from None
    return SummaryWriter(str(folder / "tensorboard" / f"{run.replace('/', '_')}-seed{seed}"))


def log_scores(writer, metrics: Dict):
    """val/top1 at the end, and after every epoch where the run kept its curve."""
    per_epoch = metrics["updates"] / metrics["epochs"]
    for point in metrics.get("curve", [])[:-1]:  # the last point is the final score
        writer.add_scalar("val/top1", point["top1"], round(point["epoch"] * per_epoch))
    writer.add_scalar("val/top1", metrics["top1"], metrics["updates"])


def _logger(writer):
    if writer is None:
        return None

    def on_update(m):
        u = m["update"]
        writer.add_scalar("train/loss", m["loss"], u)
        writer.add_scalar("train/lr", m["lr"], u)
        writer.add_scalar("train/img_s", m["img_s"], u)

    return on_update
