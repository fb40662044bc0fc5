"""End-to-end `roadmap run` on a tiny slice: tables, figure, skip, resume after SIGKILL, NaN losses.

Its bad inputs (a missing --data, a step name's typo, an unknown --set field) are cases of
test_hardening's table, which checks them more closely.
"""

import json
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch

from helpers import ROOT, TINY, roadmap_cmd, run_roadmap
from roadmap.results import RESULT_COLUMNS


def test_run_writes_tables_and_figure(tiny_run_shared):
    out, stdout = tiny_run_shared.folder, tiny_run_shared.stdout
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(table) == 4 and set(table["status"]) == {"ok"}
    assert list(table["run"]) == ["resnet50", "resnet50", "separate_downsampling", "separate_downsampling"]
    assert table["top1"].between(0, 100).all() and (table["params_m"] > 0).all()
    assert (table["train_img_s"] > 0).all() and (table["infer_img_s"] > 0).all()
    assert set(table["paper_top1"]) == {78.82, 81.97}
    # the width preset is recorded and really applied
    cfg = json.loads(table["config"].iloc[0])
    assert cfg["widths"][0] == 16
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["run"]) == ["resnet50", "separate_downsampling"]
    assert (summary["seeds"] == 2).all() and summary["top1_std"].notna().all()
    # each run says whether it had the machine (roadmap.speed); the summary's speed columns
    # count the clean runs only, and name the others
    assert table["cpu_share"].between(0, 1.5).all() and (table["cores"] == os.cpu_count()).all()
    assert table[["load_start", "load_end"]].ge(0).all().all()
    assert (summary["speed_runs"] <= summary["seeds"]).all() and "speed_flagged" in summary.columns
    for name in ("trajectory.png", "trajectory.svg"):
        assert (out / name).stat().st_size > 5000
    assert "top-1" in stdout and "paper 78.82" in stdout


def test_rerun_skips_finished_runs(tiny_run_copy):
    out = tiny_run_copy
    before = (out / "results.csv").read_text()
    proc = run_roadmap("run", "--only", "resnet50,separate_downsampling", "--seeds", "2", "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done earlier, skipped") == 4
    assert (out / "results.csv").read_text() == before


def test_same_seed_same_numbers(tiny_run_shared, tmp_path):
    out = tiny_run_shared.folder
    proc = run_roadmap("run", "--only", "resnet50", "--out", tmp_path, *TINY)
    assert proc.returncode == 0, proc.stderr
    a = pd.read_csv(out / "results.csv").query("run == 'resnet50' and seed == 0").iloc[0]
    b = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert a["key"] == b["key"]
    assert a["top1"] == b["top1"] and a["train_loss"] == b["train_loss"]


# `roadmap run ARGS` in a process that SIGKILLs itself in update N (argv[1]), after its
# on_update hook and before that update's checkpoint: a crash at a known point, not after a sleep.
KILLED_AT_UPDATE = """
import os, signal, sys
import roadmap.runner as runner
from roadmap.cli import main

kill_at, real = int(sys.argv[1]), runner.train_run

def train_run(*args, on_update=None, **kwargs):
    def hook(m):
        if on_update is not None:
            on_update(m)
        if m["update"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, on_update=hook, **kwargs)

runner.train_run = train_run
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.long
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    # Two epochs of the tiny slice (2 x 20 updates), a checkpoint after every update, killed in
    # update 30 (on_update comes every LOG_EVERY = 10 updates, before that update's checkpoint):
    # the last checkpoint is that of update 29, 9 updates into the second epoch.
    args = [
        "run",
        "--only",
        "large_kernel",
        *TINY,
        "--set",
        "max_updates=40",
        "--set",
        "epochs=2",
        "--set",
        "ckpt_every_s=0",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # The uninterrupted run meanwhile, in a process of its own: each takes one thread (--threads 1).
    straight = subprocess.Popen(
        roadmap_cmd(*args, "--out", tmp_path / "straight"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        killed = tmp_path / "killed"
        proc = subprocess.run(
            [sys.executable, "-c", KILLED_AT_UPDATE, "30", *map(str, args), "--out", killed],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
        ckpts = killed / "checkpoints"
        assert len(list(ckpts.glob("*.pt"))) == 1, "no checkpoint was written before the kill"
        state = torch.load(next(ckpts.glob("*.pt")), weights_only=True)["state"]
        # the epoch and batch follow from the update (20 per epoch): 9 into the second, mid-epoch
        assert state["update"] == 29
        assert not (killed / "results.csv").exists() or len(pd.read_csv(killed / "results.csv")) == 0

        resumed = run_roadmap(*args, "--out", killed)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming from" in resumed.stdout
        _, err = straight.communicate(timeout=600)
    finally:
        straight.kill()
        straight.wait()
    assert straight.returncode == 0, err
    a = pd.read_csv(killed / "results.csv")
    b = pd.read_csv(tmp_path / "straight" / "results.csv")
    assert len(a) == 1 and a["resumed"].iloc[0] == 1 and a["updates"].iloc[0] == 40
    assert a["top1"].iloc[0] == b["top1"].iloc[0]
    assert a["train_loss"].iloc[0] == pytest.approx(b["train_loss"].iloc[0], rel=1e-6)
    assert not any(ckpts.glob("*.pt")), "the checkpoint of a finished run is cleaned up"


def test_nan_loss_is_recorded_and_the_run_goes_on(tmp_path):
    proc = run_roadmap(
        "run", "--only", "resnet50,gelu", *TINY, "--set", "lr=1e12", "--set", "warmup_epochs=0", "--out", tmp_path
    )
    assert proc.returncode == 1, proc.stderr  # both runs ran; the command says some failed
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["status"]) == ["failed", "failed"]
    assert table["error"].str.contains("step resnet50: the training loss became").any()
    assert table["error"].str.contains(r"lr \d", regex=True).all()
    assert "FAILED" in proc.stdout and "Traceback" not in proc.stderr
    assert "2 of 2 run(s) failed: resnet50 seed 0: step resnet50: the training loss" in proc.stderr
    assert not any((tmp_path / "checkpoints").glob("*.pt")), "a NaN run keeps no checkpoint"


def test_plot_command_redraws(tiny_run_copy):
    out = tiny_run_copy
    results = (out / "results.csv").read_bytes()
    figures = [out / "trajectory.png", out / "trajectory.svg", out / "changes.png", out / "changes.svg"]
    for f in figures:
        f.unlink()
    proc = run_roadmap("plot", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(f) for f in figures]
    png, svg = figures[:2]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "<svg" in svg.read_text()[:1000] and svg.stat().st_size > 5000
    assert (out / "results.csv").read_bytes() == results, "plot only reads the results"
