# %% [markdown]
# # The inverted bottleneck
#
# A Transformer block's MLP is four times wider inside than its residual stream; MobileNetV2's
# *inverted* bottleneck has the same shape. ResNet's bottleneck is the opposite: wide residual
# stream, narrow inside. This step flips it: 1x1 expand -> depthwise conv -> 1x1 reduce, with
# the residual stream now the narrow width (96 in the first stage).
#
# The depthwise conv now runs on the wide width and costs more, yet the whole network gets
# *cheaper*: the 1x1 shortcut convs in the first block of each stage, which change the width
# of the residual stream, now project the narrow stream instead of the wide one (and the first
# stage's disappears). The paper reports a small accuracy gain at fewer FLOPs.

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
# ## The block before and after (first block of stage 1, printed from the package)

# %%
before = roadmap.build("widen").stages[0].blocks[0]
after = roadmap.build("inverted_bottleneck").stages[0].blocks[0]
print("widen (bottleneck):", before, sep="\n")
print()
print("inverted_bottleneck:", after, sep="\n")


# %% [markdown]
# The width along one block, read from the convs above: the bottleneck narrows inside, the
# inverted bottleneck widens inside.


# %%
def width_profile(block):
    convs = [block.conv1, block.conv2, block.conv3]
    return [convs[0].in_channels] + [c.out_channels for c in convs]


points = ["block input", "after conv1", "after conv2", "after conv3 (output)"]
fig, ax = plt.subplots(figsize=(7, 3.2))
for name, block, color in [("bottleneck (widen)", before, "#dd8452"), ("inverted bottleneck", after, "#55a868")]:
    widths = width_profile(block)
    ax.step(range(4), widths, where="mid", color=color, lw=2.5, label=name)
    for i, w in enumerate(widths):
        ax.annotate(
            str(w),
            (i, w),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            color=color,
            fontsize=9,
            backgroundcolor="white",
        )
ax.set_xticks(range(4), points)
ax.set_ylabel("channels")
ax.set_ylim(0, 1.2 * max(width_profile(before) + width_profile(after)))
ax.legend()
ax.set_title("Channel width through a stage-1 block")
fig.tight_layout()

# %% [markdown]
# ## Params and FLOPs against the paper, and where the FLOPs went
#
# Full-size models at 224 px first. Then the same count split by kind of layer, summing
# fvcore's per-module counts over all blocks: the shortcut convs account for the drop.

# %%
size_table(["widen", "inverted_bottleneck"])

# %%
import re


def flops_by_kind(step):
    kinds = {}
    for name, gflops in flops_by_module(roadmap.build(step)).items():
        m = re.fullmatch(r"stages\.\d+\.blocks\.\d+\.(conv1|conv2|conv3|shortcut)", name)
        if m:
            kinds[m.group(1)] = kinds.get(m.group(1), 0) + gflops
        elif name in ("stem", "head"):
            kinds[name] = gflops
        elif name == "":
            kinds["total"] = gflops
    return kinds


kinds = pd.DataFrame({step: flops_by_kind(step) for step in ["widen", "inverted_bottleneck"]})
kinds["change"] = kinds["inverted_bottleneck"] - kinds["widen"]
kinds = kinds.round(3)
biggest = kinds.drop(index="total")["change"].idxmin()
print(
    f"largest saving: {biggest} ({kinds.loc[biggest, 'change']:+.3f} GFLOPs of "
    f"{kinds.loc['total', 'change']:+.3f} in total)"
)
kinds

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
folder = tiny_run(paper_plan(only=["widen", "inverted_bottleneck"]), "inverted")
ours = ours_vs_paper(folder)
a, b = ours.loc["widen"], ours.loc["inverted_bottleneck"]
print(
    f"top-1 {a.top1:.1f} -> {b.top1:.1f}% here ({b.top1 - a.top1:+.1f}); "
    f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f})"
)
print(
    f"GFLOPs x{b.gflops_224 / a.gflops_224:.2f} here, x{b.paper_gflops / a.paper_gflops:.2f} in the paper; "
    f"training speed x{b.train_img_s / a.train_img_s:.2f} here"
)
ours.drop(columns="variant")

# %%
show_trajectory(folder)
