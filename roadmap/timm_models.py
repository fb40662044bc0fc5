"""Every roadmap step as a timm model: `timm.create_model("roadmap_large_kernel")`.

`import roadmap` registers `roadmap_<step>` for the 13 steps of `steps/paper.py` and
`roadmap_large_kernel_k<k>` for the paper's kernel sweep; a custom roadmap registers its
rows with `Roadmap.register()`. Every entry point builds through timm's
`build_model_with_cfg`, so timm's toolbox applies: `features_only` / `out_indices`,
`pretrained_cfg` (for `timm.data.resolve_data_config`), `checkpoint_path`, and the keywords
timm's ResNet and ConvNeXt both take: `num_classes`, `in_chans`, `drop_rate`,
`drop_path_rate`, `global_pool` ('', 'avg', 'max', 'avgmax'; also in `reset_classifier`) and
`output_stride` (32, 16 or 8, by dilation). Any ArchConfig toggle is a keyword too
(`kernel_size=5`), checked as a roadmap file's toggle is: a wrong type or range is one
RoadmapError naming the model and the keyword.

Nothing is downloaded: no pretrained_cfg holds a url or hub id. The two endpoints are
timm's `resnet50` and `convnext_tiny`, so they take `pretrained=True` with a local timm
checkpoint, mapped by `roadmap.weights.checkpoint_filter_fn` (the mapping of `load_timm`):

    timm.create_model("roadmap_resnet50", pretrained=True,
                      pretrained_cfg_overlay=dict(file="resnet50.pth"))
"""

import difflib
import re
import sys
from functools import partial
from typing import Any, Callable, Dict, List, Sequence, Tuple, get_type_hints

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, register_model

from .config import CHOICES, ArchConfig, field_names
from .errors import RoadmapError
from .model import GLOBAL_POOLS, OUTPUT_STRIDES, RoadmapNet, check_head, stem_stride
from .registry import config_for, configs, get_step, kernel_sweep, step_names
from .values import Invalid, convert, split_optional
from .weights import checkpoint_filter_fn, remap_timm

__all__ = ["PREFIX", "model_name", "register", "register_paper_models", "register_rows"]

PREFIX = "roadmap_"
# The steps that are timm models exactly, so that timm's checkpoints load into them.
TIMM_TWINS = {"resnet50": "resnet50", "separate_downsampling": "convnext_tiny"}
# Chosen per use (data, recipe), not part of the architecture a checkpoint must match.
_RUNTIME_FIELDS = ("num_classes", "in_chans", "drop_path_rate")

default_cfgs = {}  # timm's register_model reads each model's pretrained_cfg from here
_registered: Dict[str, ArchConfig] = {}


def _pretrained_cfg(cfg: ArchConfig, description: str) -> dict:
    """ImageNet at 224 px as the paper evaluates (bicubic, crop 0.875); no weights."""
    reduction = stem_stride(cfg) * 2 ** (len(cfg.depths) - 1)
    return dict(
        num_classes=1000,
        input_size=(3, 224, 224),
        pool_size=(224 // reduction,) * 2,
        crop_pct=0.875,
        interpolation="bicubic",
        mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD,
        first_conv="stem.conv",
        classifier="head.fc",
        description=description,
        paper_name="A ConvNet for the 2020s",
        paper_ids="arXiv:2201.03545",
    )


def _architecture(cfg: ArchConfig) -> ArchConfig:
    return cfg.replace(**{k: getattr(ArchConfig(), k) for k in _RUNTIME_FIELDS})


def _timm_twin(cfg: ArchConfig):
    """The timm model whose checkpoints fit `cfg` (up to classes, channels, drop path), if any."""
    return next(
        (timm_name for step, timm_name in TIMM_TWINS.items() if _architecture(configs()[step]) == _architecture(cfg)),
        None,
    )


# The keywords RoadmapNet takes besides the toggles, with their types.
_MODEL_KEYWORDS = {"drop_rate": float, "global_pool": str, "output_stride": int}
_HINTS = {**get_type_hints(ArchConfig), **_MODEL_KEYWORDS}
_POSITIVE = ("a positive integer", lambda v: v > 0)
_STAGES = ("a list of 4 positive integers, one per stage", lambda v: len(v) == 4 and min(v) > 0)
_RATE = ("a number in [0, 1)", lambda v: 0 <= v < 1)
# What a keyword takes beyond its type, in words and as a test (the ranges of roadmap files,
# `custom.check_toggle`, with ArchConfig's own: odd kernels, and timm's: 4 stages, 0 classes).
_RANGES: Dict[str, Tuple[str, Callable[[Any], bool]]] = {
    "depths": _STAGES,
    "widths": _STAGES,
    "expansion": _POSITIVE,
    "patch_size": _POSITIVE,
    "in_chans": _POSITIVE,
    "drop_path_rate": _RATE,
    "drop_rate": _RATE,
    "kernel_size": ("an odd positive integer (1, 3, 5, 7, ...)", lambda v: v > 0 and v % 2 == 1),
    "num_classes": ("an integer >= 0 (0: no classifier)", lambda v: v >= 0),
    "layer_scale_init": ("a number, or None for no layer scale", lambda v: True),
    "global_pool": (
        "one of " + ", ".join(map(repr, GLOBAL_POOLS)) + " ('' for no pooling)",
        lambda v: v in GLOBAL_POOLS,
    ),
    "output_stride": ("8, 16 or 32", lambda v: v in OUTPUT_STRIDES),
}
# timm's names for some toggles, for the error that meets them.
_TIMM_NAMES = {
    "act_layer": "act",
    "norm_layer": "norm",
    "dims": "widths",
    "layers": "depths",
    "kernel_sizes": "kernel_size",
    "ls_init_value": "layer_scale_init",
}


def _check_keyword(variant: str, key: str, value: Any) -> Any:
    """`value` as the model takes keyword `key`, or a RoadmapError saying what `key` takes."""
    _, base = split_optional(_HINTS[key])
    if key in _RANGES:
        takes, fits = _RANGES[key]
    elif key in CHOICES:
        takes, fits = "one of " + ", ".join(map(repr, CHOICES[key])), lambda v: v in CHOICES[key]
    else:  # the bool toggles
        takes, fits = "True or False", lambda v: True
    try:
        converted = convert(value, _HINTS[key])
        ok = converted is None or fits(converted)
    except Invalid:
        ok = False
    if not ok:
        raise RoadmapError(f"{variant}: {key}={value!r} is not allowed; {key} takes {takes}")
    return float(converted) if base is float and converted is not None else converted


def _check_keywords(variant: str, cfg: ArchConfig, kwargs: Dict[str, Any]) -> ArchConfig:
    """Check (and convert, in place) the toggles and model keywords in `kwargs`; the
    configuration they give. timm's own keywords (features_only, ...) pass unchecked."""
    for key in [k for k in kwargs if k in _HINTS]:  # in the order given: the first wrong one
        kwargs[key] = _check_keyword(variant, key, kwargs[key])
    try:
        arch = cfg.replace(**{k: v for k, v in kwargs.items() if k in field_names()})
        check_head(arch, arch.num_classes, kwargs.get("global_pool", "avg"))
    except RoadmapError as e:  # a combination of keywords (odd patches with small_input_stem, ...)
        raise RoadmapError(f"{variant}: {e}") from None
    return arch


def _with_hint(key: str) -> str:
    """`key`, and the keyword it probably means."""
    close = [_TIMM_NAMES[key]] if key in _TIMM_NAMES else difflib.get_close_matches(key, _HINTS, n=1)
    return f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key)


def _build(
    variant: str,
    cfg: ArchConfig,
    drop_rate: float = 0.0,
    global_pool: str = "avg",
    output_stride: int = 32,
    device=None,
    dtype=None,
    **toggles,
) -> RoadmapNet:
    """`build_model_with_cfg`'s model class: toggles change `cfg`, drop_rate, global_pool and
    output_stride go to RoadmapNet, and any other keyword is an error naming the model."""
    unknown = sorted(set(toggles) - set(field_names()))
    if unknown:
        raise RoadmapError(
            f"{variant}: unknown toggle or keyword {', '.join(map(_with_hint, unknown))}; it takes "
            f"the toggles {', '.join(field_names())} and timm's {', '.join(_MODEL_KEYWORDS)}"
        )
    model = RoadmapNet(
        cfg.replace(**toggles), drop_rate=drop_rate, global_pool=global_pool, output_stride=output_stride
    )
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


def _filter_checkpoint(state_dict, model: RoadmapNet):
    """`weights.checkpoint_filter_fn`, for a model without a classifier too (num_classes=0):
    timm's loader drops a checkpoint's classifier of another size itself, after this filter."""
    if "head.fc.weight" not in model.state_dict():
        ours = dict(zip(state_dict, remap_timm(state_dict)))  # timm name -> roadmap name
        state_dict = {k: v for k, v in state_dict.items() if not ours[k].startswith("head.fc.")}
    return checkpoint_filter_fn(state_dict, model)


def _create(variant: str, cfg: ArchConfig, pretrained: bool = False, **kwargs) -> RoadmapNet:
    arch = _check_keywords(variant, cfg, kwargs)
    if pretrained:
        twin = _timm_twin(arch)
        if twin is None:
            raise RoadmapError(
                f"{variant}: pretrained=True loads a timm checkpoint, and only the endpoints are timm "
                f"models: {PREFIX}resnet50 (timm resnet50) and {PREFIX}separate_downsampling "
                f"(timm convnext_tiny), without architecture overrides. Weights saved from this "
                f"model load with timm.create_model({variant!r}, checkpoint_path=PATH)."
            )
        given = kwargs.get("pretrained_cfg")
        source = {**(given if isinstance(given, dict) else {}), **(kwargs.get("pretrained_cfg_overlay") or {})}
        if not (source.get("file") or source.get("state_dict")):
            raise RoadmapError(
                f"{variant}: pretrained=True loads a local timm {twin} checkpoint and downloads "
                f"nothing; give the file: timm.create_model({variant!r}, pretrained=True, "
                f"pretrained_cfg_overlay=dict(file=PATH))"
            )
    return build_model_with_cfg(
        partial(_build, variant),
        variant,
        pretrained,
        model_cfg=cfg,
        pretrained_filter_fn=_filter_checkpoint,
        feature_cfg=dict(out_indices=tuple(range(len(cfg.depths))), flatten_sequential=True),
        **kwargs,
    )


def _check_free(name: str, cfg: ArchConfig, what: str) -> bool:
    """False if `name` is already this configuration; an error if timm has it as another model."""
    if not name.isidentifier():
        raise RoadmapError(f"{what} timm model {name!r}, which is not a Python identifier")
    if name in _registered and _registered[name] == cfg:
        return False
    if name in _registered or is_model(name):
        raise RoadmapError(
            f"{what} timm model {name!r}, which already exists with another "
            "architecture; give the roadmap or the row another name"
        )
    return True


def register(name: str, cfg: ArchConfig, description: str = "") -> str:
    """Register `cfg` as timm model `name`. The same name and configuration again is a no-op;
    a name timm already has for another model is an error."""
    if not _check_free(name, cfg, "cannot register"):
        return name

    def entrypoint(pretrained: bool = False, **kwargs) -> RoadmapNet:
        return _create(name, cfg, pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = description
    default_cfgs.update(generate_default_cfgs({name: _pretrained_cfg(cfg, description)}))
    setattr(sys.modules[__name__], name, entrypoint)
    register_model(entrypoint)
    _registered[name] = cfg
    return name


def model_name(*parts: str) -> str:
    """`roadmap_` + the parts, lower case, every run of other characters turned into `_`."""
    slugs = (re.sub(r"[^0-9a-z]+", "_", p.lower()).strip("_") for p in parts)
    return PREFIX + "_".join(filter(None, slugs))


def register_rows(rows: Sequence[Tuple[str, ArchConfig, str]], prefix: str = "") -> List[str]:
    """Register (row name, config, description) rows as `roadmap_<prefix>_<row>`, all or none."""
    names = [model_name(prefix, row) for row, _, _ in rows]
    for (row, cfg, _), name in zip(rows, names):
        same = [r for (r, _, _), n in zip(rows, names) if n == name]
        if len(same) > 1:
            raise RoadmapError(f"rows {' and '.join(map(repr, same))} both become timm model {name!r}; rename one")
        _check_free(name, cfg, f"row {row!r} would be")
    return [register(name, cfg, description) for name, (_, cfg, description) in zip(names, rows)]


def register_paper_models() -> List[str]:
    """The 13 steps as `roadmap_<step>`, the kernel sweep as `roadmap_large_kernel_k<k>`."""
    steps = [get_step(name) for name in step_names()]
    rows = [
        (s.name, config_for(s.name), f"ConvNeXt roadmap step {i} ({s.phase}): {s.title}") for i, s in enumerate(steps)
    ]
    rows += [
        (
            f"large_kernel_k{k}",
            config_for("large_kernel", kernel_size=k),
            f"ConvNeXt roadmap kernel sweep: large_kernel with a {k}x{k} depthwise conv",
        )
        for k in kernel_sweep()
    ]
    return register_rows(rows)
