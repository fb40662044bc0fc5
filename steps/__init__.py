"""The ConvNeXt modernization roadmap as data (Liu et al., 2022, Figure 2 / Table 10).

Read `steps/paper.py` top to bottom: it is the roadmap, one entry per step, each
one change on top of the previous step. Nothing in this package builds models;
`roadmap.registry` turns these entries into configurations.
"""

from .paper import KERNEL_SWEEP, PHASE_COLORS, PHASES, ROADMAP, Step

__all__ = ["KERNEL_SWEEP", "PHASE_COLORS", "PHASES", "ROADMAP", "Step"]
