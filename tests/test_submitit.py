"""`roadmap run --launcher submitit` as a full launcher: every flag reaches the jobs, failed
runs are reported, and resubmitted only with --retry-failed (submitit's local executor)."""

import json
import pickle

import pytest

from helpers import run_roadmap
from roadmap import cli
from roadmap.cli import build_parser
from roadmap.launch import job_argv
from roadmap.results import read_results

LOCAL = ["--launcher", "submitit", "--cluster", "local", "--timeout-min", "10"]
TINY = [
    "--set",
    "max_updates=2",
    "--set",
    "train_subset=256",
    "--set",
    "val_subset=100",
    "--set",
    "batch_size=32",
    "--no-progress",
    "--threads",
    "1",
]


def job_args(folder):
    """The argv of every job submitted into `folder`."""
    return [pickle.loads(p.read_bytes()).function.argv for p in sorted((folder / "submitit").glob("*/*_submitted.pkl"))]


def test_every_flag_reaches_the_job(tmp_path):
    proc = run_roadmap(
        "run", *LOCAL, "--only", "gelu", "--seed-offset", "3", "--no-reference", "--no-plot", "--out", tmp_path, *TINY
    )
    assert proc.returncode == 0, proc.stderr
    (argv,) = job_args(tmp_path)
    assert "--no-reference" in argv and "--set=max_updates=2" in argv and "--threads=1" in argv
    assert argv[argv.index("--only") :] == [
        "--only",
        "gelu",
        "--seeds",
        "1",
        "--seed-offset=3",
        "--data",
        "fashion-mnist",
        "--out",
        str(tmp_path),
        "--launcher",
        "local",
        "--no-plot",
        "--no-progress",
    ]
    row = read_results(tmp_path).iloc[0]
    assert row["status"] == "ok" and row["seed"] == 3 and row["updates"] == 2


def test_job_argv_picks_the_step_variant_and_row():
    parse = lambda *a: build_parser().parse_args(["run", *a])  # noqa: E731
    from roadmap.custom import load_roadmap
    from roadmap.plan import paper_plan

    args = parse(
        "--only",
        "large_kernel",
        "--kernel-sizes",
        "5,9",
        "--log",
        "tensorboard",
        "--retry-failed",
        "--preset",
        "reference",
        "--partition",
        "gpu",
        "--wait",
    )
    spec = paper_plan(only=["large_kernel"], kernel_sizes=[9])[0]
    argv = job_argv(args, cli.run_defaults(), spec, 7, "/data", "/out")
    assert argv[: argv.index("--only")] == ["run", "--preset=reference", "--log=tensorboard", "--retry-failed"]
    assert argv[argv.index("--only") : argv.index("--seeds")] == ["--only", "large_kernel", "--kernel-sizes", "9"]
    custom = load_roadmap("micro_first")
    row = custom.plan()[1]
    argv = job_argv(parse("--roadmap", "micro_first", "--upto", row.name), cli.run_defaults(), row, 0, "/data", "/out")
    which = argv[argv.index("--roadmap") : argv.index("--seeds")]
    assert which == ["--roadmap", "micro_first", "--from", row.name, "--upto", row.name]


@pytest.mark.long
def test_a_failed_run_is_reported_and_resubmitted_only_with_retry_failed(tmp_path):
    # A row named too long for a file name: its TensorBoard folder cannot be made, so the run
    # fails (recorded, in the job) at once; --log must reach the job for that.
    (tmp_path / "long.toml").write_text(
        f'start = "resnet50"\n[[step]]\nname = "{"x" * 300}"\npaper_step = "stage_ratio"\n'
    )
    out = tmp_path / "out"
    run = (
        "run",
        *LOCAL,
        "--roadmap",
        tmp_path / "long.toml",
        "--from",
        "x" * 300,
        "--log",
        "tensorboard",
        "--out",
        out,
        *TINY,
    )
    first = run_roadmap(*run)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert [line for line in first.stderr.splitlines() if line.strip()] == [first.stderr.strip()]
    assert "1 of 1 run(s) failed" in first.stderr and "File name too long" in first.stderr
    assert "--retry-failed" in first.stderr and "FAILED" in first.stdout
    (record,) = (out / "runs").glob("*.json")
    assert json.loads(record.read_text())["status"] == "failed"

    again = run_roadmap(*run)
    assert again.returncode == 1 and "submitting 0" in again.stdout and "submitted" not in again.stdout
    assert "failed earlier" in again.stdout and "--retry-failed to try again" in again.stdout
    assert len(job_args(out)) == 1

    retry = run_roadmap(*run, "--retry-failed")
    assert retry.returncode == 1 and "submitting 1" in retry.stdout, retry.stdout
    argvs = job_args(out)
    assert len(argvs) == 2 and sum("--retry-failed" in a for a in argvs) == 1
    logs = "".join(p.read_text() for p in (out / "submitit").glob("*/*_log.out"))
    assert "trying again (--retry-failed)" in logs


def test_a_preempted_job_requeues_itself():
    from roadmap.launch import RunJob

    job = RunJob(["run", "--only", "gelu", "--seeds", "1", "--seed-offset=1", "--out", "/x"])
    again = job.checkpoint()
    assert again.function is job  # the same argv (step, seed, folder): it resumes from its checkpoint
