# %% [markdown]
# # Macro design: stage ratio and the "patchify" stem
#
# The first phase changes the network's overall layout, not its blocks:
#
# 1. **Stage ratio.** ResNet-50 spreads its blocks over four stages as (3, 4, 6, 3). Swin-T
#    computes its stages at a 1:1:3:1 ratio; the paper moves ResNet-50 to (3, 3, 9, 3), which
#    gives the third stage, at 1/16 of the input resolution, an even larger share of the work.
# 2. **Patchify stem.** ResNet's stem is a 7x7 stride-2 conv followed by a 3x3 stride-2
#    max-pool: overlapping windows, 4x downsampling. Vision Transformers instead cut the image
#    into non-overlapping patches. A 4x4 conv with stride 4 does exactly that, and gives the
#    same 4x downsampling.

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
# ## Stage ratio
#
# `describe_step` prints what a step changes, its model at full size, and one line per stage.

# %%
from roadmap.describe import describe_step

print(describe_step("stage_ratio"))

# %% [markdown]
# Where does the compute go? fvcore counts GFLOPs per submodule; the share of each stage
# shows the move towards the third stage.

# %%
parts = ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
share = {}
for step in ["resnet50", "stage_ratio"]:
    flops = flops_by_module(roadmap.build(step))
    share[f"{step} {roadmap.config_for(step).depths}"] = {p: flops[p] / flops[""] for p in parts}
share = pd.DataFrame(share).T

ax = share.plot.barh(stacked=True, figsize=(9, 2.6), colormap="viridis", width=0.6)
ax.set_xlabel("share of the model's GFLOPs at 224 px")
ax.invert_yaxis()
ax.legend(ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
plt.tight_layout()
(100 * share).round(1)

# %% [markdown]
# ## The patchify stem
#
# The two stems, printed from the package (`model.stem`):

# %%
resnet_stem = roadmap.build("stage_ratio").stem
patchify_stem = roadmap.build("patchify_stem").stem
for name, stem in [("ResNet stem", resnet_stem), ("patchify stem", patchify_stem)]:
    print(f"{name}: {sum(p.numel() for p in stem.parameters()):,} params")
    print(stem, end="\n\n")

# %% [markdown]
# What does one output pixel of each stem see? Take the gradient of one output position
# (summed over channels) with respect to the input: the pixels with a non-zero gradient are its
# receptive field. Below, the fields of two neighbouring output pixels, drawn on a
# Fashion-MNIST image (padded to 32 px as in training): the ResNet stem's windows overlap, the
# patchify stem's are disjoint 4x4 tiles.

# %%
from roadmap.data import load_dataset, memory_eval_batches

ds = load_dataset("fashion-mnist").subset(train=1, val=16)
images, labels = next(iter(memory_eval_batches(ds, 32, 16)))
image = images[0, 0]


def seen_by(stem, i, j):
    """Input pixels with a non-zero gradient for output position (i, j), over random inputs."""
    x = torch.randn(16, 3, 32, 32, requires_grad=True)  # random inputs: every max-pool path is used
    stem.eval()(x)[:, :, i, j].sum().backward()
    return (x.grad.abs().sum(dim=(0, 1)) > 0).numpy()


fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, (name, stem) in zip(axes, [("ResNet stem", resnet_stem), ("patchify stem", patchify_stem)]):
    a, b = seen_by(stem, 3, 3), seen_by(stem, 3, 4)
    h, w = np.ptp(np.argwhere(a), axis=0) + 1
    ax.imshow(image, cmap="gray")
    ax.imshow(np.ma.masked_where(~a, a), cmap="autumn", alpha=0.45)
    ax.imshow(np.ma.masked_where(~b, b), cmap="winter", alpha=0.45)
    ax.set_title(f"{name}: {h}x{w} px per output pixel,\n{(a & b).sum()} px shared with its neighbour", fontsize=9)
    ax.axis("off")
fig.suptitle(f"Receptive fields of output pixels (3,3) and (3,4) on a '{ds.classes[labels[0]]}'")
fig.tight_layout()

# %% [markdown]
# ## Params and FLOPs against the paper
#
# Full-size models at 224 px. The deeper third stage costs FLOPs; the patchify stem saves a
# little.

# %%
size_table(["resnet50", "stage_ratio", "patchify_stem"])

# %% [markdown]
# ## A tiny live experiment
#
# **How to read a tiny run.** Each step trains from scratch for a few seconds: the `demo`
# preset (widths x0.25, 32 px Fashion-MNIST) cut to 100 updates of 32 images and scored on
# 500 held-out images (`nbtools.tiny_recipe`). One seed of such a run is *noisy*: differences of a
# few points between neighbouring steps are within seed-to-seed scatter, and Fashion-MNIST at 32 px is
# not ImageNet at 224 px. The real comparison is the committed reference (`make run`:
# 13 steps x 3 seeds, 4 epochs on all 60,000 images), with error bars and intervals per change.
# The paper's column is ImageNet-1K top-1 (Table 10): compare the shape, not the level.

# %%
folder = tiny_run(paper_plan(upto="patchify_stem"), "macro")
ours = ours_vs_paper(folder)
ours.drop(columns="variant")

# %%
for prev, step in [("resnet50", "stage_ratio"), ("stage_ratio", "patchify_stem")]:
    a, b = ours.loc[prev], ours.loc[step]
    print(
        f"{step:14s}: top-1 {a.top1:.1f} -> {b.top1:.1f}% here ({b.top1 - a.top1:+.1f}), "
        f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f}); "
        f"training speed x{b.train_img_s / a.train_img_s:.2f}"
    )
show_trajectory(folder)

# %% [markdown]
# At 32 px both stems turn the image into an 8x8 grid, so the third stage works on 2x2 maps:
# the stage ratio is an ImageNet-resolution decision, and a tiny run can only hint at it.
# Training speed comes from the same run; it depends on the machine and its load.
