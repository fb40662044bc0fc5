"""Step names -> configurations: the roadmap of `steps/` applied cumulatively."""

import difflib
from typing import Dict, List, Tuple

from .config import ArchConfig
from .errors import RoadmapError
from .steps import KERNEL_SWEEP, ROADMAP, Step

_BY_NAME: Dict[str, Step] = {s.name: s for s in ROADMAP}


def step_names() -> Tuple[str, ...]:
    """The roadmap's step names, in the paper's order."""
    return tuple(s.name for s in ROADMAP)


def get_step(name: str) -> Step:
    if name not in _BY_NAME:
        raise RoadmapError(unknown_step_message(name))
    return _BY_NAME[name]


def unknown_step_message(name: str) -> str:
    close = difflib.get_close_matches(str(name), step_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown step {name!r}.{hint} Valid steps, in order: {', '.join(step_names())}"


def configs() -> Dict[str, ArchConfig]:
    """Every step's configuration, built cumulatively from ResNet-50."""
    cfg, out = ArchConfig(), {}  # step 0: timm's resnet50
    for step in ROADMAP:
        cfg = cfg.replace(**step.changes)
        out[step.name] = cfg
    return out


def config_for(name: str, **overrides) -> ArchConfig:
    """The configuration of step `name`, with any toggles overridden."""
    get_step(name)
    return configs()[name].replace(**overrides)


def previous_step(name: str):
    names = step_names()
    i = names.index(get_step(name).name)
    return names[i - 1] if i > 0 else None


def steps_between(start: str = None, stop: str = None) -> List[str]:
    """Step names from `start` to `stop` inclusive, in roadmap order."""
    names = list(step_names())
    i = names.index(get_step(start).name) if start else 0
    j = names.index(get_step(stop).name) if stop else len(names) - 1
    if i > j:
        raise RoadmapError(f"--from {start} comes after --upto {stop} on the roadmap")
    return names[i : j + 1]


def kernel_sweep() -> Dict[int, Tuple[float, float]]:
    """The paper's kernel sweep on the `large_kernel` step: kernel -> (top-1, GFLOPs)."""
    return dict(KERNEL_SWEEP)
