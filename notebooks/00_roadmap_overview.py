# %% [markdown]
# # The ConvNeXt roadmap, small and whole
#
# Liu et al., *A ConvNet for the 2020s* (2022), start from a ResNet-50 trained with a modern
# (Transformer-era) recipe and change one design decision at a time until the network is
# ConvNeXt-T, a pure ConvNet that matches Swin-T. Because the training recipe never changes,
# each step's change in accuracy is due to the architecture alone.
#
# `roadmap` replays that walk: every step is a handful of toggles of one dataclass
# (`roadmap.config.ArchConfig`, steps in `steps/paper.py`), and one builder turns any step
# into a model. This notebook lists the steps, measures them against the paper's numbers,
# trains all thirteen for a few seconds each, and reads the results table and figure.
# One notebook per phase follows:
#
# | notebook | phase | steps |
# |---|---|---|
# | `01_macro_design` | macro design | stage ratio, patchify stem |
# | `02_resnextify` | ResNeXt-ify | depthwise conv, width 64 -> 96 |
# | `03_inverted_bottleneck` | inverted bottleneck | 1x1 expand -> conv -> 1x1 reduce |
# | `04_large_kernel` | large kernel | move the depthwise conv up, 3x3 -> 7x7, the kernel sweep |
# | `05_micro_design` | micro design | GELU, fewer activations, fewer norms, BN -> LN, separate downsampling |

# %%
import warnings

warnings.filterwarnings("ignore")  # fvcore / timm deprecation chatter

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

import roadmap
from nbtools import (
    flops_by_module,
    ours_vs_paper,
    reference_report,
    show_reference_changes,
    show_trajectory,
    size_table,
    tiny_run,
)
from roadmap.plan import paper_plan

pd.set_option("display.precision", 3)
pd.set_option("display.width", 140)
# %matplotlib inline

# %% [markdown]
# ## The steps
#
# Each step names the toggles it changes on top of the previous step, the paper's argument for
# it, and the paper's ImageNet-1K top-1 and GFLOPs (Table 10).

# %%
steps = pd.DataFrame(
    [
        dict(
            step=s.name,
            phase=s.phase,
            change=s.title,
            toggles=", ".join(f"{k}={v}" for k, v in s.changes.items()),
            paper_top1=s.paper_top1,
            paper_gflops=s.paper_gflops,
        )
        for s in map(roadmap.get_step, roadmap.step_names())
    ]
)
steps

# %% [markdown]
# Steps are cumulative, so the whole roadmap is the difference between its two ends. Every
# toggle below changes exactly once along the way:

# %%
start, end = roadmap.config_for("resnet50"), roadmap.config_for("separate_downsampling")
for key, (old, new) in start.diff(end).items():
    print(f"{key:17s} {old!r:26s} -> {new!r}")

# %% [markdown]
# Every step is also a timm model: `import roadmap` registers each one as `roadmap_<step>`,
# so timm's own tools accept any step. `create_model` takes timm's arguments, the data config
# comes from the model, and `features_only` gives the stage feature maps of a backbone
# (README, "Use any step in timm"):

# %%
import timm

print(timm.list_models("roadmap_*"))
model = timm.create_model("roadmap_large_kernel", num_classes=10, drop_path_rate=0.1)
print(timm.data.resolve_data_config({}, model=model))
backbone = timm.create_model("roadmap_large_kernel", features_only=True, out_indices=(1, 2, 3))
[tuple(f.shape) for f in backbone(torch.randn(1, 3, 224, 224))]

# %% [markdown]
# ## Size: our models against the paper's
#
# `size_table` builds every step at full size (1000 classes) and counts fvcore GFLOPs at
# 224 px, the way the paper counts them (one multiply-add = one FLOP); `d_` columns are the
# change from the row above. Our count also includes the norms, which is why the column
# `gflops` sits a little above `paper_gflops` in places.

# %%
sizes = size_table(roadmap.step_names())
sizes

# %%
from roadmap.plot import PHASE_COLORS

y = np.arange(len(sizes))
colors = [PHASE_COLORS[p] for p in sizes["phase"]]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
left.barh(y, sizes["gflops"], color=colors, height=0.6, label="ours (fvcore)")
left.plot(sizes["paper_gflops"], y, "kD", ms=4, label="paper")
left.set_xlim(0, 1.35 * sizes["gflops"].max())
left.set_xlabel("GFLOPs at 224 px")
left.legend(loc="upper right", fontsize=8)
right.plot(steps["paper_top1"], y, "-", color="#bbbbbb")
right.scatter(steps["paper_top1"], y, c=colors, s=40, zorder=3)
right.set_xlabel("paper: ImageNet-1K top-1 (%)")
left.set_yticks(y, sizes.index)
left.invert_yaxis()
fig.suptitle("The paper's roadmap: compute per step (left), accuracy per step (right)")
fig.tight_layout()

# %% [markdown]
# The two dips on the right are the steps that buy efficiency first and spend it later:
# the depthwise conv (paid back by widening) and moving the depthwise conv up (paid back by
# the 7x7 kernel).
#
# ## Train the whole roadmap, tiny
#
# `paper_plan()` lists the thirteen steps as run specifications; `tiny_run` hands them to
# `roadmap.runner.run_plan`, the code behind `roadmap run`, which trains each step, writes
# `results.csv` / `summary.csv` and draws the trajectory figure into a temporary folder.

# %% [markdown]
# **How to read a tiny run.** Each step trains from scratch for a few seconds: the `demo`
# preset (widths x0.25, 32 px Fashion-MNIST) cut to 100 updates of 32 images and scored on
# 500 held-out images (`nbtools.tiny_recipe`). One seed of such a run is *noisy*: differences of a
# few points between neighbouring steps are within seed-to-seed scatter, and Fashion-MNIST at 32 px is
# not ImageNet at 224 px. The real comparison is the committed reference (`make run`:
# 13 steps x 3 seeds, 4 epochs on all 60,000 images), with error bars and intervals per change.
# The paper's column is ImageNet-1K top-1 (Table 10): compare the shape, not the level.

# %%
folder = tiny_run(paper_plan(), "overview")

# %% [markdown]
# How large is the noise? Train the two ends again with a second seed, into the same folder
# (finished runs are skipped, so only the two new runs train):

# %%
tiny_run(paper_plan(only=["resnet50", "separate_downsampling"]), "overview", seeds=(1,), folder=folder)
ours = ours_vs_paper(folder)
ours.drop(columns="variant")

# %% [markdown]
# ## Reading the results
#
# `top1` is ours (mean over the seeds run), `paper_top1` the paper's ImageNet number.
# Everything printed below is computed from the table above.

# %%
from roadmap.results import read_results

first, last = ours.loc["resnet50"], ours.loc["separate_downsampling"]
print(
    f"ResNet-50 -> ConvNeXt-T, here : {first.top1:5.1f}% -> {last.top1:5.1f}%  "
    f"({last.top1 - first.top1:+.1f} points, mean of {int(last.seeds)} seeds each)"
)
print(
    f"ResNet-50 -> ConvNeXt-T, paper: {first.paper_top1:5.1f}% -> {last.paper_top1:5.1f}%  "
    f"({last.paper_top1 - first.paper_top1:+.1f} points, ImageNet-1K)"
)

runs = read_results(folder)
spread = runs[runs["run"].isin(["resnet50", "separate_downsampling"])].groupby("run")["top1"]
spread = spread.max() - spread.min()
noise = spread.max()
for run, s in spread.items():
    print(f"seed 0 vs seed 1 of {run}: {s:.1f} points apart")

# step-to-step changes between seed-0 runs, so that every bar compares like with like
seed0 = runs[runs["seed"] == 0].set_index("run")["top1"].reindex(ours.index)
ours_step = seed0.diff().iloc[1:]
paper_step = ours["paper_top1"].diff().iloc[1:]
big = ours_step.abs() > noise
same_sign = np.sign(ours_step) == np.sign(paper_step)
print(
    f"{big.sum()} of {len(ours_step)} single-step changes (seed 0) are larger than that seed spread "
    f"({noise:.1f} points)"
)
print(f"{same_sign.sum()} of {len(ours_step)} single-step changes have the sign of the paper's")

# %%
fig, ax = plt.subplots(figsize=(10, 3.8))
x = np.arange(len(ours_step))
ax.bar(
    x - 0.2, ours_step, 0.4, color=[PHASE_COLORS[p] for p in ours["phase"].iloc[1:]], label="ours (Fashion-MNIST, tiny)"
)
ax.bar(x + 0.2, paper_step, 0.4, color="black", label="paper (ImageNet-1K)")
ax.axhspan(-noise, noise, color="#dddddd", zorder=0, label="seed spread of our ends")
ax.axhline(0, color="black", lw=0.8)
ax.set_xticks(x, ours_step.index, rotation=40, ha="right")
ax.set_ylabel("change in top-1 (points)")
ax.set_title("What each step changes: ours (seed 0) vs the paper")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.tight_layout()

# %% [markdown]
# Steps whose bar stays inside the grey band are not distinguishable from seed noise in a run
# this small. Tiny runs also favour steps that make *early* training easier rather than steps
# that raise the final accuracy after 300 epochs, so expect the shape to differ from the
# paper's in places: that is a question for a full run, not for this notebook.
#
# ## What the committed reference says
#
# The conclusions belong to a run that can carry them: `results/reference-fashion-mnist`,
# all 13 steps x 3 seeds, 4 epochs on the full Fashion-MNIST (`make run`). `roadmap report`
# fits one model over its 39 runs; a change is *resolved* when its Holm-adjusted p is below
# 0.05. These numbers are read from the committed files, not from the tiny run above.

# %%
from IPython.display import display

ref = reference_report()
if ref is not None:
    ref_steps, ref_changes, ref_noise = ref
    print(
        f"pooled seed sd {ref_noise['seed_sd']:.3f} points ({ref_noise['df']} df); "
        f"median 95% half-width of a change {ref_noise['median_half_width']:.3f} points; "
        f"{int(ref_changes['resolved'].sum())} of {len(ref_changes)} changes resolved"
    )
    display(ref_changes.round(3))
    show_reference_changes()

# %% [markdown]
# Read each row against the paper's diamond: a filled dot whose interval excludes 0 is a
# change this experiment resolves; a hollow one is below its noise floor, whatever its sign.
#
# ## The trajectory figure
#
# `roadmap run` draws this figure for every results folder, in the spirit of the paper's
# Figure 2: one row per step coloured by phase, our top-1 as bars (error bars where a step has
# several seeds), the paper's top-1 as diamonds on the top axis, GFLOPs beside each row.

# %%
show_trajectory(folder)
print(f"results folder: {folder}")

# %% [markdown]
# ## Where next
#
# - The phase notebooks, `01_macro_design` to `05_micro_design`, open each group of steps:
#   the block before and after, where the FLOPs go, and pictures such as receptive fields.
# - `roadmap flops` prints the size table above; `roadmap show STEP` describes one step.
# - `roadmap run --seeds 3` is the real comparison on Fashion-MNIST (see README for the other
#   presets and datasets), and `roadmap report RESULTS_FOLDER` reads it: each change with a
#   paired confidence interval over seeds, whether it agrees with the paper's, and the rank
#   correlation of the whole trajectory with the paper's.
