import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A few updates on a slice of Fashion-MNIST: the real pipeline, seconds per step.
TINY = ["--set", "train_subset=640", "--set", "val_subset=200", "--set", "batch_size=32",
        "--set", "max_updates=6", "--set", "eval_batch_size=100", "--no-progress", "--threads", "1"]


def roadmap_cmd(*args):
    return [sys.executable, "-m", "roadmap", *map(str, args)]


def run_roadmap(*args, timeout=600, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(roadmap_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=kw.pop("cwd", ROOT), env=env, **kw)
