# %% [markdown]
# # Micro design: activations, norms, downsampling
#
# The last phase changes layer-level details, each towards what a Transformer block does:
#
# 1. **ReLU -> GELU**, the Transformers' activation: accuracy unchanged in the paper.
# 2. **Fewer activations.** A Transformer block has one activation, inside its MLP. Keep only
#    the one between the two 1x1 convs: the paper's largest micro gain.
# 3. **Fewer norms.** Keep one norm per block, after the depthwise conv (before the 1x1 convs).
# 4. **BN -> LN.** LayerNorm in place of BatchNorm: the block now trains well with it, it does
#    slightly better, and each image's output no longer depends on its batch.
# 5. **Separate downsampling.** Swin downsamples between stages; here a norm + 2x2 stride-2 conv
#    between stages replaces the strided first block, with a norm after the global pool. Layer
#    scale enters with this last step too (see its note below), so the result is exactly
#    timm's `convnext_tiny`.

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
# ## ReLU and GELU

# %%
x = torch.linspace(-4, 3, 400)
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(x, nn.ReLU()(x), label="ReLU")
ax.plot(x, nn.GELU()(x), label="GELU: x * Phi(x)")
ax.axhline(0, color="#999999", lw=0.6)
ax.axvline(0, color="#999999", lw=0.6)
ax.legend()
ax.set_title("GELU is a smooth ReLU that lets small negatives through")
fig.tight_layout()

# %% [markdown]
# ## The block, step by step
#
# What sits in each slot of the first block of stage 1 (`Block.conv1 ... act3`, read from
# the built models; `·` is an `nn.Identity`, i.e. removed):

# %%
MICRO = ["large_kernel", "gelu", "fewer_activations", "fewer_norms", "layer_norm", "separate_downsampling"]
slots = ["conv1", "norm1", "act1", "conv2", "norm2", "act2", "conv3", "norm3", "act3"]


def slot_name(m):
    if isinstance(m, nn.Identity):
        return "·"
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0]
        return f"{k}x{k}{' dw' if m.groups > 1 else ''}"
    return type(m).__name__


rows = {}
for step in MICRO:
    block = roadmap.build(step).stages[0].blocks[0]
    rows[step] = {s: slot_name(getattr(block, s)) for s in slots}
    rows[step]["layer scale"] = "yes" if block.gamma is not None else "·"
pd.DataFrame(rows).T

# %%
print("before (large_kernel):", roadmap.build("large_kernel").stages[0].blocks[0], sep="\n")
print()
print("after (ConvNeXt-T):", roadmap.build("separate_downsampling").stages[0].blocks[0], sep="\n")

# %% [markdown]
# ## LayerNorm removes the batch dependence
#
# In training mode a BatchNorm normalises with the statistics of the whole batch, so an
# image's output depends on which other images share its batch; a LayerNorm normalises each
# position of each image on its own. Feed the same image with two different sets of
# batch-mates (small untrained models, training mode):

# %%
torch.manual_seed(0)
image = torch.randn(1, 3, 32, 32)
mates_a, mates_b = torch.randn(7, 3, 32, 32), 2 * torch.randn(7, 3, 32, 32) + 1
for step in ["fewer_norms", "layer_norm"]:
    model = roadmap.build(step, num_classes=10, widths=(24, 48, 96, 192)).train()
    with torch.no_grad():
        out_a = model(torch.cat([image, mates_a]))[0]
        out_b = model(torch.cat([image, mates_b]))[0]
    change = ((out_a - out_b).norm() / out_a.norm()).item()
    print(
        f"{step:12s} ({model.cfg.norm} norm): the image's logits change by {change:.1e} "
        f"(relative) when its batch-mates change"
    )

# %% [markdown]
# ## Separate downsampling layers
#
# Before, the first block of each later stage strides its depthwise conv and projects its
# shortcut with a strided 1x1 conv. After, a norm and a 2x2 stride-2 conv between stages do
# the downsampling, and every block keeps an identity shortcut:

# %%
for step in ["layer_norm", "separate_downsampling"]:
    stage = roadmap.build(step).stages[1]
    print(f"{step}: stage 2 downsample = {stage.downsample}")
    print(f"{'':{len(step)}s}  first block's conv1 = {stage.blocks[0].conv1}, shortcut = {stage.blocks[0].shortcut}")
    print()
print(roadmap.get_step("separate_downsampling").note)

# %% [markdown]
# ## Params and FLOPs against the paper
#
# Full-size models at 224 px. The paper's Table 10 prints a GFLOPs value for BN -> LN that
# disagrees with its own Figure 2; the step's note says which one we compare with:

# %%
print(roadmap.get_step("layer_norm").note)
size_table(MICRO)

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
folder = tiny_run(paper_plan(only=MICRO), "micro")
ours = ours_vs_paper(folder)
for prev, step in zip(MICRO, MICRO[1:]):
    a, b = ours.loc[prev], ours.loc[step]
    print(
        f"{step:22s} top-1 {a.top1:5.1f} -> {b.top1:5.1f}% here ({b.top1 - a.top1:+5.1f}); "
        f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f})"
    )
ours.drop(columns="variant")

# %%
show_trajectory(folder)
