"""One frozen dataclass holds every architectural toggle; the builder reads only this."""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Dict, Optional, Tuple

from .errors import RoadmapError

# Allowed values of the string toggles; also the vocabulary of custom roadmap files.
CHOICES = {
    "stem": ("resnet", "patchify"),
    "block": ("bottleneck", "inverted"),
    "act": ("relu", "gelu"),
    "activations": ("all", "one"),
    "norms": ("all", "one"),
    "norm": ("batch", "layer"),
    "downsample": ("in_block", "separate"),
}


@dataclass(frozen=True)
class ArchConfig:
    """Every toggle of the roadmap. Defaults are timm's `resnet50`.

    depths: blocks per stage.
    widths: the narrow width of each stage (ResNet's "planes"); the wide width is
        `expansion` x that. In a `bottleneck` block the residual stream is the wide
        one; in an `inverted` block it is the narrow one.
    expansion: ratio of wide to narrow width (4 for both ResNet and ConvNeXt).
    stem: "resnet" (7x7/2 conv, norm, act, 3x3/2 max-pool) or "patchify" (4x4/4 conv, norm).
    block: "bottleneck" (1x1 reduce, kxk, 1x1 expand) or "inverted" (1x1 expand, kxk, 1x1 reduce).
    spatial_first: the kxk conv comes first in the block (before both 1x1 convs).
    depthwise: the kxk conv has one group per channel (ResNeXt taken to its limit).
    kernel_size: size of the kxk conv in every block.
    act: activation function, "relu" or "gelu".
    activations: "all" (after the 1st and 2nd conv and after the residual sum, as in
        ResNet) or "one" (after the block's 2nd conv only: between the two 1x1 convs
        once the kxk conv is first, like a Transformer MLP).
    norms: "all" (after every conv) or "one" (after the block's first conv only).
    norm: "batch" (BatchNorm2d) or "layer" (LayerNorm over channels, timm's LayerNorm2d).
    downsample: "in_block" (the first block of a stage strides its kxk conv and its
        1x1 shortcut, as in ResNet) or "separate" (norm + 2x2/2 conv between stages).
    head_norm: a norm between global pooling and the classifier.
    layer_scale_init: init value of a learnable per-channel scale on each block's
        residual branch; None for no layer scale.
    drop_path_rate: stochastic depth rate of the last block (linear in depth from 0).
    num_classes, in_chans: classifier size and input channels.
    patch_size: stride of the patchify stem.
    small_input_stem: a departure for small images (32 px), applied to every step alike:
        the stem strides 2 instead of 4 (ResNet: no max-pool; patchify: patch_size / 2),
        so stage 1 sees 16x16 instead of 8x8. Off for the paper's ImageNet setting.
    """

    depths: Tuple[int, ...] = (3, 4, 6, 3)
    widths: Tuple[int, ...] = (64, 128, 256, 512)
    expansion: int = 4
    stem: str = "resnet"
    block: str = "bottleneck"
    spatial_first: bool = False
    depthwise: bool = False
    kernel_size: int = 3
    act: str = "relu"
    activations: str = "all"
    norms: str = "all"
    norm: str = "batch"
    downsample: str = "in_block"
    head_norm: bool = False
    layer_scale_init: Optional[float] = None
    drop_path_rate: float = 0.0
    num_classes: int = 1000
    in_chans: int = 3
    patch_size: int = 4
    small_input_stem: bool = False

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise RoadmapError(
                    f"{name}={getattr(self, name)!r} is not a valid value; allowed: {', '.join(allowed)}"
                )
        if len(self.depths) != len(self.widths):
            raise RoadmapError(f"depths {self.depths} and widths {self.widths} must have one entry per stage")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise RoadmapError(f"kernel_size={self.kernel_size}: use an odd size (3, 5, 7, ...)")
        if self.small_input_stem and self.stem == "patchify" and self.patch_size % 2:
            raise RoadmapError(f"small_input_stem halves patch_size={self.patch_size}: use an even size")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise RoadmapError(f"drop_path_rate={self.drop_path_rate}: must be in [0, 1)")
        # Tuples, not lists, so configs hash and compare (lists come from TOML/JSON).
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def residual_widths(self) -> Tuple[int, ...]:
        """Width of the residual stream (= stage output) of each stage."""
        wide = self.block == "bottleneck"
        return tuple(w * self.expansion if wide else w for w in self.widths)

    @property
    def hidden_widths(self) -> Tuple[int, ...]:
        """Width between the two 1x1 convs of each stage's blocks."""
        wide = self.block == "inverted"
        return tuple(w * self.expansion if wide else w for w in self.widths)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def diff(self, other: "ArchConfig") -> Dict[str, Tuple[Any, Any]]:
        """Fields whose value differs: {name: (self's value, other's value)}."""
        return {
            f.name: (getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        }

    def replace(self, **changes) -> "ArchConfig":
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise RoadmapError(f"unknown toggle(s) {', '.join(unknown)}; valid toggles: {', '.join(field_names())}")
        return replace(self, **changes)


def field_names() -> Tuple[str, ...]:
    return tuple(f.name for f in fields(ArchConfig))
