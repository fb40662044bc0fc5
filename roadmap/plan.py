"""What to run: RunSpecs (the paper's roadmap, its kernel sweep, or a custom roadmap's rows),
and the Runs made of them: each (spec, seed) with its final configuration and its key."""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import ArchConfig
from .errors import RoadmapError
from .recipe import Recipe
from .registry import config_for, get_step, kernel_sweep, step_names, steps_between


@dataclass(frozen=True)
class RunSpec:
    name: str  # unique row label: the step, or step/variant
    step: str
    phase: str
    order: int  # position on the chart
    cfg: ArchConfig  # the full-size configuration (presets scale it)
    paper_top1: Optional[float] = None
    paper_top1_sd: Optional[float] = None
    paper_gflops: Optional[float] = None
    variant: str = ""
    roadmap: str = "paper"


def spec_for_step(name: str, order: int) -> RunSpec:
    s = get_step(name)
    return RunSpec(s.name, s.name, s.phase, order, config_for(s.name), s.paper_top1, s.paper_top1_sd, s.paper_gflops)


def paper_plan(
    upto: Optional[str] = None,
    start: Optional[str] = None,
    only: Optional[Sequence[str]] = None,
    kernel_sizes: Optional[Sequence[int]] = None,
) -> List[RunSpec]:
    """Steps of the paper's roadmap: a range (--from/--upto) or a list (--only).

    With `kernel_sizes`, every `large_kernel` entry becomes the paper's kernel sweep.
    """
    names = step_names()
    if only:
        if upto or start:
            raise RoadmapError("use either --only or --from/--upto, not both")
        chosen = [get_step(n).name for n in only]
        chosen = sorted(set(chosen), key=names.index)
    else:
        chosen = steps_between(start, upto)
    specs = []
    for name in chosen:
        order = names.index(name)
        if kernel_sizes and name == "large_kernel":
            sweep = kernel_sweep()
            for k in kernel_sizes:
                if k % 2 == 0 or k < 1:
                    raise RoadmapError(f"--kernel-sizes: {k} is not an odd kernel size")
                top1, gflops = sweep.get(k, (None, None))
                specs.append(
                    RunSpec(
                        f"large_kernel/k{k}",
                        name,
                        get_step(name).phase,
                        order,
                        config_for(name, kernel_size=k),
                        top1,
                        None,
                        gflops,
                        variant=f"k{k}",
                        roadmap="kernel sweep",
                    )
                )
        else:
            specs.append(spec_for_step(name, order))
    if kernel_sizes and "large_kernel" not in chosen:
        raise RoadmapError(
            "--kernel-sizes sweeps the large_kernel step; add it, e.g. --only large_kernel --kernel-sizes 3,5,7,9,11"
        )
    return specs


def default_out_dir(preset: str, data_name: str, roadmap_name: Optional[str] = None) -> Path:
    """The results folder when --out is not given: runs/<preset>-<data> for the paper's roadmap,
    runs/<preset>-<data>-<roadmap> for a custom one (its rows would otherwise mix into the
    paper roadmap's chart). `data_name` is the dataset's own name (fashion-mnist for any
    alias). runs/ is git-ignored: a rerun never overwrites the committed reference."""
    if roadmap_name is None:
        return Path("runs") / f"{preset}-{data_name}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", roadmap_name).strip("_") or "custom"
    return Path("runs") / f"{preset}-{data_name}-{slug}"


# ---- runs and their keys: the only place a key is made ----------------------------------


@dataclass(frozen=True)
class Run:
    """One (step, seed) to train: its row labels, final configuration and key."""

    spec: RunSpec
    seed: int
    cfg: ArchConfig  # final: widths scaled once, classes and drop path set
    key: str  # what the run's numbers depend on, seed included
    model_key: str  # the same without the seed: the model several seeds share
    # what the key hashed besides the configuration, data and seed (recorded: schema checks it)
    training: Optional[Dict[str, Any]] = field(default=None, compare=False)


def data_identity(ds) -> Dict[str, Any]:
    """Name, split sizes and a content hash, not the path: the same data mounted elsewhere
    is the same data, and the same folder name with other images is not."""
    return dict(name=ds.name, train=ds.num_train, val=ds.num_val, classes=ds.num_classes, content=ds.fingerprint())


def training_identity(
    recipe: Recipe, cfg: ArchConfig, final: ArchConfig, world_size: int = 1, autocast: Optional[str] = None
) -> Dict[str, Any]:
    """The recipe's keyed fields, plus what else changes the numbers. Each extra entry is
    added only where it applies, so the keys of the committed (CPU, one process) runs hold."""
    training = recipe.training_key()
    if world_size > 1:  # the process count sets the global batch and lr
        training["world_size"] = world_size
    if autocast:  # CUDA mixed precision ran: bf16/fp16 numbers are not a CPU run's
        training["autocast"] = autocast
    if tuple(w * recipe.width_scale for w in cfg.widths) != final.widths:
        # rounding to multiples of 8 merged widths: the request tells two such rows apart
        training["requested_widths"] = list(cfg.widths)
    return training


def run_key(config: Dict, training: Dict, data: Dict, seed: Optional[int]) -> str:
    """A hash of everything that determines a run's result (seed None: the model's key)."""
    parts = dict(config=config, recipe=training, data=data)
    if seed is not None:
        parts["seed"] = seed
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def plan_runs(
    specs: Sequence[RunSpec],
    recipe: Recipe,
    data_id: Dict,
    seeds: Sequence[int],
    world_size: int = 1,
    autocast: Optional[str] = None,
) -> List[Run]:
    """Every (spec, seed) with its final configuration and key, specs first, then seeds."""
    runs, seen = [], {}
    for spec in specs:
        final = recipe.apply(spec.cfg, data_id["classes"])
        training = training_identity(recipe, spec.cfg, final, world_size, autocast)
        model = run_key(final.to_dict(), training, data_id, None)
        if model in seen:
            raise RoadmapError(
                f"steps {seen[model]} and {spec.name} are the same model at this "
                "recipe; drop one of them from the roadmap"
            )
        seen[model] = spec.name
        runs += [
            Run(spec, seed, final, run_key(final.to_dict(), training, data_id, seed), model, training) for seed in seeds
        ]
    return runs
