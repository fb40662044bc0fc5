"""roadmap.speed: a run's speed counts only when it had the machine to itself."""

import os
import time

import pandas as pd
import pytest

from helpers import ROOT
from roadmap import speed
from roadmap.results import read_results, summarize


def _runs(img_s, **extra):
    return pd.DataFrame(
        [
            dict(run="a", seed=i, status="ok", threads=2, device="cpu", train_img_s=v, infer_img_s=10.0, wall_s=100.0)
            | {k: vs[i] for k, vs in extra.items()}
            for i, v in enumerate(img_s)
        ]
    )


def test_old_records_are_judged_against_the_steps_fastest_run():
    flags = speed.flags(_runs([1000.0, 900.0, 740.0]))
    assert list(flags == "") == [True, True, False] and "under 75%" in flags[2]


def test_measured_share_and_load_decide_for_new_records():
    table = _runs(
        [1000.0, 1000.0, 1000.0, 400.0],
        cpu_share=[0.95, 0.5, 0.9, 0.95],
        load_start=[2.0, 2.0, 5.0, 2.0],
        load_end=[2.1, 2.0, 2.0, 2.0],
        cores=[2, 2, 2, 2],
    )
    flags = speed.flags(table)
    assert flags[0] == "" and "50%" in flags[1] and "load 5.0 on 2 cores" in flags[2]
    assert flags[3] == ""  # measured clean: not judged by its img/s (another thread count, say)


def test_a_gpu_runs_cpu_share_is_not_read():
    table = _runs([1000.0], cpu_share=[0.1], load_start=[1.0], load_end=[1.0], cores=[16], device=["cuda:0"])
    assert speed.flags(table)[0] == ""


def test_summary_speed_columns_use_clean_runs_and_say_when_none_is():
    table = _runs([1000.0, 1100.0, 100.0]).assign(
        step="a", variant=None, phase="p", roadmap=None, order=0, top1=[80.0, 81.0, 82.0], top5=99.0, top1_ema=None
    )
    for col in ("paper_top1", "paper_top1_sd", "params_m", "gflops", "gflops_224", "paper_gflops", "peak_mem_mb"):
        table[col] = 1.0
    row = summarize(table).iloc[0]
    assert row["seeds"] == 3 and row["top1_mean"] == pytest.approx(81.0)  # accuracy: every run
    assert row["speed_runs"] == 2 and row["train_img_s_median"] == pytest.approx(1050.0)
    assert row["train_img_s_mean"] == pytest.approx(1050.0) and "seed 2" in row["speed_flagged"]
    shared = table.assign(cpu_share=0.3, load_start=1.0, load_end=1.0, cores=2)
    row = summarize(shared).iloc[0]
    assert row["speed_runs"] == 0 and pd.isna(row["train_img_s_median"]) and pd.isna(row["train_img_s_mean"])


def test_occupancy_measures_this_process():
    with speed.Occupancy() as machine:
        end = time.process_time() + 0.2
        while time.process_time() < end:  # busy: one thread's worth of CPU
            pass
    f = machine.fields(threads=1)
    assert 0 < f["cpu_share"] <= 1.05 and f["cores"] == os.cpu_count()
    assert machine.fields(threads=4)["cpu_share"] == pytest.approx(f["cpu_share"] / 4, abs=0.001)


def test_the_reference_meets_the_spread_goal():
    """Issue 33: over its clean runs, each step's train img/s has sd <= half its median."""
    s = summarize(read_results(ROOT / "results" / "reference-fashion-mnist"))
    ratio = s["train_img_s_std"] / s["train_img_s_median"]
    assert (ratio.dropna() <= 0.5).all() and (s["speed_runs"] >= 1).all()
    assert s["speed_flagged"].str.len().gt(0).sum() >= 1  # its paused runs are named


def test_a_speed_cell_says_how_many_runs_it_used_or_that_none_was_clean():
    s = summarize(read_results(ROOT / "results" / "reference-fashion-mnist")).set_index("run")
    r = s.loc["stage_ratio"]  # two of its runs were paused: "median (used of seeds)"
    assert r["speed_runs"] < r["seeds"]
    assert speed.cell(r) == f"{r['train_img_s_median']:.0f} ({int(r['speed_runs'])} of {int(r['seeds'])})"
    assert speed.cell(dict(train_img_s_median=1343.2, speed_runs=3, seeds=3)) == "1343"
    assert speed.cell(dict(train_img_s_median=None, speed_runs=0, seeds=2)) == "no clean run"
    lines = speed.flagged_lines(s.reset_index())
    assert len(lines) >= 3 and any(x.startswith("stage_ratio: seed 0: train 92 img/s") for x in lines)
    csv = pd.read_csv(ROOT / "results" / "reference-fashion-mnist" / "summary.csv")  # blanks read as NaN
    assert speed.flagged_lines(csv) == lines
