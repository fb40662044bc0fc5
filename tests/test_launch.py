"""`roadmap run --launcher submitit`, with submitit's local executor standing in for SLURM."""

import pandas as pd
import pytest

from helpers import TINY, run_roadmap
from roadmap.cli import main
from roadmap.results import read_results

LOCAL = ["--launcher", "submitit", "--cluster", "local", "--timeout-min", "10"]


@pytest.mark.long
def test_one_job_per_step_and_plot_gathers_them(tmp_path):
    proc = run_roadmap("run", *LOCAL, "--only", "resnet50,layer_norm", "--out", tmp_path, *TINY)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("submitted") == 2 and proc.stdout.count("finished") == 2
    # each job wrote its own row and log
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2
    assert len([d for d in (tmp_path / "submitit").iterdir() if any(d.glob("*_result.pkl"))]) == 2
    (tmp_path / "trajectory.png").unlink()
    plot = run_roadmap("plot", tmp_path)
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "trajectory.png").stat().st_size > 5000
    table = read_results(tmp_path)
    assert sorted(table["run"]) == ["layer_norm", "resnet50"] and set(table["status"]) == {"ok"}
    assert list(pd.read_csv(tmp_path / "results.csv")["run"]) == ["resnet50", "layer_norm"]
    again = run_roadmap("run", *LOCAL, "--only", "resnet50,layer_norm", "--out", tmp_path, *TINY)
    assert again.returncode == 0, again.stderr
    assert "2 run(s) done earlier" in again.stdout and "submitted" not in again.stdout


@pytest.mark.long
def test_a_job_with_two_tasks_trains_one_step_with_ddp(tmp_path):
    proc = run_roadmap(
        "run",
        *LOCAL,
        "--tasks-per-node",
        "2",
        "--only",
        "layer_norm",
        "--no-plot",
        "--out",
        tmp_path,
        *TINY,
        "--set",
        "batch_size=16",
    )
    assert proc.returncode == 0, proc.stderr
    row = read_results(tmp_path).iloc[0]
    assert row["status"] == "ok" and row["world_size"] == 2 and row["global_batch"] == 32


def test_cluster_flags_without_submitit_are_an_error(capsys):
    assert main(["run", "--partition", "gpu", "--nodes", "2"]) == 2
    assert "--partition, --nodes need --launcher submitit" in capsys.readouterr().err


def test_a_preempted_job_requeues_itself_and_resumes(tmp_path, monkeypatch):
    import pickle
    from dataclasses import replace

    import torch

    from roadmap import data as D
    from roadmap.launch import RunJob
    from roadmap.plan import data_identity, paper_plan, plan_runs
    from roadmap.recipe import settings
    from roadmap.train import train_run

    spec = paper_plan(only=["gelu"])[0]
    sets = ["train_subset=64", "val_subset=32", "batch_size=16", "max_updates=2", "eval_batch_size=32"]
    recipe, ex = settings("demo", sets)
    job = RunJob(
        [
            "run",
            *[f"--set={s}" for s in sets],
            "--only",
            "gelu",
            "--seeds",
            "1",
            "--seed-offset=1",
            "--out",
            str(tmp_path),
            "--launcher",
            "local",
            "--no-plot",
            "--no-progress",
        ]
    )
    # The run the job was in when preempted left its checkpoint after update 1 of 2.
    ds = D.load_dataset("fashion-mnist").subset(recipe.train_subset, recipe.val_subset)
    run = plan_runs([spec], recipe, data_identity(ds), [1])[0]
    key = run.key
    ckpt = tmp_path / "checkpoints" / f"{key}.pt"
    ckpt.parent.mkdir()

    class Preempted(Exception):
        pass

    def preempt_in_update_2(m):
        if m["update"] == 2:
            raise Preempted

    with pytest.raises(Preempted):
        train_run(
            spec.name,
            run.cfg,
            recipe,
            replace(ex, ckpt_every_s=0),
            ds,
            1,
            torch.device("cpu"),
            str(ckpt),
            progress=False,
            on_update=preempt_in_update_2,
        )
    assert torch.load(ckpt, weights_only=True)["state"]["update"] == 1

    # submitit pickles what checkpoint() returns and submits it again: the same step, seed and folder
    again = pickle.loads(pickle.dumps(job.checkpoint()))
    assert again.function == job and again.args == () and again.kwargs == {}
    monkeypatch.setattr("submitit.JobEnvironment", lambda: type("Env", (), {"num_tasks": 1})())  # one task
    assert again.function(*again.args, **again.kwargs) == 0
    row = read_results(tmp_path).iloc[0]
    assert (row["run"], row["seed"], row["status"], row["key"]) == ("gelu", 1, "ok", key)
    assert row["resumed"] == 1 and row["updates"] == 2, "the requeued job resumed from the checkpoint"
    assert not ckpt.exists()
