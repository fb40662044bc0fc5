"""`roadmap bench` runs and prints its ratios (timings are never asserted: shared CPUs vary)."""

import re

import pytest

from roadmap.cli import main

TINY_BENCH = [
    "--resolution",
    "32",
    "--batch-size",
    "2",
    "--iters",
    "1",
    "--warmup",
    "0",
    "--repeats",
    "1",
    "--threads",
    "1",
    "--device",
    "cpu",
]
RATIO = r"\d+\.\d\dx"


def test_bench_compares_endpoints_with_timm_and_the_runner_with_a_bare_loop(capsys):
    assert main(["bench", *TINY_BENCH]) == 0
    out = capsys.readouterr().out
    assert "roadmap bench on cpu" in out and "batch 2 at 32 px" in out
    assert "timm resnet50" in out and "timm convnext_tiny" in out
    ratios = [line for line in out.splitlines() if line.strip().startswith("ours / timm")]
    # train and infer img/s, then train and infer memory (n/a where it cannot be read)
    speed_then_memory = rf"{RATIO}\s+{RATIO}\s+(n/a|{RATIO})\s+(n/a|{RATIO})$"
    assert len(ratios) == 2 and all(re.search(speed_then_memory, line) for line in ratios)
    runner = out.split("runner (train_run) vs a bare loop")[1].splitlines()
    assert re.search(r"^resnet50\s.*\d+\.\d{3}x\s+-?\d+\.\d%$", runner[2])
    assert re.search(r"^separate_downsampling\s.*\d+\.\d{3}x", runner[3])


def test_steps_without_a_timm_twin_are_measured_alone(capsys):
    assert main(["bench", *TINY_BENCH, "--steps", "gelu", "--no-runner"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^gelu\s+\d+\.\d\d\s", out, re.M)  # its row in the per-step table
    assert "built model vs timm" not in out and "runner (train_run)" not in out
    assert "timm" not in out.split("per step")[1]


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "--steps", "gelux", "--no-runner"]) == 2
    assert "Did you mean 'gelu'" in capsys.readouterr().err
    assert main(["bench", "--iters", "0", "--no-runner"]) == 2


def test_the_roofline_names_each_step_against_the_measured_matmul_ceiling(capsys):
    assert main(["bench", *TINY_BENCH, "--steps", "depthwise_conv,gelu", "--no-runner"]) == 0
    out = capsys.readouterr().out.split("roofline:")[1]
    ceiling = float(re.search(r"float32 matmul measured here: ([\d,.]+) GFLOP/s", out).group(1).replace(",", ""))
    for step in ("depthwise_conv", "gelu"):
        gmacs, img_s, gflop_s, share = re.search(
            rf"^{step}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%$", out, re.M
        ).groups()
        assert float(gflop_s) == pytest.approx(6 * float(gmacs) * float(img_s), rel=0.01, abs=0.1)
        assert float(share) == pytest.approx(100 * float(gflop_s) / ceiling, rel=0.01, abs=0.1)
