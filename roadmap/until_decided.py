"""`roadmap run --until-decided`: the planned seeds, then seeds only where a change is open.

The design (`sequential.py`: looks, alpha per look, the stopping rule) is pure statistics;
this module drives it: an ordinary `run_plan` per round, a look rebuilt from the runs on disk
after each, `design.json` written once so a rerun continues the same design.
"""

from pathlib import Path
from typing import Dict, List, Sequence

from . import analysis as A
from . import sequential as Q
from .env import Dist
from .errors import RoadmapError
from .outputs import write_outputs
from .plan import RunSpec
from .recipe import Recipe
from .results import atomic_write_text, read_results
from .runner import log, run_plan


def run_until_decided(
    specs: Sequence[RunSpec], recipe: Recipe, preset: str, dist: Dist = Dist(), *, design: Q.Design, **options
) -> Path:
    """Look after look of `design`, one more round of seeds only at the steps that border an
    open change, until every change is resolved or shown equivalent, or the last look is made.

    Every round is an ordinary `run_plan` of the steps it needs (resumable: a killed run
    picks up where it was), and every look is rebuilt from the runs on disk, so rerunning the
    command continues the design; `design.json` in the folder fixes the design for good."""
    plot = options.pop("plot", True)
    options = dict(options, design_seeds=design.seeds)
    folder = run_plan(specs, recipe, preset, dist, plot=False, **dict(options, seeds=design.seeds[: design.planned]))
    options["out"] = str(folder)
    by_name = {s.name: s for s in specs}
    if dist.is_main:
        fix_design(folder, design)
    rounds = 0
    while True:
        d, labels = A.decision(read_results(folder), design)
        states = d.table["state"].value_counts().to_dict() if len(d.table) else {}
        seen = d.looks[-1].seeds if d.looks else 0
        log(
            f"look at {seen} seeds per step: "
            + ", ".join(f"{states.get(k, 0)} {k}" for k in Q.STATES)
            + ("" if d.finished else f"; next: {targets_text(d.targets, labels)}"),
            dist,
        )
        if d.finished:
            break
        rounds += 1
        for target in sorted(set(d.targets.values())):
            chosen = [
                by_name[x] for m, n in d.targets.items() if n == target for x in labels.get(m, []) if x in by_name
            ]
            if chosen:
                run_plan(chosen, recipe, preset, dist, plot=False, **dict(options, seeds=design.seeds[:target]))
    if plot and dist.is_main:
        write_outputs(folder, report=True)
    open_ = int((d.table["state"] == "open").sum()) if len(d.table) else 0
    why = (
        f"; {open_} still open at the cap of {design.max_seeds} seeds (report.md says what each needs)" if open_ else ""
    )
    log(f"decided: {folder / 'report.md'} after {rounds} round(s){why}", dist)
    return folder


def targets_text(targets: Dict, labels: Dict[str, List[str]]) -> str:
    """`resnet50 to 8, layer_norm to 8`: the seeds each step is taken to in the next round."""
    return ", ".join(
        f"{'/'.join(labels.get(m, [m]))} to {n}"
        for m, n in sorted(targets.items(), key=lambda x: str(labels.get(x[0])))
    )


def fix_design(folder: Path, design: Q.Design) -> None:
    """Write the design once; a folder that declared another design is refused (its looks
    were made under that one: changing it afterwards would void the error control)."""
    have = Q.read_design(folder)
    if have is None:
        atomic_write_text(folder / Q.DESIGN_FILE, design.to_json() + "\n")
    elif have != design:
        raise RoadmapError(
            f"{folder / Q.DESIGN_FILE} declares another design (seeds {have.planned}, max {have.max_seeds}, "
            f"looks {list(have.looks)}); rerun with --seeds {have.planned} --max-seeds {have.max_seeds} "
            f"--looks {len(have.looks)}, or use a new --out"
        )
