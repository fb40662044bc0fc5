"""The paper's roadmap, ResNet-50 -> ConvNeXt-T, one change per step.

Each step lists the toggles it changes (field names of `roadmap.config.ArchConfig`)
and the paper's numbers: ImageNet-1K top-1 (mean and sd over 3 seeds, Table 10,
no EMA) and GFLOPs at 224x224. Steps are cumulative: step k is step k-1 with
`changes` applied and nothing else moved.

Two details the paper never places on the roadmap, layer scale and the LayerNorm
after global pooling, enter with the last step (see its note): that keeps step 0
exactly timm's `resnet50` and every earlier step a single change.
"""

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

# The paper's phases in order, each with the colour every figure gives it.
PHASE_COLORS = {
    "start": "#7f7f7f",
    "macro design": "#4c72b0",
    "ResNeXt-ify": "#dd8452",
    "inverted bottleneck": "#55a868",
    "large kernel": "#c44e52",
    "micro design": "#8172b3",
}
PHASES = tuple(PHASE_COLORS)


@dataclass(frozen=True)
class Step:
    name: str
    phase: str
    title: str  # the paper's wording (Figure 2 row label)
    changes: Mapping[str, Any]  # toggles set by this step, on top of the previous step
    why: str  # the paper's argument, in a sentence or two
    paper_top1: float  # Table 10, ImageNet-1K top-1 (%)
    paper_top1_sd: Optional[float]
    paper_gflops: float  # Table 10 (Figure 2 for `layer_norm`, see ROADMAP_REFERENCE)
    note: str = ""  # where we had to choose something the paper leaves open
    variant_of: Optional[str] = None
    extra: Mapping[str, Any] = field(default_factory=dict)


# Step 0 is timm's `resnet50` (torchvision layout, stride on the 3x3 conv), exactly: the
# defaults of `roadmap.config.ArchConfig`, so it is written down once, there.

ROADMAP = (
    Step(
        name="resnet50",
        phase="start",
        title="ResNet-50 (modern training recipe)",
        changes={},
        why="The baseline: timm's ResNet-50, trained with the same modern recipe as every "
        "later step, so that every later gain is due to architecture alone.",
        paper_top1=78.82,
        paper_top1_sd=0.07,
        paper_gflops=4.09,
    ),
    # ---- macro design -------------------------------------------------------------
    Step(
        name="stage_ratio",
        phase="macro design",
        title="stage ratio (3,4,6,3) -> (3,3,9,3)",
        changes=dict(depths=(3, 3, 9, 3)),
        why="Swin-T computes in stages at a 1:1:3:1 ratio; moving blocks into the third "
        "stage to match it raises accuracy for a small FLOPs increase.",
        paper_top1=79.36,
        paper_top1_sd=0.07,
        paper_gflops=4.53,
    ),
    Step(
        name="patchify_stem",
        phase="macro design",
        title='"patchify" stem (4x4, stride 4)',
        changes=dict(stem="patchify"),
        why="Vision Transformers cut the image into non-overlapping patches; a 4x4 stride-4 "
        "conv does the same and replaces ResNet's 7x7 conv and max-pool at no loss.",
        paper_top1=79.51,
        paper_top1_sd=0.18,
        paper_gflops=4.42,
    ),
    # ---- ResNeXt-ify --------------------------------------------------------------
    Step(
        name="depthwise_conv",
        phase="ResNeXt-ify",
        title="depthwise conv",
        changes=dict(depthwise=True),
        why="Grouped conv with one group per channel mixes only spatially, like the weighted "
        "sum in self-attention; it cuts FLOPs and accuracy.",
        paper_top1=78.28,
        paper_top1_sd=0.08,
        paper_gflops=2.35,
    ),
    Step(
        name="widen",
        phase="ResNeXt-ify",
        title="width 64 -> 96",
        changes=dict(widths=(96, 192, 384, 768)),
        why="ResNeXt's recipe: spend the FLOPs saved by the depthwise conv on width, here to Swin-T's 96 channels.",
        paper_top1=80.50,
        paper_top1_sd=0.02,
        paper_gflops=5.27,
    ),
    # ---- inverted bottleneck ------------------------------------------------------
    Step(
        name="inverted_bottleneck",
        phase="inverted bottleneck",
        title="inverted bottleneck",
        changes=dict(block="inverted"),
        why="A Transformer's MLP is 4x wider inside than its residual stream; so is "
        "MobileNetV2's inverted bottleneck. The narrow residual stream also shrinks the "
        "1x1 shortcut convs of the downsampling blocks, so FLOPs drop.",
        paper_top1=80.64,
        paper_top1_sd=0.03,
        paper_gflops=4.64,
    ),
    # ---- large kernel -------------------------------------------------------------
    Step(
        name="move_up_dwconv",
        phase="large kernel",
        title="move up depthwise conv",
        changes=dict(spatial_first=True),
        why="In a Transformer block the spatial mixing (attention) comes before the MLP; "
        "moving the depthwise conv up runs it on the narrow stream, so a large kernel "
        "becomes cheap. Alone it costs accuracy.",
        paper_top1=79.92,
        paper_top1_sd=0.08,
        paper_gflops=4.07,
    ),
    Step(
        name="large_kernel",
        phase="large kernel",
        title="kernel size 3 -> 7",
        changes=dict(kernel_size=7),
        why="Swin's attention windows are at least 7x7; a 7x7 depthwise conv gives each "
        "block that receptive field. The gain saturates at 7 (see the kernel sweep).",
        paper_top1=80.57,
        paper_top1_sd=0.14,
        paper_gflops=4.15,
    ),
    # ---- micro design -------------------------------------------------------------
    Step(
        name="gelu",
        phase="micro design",
        title="ReLU -> GELU",
        changes=dict(act="gelu"),
        why="Transformers use GELU; swapping it in changes accuracy by noise only, but "
        "keeps the block Transformer-like.",
        paper_top1=80.62,
        paper_top1_sd=0.14,
        paper_gflops=4.15,
    ),
    Step(
        name="fewer_activations",
        phase="micro design",
        title="fewer activations",
        changes=dict(activations="one"),
        why="A Transformer block has one activation, in its MLP; keeping only the one "
        "between the two 1x1 convs gives +0.7 points.",
        paper_top1=81.27,
        paper_top1_sd=0.06,
        paper_gflops=4.15,
    ),
    Step(
        name="fewer_norms",
        phase="micro design",
        title="fewer norms",
        changes=dict(norms="one"),
        why="Transformers normalize once per sub-block; keeping one norm, after the "
        "depthwise conv and before the 1x1 convs, helps a little.",
        paper_top1=81.41,
        paper_top1_sd=0.09,
        paper_gflops=4.15,
    ),
    Step(
        name="layer_norm",
        phase="micro design",
        title="BN -> LN",
        changes=dict(norm="layer"),
        why="Once the block looks like a Transformer's, LayerNorm trains without trouble "
        "and does slightly better than BatchNorm; it also removes the batch dependence.",
        paper_top1=81.47,
        paper_top1_sd=0.09,
        paper_gflops=4.2,
        note="Table 10 prints 4.46 GFLOPs here, which disagrees with Figure 2 (4.2) and with "
        "arithmetic (a norm swap moves FLOPs by ~0.01 G); we compare with Figure 2.",
    ),
    Step(
        name="separate_downsampling",
        phase="micro design",
        title="separate downsampling layers = ConvNeXt-T",
        changes=dict(downsample="separate", head_norm=True, layer_scale_init=1e-6),
        why="Swin downsamples between stages, not inside a block: a 2x2 stride-2 conv with a "
        "LayerNorm before it (and one after global pooling) keeps training stable.",
        paper_top1=81.97,
        paper_top1_sd=0.06,
        paper_gflops=4.49,
        note="The head LayerNorm enters here because the paper adds it in the same breath "
        "('after the final global average pooling'). Layer scale (init 1e-6) is part of "
        "ConvNeXt-T but never a roadmap step; it enters here so that steps 0-11 stay "
        "single changes and step 12 is exactly timm's convnext_tiny. The leave-one-out "
        "roadmap separates its effect.",
    ),
)

# The paper's side experiment (Section 2.5): kernel sizes for the `large_kernel` step.
# kernel -> (top-1, GFLOPs). k=3 is the `move_up_dwconv` step itself.
KERNEL_SWEEP = {
    3: (79.92, 4.07),
    5: (80.35, 4.10),
    7: (80.57, 4.15),
    9: (80.57, 4.21),
    11: (80.47, 4.29),
}
