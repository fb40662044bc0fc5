"""The budget study's reading of a change at two budgets, and its learning-curve table."""

import importlib.util
import math

import pandas as pd
import pytest

from helpers import ROOT

spec = importlib.util.spec_from_file_location("budget_study", ROOT / "benchmarks" / "budget_study.py")
B = importlib.util.module_from_spec(spec)
spec.loader.exec_module(B)


def change(delta, resolved):
    return pd.Series(dict(delta=delta, resolved=resolved, p_holm=0.01 if resolved else 0.5))


@pytest.mark.parametrize(
    "short, long, expected",
    [
        (change(-1.0, True), change(-0.8, True), "holds (same sign, resolved)"),
        (change(-1.0, True), change(+0.8, True), "flips"),
        (change(-1.0, True), change(-0.2, False), "shrinks into the noise"),
        (change(-1.0, True), change(+0.3, False), "shrinks into the noise"),
        (change(-1.0, True), change(-1.4, False), "no longer resolved, though not smaller"),
        (change(-0.1, False), change(+0.9, True), "appears (resolved only with more training)"),
        (change(-0.1, False), change(+0.1, False), "within the noise at both"),
        (change(-1.0, True), pd.Series(dict(p_holm=math.nan)), "not yet measured (needs 2 seeds of both steps)"),
    ],
)
def test_a_change_is_read_across_budgets(short, long, expected):
    assert B.reading(short, long) == expected


def test_the_reading_says_whether_the_size_itself_moved():
    short, long = change(-1.0, True), change(-0.2, False)
    moved = pd.Series(dict(shift=0.8, resolved=True, p_holm=0.01))
    assert B.reading(short, long, moved) == "shrinks into the noise; its size moved (+0.80, resolved)"
    still = pd.Series(dict(shift=0.8, resolved=False, p_holm=0.3))
    assert B.reading(short, long, still) == "shrinks into the noise; the shift itself is not resolved"
    assert B.reading(short, change(+0.8, True), moved) == "flips"
    assert B.reading(change(0.1, False), change(-0.1, False), moved) == "within the noise at both"


def test_the_curve_table_averages_the_endpoints_over_seeds():
    curve = lambda a, b: [dict(epoch=1.0, top1=a, top1_ema=None), dict(epoch=2.0, top1=b, top1_ema=b - 1)]
    table = pd.DataFrame(
        dict(
            run=["resnet50", "resnet50", "separate_downsampling", "gelu"],
            seed=[0, 1, 0, 0],
            status="ok",
            top1=[80.0, 82.0, 85.0, 70.0],
            config=None,
            curve=[curve(70.0, 80.0), curve(72.0, 82.0), curve(75.0, 85.0), curve(1.0, 2.0)],
        )
    )
    t = B.curve_table(table).set_index(["step", "epoch"])
    assert set(t.index.get_level_values("step")) == {"resnet50", "separate_downsampling"}
    assert t.loc[("resnet50", 2.0), "top1_mean"] == 81.0 and t.loc[("resnet50", 2.0), "seeds"] == 2
    assert t.loc[("resnet50", 1.0), "top1_sd"] == pytest.approx(2**0.5)
    assert t.loc[("resnet50", 2.0), "top1_ema_mean"] == 80.0 and math.isnan(t.loc[("resnet50", 1.0), "top1_ema_mean"])


def test_the_shift_of_a_change_between_budgets_has_its_own_interval():
    def rows(budget, deltas, se):
        return [dict(budget=budget, change=c, delta=d, se=se, df=10.0) for c, d in zip(B.CHANGES, deltas)]

    n = len(B.CHANGES)
    short = rows("4 epochs", [-1.0] * n, 0.1)
    long = rows("12 epochs", [-1.0, +0.5] + [-1.05] * (n - 2), 0.1)
    moved = B.shift(pd.DataFrame(short + long), ("4 epochs", "12 epochs")).set_index("change")
    first, second, third = (moved.loc[c] for c in list(B.CHANGES)[:3])
    assert first["shift"] == 0.0 and not first["resolved"]
    assert second["shift"] == pytest.approx(1.5) and second["resolved"]
    # equal variances and df: Satterthwaite gives 20 df, se sqrt(0.02)
    assert second["df"] == pytest.approx(20.0)
    half = second["ci_high"] - second["shift"]
    assert half == pytest.approx(B.S.t_quantile(20.0) * 0.02**0.5)
    assert not third["resolved"]  # 0.05 points is well inside ±0.3


def test_a_change_without_an_interval_at_one_budget_gets_no_shift_interval():
    table = pd.DataFrame(
        [
            dict(budget="4 epochs", change="gelu", delta=-1.0, se=0.1, df=10.0),
            dict(budget="12 epochs", change="gelu", delta=-0.5, se=math.nan, df=math.nan),
        ]
    )
    moved = B.shift(table, ("4 epochs", "12 epochs"))
    assert moved.loc[0, "shift"] == 0.5 and math.isnan(moved.loc[0, "ci_low"]) and not moved.loc[0, "resolved"]


def test_a_folder_with_two_budgets_is_scored_at_one(capsys):
    table = pd.DataFrame(dict(run=["gelu", "gelu", "gelu"], epochs=[12.0, 12.0, 8.0], top1=[90.0, 91.0, 80.0]))
    kept = B.at_budget(table, 12, "results/x")
    assert list(kept["top1"]) == [90.0, 91.0]
    assert "results/x: 1 run(s) at 8.0 epochs left out" in capsys.readouterr().out
    assert len(B.at_budget(table.iloc[:2], 12, "results/x")) == 2 and capsys.readouterr().out == ""


def test_the_curve_figure_draws_each_endpoints_mean_and_its_short_budget_end(tmp_path):
    curve = pd.DataFrame(
        dict(
            step=["resnet50"] * 2 + ["separate_downsampling"] * 2,
            epoch=[1.0, 2.0, 1.0, 2.0],
            seeds=2,
            top1_mean=[80.0, 90.0, 82.0, 88.0],
            top1_sd=[1.0, 0.5, 1.0, 0.5],
        )
    )
    short = pd.DataFrame(dict(run=["resnet50"] * 2 + ["separate_downsampling"], seed=[0, 1, 0], status="ok"))
    short = short.assign(top1=[86.0, 88.0, 85.0], config=None)
    fig = B.plot_curve(curve, short, 1.0, ("1 epochs", "2 epochs"), tmp_path)
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    assert list(lines["ResNet-50, 2 epochs (2 seeds)"].get_ydata()) == [80.0, 90.0]
    assert list(lines["ConvNeXt-T (separate_downsampling), 2 epochs (2 seeds)"].get_ydata()) == [82.0, 88.0]
    ends = {c.get_label(): c for c in fig.axes[0].containers}
    assert list(ends["ResNet-50 trained 1 epochs (reference's end)"].lines[0].get_ydata()) == [87.0]
    assert list(ends["ConvNeXt-T (separate_downsampling) trained 1 epochs (reference's end)"].lines[0].get_ydata()) == [
        85.0
    ]
    assert (tmp_path / "curve.png").stat().st_size > 0 and (tmp_path / "curve.svg").stat().st_size > 0


def test_the_committed_study_is_what_its_analysis_makes(tmp_path):
    """`--analyse-only` on a copy of the committed runs rebuilds the committed tables and
    figures byte for byte: what results/budget-study shows is what its command prints."""
    import argparse
    import shutil

    study = ROOT / "results" / "budget-study"
    shutil.copytree(study / "runs", tmp_path / "runs")
    args = argparse.Namespace(
        epochs=12.0, seeds=3, threads=2, out=str(tmp_path), reference=str(ROOT / "results" / "reference-fashion-mnist")
    )
    B.analyse(args)
    for name in ("budget.md", "changes.csv", "shift.csv", "curve.csv", "budget.svg", "curve.svg"):
        assert (tmp_path / name).read_bytes() == (study / name).read_bytes(), name
