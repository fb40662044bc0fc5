import io
import subprocess
import sys

import pandas as pd

from roadmap.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "roadmap", *args], capture_output=True, text=True)


def test_list_prints_steps_in_order(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    positions = [out.index(f" {name} ") for name in ("resnet50", "patchify_stem", "large_kernel",
                                                     "separate_downsampling")]
    assert positions == sorted(positions)
    assert "81.97" in out and "ResNeXt-ify" in out


def test_flops_csv_parses_and_is_within_tolerance(capsys):
    assert main(["flops", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns[:6]) == ["step", "phase", "params_m", "gflops", "paper_gflops", "diff"]
    assert len(table) == 13 and table["diff"].abs().max() <= 0.10


def test_show_prints_the_config_diff(capsys):
    assert main(["show", "large_kernel"]) == 0
    out = capsys.readouterr().out
    assert "kernel_size: 3 -> 7" in out and "7x7 dw" in out


def test_bad_step_is_one_clear_error_without_traceback():
    proc = run_cli("show", "large_kernal")
    assert proc.returncode == 2
    assert "unknown step 'large_kernal'" in proc.stderr and "Did you mean 'large_kernel'" in proc.stderr
    assert "Traceback" not in proc.stderr
