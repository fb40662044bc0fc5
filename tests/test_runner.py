"""End-to-end `roadmap run` on a tiny slice: tables, figure, skip, resume after SIGKILL, errors."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from helpers import ROOT, TINY, roadmap_cmd, run_roadmap
from roadmap.results import RESULT_COLUMNS


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_roadmap("run", "--only", "resnet50,separate_downsampling", "--seeds", "2",
                       "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_run_writes_tables_and_figure(finished_run):
    out, proc = finished_run
    table = pd.read_csv(out / "results.csv")
    assert list(table.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
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
    for name in ("trajectory.png", "trajectory.svg"):
        assert (out / name).stat().st_size > 5000
    assert "top-1" in proc.stdout and "paper 78.82" in proc.stdout


def test_rerun_skips_finished_runs(finished_run):
    out, _ = finished_run
    before = (out / "results.csv").read_text()
    proc = run_roadmap("run", "--only", "resnet50,separate_downsampling", "--seeds", "2",
                       "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("done earlier, skipped") == 4
    assert (out / "results.csv").read_text() == before


def test_same_seed_same_numbers(finished_run, tmp_path):
    out, _ = finished_run
    proc = run_roadmap("run", "--only", "resnet50", "--out", tmp_path, *TINY)
    assert proc.returncode == 0, proc.stderr
    a = pd.read_csv(out / "results.csv").query("run == 'resnet50' and seed == 0").iloc[0]
    b = pd.read_csv(tmp_path / "results.csv").iloc[0]
    assert a["key"] == b["key"]
    assert a["top1"] == b["top1"] and a["train_loss"] == b["train_loss"]


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    # Two epochs of the tiny slice (2 x 20 updates): the kill usually lands mid-epoch.
    args = ["run", "--only", "large_kernel", *TINY, "--set", "max_updates=40", "--set", "epochs=2",
            "--set", "ckpt_every_s=0"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(roadmap_cmd(*args, "--out", killed), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpts = killed / "checkpoints"
    while time.time() < deadline and not (ckpts.is_dir() and any(ckpts.glob("*.pt"))):
        time.sleep(0.2)
    time.sleep(1.0)  # let it get some updates past the first checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(ckpts.glob("*.pt")), "no checkpoint was written before the kill"
    assert not (killed / "results.csv").exists() or len(pd.read_csv(killed / "results.csv")) == 0

    resumed = run_roadmap(*args, "--out", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    straight = run_roadmap(*args, "--out", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr
    a = pd.read_csv(killed / "results.csv")
    b = pd.read_csv(tmp_path / "straight" / "results.csv")
    assert len(a) == 1 and a["resumed"].iloc[0] == 1 and a["updates"].iloc[0] == 40
    assert a["top1"].iloc[0] == b["top1"].iloc[0]
    assert a["train_loss"].iloc[0] == pytest.approx(b["train_loss"].iloc[0], rel=1e-6)
    assert not any(ckpts.glob("*.pt")), "the checkpoint of a finished run is cleaned up"


def test_nan_loss_is_recorded_and_the_run_goes_on(tmp_path):
    proc = run_roadmap("run", "--only", "resnet50,gelu", *TINY, "--set", "lr=1e12",
                       "--set", "warmup_epochs=0", "--out", tmp_path)
    assert proc.returncode == 1, proc.stderr  # both runs ran; the command says some failed
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["status"]) == ["failed", "failed"]
    assert table["error"].str.contains("step resnet50: the training loss became").any()
    assert table["error"].str.contains(r"lr \d", regex=True).all()
    assert "FAILED" in proc.stdout and "Traceback" not in proc.stderr
    assert "2 of 2 run(s) failed: resnet50 seed 0: step resnet50: the training loss" in proc.stderr
    assert not any((tmp_path / "checkpoints").glob("*.pt")), "a NaN run keeps no checkpoint"


def test_missing_data_path_is_one_clear_error(tmp_path):
    proc = run_roadmap("run", "--only", "resnet50", "--data", tmp_path / "nope", "--out", tmp_path)
    assert proc.returncode == 2
    assert "no such file or directory" in proc.stderr and "ImageFolder" in proc.stderr
    assert "Traceback" not in proc.stderr
    (tmp_path / "junk").mkdir()
    proc = run_roadmap("run", "--only", "resnet50", "--data", tmp_path / "junk", "--out", tmp_path)
    assert proc.returncode == 2 and "not a dataset layout" in proc.stderr


def test_bad_step_and_bad_override(tmp_path):
    proc = run_roadmap("run", "--upto", "large_kernal", "--out", tmp_path)
    assert proc.returncode == 2 and "Did you mean 'large_kernel'" in proc.stderr
    proc = run_roadmap("run", "--set", "epochz=3", "--out", tmp_path)
    assert proc.returncode == 2 and "unknown recipe field" in proc.stderr


def test_plot_command_redraws(finished_run):
    out, _ = finished_run
    (out / "trajectory.png").unlink()
    proc = run_roadmap("plot", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "trajectory.png").exists()
