"""`roadmap run --launcher submitit`, with submitit's local executor standing in for SLURM."""
import pandas as pd

from helpers import TINY, run_roadmap
from roadmap.cli import main
from roadmap.results import read_results

LOCAL = ["--launcher", "submitit", "--cluster", "local", "--timeout-min", "10"]


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


def test_a_job_with_two_tasks_trains_one_step_with_ddp(tmp_path):
    proc = run_roadmap("run", *LOCAL, "--tasks-per-node", "2", "--only", "layer_norm",
                       "--no-plot", "--out", tmp_path, *TINY, "--set", "batch_size=16")
    assert proc.returncode == 0, proc.stderr
    row = read_results(tmp_path).iloc[0]
    assert row["status"] == "ok" and row["world_size"] == 2 and row["global_batch"] == 32


def test_cluster_flags_without_submitit_are_an_error(capsys):
    assert main(["run", "--partition", "gpu", "--nodes", "2"]) == 2
    assert "--partition, --nodes need --launcher submitit" in capsys.readouterr().err

