"""The CLI module itself: fast start, one default folder, shared flags with one set of checks,
--threads capped at the cores, SIGTERM handled like Ctrl-C, bench's errors on one line."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import ROOT, roadmap_cmd
from roadmap import cli

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
    "--no-plot",
]
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def roadmap(*args, timeout=300):
    return subprocess.run(roadmap_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV)


def one_line(proc, *needles, code=2):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and "Traceback" not in proc.stderr, (proc.returncode, proc.stderr)
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


def python(code: str):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ---- starting fast ------------------------------------------------------------------------


def test_list_and_help_import_no_torch():
    out = python("""
        import sys
        from roadmap.cli import main
        assert main(["list"]) == 0
        try:
            main(["--help"])
        except SystemExit:
            pass
        print("heavy:", sorted(m for m in ("torch", "timm", "pandas", "matplotlib") if m in sys.modules))
    """)
    assert "heavy: []" in out and "separate_downsampling" in out


def test_import_roadmap_then_timm_registers_the_models():
    out = python("""
        import roadmap, timm
        print(type(timm.create_model("roadmap_gelu", num_classes=10)).__name__)
        print(type(roadmap.build("resnet50")).__name__, roadmap.RoadmapNet.__name__)
    """)
    assert out.split() == ["RoadmapNet", "RoadmapNet", "RoadmapNet"]
    # the model first: its own `import timm` must not break the registration
    out = python("""
        import roadmap
        roadmap.build("resnet50")
        import timm
        print(len(timm.list_models("roadmap_*")))
    """)
    assert int(out) >= 13


# ---- one default folder -------------------------------------------------------------------


def test_default_out_names_the_dataset_and_the_roadmap():
    from roadmap.plan import default_out_dir

    assert default_out_dir("demo", "fashion-mnist") == Path("runs/demo-fashion-mnist")
    assert default_out_dir("demo", "cifar10", "my roadmap!") == Path("runs/demo-cifar10-my_roadmap")


def test_a_custom_roadmap_on_an_alias_gets_the_canonical_folder(monkeypatch, tmp_path):
    from roadmap import runner

    seen = {}
    monkeypatch.setattr(
        runner, "_train", lambda run, results, *a: seen.update(folder=results.root) or dict(status="ok")
    )
    monkeypatch.setattr(runner, "_finish", lambda *a: None)
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(["run", "--roadmap", "micro_first", "--upto", "resnet50", "--data", "fmnist", "--no-reference", *TINY])
        == 0
    )
    from roadmap.custom import load_roadmap

    name = load_roadmap("micro_first").name
    assert seen["folder"] == runner.default_out_dir("demo", "fashion-mnist", name)
    assert str(seen["folder"]).startswith("runs/demo-fashion-mnist-")


# ---- shared flags: run's checks for bench too ------------------------------------------------

BENCH_ERRORS = [
    (("--resolution", "8"), ["--resolution", "at least 32"]),
    (("--resolution", "16"), ["--resolution", "at least 32"]),  # run refuses it: so does bench
    (("--resolution", "0"), ["--resolution", "at least 32"]),  # not "--set img_size=0"
    (("--threads", "-1"), ["--threads -1", "at least 1"]),
    (("--set", "img_size=16"), ["img_size", "--resolution"]),
    (("--set", "epochz=3"), ["unknown recipe field", "did you mean 'epochs'"]),
    (("--device", "foo"), ["--device foo", "cpu"]),
]


@pytest.mark.parametrize("flags,needles", BENCH_ERRORS, ids=[" ".join(f) for f, _ in BENCH_ERRORS])
def test_bench_errors_are_one_clear_line(flags, needles):
    line = one_line(roadmap("bench", *flags), *needles)
    assert "unexpected" not in line and "img_size=0" not in line


def test_threads_beyond_the_cores_are_capped_with_a_note(tmp_path):
    cores = len(os.sched_getaffinity(0))
    start = time.time()
    proc = roadmap(
        "run", "--only", "resnet50", "--threads", "999", "--no-reference", "--out", tmp_path, *TINY, timeout=240
    )
    assert proc.returncode == 0, proc.stderr
    assert f"--threads 999: only {cores} core(s) available here; using {cores}" in proc.stderr
    assert time.time() - start < 240


# ---- SIGTERM --------------------------------------------------------------------------------


def test_sigterm_is_an_interrupt_with_the_resume_message(tmp_path):
    proc = subprocess.Popen(
        roadmap_cmd(
            "run",
            "--only",
            "resnet50",
            "--no-reference",
            "--out",
            tmp_path,
            "--threads",
            "1",
            *TINY,
            "--set",
            "max_updates=100000",
            "--set",
            "epochs=1000",
        ),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # the run has started training once it has printed its plan
        if line.startswith("roadmap run:"):
            break
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted (SIGTERM)" in lines[0] and "rerun" in lines[0], lines
    assert not list(tmp_path.rglob(".roadmap-tmp-*")), "an interrupted run left temporary files"
