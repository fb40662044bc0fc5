# %% [markdown]
# # ResNeXt-ify: depthwise conv, then width
#
# ResNeXt's idea is to use *grouped* convolution in the bottleneck's 3x3 conv: channels are
# split into groups that do not talk to each other, which saves FLOPs that can be spent on
# more width ("use more groups, expand width"). ConvNeXt takes this to its limit:
#
# 1. **Depthwise conv.** One group per channel: the 3x3 conv mixes information only across
#    space, channel by channel, like the weighted sum of self-attention; the 1x1 convs do all
#    the mixing across channels. FLOPs drop sharply, and so does accuracy.
# 2. **Width 64 -> 96.** Spend the saving on width, to Swin-T's 96 channels. Accuracy rises
#    above the starting point, at more FLOPs than before.

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
# ## The block before and after
#
# Only the middle conv of each block changes: `groups` goes from 1 to the number of channels,
# so its weight shrinks from `C x C x 3 x 3` to `C x 1 x 3 x 3`.

# %%
before = roadmap.build("patchify_stem").stages[0].blocks[0]
after = roadmap.build("depthwise_conv").stages[0].blocks[0]
for name, block in [("patchify_stem", before), ("depthwise_conv", after)]:
    conv = block.conv2
    print(f"{name:15s} conv2 = {conv}")
    print(f"{'':15s} weight {tuple(conv.weight.shape)}, {conv.weight.numel():,} weights")
print()
print(after)

# %% [markdown]
# Which input channel feeds which output channel? The connectivity of a conv with `groups=g`
# is block-diagonal. From dense (ResNet) through ResNeXt's 32 groups to depthwise (ConvNeXt),
# each picture drawn from a real `nn.Conv2d` of 64 channels:

# %%
C = 64
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, (name, groups) in zip(axes, [("dense (ResNet)", 1), ("32 groups (ResNeXt)", 32), ("depthwise (ConvNeXt)", C)]):
    conv = nn.Conv2d(C, C, 3, groups=groups, bias=False)
    per_group = C // groups
    mask = np.zeros((C, C))
    for o in range(C):
        g = o // per_group  # output channel o reads its group's inputs
        mask[o, g * per_group : (g + 1) * per_group] = 1
    ax.imshow(mask, cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"{name}\n{conv.weight.numel():,} weights", fontsize=9)
    ax.set_xlabel("input channel")
    ax.set_ylabel("output channel")
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()

# %%
from roadmap.describe import describe_step

print(describe_step("depthwise_conv"))
print()
print(describe_step("widen"))

# %% [markdown]
# ## Params and FLOPs against the paper
#
# Full-size models at 224 px: the depthwise conv roughly halves the FLOPs, the wider network
# more than spends the saving.

# %%
size_table(["patchify_stem", "depthwise_conv", "widen"])

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
#
# FLOPs are not time: depthwise convs do little arithmetic per byte of memory they move, so
# they run far below a processor's peak. The run also measures training speed; compare its
# ratio with the ratio of GFLOPs.

# %%
folder = tiny_run(paper_plan(only=["patchify_stem", "depthwise_conv", "widen"]), "resnextify")
ours = ours_vs_paper(folder)
ours.drop(columns="variant")

# %%
for prev, step in [("patchify_stem", "depthwise_conv"), ("depthwise_conv", "widen")]:
    a, b = ours.loc[prev], ours.loc[step]
    print(f"{step}:")
    print(
        f"  top-1      {a.top1:5.1f} -> {b.top1:5.1f}% here ({b.top1 - a.top1:+.1f}); "
        f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f})"
    )
    print(f"  GFLOPs     x{b.gflops_224 / a.gflops_224:.2f} here, x{b.paper_gflops / a.paper_gflops:.2f} in the paper")
    print(f"  train img/s x{b.train_img_s / a.train_img_s:.2f} here")
show_trajectory(folder)
