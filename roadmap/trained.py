"""The weights a finished run keeps: its final (and EMA) weights as safetensors, loadable with
no pickle as the timm model of its step.

    <results folder>/weights/<run key>.safetensors        the final weights
    <results folder>/weights/<run key>.ema.safetensors    the EMA's, where the recipe has one

Each file's metadata names the timm model and the keywords that rebuild the run's exact
architecture (its widths after width_scale, its classes, any toggle of a custom row), so:

    import json, timm, roadmap
    from safetensors import safe_open
    meta = safe_open(path, "pt").metadata()
    model = timm.create_model(meta["timm_model"], checkpoint_path=path, **json.loads(meta["timm_kwargs"]))

or `roadmap.trained.load(path)`, which does just that. `roadmap run --no-weights` keeps none.
"""

import contextlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .config import ArchConfig
from .errors import RoadmapError
from .registry import config_for, step_names
from .timm_models import model_name


def timm_model(step: str, cfg: ArchConfig) -> Tuple[str, Dict]:
    """(timm model name, keywords) that build `cfg`: the step's own model when it is one of
    the paper's, else ResNet-50's (step 0), with every field that differs as a keyword."""
    base_step = step if step in step_names() else "resnet50"
    base = config_for(base_step)
    kwargs = {f.name: getattr(cfg, f.name) for f in fields(ArchConfig) if getattr(cfg, f.name) != getattr(base, f.name)}
    return model_name(base_step), kwargs


def _contiguous(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    # safetensors stores plain row-major tensors: channels_last weights are copied
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def save(path: Path, model: torch.nn.Module, step: str, cfg: ArchConfig) -> str:
    """Write `model`'s weights to `path` (whole or not at all) with their timm metadata."""
    from safetensors.torch import save_file

    name, kwargs = timm_model(step, cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        save_file(
            _contiguous(model), str(tmp), metadata=dict(timm_model=name, timm_kwargs=json.dumps(kwargs), step=step)
        )
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return str(path)


def keep(folder: Path, key: str, step: str, cfg: ArchConfig, model, ema_model: Optional[torch.nn.Module]) -> Dict:
    """Keep a finished run's weights under `folder`; the record's fields naming them
    (paths relative to the results folder, the parent of `folder`)."""
    out = dict(weights=save(folder / f"{key}.safetensors", model, step, cfg), weights_ema=None)
    if ema_model is not None:
        out["weights_ema"] = save(folder / f"{key}.ema.safetensors", ema_model, step, cfg)
    return {k: (os.path.relpath(v, folder.parent) if v else v) for k, v in out.items()}


def load(path: str, **overrides) -> torch.nn.Module:
    """The timm model a kept weights file was saved from, its weights loaded (no pickle)."""
    import timm
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as e:
        raise RoadmapError(f"{path}: not a safetensors file roadmap wrote ({e})") from None
    if "timm_model" not in meta:
        raise RoadmapError(f"{path}: no timm_model in its metadata; roadmap run did not write it")
    kwargs = json.loads(meta["timm_kwargs"])
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return timm.create_model(meta["timm_model"], checkpoint_path=path, **{**kwargs, **overrides})
