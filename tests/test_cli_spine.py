import io

import pandas as pd

from roadmap.cli import main


def test_list_prints_steps_in_order(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    positions = [
        out.index(f" {name} ") for name in ("resnet50", "patchify_stem", "large_kernel", "separate_downsampling")
    ]
    assert positions == sorted(positions)
    assert "81.97" in out and "ResNeXt-ify" in out


def test_flops_csv_parses_and_is_within_tolerance(capsys, flops_traced_once):
    assert main(["flops", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table.columns[:6]) == ["step", "phase", "params_m", "gflops", "paper_gflops", "diff"]
    assert len(table) == 13 and table["diff"].abs().max() <= 0.10


def test_show_prints_the_config_diff(capsys):
    assert main(["show", "large_kernel"]) == 0
    out = capsys.readouterr().out
    assert "kernel_size: 3 -> 7" in out and "7x7 dw" in out
