"""Load timm checkpoints into roadmap models (in the spirit of timm's `checkpoint_filter_fn`).

timm's `resnet50` and `convnext_tiny` name their layers their own way; the roadmap's
endpoints hold the same tensors under one naming. The maps below are the whole
correspondence; anything left unmatched is an error, not a silent skip.
"""

import re
from typing import Dict, Mapping

import torch
from torch import nn

from .errors import RoadmapError

# (timm key pattern, roadmap key template), tried in order.
_RESNET = [
    (r"^conv1\.(.*)$", r"stem.conv.\1"),
    (r"^bn1\.(.*)$", r"stem.norm.\1"),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.(.*)$", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.conv{m[3]}.{m[4]}"),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.(.*)$", lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.norm{m[3]}.{m[4]}"),
    (
        r"^layer(\d)\.(\d+)\.downsample\.0\.(.*)$",
        lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.shortcut.conv.{m[3]}",
    ),
    (
        r"^layer(\d)\.(\d+)\.downsample\.1\.(.*)$",
        lambda m: f"stages.{int(m[1]) - 1}.blocks.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (r"^fc\.(.*)$", r"head.fc.\1"),
]
_CONVNEXT = [
    (r"^stem\.0\.(.*)$", r"stem.conv.\1"),
    (r"^stem\.1\.(.*)$", r"stem.norm.\1"),
    (r"^stages\.(\d)\.downsample\.0\.(.*)$", r"stages.\1.downsample.norm.\2"),
    (r"^stages\.(\d)\.downsample\.1\.(.*)$", r"stages.\1.downsample.conv.\2"),
    (r"^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.(.*)$", r"stages.\1.blocks.\2.conv1.\3"),
    (r"^stages\.(\d)\.blocks\.(\d+)\.norm\.(.*)$", r"stages.\1.blocks.\2.norm1.\3"),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.(.*)$", r"stages.\1.blocks.\2.conv2.\3"),
    (r"^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.(.*)$", r"stages.\1.blocks.\2.conv3.\3"),
    (r"^stages\.(\d)\.blocks\.(\d+)\.gamma$", r"stages.\1.blocks.\2.gamma"),
    (r"^head\.norm\.(.*)$", r"head.norm.\1"),
    (r"^head\.fc\.(.*)$", r"head.fc.\1"),
]


def detect_timm_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    if "layer1.0.conv1.weight" in state_dict and "conv1.weight" in state_dict:
        return "resnet"
    if "stem.0.weight" in state_dict and "stages.0.blocks.0.conv_dw.weight" in state_dict:
        return "convnext"
    raise RoadmapError(
        "state_dict is neither a timm ResNet nor a timm ConvNeXt checkpoint "
        "(expected keys like 'layer1.0.conv1.weight' or 'stages.0.blocks.0.conv_dw.weight')"
    )


def remap_timm(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm key names -> roadmap key names (tensors unchanged)."""
    rules = _RESNET if detect_timm_arch(state_dict) == "resnet" else _CONVNEXT
    out = {}
    for key, value in state_dict.items():
        for pattern, target in rules:
            m = re.match(pattern, key)
            if m:
                out[m.expand(target) if isinstance(target, str) else target(m)] = value
                break
        else:
            raise RoadmapError(f"no roadmap counterpart for timm key {key!r}")
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """A timm `resnet50`/`convnext_tiny`-family state_dict in the roadmap model's names.

    timm's hook for `build_model_with_cfg(pretrained_filter_fn=...)`. Every key must find
    its place in `model`; shapes are checked later (by `load_timm`, or by timm after it has
    adapted the stem to `in_chans` and dropped a classifier of another size).
    ConvNeXt's MLP is nn.Linear in timm and a 1x1 conv here: same weights, reshaped.
    """
    mapped = remap_timm(state_dict)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    unexpected = sorted(set(mapped) - set(own))
    if missing or unexpected:
        raise RoadmapError(
            "this timm checkpoint does not fit the model "
            f"({len(missing)} missing keys, e.g. {missing[:3]}; {len(unexpected)} unexpected, "
            f"e.g. {unexpected[:3]}). resnet50 checkpoints fit step 'resnet50', convnext_tiny "
            "checkpoints fit step 'separate_downsampling'."
        )
    for key, value in mapped.items():
        if value.dim() == 2 and own[key].dim() == 4:
            mapped[key] = value[:, :, None, None]
    return mapped


def load_timm(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a timm `resnet50`/`convnext_tiny`-family state_dict into a roadmap model, strictly."""
    mapped = checkpoint_filter_fn(state_dict, model)
    own = model.state_dict()
    for key, value in mapped.items():
        if value.shape != own[key].shape:
            raise RoadmapError(
                f"shape mismatch at {key}: checkpoint {tuple(value.shape)} vs "
                f"model {tuple(own[key].shape)}; check num_classes and widths"
            )
    model.load_state_dict(mapped, strict=True)
    return model
