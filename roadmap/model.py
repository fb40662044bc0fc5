"""One network family that covers every step from ResNet-50 to ConvNeXt-T.

`RoadmapNet(cfg)` reads only an `ArchConfig`. It follows timm's conventions
(`forward_features` / `forward_head`, `reset_classifier`, `feature_info`, `global_pool`,
`output_stride`) and is built from timm's layers (LayerNorm2d, DropPath, classifier heads,
create_conv2d, trunc_normal_).
"""

from collections import OrderedDict
from functools import partial
from typing import Dict, List, Optional, Tuple, Union

import torch
from timm.layers import (
    ClassifierHead,
    DropPath,
    LayerNorm2d,
    NormMlpClassifierHead,
    create_conv2d,
    get_act_layer,
    trunc_normal_,
)
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from torch import nn

from .config import ArchConfig
from .errors import RoadmapError

# Global poolings that keep the pooled width, so both heads (pool -> fc, and ConvNeXt's
# pool -> norm -> fc) take them; '' is none (the head then sees the unpooled map).
GLOBAL_POOLS = ("", "avg", "max", "avgmax")
OUTPUT_STRIDES = (8, 16, 32)


def norm_layer_for(cfg: ArchConfig):
    # eps follows the reference models: torch's BN default (timm resnet), 1e-6 for LN (timm convnext).
    return nn.BatchNorm2d if cfg.norm == "batch" else partial(LayerNorm2d, eps=1e-6)


def conv_bias_for(cfg: ArchConfig, followed_by_norm: bool) -> bool:
    """A conv has a bias unless a BatchNorm follows it (its shift makes the bias redundant).

    This one rule reproduces both ends: every resnet50 conv feeds a BN (no bias) and
    every convnext_tiny conv is biased.
    """
    return not (followed_by_norm and cfg.norm == "batch")


class Block(nn.Module):
    """A residual block of any roadmap step: three convs, conv1 -> conv2 -> conv3.

    Spatial (kxk) conv in the middle, `spatial_first=False` (ResNet, MobileNetV2):
        1x1 in->hidden, kxk hidden->hidden (stride), 1x1 hidden->out
    Spatial conv first, `spatial_first=True` (ConvNeXt):
        kxk in->in (stride), 1x1 in->hidden, 1x1 hidden->out
    `hidden` is narrower than `out` in a bottleneck and wider in an inverted bottleneck.

    Norms: after every conv (`norms="all"`) or after conv1 only (`"one"`).
    Activations: after conv1, conv2 and the residual sum (`activations="all"`, ResNet) or
    after conv2 only (`"one"`: with the spatial conv first, that is the Transformer MLP's
    single activation between the two 1x1 convs).
    The shortcut is a strided 1x1 conv + norm where the shape changes (ResNet's
    projection shortcut), else the identity. `dilation` dilates the kxk conv (padded to
    keep the size), for a dense output (`output_stride`) as in timm's ResNet and ConvNeXt.
    """

    def __init__(
        self,
        cfg: ArchConfig,
        in_chs: int,
        out_chs: int,
        hidden_chs: int,
        stride: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
    ):
        super().__init__()
        norm_layer = norm_layer_for(cfg)
        act_layer = get_act_layer(cfg.act)
        k = cfg.kernel_size

        def spatial_conv(chs_in, chs_out, has_norm):
            groups = chs_in if cfg.depthwise else 1
            padding = dilation * (k // 2)  # keeps the size at any dilation
            return nn.Conv2d(chs_in, chs_out, k, stride, padding, dilation, groups, conv_bias_for(cfg, has_norm))

        def pointwise_conv(chs_in, chs_out, has_norm):
            return nn.Conv2d(chs_in, chs_out, 1, bias=conv_bias_for(cfg, has_norm))

        all_norms = cfg.norms == "all"
        all_acts = cfg.activations == "all"
        if cfg.spatial_first:
            # Depthwise keeps the width; spatial mixing happens on the narrow input stream.
            self.conv1 = spatial_conv(in_chs, in_chs, True)
            self.conv2 = pointwise_conv(in_chs, hidden_chs, all_norms)
            mid_chs = in_chs
        else:
            self.conv1 = pointwise_conv(in_chs, hidden_chs, True)
            self.conv2 = spatial_conv(hidden_chs, hidden_chs, all_norms)
            mid_chs = hidden_chs
        self.conv3 = pointwise_conv(hidden_chs, out_chs, all_norms)

        self.norm1 = norm_layer(mid_chs)
        self.act1 = act_layer(inplace=True) if all_acts else nn.Identity()
        self.norm2 = norm_layer(hidden_chs) if all_norms else nn.Identity()
        self.act2 = act_layer(inplace=True)
        self.norm3 = norm_layer(out_chs) if all_norms else nn.Identity()
        self.gamma = (
            nn.Parameter(cfg.layer_scale_init * torch.ones(out_chs)) if cfg.layer_scale_init is not None else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act3 = act_layer(inplace=True) if all_acts else nn.Identity()

        if in_chs != out_chs or stride != 1:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=conv_bias_for(cfg, True)),
                    norm=norm_layer(out_chs),
                )
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.norm1(self.conv1(x)))
        x = self.act2(self.norm2(self.conv2(x)))
        x = self.norm3(self.conv3(x))
        if self.gamma is not None:
            x = x * self.gamma.reshape(1, -1, 1, 1)
        x = self.drop_path(x)
        # As timm: project the shortcut last (the narrower input, not the projection, stays
        # alive through the block) and add in place (one activation-sized buffer less).
        x += self.shortcut(shortcut)
        return self.act3(x)


class Stage(nn.Module):
    """Optional separate downsampling layer, then `depth` blocks.

    With `downsample="separate"` (ConvNeXt) a norm + 2x2/2 conv changes resolution and
    width between stages, so every block keeps its identity shortcut.
    With `"in_block"` (ResNet) the first block strides and projects its shortcut.
    `dilation` is (first, rest), as in timm's ConvNeXtStage: a stage past the network's
    `output_stride` dilates instead of striding; the layer that would have strided keeps
    the previous stage's dilation (`first`), every later kxk conv takes the new one.
    """

    def __init__(
        self,
        cfg: ArchConfig,
        in_chs: int,
        out_chs: int,
        hidden_chs: int,
        depth: int,
        stride: int,
        drop_path_rates: List[float],
        dilation: Tuple[int, int] = (1, 1),
    ):
        super().__init__()
        first_dilation, dilation = dilation
        reduces = stride > 1 or first_dilation != dilation  # a 2x2/2 conv, or its dilated stand-in
        if cfg.downsample == "separate" and (reduces or in_chs != out_chs):
            # Dilated, the 2x2 conv keeps stride 1 with timm's 'same' padding, so that
            # timm's convnext_tiny(output_stride=...) and this stage give the same maps.
            self.downsample = nn.Sequential(
                OrderedDict(
                    norm=norm_layer_for(cfg)(in_chs),
                    conv=create_conv2d(
                        in_chs,
                        out_chs,
                        2 if reduces else 1,
                        stride=stride,
                        dilation=first_dilation,
                        padding="same" if dilation > 1 else 0,
                        bias=True,
                    ),
                )
            )
            in_chs, stride, first_dilation = out_chs, 1, dilation
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(
            *[
                Block(
                    cfg,
                    in_chs if i == 0 else out_chs,
                    out_chs,
                    hidden_chs,
                    stride=stride if i == 0 else 1,
                    dilation=first_dilation if i == 0 else dilation,
                    drop_path=drop_path_rates[i],
                )
                for i in range(depth)
            ]
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


def stem_stride(cfg: ArchConfig) -> int:
    if cfg.stem == "resnet":
        return 2 if cfg.small_input_stem else 4
    return cfg.patch_size // 2 if cfg.small_input_stem else cfg.patch_size


def make_stem(cfg: ArchConfig) -> nn.Sequential:
    """ResNet: 7x7/2 conv, norm, act, 3x3/2 max-pool. Patchify: p x p / p conv, norm.

    `small_input_stem` halves the stem's stride for 32 px inputs (no max-pool; p/2 patches).
    """
    out_chs = cfg.widths[0]
    norm = norm_layer_for(cfg)(out_chs)
    bias = conv_bias_for(cfg, True)
    if cfg.stem == "resnet":
        layers = OrderedDict(
            conv=nn.Conv2d(cfg.in_chans, out_chs, 7, stride=2, padding=3, bias=bias),
            norm=norm,
            act=get_act_layer(cfg.act)(inplace=True),
        )
        if not cfg.small_input_stem:
            layers["pool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        return nn.Sequential(layers)
    patch = cfg.patch_size // 2 if cfg.small_input_stem else cfg.patch_size
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cfg.in_chans, out_chs, patch, stride=patch, bias=bias),
            norm=norm,
        )
    )


def make_stages(cfg: ArchConfig, output_stride: int = 32) -> Tuple[nn.Sequential, List[dict]]:
    """The stages and their `feature_info`. As in timm's ResNet and ConvNeXt, a stage that
    would take the reduction past `output_stride` dilates instead of striding, so the last
    maps stay at 1/output_stride of the input (dense prediction) with the same parameters."""
    # Stochastic depth grows linearly with block index, as in timm and the paper.
    dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
    stages, feature_info = [], []
    in_chs, start, reduction, dilation = cfg.widths[0], 0, stem_stride(cfg), 1
    for i, (depth, out_chs, hidden_chs) in enumerate(zip(cfg.depths, cfg.residual_widths, cfg.hidden_widths)):
        stride, first_dilation = (1 if i == 0 else 2), dilation
        if stride > 1 and reduction >= output_stride:
            dilation, stride = dilation * stride, 1
        reduction *= stride
        stages.append(
            Stage(
                cfg,
                in_chs,
                out_chs,
                hidden_chs,
                depth,
                stride,
                dpr[start : start + depth],
                dilation=(first_dilation, dilation),
            )
        )
        feature_info.append(dict(num_chs=out_chs, reduction=reduction, module=f"stages.{i}"))
        in_chs, start = out_chs, start + depth
    return nn.Sequential(*stages), feature_info


def check_head(cfg: ArchConfig, num_classes: int, global_pool: str):
    """A RoadmapError for a head the step cannot build: without pooling, a pool -> fc head
    (ResNet's; timm's own fails in forward) has no map-shaped classifier, ConvNeXt's has."""
    if global_pool not in GLOBAL_POOLS:
        raise RoadmapError(
            f"global_pool={global_pool!r}: use one of {', '.join(map(repr, GLOBAL_POOLS))} ('' for no pooling)"
        )
    if global_pool == "" and num_classes > 0 and not cfg.head_norm:
        raise RoadmapError(
            f"global_pool='' with num_classes={num_classes}: this step's head (pool -> fc, as "
            "timm's ResNet) classifies pooled features only; give num_classes=0 for the "
            "unpooled map"
        )


class RoadmapNet(nn.Module):
    """The network of one roadmap configuration: stem -> 4 stages -> pool (-> norm) -> fc.

    cfg: the architecture (every toggle, with num_classes, in_chans, drop_path_rate).
    drop_rate: dropout before the classifier (0).
    global_pool: "avg" (default), "max", "avgmax", or "" for none (then num_classes=0,
        except with a head norm, whose classifier turns 1x1 conv, as timm's ConvNeXt).
    output_stride: 32 (default), 16 or 8: the last stages dilate instead of striding.
    """

    def __init__(self, cfg: ArchConfig, drop_rate: float = 0.0, global_pool: str = "avg", output_stride: int = 32):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise RoadmapError(f"output_stride={output_stride!r}: use 8, 16 or 32")
        check_head(cfg, cfg.num_classes, global_pool)
        self.cfg = cfg
        self.num_classes = cfg.num_classes
        self.in_chans = cfg.in_chans
        self.stem = make_stem(cfg)
        self.stages, self.feature_info = make_stages(cfg, output_stride)
        self.num_features = self.head_hidden_size = cfg.residual_widths[-1]
        if cfg.head_norm:
            self.head = NormMlpClassifierHead(
                self.num_features,
                cfg.num_classes,
                pool_type=global_pool,
                drop_rate=drop_rate,
                norm_layer=norm_layer_for(cfg),
            )
        else:
            self.head = ClassifierHead(self.num_features, cfg.num_classes, pool_type=global_pool, drop_rate=drop_rate)
        self.apply(_init_weights)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Union[str, List]]:
        """Parameter groups for layer-wise lr decay, as timm's ConvNeXt: stem, then one group
        per block (a stage's separate downsampling layer joins its first block), head last."""
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)"
            if coarse
            else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False):
        """A new classifier of `num_classes` (0: none), and `global_pool` if given, as timm."""
        check_head(self.cfg, num_classes, self.head.global_pool.pool_type if global_pool is None else global_pool)
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features)
        self.head_hidden_size = self.head.num_features

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs, as timm's ConvNeXt: `indices` an int takes the last n stages, a list
        those stages, None all. `norm` is accepted for the interface; the head norm (if any)
        comes after pooling, so no stage output is normed, as in convnext_tiny."""
        assert output_fmt == "NCHW", "Output shape must be NCHW."
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self.stem(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the stages after the last of `indices` (and the head); returns the indices kept."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_weights(module: nn.Module):
    # The paper's recipe for every step: trunc-normal(0.02) weights, zero biases.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
