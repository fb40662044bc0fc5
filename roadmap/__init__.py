"""roadmap: replay the ConvNeXt modernization roadmap, ResNet-50 -> ConvNeXt-T."""
from .config import ArchConfig
from .errors import RoadmapError
from .model import RoadmapNet
from .registry import config_for, get_step, step_names
from .timm_models import register_paper_models

__version__ = "0.1.0"

# Every step becomes a timm model (`timm.create_model("roadmap_gelu")`); see roadmap.timm_models.
register_paper_models()


def build(step: str, num_classes: int = 1000, **overrides) -> RoadmapNet:
    """The model of roadmap step `step`; `overrides` change any toggle of its ArchConfig."""
    return RoadmapNet(config_for(step, num_classes=num_classes, **overrides))


__all__ = ["ArchConfig", "RoadmapError", "RoadmapNet", "build", "config_for", "get_step",
           "step_names"]
