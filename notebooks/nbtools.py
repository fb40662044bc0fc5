"""Plumbing shared by the notebooks, so that each one shows only what it teaches.

- `tiny_run`: train roadmap steps for a few seconds each on the embedded Fashion-MNIST with
  `roadmap.runner.run_plan` (the code behind `roadmap run`), into a temporary folder.
- `ours_vs_paper`: that run's results, one row per run, next to the paper's numbers.
- `size_table`: params and fvcore GFLOPs of the full-size models at 224 px next to the paper's.
- `flops_by_module`: fvcore GFLOPs of every submodule, to see where a step moves compute.
"""

import logging
import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch
from IPython.display import Image, display

import roadmap.plot  # noqa: F401  (selects matplotlib's file-only backend; notebooks re-select inline)
from roadmap.measure import flops_table
from roadmap.recipe import settings
from roadmap.results import read_results, summarize
from roadmap.runner import run_plan

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

# One pass over UPDATES x BATCH training images, scored on VAL held-out images. The notebook
# tests shorten the pass (ROADMAP_NOTEBOOK_UPDATES): every cell still runs, on less training.
UPDATES, BATCH, VAL = 100, 32, 500
UPDATES = int(os.environ.get("ROADMAP_NOTEBOOK_UPDATES", UPDATES))


def tiny_recipe(updates: int = UPDATES, batch: int = BATCH, val: int = VAL):
    """The `demo` preset (widths x0.25, 32 px, AdamW, light augmentation) cut to `updates`
    updates of `batch` images. `lr_batch=batch` keeps the demo's learning rate at this
    smaller batch instead of scaling it down."""
    return settings(
        "demo",
        [
            f"train_subset={updates * batch}",
            f"val_subset={val}",
            f"batch_size={batch}",
            f"lr_batch={batch}",
            f"max_updates={updates}",
            f"eval_batch_size={val}",
        ],
    )


def tiny_run(specs, label: str, seeds=(0,), folder=None, **recipe_kw) -> Path:
    """Train `specs` (from `roadmap.plan.paper_plan`) with `tiny_recipe`; return the results folder.

    Without `folder`, a fresh temporary one: nothing is written into the repository.
    """
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix=f"roadmap-{label}-"))
    recipe, ex = tiny_recipe(**recipe_kw)
    run_plan(specs, recipe, "demo", ex=ex, seeds=seeds, out=str(folder), progress=False)
    return folder


def ours_vs_paper(folder) -> pd.DataFrame:
    """One row per run of a results folder: our top-1 (mean over seeds) beside the paper's.

    `params_m` and `gflops_224` are those of the scaled-down model we trained (widths x0.25,
    10 classes), GFLOPs at 224 px so that their shape compares with the paper's column.
    """
    s = summarize(read_results(folder)).set_index("run")
    return pd.DataFrame(
        {
            "phase": s["phase"],
            "variant": s["variant"].fillna(""),
            "top1": s["top1_mean"],
            "seeds": s["seeds"],
            "paper_top1": s["paper_top1"],
            "params_m": s["params_m"],
            "gflops_224": s["gflops_224"],
            "paper_gflops": s["paper_gflops"],
            "train_img_s": s["train_img_s_mean"],
        }
    )


def show_trajectory(folder, width: int = 820):
    """The trajectory figure `roadmap run` drew for this results folder."""
    display(Image(filename=str(Path(folder) / "trajectory.png"), width=width))


def size_table(steps) -> pd.DataFrame:
    """Full-size models (1000 classes) at 224 px: params, fvcore GFLOPs, the paper's GFLOPs,
    and each step's change from the row above (ours and the paper's)."""
    t = flops_table(224, steps=list(steps)).set_index("step")
    t["d_params_m"] = t["params_m"].diff()
    t["d_gflops"] = t["gflops"].diff()
    t["d_paper_gflops"] = t["paper_gflops"].diff()
    return t[["phase", "params_m", "d_params_m", "gflops", "paper_gflops", "d_gflops", "d_paper_gflops"]].round(3)


def flops_by_module(model: torch.nn.Module, resolution: int = 224) -> dict:
    """fvcore GFLOPs of every submodule (name -> GFLOPs; "" is the whole model), counted the
    way `roadmap.measure.count_gflops` counts them."""
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model.eval()
    with torch.no_grad():
        fca = FlopCountAnalysis(model, torch.zeros(1, model.cfg.in_chans, resolution, resolution))
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return {name: flops / 1e9 for name, flops in fca.by_module().items()}


def reference_report():
    """`roadmap report`'s reading of the committed reference (results/reference-fashion-mnist:
    13 steps x 3 seeds, 4 epochs, full Fashion-MNIST): (steps, transitions, noise), or None
    when the reference is not in this checkout."""
    from roadmap.outputs import REFERENCE_ROOT
    from roadmap.report import build

    folder = REFERENCE_ROOT / "reference-fashion-mnist"
    if not (folder / "runs").is_dir():
        print(f"no committed reference at {folder}")
        return None
    report = build(read_results(folder))
    cols = ["from", "to", "delta", "ci_low", "ci_high", "p_holm", "resolved", "paper_delta", "verdict"]
    return report["steps"].set_index("run"), report["transitions"][cols], report["noise"]


def show_reference_changes(width: int = 760):
    """The committed reference's per-change chart (our Δ with 95% intervals, the paper's Δ)."""
    from roadmap.outputs import REFERENCE_ROOT

    path = REFERENCE_ROOT / "reference-fashion-mnist" / "changes.png"
    if path.is_file():
        display(Image(filename=str(path), width=width))
