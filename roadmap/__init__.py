"""roadmap: replay the ConvNeXt modernization roadmap, ResNet-50 -> ConvNeXt-T.

The package imports neither torch nor timm by itself, so that `roadmap list` and `--help`
start at once; `RoadmapNet` and `build` import the model when first used.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING


def _steps_from_checkout():
    """The paper's roadmap (steps as data) is the top-level steps/ folder of a checkout, which
    an install puts at roadmap/steps (pyproject: package-dir). A checkout run uninstalled
    (PYTHONPATH=.) gets it from there, as roadmap.steps all the same."""
    folder = Path(__file__).resolve().parent.parent / "steps"
    if importlib.util.find_spec(f"{__name__}.steps") is not None or not (folder / "__init__.py").is_file():
        return
    spec = importlib.util.spec_from_file_location(
        f"{__name__}.steps", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_steps_from_checkout()

from .config import ArchConfig  # noqa: E402  (after roadmap.steps is findable)
from .errors import RoadmapError  # noqa: E402
from .registry import config_for, get_step, step_names  # noqa: E402

if TYPE_CHECKING:
    from .model import RoadmapNet

__version__ = "0.1.0"


def build(step: str, num_classes: int = 1000, **overrides) -> "RoadmapNet":
    """The model of roadmap step `step`; `overrides` change any toggle of its ArchConfig."""
    from .model import RoadmapNet

    return RoadmapNet(config_for(step, num_classes=num_classes, **overrides))


def __getattr__(name):
    if name == "RoadmapNet":  # the model needs torch: imported on first use only
        from .model import RoadmapNet

        return RoadmapNet
    raise AttributeError(f"module 'roadmap' has no attribute {name!r}")


# Every step becomes a timm model (`timm.create_model("roadmap_gelu")`, see roadmap.timm_models)
# as soon as both roadmap and timm are imported, in either order. Registering needs
# roadmap.model, which imports timm itself: when timm arrives halfway through a roadmap module,
# registering waits for the end of that module.


class _Then(importlib.abc.Loader):
    """A module's own loader, then an attempt to register."""

    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):  # get_data, get_source, ...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        _register_with_timm()


class _WatchImports(importlib.abc.MetaPathFinder):
    """Until the models are registered: timm and roadmap.* load through `_Then`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm" and not fullname.startswith("roadmap."):
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _Then(spec.loader)
                return spec
        return None


def _register_with_timm():
    if "timm" not in sys.modules:
        return
    try:
        from .timm_models import register_paper_models
    except ImportError:
        return  # a roadmap module is halfway through its imports: try again at its end
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _WatchImports)]
    register_paper_models()


if "timm" in sys.modules:
    _register_with_timm()
elif not any(isinstance(f, _WatchImports) for f in sys.meta_path):
    sys.meta_path.insert(0, _WatchImports())


__all__ = ["ArchConfig", "RoadmapError", "RoadmapNet", "build", "config_for", "get_step", "step_names"]
