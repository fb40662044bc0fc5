"""Model measurements: parameters and fvcore FLOPs (one multiply-add = one FLOP, as in the paper)."""
import logging
import warnings

import pandas as pd
import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore's package init scripts a loss function with torch.jit, which newer torch
    # deprecates; the warning is about fvcore's code, not ours.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

from .model import RoadmapNet
from .registry import config_for, get_step, step_names


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_gflops(model: nn.Module, resolution: int = 224, in_chans: int = 3) -> float:
    """fvcore GFLOPs of one image at `resolution` x `resolution` (model put in eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros(1, in_chans, resolution, resolution, device=device)
    # fvcore logs a warning per op it does not count (e.g. adds, GELU), as the paper's count
    # leaves them out too; silence it so tables stay readable.
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        flops = FlopCountAnalysis(model, x)
        flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = flops.total()
    model.train(was_training)
    return total / 1e9


def flops_table(resolution: int = 224, steps=None, **overrides) -> pd.DataFrame:
    """One row per step: params, fvcore GFLOPs at `resolution`, the paper's GFLOPs, the difference."""
    rows = []
    for name in steps or step_names():
        step = get_step(name)
        model = RoadmapNet(config_for(name, **overrides))
        gflops = count_gflops(model, resolution)
        rows.append(dict(
            step=name, phase=step.phase, params_m=round(count_params(model) / 1e6, 3),
            gflops=round(gflops, 3), paper_gflops=step.paper_gflops,
            diff=round(gflops - step.paper_gflops, 3), paper_top1=step.paper_top1,
        ))
    return pd.DataFrame(rows)
