"""Write the notebooks of this folder from the cell texts below, without outputs.

    .venv/bin/python notebooks/build_notebooks.py

Edit a notebook here (or in Jupyter, then clear its outputs before committing);
tests/test_notebooks.py runs every notebook top to bottom and checks that the
committed files carry no outputs.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import warnings
warnings.filterwarnings("ignore")   # fvcore / timm deprecation chatter

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

import roadmap
from roadmap.plan import paper_plan
from nbtools import (flops_by_module, ours_vs_paper, reference_report, show_reference_changes,
                     show_trajectory, size_table, tiny_run)

torch.set_num_threads(2)            # the CI machine has 2 cores
pd.set_option("display.precision", 3)
pd.set_option("display.width", 140)
%matplotlib inline"""

TINY_NOTE = """\
**How to read a tiny run.** Each step trains from scratch for a few seconds: the `demo`
preset (widths x0.25, 32 px Fashion-MNIST) cut to {updates} updates of {batch} images and scored on
{val} held-out images (`nbtools.tiny_recipe`). One seed of such a run is *noisy*: differences of a
few points between neighbouring steps are within seed-to-seed scatter, and Fashion-MNIST at 32 px is
not ImageNet at 224 px. The real comparison is the committed reference (`make run`:
13 steps x 3 seeds, 4 epochs on all 60,000 images), with error bars and intervals per change.
The paper's column is ImageNet-1K top-1 (Table 10): compare the shape, not the level."""


def tiny_note():
    from nbtools import BATCH, UPDATES, VAL
    return TINY_NOTE.format(updates=UPDATES, batch=BATCH, val=VAL)


def md(text):
    return new_markdown_cell(text.strip("\n"))


def code(text):
    return new_code_cell(text.strip("\n"))


# ----------------------------------------------------------------------------- 00 overview

OVERVIEW = [
    md("""
# The ConvNeXt roadmap, small and whole

Liu et al., *A ConvNet for the 2020s* (2022), start from a ResNet-50 trained with a modern
(Transformer-era) recipe and change one design decision at a time until the network is
ConvNeXt-T, a pure ConvNet that matches Swin-T. Because the training recipe never changes,
each step's change in accuracy is due to the architecture alone.

`roadmap` replays that walk: every step is a handful of toggles of one dataclass
(`roadmap.config.ArchConfig`, steps in `steps/paper.py`), and one builder turns any step
into a model. This notebook lists the steps, measures them against the paper's numbers,
trains all thirteen for a few seconds each, and reads the results table and figure.
One notebook per phase follows:

| notebook | phase | steps |
|---|---|---|
| `01_macro_design` | macro design | stage ratio, patchify stem |
| `02_resnextify` | ResNeXt-ify | depthwise conv, width 64 -> 96 |
| `03_inverted_bottleneck` | inverted bottleneck | 1x1 expand -> conv -> 1x1 reduce |
| `04_large_kernel` | large kernel | move the depthwise conv up, 3x3 -> 7x7, the kernel sweep |
| `05_micro_design` | micro design | GELU, fewer activations, fewer norms, BN -> LN, separate downsampling |
"""),
    code(SETUP),
    md("""
## The steps

Each step names the toggles it changes on top of the previous step, the paper's argument for
it, and the paper's ImageNet-1K top-1 and GFLOPs (Table 10).
"""),
    code("""
steps = pd.DataFrame([dict(step=s.name, phase=s.phase, change=s.title,
                           toggles=", ".join(f"{k}={v}" for k, v in s.changes.items()),
                           paper_top1=s.paper_top1, paper_gflops=s.paper_gflops)
                      for s in map(roadmap.get_step, roadmap.step_names())])
steps
"""),
    md("""
Steps are cumulative, so the whole roadmap is the difference between its two ends. Every
toggle below changes exactly once along the way:
"""),
    code("""
start, end = roadmap.config_for("resnet50"), roadmap.config_for("separate_downsampling")
for key, (old, new) in start.diff(end).items():
    print(f"{key:17s} {old!r:26s} -> {new!r}")
"""),
    md("""
Every step is also a timm model: `import roadmap` registers each one as `roadmap_<step>`,
so timm's own tools accept any step. `create_model` takes timm's arguments, the data config
comes from the model, and `features_only` gives the stage feature maps of a backbone
(README, "Use any step in timm"):
"""),
    code("""
import timm

print(timm.list_models("roadmap_*"))
model = timm.create_model("roadmap_large_kernel", num_classes=10, drop_path_rate=0.1)
print(timm.data.resolve_data_config({}, model=model))
backbone = timm.create_model("roadmap_large_kernel", features_only=True, out_indices=(1, 2, 3))
[tuple(f.shape) for f in backbone(torch.randn(1, 3, 224, 224))]
"""),
    md("""
## Size: our models against the paper's

`size_table` builds every step at full size (1000 classes) and counts fvcore GFLOPs at
224 px, the way the paper counts them (one multiply-add = one FLOP); `d_` columns are the
change from the row above. Our count also includes the norms, which is why the column
`gflops` sits a little above `paper_gflops` in places.
"""),
    code("""
sizes = size_table(roadmap.step_names())
sizes
"""),
    code("""
from roadmap.plot import PHASE_COLORS

y = np.arange(len(sizes))
colors = [PHASE_COLORS[p] for p in sizes["phase"]]
fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), sharey=True)
left.barh(y, sizes["gflops"], color=colors, height=0.6, label="ours (fvcore)")
left.plot(sizes["paper_gflops"], y, "kD", ms=4, label="paper")
left.set_xlim(0, 1.35 * sizes["gflops"].max())
left.set_xlabel("GFLOPs at 224 px"); left.legend(loc="upper right", fontsize=8)
right.plot(steps["paper_top1"], y, "-", color="#bbbbbb")
right.scatter(steps["paper_top1"], y, c=colors, s=40, zorder=3)
right.set_xlabel("paper: ImageNet-1K top-1 (%)")
left.set_yticks(y, sizes.index); left.invert_yaxis()
fig.suptitle("The paper's roadmap: compute per step (left), accuracy per step (right)")
fig.tight_layout()
"""),
    md("""
The two dips on the right are the steps that buy efficiency first and spend it later:
the depthwise conv (paid back by widening) and moving the depthwise conv up (paid back by
the 7x7 kernel).

## Train the whole roadmap, tiny

`paper_plan()` lists the thirteen steps as run specifications; `tiny_run` hands them to
`roadmap.runner.run_plan`, the code behind `roadmap run`, which trains each step, writes
`results.csv` / `summary.csv` and draws the trajectory figure into a temporary folder.
"""),
    md(tiny_note()),
    code("""
folder = tiny_run(paper_plan(), "overview")
"""),
    md("""
How large is the noise? Train the two ends again with a second seed, into the same folder
(finished runs are skipped, so only the two new runs train):
"""),
    code("""
tiny_run(paper_plan(only=["resnet50", "separate_downsampling"]), "overview", seeds=(1,), folder=folder)
ours = ours_vs_paper(folder)
ours.drop(columns="variant")
"""),
    md("""
## Reading the results

`top1` is ours (mean over the seeds run), `paper_top1` the paper's ImageNet number.
Everything printed below is computed from the table above.
"""),
    code("""
from roadmap.results import read_results

first, last = ours.loc["resnet50"], ours.loc["separate_downsampling"]
print(f"ResNet-50 -> ConvNeXt-T, here : {first.top1:5.1f}% -> {last.top1:5.1f}%  "
      f"({last.top1 - first.top1:+.1f} points, mean of {int(last.seeds)} seeds each)")
print(f"ResNet-50 -> ConvNeXt-T, paper: {first.paper_top1:5.1f}% -> {last.paper_top1:5.1f}%  "
      f"({last.paper_top1 - first.paper_top1:+.1f} points, ImageNet-1K)")

runs = read_results(folder)
spread = runs[runs["run"].isin(["resnet50", "separate_downsampling"])].groupby("run")["top1"]
spread = (spread.max() - spread.min())
noise = spread.max()
for run, s in spread.items():
    print(f"seed 0 vs seed 1 of {run}: {s:.1f} points apart")

# step-to-step changes between seed-0 runs, so that every bar compares like with like
seed0 = runs[runs["seed"] == 0].set_index("run")["top1"].reindex(ours.index)
ours_step = seed0.diff().iloc[1:]
paper_step = ours["paper_top1"].diff().iloc[1:]
big = ours_step.abs() > noise
same_sign = np.sign(ours_step) == np.sign(paper_step)
print(f"{big.sum()} of {len(ours_step)} single-step changes (seed 0) are larger than that seed spread "
      f"({noise:.1f} points)")
print(f"{same_sign.sum()} of {len(ours_step)} single-step changes have the sign of the paper's")
"""),
    code("""
fig, ax = plt.subplots(figsize=(10, 3.8))
x = np.arange(len(ours_step))
ax.bar(x - 0.2, ours_step, 0.4, color=[PHASE_COLORS[p] for p in ours["phase"].iloc[1:]],
       label="ours (Fashion-MNIST, tiny)")
ax.bar(x + 0.2, paper_step, 0.4, color="black", label="paper (ImageNet-1K)")
ax.axhspan(-noise, noise, color="#dddddd", zorder=0, label="seed spread of our ends")
ax.axhline(0, color="black", lw=0.8)
ax.set_xticks(x, ours_step.index, rotation=40, ha="right")
ax.set_ylabel("change in top-1 (points)")
ax.set_title("What each step changes: ours (seed 0) vs the paper")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.tight_layout()
"""),
    md("""
Steps whose bar stays inside the grey band are not distinguishable from seed noise in a run
this small. Tiny runs also favour steps that make *early* training easier rather than steps
that raise the final accuracy after 300 epochs, so expect the shape to differ from the
paper's in places: that is a question for a full run, not for this notebook.

## What the committed reference says

The conclusions belong to a run that can carry them: `results/reference-fashion-mnist`,
all 13 steps x 3 seeds, 4 epochs on the full Fashion-MNIST (`make run`). `roadmap report`
fits one model over its 39 runs; a change is *resolved* when its Holm-adjusted p is below
0.05. These numbers are read from the committed files, not from the tiny run above.
"""),
    code("""
ref = reference_report()
if ref is not None:
    ref_steps, ref_changes, ref_noise = ref
    print(f"pooled seed sd {ref_noise['seed_sd']:.3f} points ({ref_noise['df']} df); "
          f"median 95% half-width of a change {ref_noise['median_half_width']:.3f} points; "
          f"{int(ref_changes['resolved'].sum())} of {len(ref_changes)} changes resolved")
    display(ref_changes.round(3))
    show_reference_changes()
"""),
    md("""
Read each row against the paper's diamond: a filled dot whose interval excludes 0 is a
change this experiment resolves; a hollow one is below its noise floor, whatever its sign.

## The trajectory figure

`roadmap run` draws this figure for every results folder, in the spirit of the paper's
Figure 2: one row per step coloured by phase, our top-1 as bars (error bars where a step has
several seeds), the paper's top-1 as diamonds on the top axis, GFLOPs beside each row.
"""),
    code("""
show_trajectory(folder)
print(f"results folder: {folder}")
"""),
    md("""
## Where next

- The phase notebooks, `01_macro_design` to `05_micro_design`, open each group of steps:
  the block before and after, where the FLOPs go, and pictures such as receptive fields.
- `roadmap flops` prints the size table above; `roadmap show STEP` describes one step.
- `roadmap run --seeds 3` is the real comparison on Fashion-MNIST (see README for the other
  presets and datasets), and `roadmap report RESULTS_FOLDER` reads it: each change with a
  paired confidence interval over seeds, whether it agrees with the paper's, and the rank
  correlation of the whole trajectory with the paper's.
"""),
]

# ----------------------------------------------------------------------------- 01 macro design

MACRO = [
    md("""
# Macro design: stage ratio and the "patchify" stem

The first phase changes the network's overall layout, not its blocks:

1. **Stage ratio.** ResNet-50 spreads its blocks over four stages as (3, 4, 6, 3). Swin-T
   computes its stages at a 1:1:3:1 ratio; the paper moves ResNet-50 to (3, 3, 9, 3), which
   gives the third stage, at 1/16 of the input resolution, an even larger share of the work.
2. **Patchify stem.** ResNet's stem is a 7x7 stride-2 conv followed by a 3x3 stride-2
   max-pool: overlapping windows, 4x downsampling. Vision Transformers instead cut the image
   into non-overlapping patches. A 4x4 conv with stride 4 does exactly that, and gives the
   same 4x downsampling.
"""),
    code(SETUP),
    md("""
## Stage ratio

`describe_step` prints what a step changes, its model at full size, and one line per stage.
"""),
    code("""
from roadmap.describe import describe_step
print(describe_step("stage_ratio"))
"""),
    md("""
Where does the compute go? fvcore counts GFLOPs per submodule; the share of each stage
shows the move towards the third stage.
"""),
    code("""
parts = ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"]
share = {}
for step in ["resnet50", "stage_ratio"]:
    flops = flops_by_module(roadmap.build(step))
    share[f"{step} {roadmap.config_for(step).depths}"] = {p: flops[p] / flops[""] for p in parts}
share = pd.DataFrame(share).T

ax = share.plot.barh(stacked=True, figsize=(9, 2.6), colormap="viridis", width=0.6)
ax.set_xlabel("share of the model's GFLOPs at 224 px"); ax.invert_yaxis()
ax.legend(ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35))
plt.tight_layout()
(100 * share).round(1)
"""),
    md("""
## The patchify stem

The two stems, printed from the package (`model.stem`):
"""),
    code("""
resnet_stem = roadmap.build("stage_ratio").stem
patchify_stem = roadmap.build("patchify_stem").stem
for name, stem in [("ResNet stem", resnet_stem), ("patchify stem", patchify_stem)]:
    print(f"{name}: {sum(p.numel() for p in stem.parameters()):,} params")
    print(stem, end="\\n\\n")
"""),
    md("""
What does one output pixel of each stem see? Take the gradient of one output position
(summed over channels) with respect to the input: the pixels with a non-zero gradient are its
receptive field. Below, the fields of two neighbouring output pixels, drawn on a
Fashion-MNIST image (padded to 32 px as in training): the ResNet stem's windows overlap, the
patchify stem's are disjoint 4x4 tiles.
"""),
    code("""
from roadmap.data import load_dataset, memory_eval_batches

ds = load_dataset("fashion-mnist").subset(train=1, val=16)
images, labels = next(iter(memory_eval_batches(ds, 32, 16)))
image = images[0, 0]

def seen_by(stem, i, j):
    \"\"\"Input pixels with a non-zero gradient for output position (i, j), over random inputs.\"\"\"
    x = torch.randn(16, 3, 32, 32, requires_grad=True)   # random inputs: every max-pool path is used
    stem.eval()(x)[:, :, i, j].sum().backward()
    return (x.grad.abs().sum(dim=(0, 1)) > 0).numpy()

fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, (name, stem) in zip(axes, [("ResNet stem", resnet_stem), ("patchify stem", patchify_stem)]):
    a, b = seen_by(stem, 3, 3), seen_by(stem, 3, 4)
    h, w = np.ptp(np.argwhere(a), axis=0) + 1
    ax.imshow(image, cmap="gray")
    ax.imshow(np.ma.masked_where(~a, a), cmap="autumn", alpha=0.45)
    ax.imshow(np.ma.masked_where(~b, b), cmap="winter", alpha=0.45)
    ax.set_title(f"{name}: {h}x{w} px per output pixel,\\n{(a & b).sum()} px shared with its neighbour",
                 fontsize=9)
    ax.axis("off")
fig.suptitle(f"Receptive fields of output pixels (3,3) and (3,4) on a '{ds.classes[labels[0]]}'")
fig.tight_layout()
"""),
    md("""
## Params and FLOPs against the paper

Full-size models at 224 px. The deeper third stage costs FLOPs; the patchify stem saves a
little.
"""),
    code("""
size_table(["resnet50", "stage_ratio", "patchify_stem"])
"""),
    md("## A tiny live experiment\n\n" + tiny_note()),
    code("""
folder = tiny_run(paper_plan(upto="patchify_stem"), "macro")
ours = ours_vs_paper(folder)
ours.drop(columns="variant")
"""),
    code("""
for prev, step in [("resnet50", "stage_ratio"), ("stage_ratio", "patchify_stem")]:
    a, b = ours.loc[prev], ours.loc[step]
    print(f"{step:14s}: top-1 {a.top1:.1f} -> {b.top1:.1f}% here ({b.top1 - a.top1:+.1f}), "
          f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f}); "
          f"training speed x{b.train_img_s / a.train_img_s:.2f}")
show_trajectory(folder)
"""),
    md("""
At 32 px both stems turn the image into an 8x8 grid, so the third stage works on 2x2 maps:
the stage ratio is an ImageNet-resolution decision, and a tiny run can only hint at it.
Training speed comes from the same run; it depends on the machine and its load.
"""),
]

# ----------------------------------------------------------------------------- 02 ResNeXt-ify

RESNEXT = [
    md("""
# ResNeXt-ify: depthwise conv, then width

ResNeXt's idea is to use *grouped* convolution in the bottleneck's 3x3 conv: channels are
split into groups that do not talk to each other, which saves FLOPs that can be spent on
more width ("use more groups, expand width"). ConvNeXt takes this to its limit:

1. **Depthwise conv.** One group per channel: the 3x3 conv mixes information only across
   space, channel by channel, like the weighted sum of self-attention; the 1x1 convs do all
   the mixing across channels. FLOPs drop sharply, and so does accuracy.
2. **Width 64 -> 96.** Spend the saving on width, to Swin-T's 96 channels. Accuracy rises
   above the starting point, at more FLOPs than before.
"""),
    code(SETUP),
    md("""
## The block before and after

Only the middle conv of each block changes: `groups` goes from 1 to the number of channels,
so its weight shrinks from `C x C x 3 x 3` to `C x 1 x 3 x 3`.
"""),
    code("""
before = roadmap.build("patchify_stem").stages[0].blocks[0]
after = roadmap.build("depthwise_conv").stages[0].blocks[0]
for name, block in [("patchify_stem", before), ("depthwise_conv", after)]:
    conv = block.conv2
    print(f"{name:15s} conv2 = {conv}")
    print(f"{'':15s} weight {tuple(conv.weight.shape)}, {conv.weight.numel():,} weights")
print()
print(after)
"""),
    md("""
Which input channel feeds which output channel? The connectivity of a conv with `groups=g`
is block-diagonal. From dense (ResNet) through ResNeXt's 32 groups to depthwise (ConvNeXt),
each picture drawn from a real `nn.Conv2d` of 64 channels:
"""),
    code("""
C = 64
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, (name, groups) in zip(axes, [("dense (ResNet)", 1), ("32 groups (ResNeXt)", 32),
                                      ("depthwise (ConvNeXt)", C)]):
    conv = nn.Conv2d(C, C, 3, groups=groups, bias=False)
    per_group = C // groups
    mask = np.zeros((C, C))
    for o in range(C):
        g = o // per_group                       # output channel o reads its group's inputs
        mask[o, g * per_group:(g + 1) * per_group] = 1
    ax.imshow(mask, cmap="Greys", vmin=0, vmax=1)
    ax.set_title(f"{name}\\n{conv.weight.numel():,} weights", fontsize=9)
    ax.set_xlabel("input channel"); ax.set_ylabel("output channel")
    ax.set_xticks([]); ax.set_yticks([])
fig.tight_layout()
"""),
    code("""
from roadmap.describe import describe_step
print(describe_step("depthwise_conv"))
print()
print(describe_step("widen"))
"""),
    md("""
## Params and FLOPs against the paper

Full-size models at 224 px: the depthwise conv roughly halves the FLOPs, the wider network
more than spends the saving.
"""),
    code("""
size_table(["patchify_stem", "depthwise_conv", "widen"])
"""),
    md("## A tiny live experiment\n\n" + tiny_note() + """

FLOPs are not time: depthwise convs do little arithmetic per byte of memory they move, so
they run far below a processor's peak. The run also measures training speed; compare its
ratio with the ratio of GFLOPs."""),
    code("""
folder = tiny_run(paper_plan(only=["patchify_stem", "depthwise_conv", "widen"]), "resnextify")
ours = ours_vs_paper(folder)
ours.drop(columns="variant")
"""),
    code("""
for prev, step in [("patchify_stem", "depthwise_conv"), ("depthwise_conv", "widen")]:
    a, b = ours.loc[prev], ours.loc[step]
    print(f"{step}:")
    print(f"  top-1      {a.top1:5.1f} -> {b.top1:5.1f}% here ({b.top1 - a.top1:+.1f}); "
          f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f})")
    print(f"  GFLOPs     x{b.gflops_224 / a.gflops_224:.2f} here, x{b.paper_gflops / a.paper_gflops:.2f} in the paper")
    print(f"  train img/s x{b.train_img_s / a.train_img_s:.2f} here")
show_trajectory(folder)
"""),
]

# ----------------------------------------------------------------------------- 03 inverted bottleneck

INVERTED = [
    md("""
# The inverted bottleneck

A Transformer block's MLP is four times wider inside than its residual stream; MobileNetV2's
*inverted* bottleneck has the same shape. ResNet's bottleneck is the opposite: wide residual
stream, narrow inside. This step flips it: 1x1 expand -> depthwise conv -> 1x1 reduce, with
the residual stream now the narrow width (96 in the first stage).

The depthwise conv now runs on the wide width and costs more, yet the whole network gets
*cheaper*: the 1x1 shortcut convs in the first block of each stage, which change the width
of the residual stream, now project the narrow stream instead of the wide one (and the first
stage's disappears). The paper reports a small accuracy gain at fewer FLOPs.
"""),
    code(SETUP),
    md("## The block before and after (first block of stage 1, printed from the package)"),
    code("""
before = roadmap.build("widen").stages[0].blocks[0]
after = roadmap.build("inverted_bottleneck").stages[0].blocks[0]
print("widen (bottleneck):", before, sep="\\n")
print()
print("inverted_bottleneck:", after, sep="\\n")
"""),
    md("""
The width along one block, read from the convs above: the bottleneck narrows inside, the
inverted bottleneck widens inside.
"""),
    code("""
def width_profile(block):
    convs = [block.conv1, block.conv2, block.conv3]
    return [convs[0].in_channels] + [c.out_channels for c in convs]

points = ["block input", "after conv1", "after conv2", "after conv3 (output)"]
fig, ax = plt.subplots(figsize=(7, 3.2))
for name, block, color in [("bottleneck (widen)", before, "#dd8452"),
                           ("inverted bottleneck", after, "#55a868")]:
    widths = width_profile(block)
    ax.step(range(4), widths, where="mid", color=color, lw=2.5, label=name)
    for i, w in enumerate(widths):
        ax.annotate(str(w), (i, w), textcoords="offset points", xytext=(0, 7), ha="center",
                    color=color, fontsize=9, backgroundcolor="white")
ax.set_xticks(range(4), points); ax.set_ylabel("channels")
ax.set_ylim(0, 1.2 * max(width_profile(before) + width_profile(after)))
ax.legend(); ax.set_title("Channel width through a stage-1 block")
fig.tight_layout()
"""),
    md("""
## Params and FLOPs against the paper, and where the FLOPs went

Full-size models at 224 px first. Then the same count split by kind of layer, summing
fvcore's per-module counts over all blocks: the shortcut convs account for the drop.
"""),
    code("""
size_table(["widen", "inverted_bottleneck"])
"""),
    code("""
import re

def flops_by_kind(step):
    kinds = {}
    for name, gflops in flops_by_module(roadmap.build(step)).items():
        m = re.fullmatch(r"stages\\.\\d+\\.blocks\\.\\d+\\.(conv1|conv2|conv3|shortcut)", name)
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
print(f"largest saving: {biggest} ({kinds.loc[biggest, 'change']:+.3f} GFLOPs of "
      f"{kinds.loc['total', 'change']:+.3f} in total)")
kinds
"""),
    md("## A tiny live experiment\n\n" + tiny_note()),
    code("""
folder = tiny_run(paper_plan(only=["widen", "inverted_bottleneck"]), "inverted")
ours = ours_vs_paper(folder)
a, b = ours.loc["widen"], ours.loc["inverted_bottleneck"]
print(f"top-1 {a.top1:.1f} -> {b.top1:.1f}% here ({b.top1 - a.top1:+.1f}); "
      f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f})")
print(f"GFLOPs x{b.gflops_224 / a.gflops_224:.2f} here, x{b.paper_gflops / a.paper_gflops:.2f} in the paper; "
      f"training speed x{b.train_img_s / a.train_img_s:.2f} here")
ours.drop(columns="variant")
"""),
    code("""
show_trajectory(folder)
"""),
]

# ----------------------------------------------------------------------------- 04 large kernel

LARGE = [
    md("""
# Large kernels: move the depthwise conv up, then 7x7

Swin's self-attention works in 7x7 windows (or larger); VGG made stacks of 3x3 convs the
ConvNet standard. To try larger kernels, the paper first makes them cheap, then grows them:

1. **Move up the depthwise conv.** In a Transformer block the spatial mixing (attention)
   comes before the MLP. Put the depthwise conv first in the block: it then runs on the
   narrow residual stream (96 channels) instead of the wide inside (384), so its cost falls
   four-fold, and the two 1x1 convs form the MLP. Alone, this costs accuracy.
2. **Kernel 3 -> 7.** A 7x7 depthwise kernel gives each block a Swin-sized window, for
   little extra compute now that it runs on the narrow stream. The paper swept 3, 5, 7, 9
   and 11: the gain saturates at 7.
"""),
    code(SETUP),
    md("## The block through the two steps (first block of stage 1, from the package)"),
    code("""
from roadmap.describe import block_layout

for step in ["inverted_bottleneck", "move_up_dwconv", "large_kernel"]:
    cfg = roadmap.config_for(step)
    width, hidden = cfg.residual_widths[0], cfg.hidden_widths[0]
    print(f"{step:20s} {block_layout(cfg, width, width, hidden)}")
print()
print(roadmap.build("large_kernel").stages[0].blocks[0])
"""),
    md("## Params and FLOPs against the paper, and the kernel sweep's FLOPs"),
    code("""
size_table(["inverted_bottleneck", "move_up_dwconv", "large_kernel"])
"""),
    code("""
from steps import KERNEL_SWEEP
from roadmap.measure import count_gflops

sweep = pd.DataFrame([dict(kernel=k, gflops=count_gflops(roadmap.build("large_kernel", kernel_size=k)),
                           paper_gflops=g, paper_top1=t)
                      for k, (t, g) in KERNEL_SWEEP.items()]).set_index("kernel")
sweep.round(3)
"""),
    md("""
## Why a 7x7 kernel sees more: effective receptive fields

Take the gradient of the centre pixel of the first stage's output (summed over channels)
with respect to the input, averaged over random inputs: its magnitude shows which input
pixels influence that output, the *effective receptive field* (Luo et al., 2016). The
first stage has three blocks after the 4x4 patchify stem, and each block's kernel widens the
field by `(k - 1)` stage-1 pixels, i.e. `4 (k - 1)` input pixels.

A fresh `roadmap` model is initialised like the paper (small trunc-normal weights), so every
residual branch starts near zero and the output is almost the stem's patch alone (printed
below). To see what the kernels can reach, the pictures redraw the conv weights with He
initialisation, as in Luo et al.
"""),
    code("""
def effective_rf(step, size=128, he_init=True, n=8, **toggles):
    \"\"\"|d centre output of stage 1 / d input|, summed over channels and n random inputs.\"\"\"
    torch.manual_seed(0)
    model = roadmap.build(step, num_classes=10, widths=(24, 48, 96, 192), **toggles).eval()
    if he_init:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
    x = torch.randn(n, 3, size, size, requires_grad=True)
    features = model.stages[0](model.stem(x))
    c = features.shape[-1] // 2
    features[:, :, c, c].sum().backward()
    return x.grad.abs().sum(dim=(0, 1)).numpy()

def radius(grad, mass=0.9):
    \"\"\"Radius (px) of the disc around the centre holding `mass` of the gradient.\"\"\"
    yy, xx = np.indices(grad.shape)
    c = (grad.shape[0] - 1) / 2
    r = np.hypot(yy - c, xx - c).ravel()
    order = np.argsort(r)
    cum = np.cumsum(grad.ravel()[order]) / grad.sum()
    return r[order][np.searchsorted(cum, mass)]

def extent(grad):
    return int(np.ptp(np.argwhere(grad > 0)[:, 0]) + 1)

kernels = [3, 7, 11]
erfs = {k: effective_rf("large_kernel", kernel_size=k) for k in kernels}
fig, axes = plt.subplots(1, len(kernels), figsize=(11, 4.2), layout="constrained")
for ax, k in zip(axes, kernels):
    g = erfs[k]
    ax.imshow(np.log10(g / g.max() + 1e-4), cmap="magma", vmin=-4, vmax=0)
    ax.set_title(f"{k}x{k} depthwise kernel\\nextent {extent(g)} px, 90% of gradient within r={radius(g):.0f} px",
                 fontsize=9)
    ax.axis("off")
fig.suptitle("Effective receptive field of one stage-1 output pixel (log scale, He init, 128 px input)")

own = {k: radius(effective_rf("large_kernel", kernel_size=k, he_init=False)) for k in [3, 7]}
print(f"with the package's own init, 90% of the gradient lies within r={own[3]:.1f} px for k=3 "
      f"and r={own[7]:.1f} px for k=7: little more than the stem's 4x4 patch")
"""),
    md("""
The extent is the theoretical receptive field; the bright core is where the influence
concentrates, and it grows with the kernel. On ImageNet at 224 px the first stage works on
56x56 maps, so the extra reach matters. On Fashion-MNIST at 32 px it works on 8x8 maps:
the field of three 3x3 blocks already covers most of the image, so do not expect the
kernel sweep below to repeat the paper's gain.

## A tiny live experiment: the kernel sweep
"""
       + "\n\n" + tiny_note() + """

`paper_plan(..., kernel_sizes=[...])` turns the `large_kernel` step into the paper's sweep;
`large_kernel/k3` is the `move_up_dwconv` model."""),
    code("""
folder = tiny_run(paper_plan(only=["inverted_bottleneck", "large_kernel"], kernel_sizes=[3, 5, 7, 11]),
                  "large-kernel")
ours = ours_vs_paper(folder)
ours
"""),
    code("""
a, b = ours.loc["inverted_bottleneck"], ours.loc["large_kernel/k3"]
print(f"tiny run, one seed - move up the depthwise conv: top-1 {a.top1:.1f} -> {b.top1:.1f}% "
      f"({b.top1 - a.top1:+.1f}); paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} "
      f"({b.paper_top1 - a.paper_top1:+.2f})")
swept = ours[ours["variant"] != ""].copy()
swept["kernel"] = swept["variant"].str[1:].astype(int)
print("tiny run, one seed - kernels ranked:", list(swept.sort_values("top1", ascending=False)["kernel"]),
      "(a single 100-update run cannot rank them: the differences are within seed noise)")

fig, ax = plt.subplots(figsize=(6.5, 3.6))
ax.plot(swept["kernel"], swept["top1"], "o-", color="#c44e52", label="ours (Fashion-MNIST, tiny)")
ax.set_xlabel("depthwise kernel size"); ax.set_ylabel("our top-1 (%)", color="#c44e52")
top = ax.twinx()
top.plot(list(KERNEL_SWEEP), [t for t, _ in KERNEL_SWEEP.values()], "kD--", label="paper (ImageNet-1K)")
top.set_ylabel("paper top-1 (%)")
ax.set_xticks(list(KERNEL_SWEEP))
fig.legend(loc="lower center", ncol=2, fontsize=8, bbox_to_anchor=(0.5, -0.02))
ax.set_title("Kernel sweep on the large_kernel step")
fig.tight_layout(rect=(0, 0.06, 1, 1))
"""),
    md("""
## What the committed reference says about the kernel

The tiny sweep above is one seed of 100 updates: its ranking is noise. The committed
reference (13 steps x 3 seeds, 4 epochs, full data) measures the two kernel changes of the
roadmap with intervals from one model over all its runs; `benchmarks/small_input_stem.py`
measured the sweep (k3, k7, k11) with both stems, the paper's and a stride-2 one that
leaves stage 1 at 16x16 instead of 8x8.
"""),
    code("""
ref = reference_report()
if ref is not None:
    _, ref_changes, _ = ref
    kernel = ref_changes[ref_changes["to"].isin(["move_up_dwconv", "large_kernel", "gelu"])]
    display(kernel.round(3))
from roadmap.outputs import REFERENCE_ROOT
sweep = REFERENCE_ROOT / "small-input-stem" / "sweep.csv"
if sweep.is_file():
    display(pd.read_csv(sweep).round(3))
"""),
    code("""
show_trajectory(folder)
"""),
]

# ----------------------------------------------------------------------------- 05 micro design

MICRO = [
    md("""
# Micro design: activations, norms, downsampling

The last phase changes layer-level details, each towards what a Transformer block does:

1. **ReLU -> GELU**, the Transformers' activation: accuracy unchanged in the paper.
2. **Fewer activations.** A Transformer block has one activation, inside its MLP. Keep only
   the one between the two 1x1 convs: the paper's largest micro gain.
3. **Fewer norms.** Keep one norm per block, after the depthwise conv (before the 1x1 convs).
4. **BN -> LN.** LayerNorm in place of BatchNorm: the block now trains well with it, it does
   slightly better, and each image's output no longer depends on its batch.
5. **Separate downsampling.** Swin downsamples between stages; here a norm + 2x2 stride-2 conv
   between stages replaces the strided first block, with a norm after the global pool. Layer
   scale enters with this last step too (see its note below), so the result is exactly
   timm's `convnext_tiny`.
"""),
    code(SETUP),
    md("## ReLU and GELU"),
    code("""
x = torch.linspace(-4, 3, 400)
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.plot(x, nn.ReLU()(x), label="ReLU")
ax.plot(x, nn.GELU()(x), label="GELU: x * Phi(x)")
ax.axhline(0, color="#999999", lw=0.6); ax.axvline(0, color="#999999", lw=0.6)
ax.legend(); ax.set_title("GELU is a smooth ReLU that lets small negatives through")
fig.tight_layout()
"""),
    md("""
## The block, step by step

What sits in each slot of the first block of stage 1 (`Block.conv1 ... act3`, read from
the built models; `·` is an `nn.Identity`, i.e. removed):
"""),
    code("""
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
"""),
    code("""
print("before (large_kernel):", roadmap.build("large_kernel").stages[0].blocks[0], sep="\\n")
print()
print("after (ConvNeXt-T):", roadmap.build("separate_downsampling").stages[0].blocks[0], sep="\\n")
"""),
    md("""
## LayerNorm removes the batch dependence

In training mode a BatchNorm normalises with the statistics of the whole batch, so an
image's output depends on which other images share its batch; a LayerNorm normalises each
position of each image on its own. Feed the same image with two different sets of
batch-mates (small untrained models, training mode):
"""),
    code("""
torch.manual_seed(0)
image = torch.randn(1, 3, 32, 32)
mates_a, mates_b = torch.randn(7, 3, 32, 32), 2 * torch.randn(7, 3, 32, 32) + 1
for step in ["fewer_norms", "layer_norm"]:
    model = roadmap.build(step, num_classes=10, widths=(24, 48, 96, 192)).train()
    with torch.no_grad():
        out_a = model(torch.cat([image, mates_a]))[0]
        out_b = model(torch.cat([image, mates_b]))[0]
    change = ((out_a - out_b).norm() / out_a.norm()).item()
    print(f"{step:12s} ({model.cfg.norm} norm): the image's logits change by {change:.1e} "
          f"(relative) when its batch-mates change")
"""),
    md("""
## Separate downsampling layers

Before, the first block of each later stage strides its depthwise conv and projects its
shortcut with a strided 1x1 conv. After, a norm and a 2x2 stride-2 conv between stages do
the downsampling, and every block keeps an identity shortcut:
"""),
    code("""
for step in ["layer_norm", "separate_downsampling"]:
    stage = roadmap.build(step).stages[1]
    print(f"{step}: stage 2 downsample = {stage.downsample}")
    print(f"{'':{len(step)}s}  first block's conv1 = {stage.blocks[0].conv1}, shortcut = {stage.blocks[0].shortcut}")
    print()
print(roadmap.get_step("separate_downsampling").note)
"""),
    md("""
## Params and FLOPs against the paper

Full-size models at 224 px. The paper's Table 10 prints a GFLOPs value for BN -> LN that
disagrees with its own Figure 2; the step's note says which one we compare with:
"""),
    code("""
print(roadmap.get_step("layer_norm").note)
size_table(MICRO)
"""),
    md("## A tiny live experiment\n\n" + tiny_note()),
    code("""
folder = tiny_run(paper_plan(only=MICRO), "micro")
ours = ours_vs_paper(folder)
for prev, step in zip(MICRO, MICRO[1:]):
    a, b = ours.loc[prev], ours.loc[step]
    print(f"{step:22s} top-1 {a.top1:5.1f} -> {b.top1:5.1f}% here ({b.top1 - a.top1:+5.1f}); "
          f"paper {a.paper_top1:.2f} -> {b.paper_top1:.2f} ({b.paper_top1 - a.paper_top1:+.2f})")
ours.drop(columns="variant")
"""),
    code("""
show_trajectory(folder)
"""),
]

NOTEBOOKS = {
    "00_roadmap_overview": OVERVIEW,
    "01_macro_design": MACRO,
    "02_resnextify": RESNEXT,
    "03_inverted_bottleneck": INVERTED,
    "04_large_kernel": LARGE,
    "05_micro_design": MICRO,
}


def main():
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        })
        for i, cell in enumerate(nb.cells):
            cell.id = f"cell-{i:02d}"   # stable ids: regenerating gives the same file
        nbformat.validate(nb)
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
