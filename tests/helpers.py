import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A few updates on a slice of Fashion-MNIST: the real pipeline, seconds per step.
TINY = [
    "--set",
    "train_subset=640",
    "--set",
    "val_subset=200",
    "--set",
    "batch_size=32",
    "--set",
    "max_updates=6",
    "--set",
    "eval_batch_size=100",
    "--no-progress",
    "--threads",
    "1",
]


def roadmap_cmd(*args):
    return [sys.executable, "-m", "roadmap", *map(str, args)]


def run_roadmap(*args, timeout=600, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        roadmap_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env, **kw
    )


def randomize(model):
    """Non-trivial BN statistics, norm affines, biases and layer scales, so that equal outputs
    of two models mean equal wiring (not just equal default inits)."""
    import torch

    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5) if name.endswith(("weight", "gamma")) else p.normal_(0, 0.1)
    return model
