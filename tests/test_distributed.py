"""DDP for real on the CPU: torchrun, 2 processes, gloo.

A LayerNorm step (no BatchNorm) trained by 2 processes of batch 16 is the same
computation as 1 process of batch 32 (same global batches, averaged gradients, same
lr), up to float summation order. Tolerance: train_loss to 1e-5 relative, top-1/top-5
to 0.5 points (one validation image of 200); measured differences are ~1e-8 and 0.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp

from helpers import ROOT
from roadmap.env import Dist
from roadmap.errors import RoadmapError
from roadmap.train import load_checkpoint

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
# 20 updates of a global batch of 32, no augmentation: the two runs see the same pixels.
SMALL = [
    "--only",
    "layer_norm",
    "--set",
    "train_subset=640",
    "--set",
    "val_subset=200",
    "--set",
    "max_updates=20",
    "--set",
    "eval_batch_size=100",
    "--set",
    "max_shift=0",
    "--set",
    "hflip=false",
    "--no-progress",
    "--no-plot",
    "--threads",
    "1",
]
LOSS_RTOL, TOP1_ATOL = 1e-5, 0.5


def torchrun_cmd(*args):
    # --standalone: a free port, so parallel test runs do not collide
    return [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "roadmap", "run", *map(str, args)]


def run(cmd, timeout=300):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def row(folder):
    table = pd.read_csv(Path(folder) / "results.csv")
    assert len(table) == 1 and table["status"].iloc[0] == "ok"
    return table.iloc[0]


def assert_same_training(a, b):
    assert a["updates"] == b["updates"] == 20
    assert a["global_batch"] == b["global_batch"] == 32 and a["lr"] == b["lr"]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=LOSS_RTOL)
    assert abs(a["top1"] - b["top1"]) <= TOP1_ATOL and abs(a["top5"] - b["top5"]) <= TOP1_ATOL


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    proc = run([sys.executable, "-m", "roadmap", "run", *SMALL, "--set", "batch_size=32", "--out", out])
    assert proc.returncode == 0, proc.stderr
    return row(out)


def test_two_processes_match_one_process_of_the_same_global_batch(single, tmp_path):
    proc = run(torchrun_cmd(*SMALL, "--set", "batch_size=16", "--out", tmp_path))
    assert proc.returncode == 0, proc.stderr
    ddp = row(tmp_path)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["key"] != single["key"]  # the process count is part of what a run is
    assert_same_training(ddp, single)
    assert proc.stdout.count("top-1") == 1  # only rank 0 reports
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.long
def test_killed_ddp_run_resumes_on_every_rank(single, tmp_path):
    args = [*SMALL, "--set", "batch_size=16", "--set", "ckpt_every_s=0", "--out", tmp_path]
    proc = subprocess.Popen(
        torchrun_cmd(*args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    ckpts = tmp_path / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.glob("*.pt"))):
        time.sleep(0.1)
    # SIGTERM, as a cluster's preemption: torchrun passes it to its workers, which die mid-run.
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert any(ckpts.glob("*.pt")), "rank 0 wrote no checkpoint before the kill"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())

    resumed = run(torchrun_cmd(*args))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    ddp = row(tmp_path)
    assert ddp["resumed"] == 1
    assert_same_training(ddp, single)


def _collectives(rank, folder):
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    dist = Dist(world_size=2, rank=rank, local_rank=rank)
    try:
        assert dist.mean(torch.tensor(float(rank))) == 0.5
        # a NaN on one rank is a NaN on every rank: all stop on the same update
        nan = dist.mean(torch.tensor(float("nan") if rank == 1 else 1.0))
        assert nan != nan
        shared = folder / "shared.pt"
        saved = dict(model={}, optimizer={}, state=dict(update=7))  # the keys a checkpoint holds
        if rank == 0:
            torch.save(saved, shared)
        torch.distributed.barrier()
        assert load_checkpoint(str(shared), dist) == saved
        assert load_checkpoint(str(folder / "none.pt"), dist) is None
        # a file only rank 0 sees (an --out that is not shared): every rank raises, none hangs
        local = shared if rank == 0 else folder / "elsewhere.pt"
        with pytest.raises(RoadmapError, match=r"visible to ranks \[0\] but not to \[1\]"):
            load_checkpoint(str(local), dist)
    finally:
        torch.distributed.destroy_process_group()


def test_ranks_agree_on_nan_and_on_the_checkpoint(tmp_path):
    mp.spawn(_collectives, args=(tmp_path,), nprocs=2, join=True)
