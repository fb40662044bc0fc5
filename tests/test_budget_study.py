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
        (change(-0.1, False), change(+0.9, True), "appears (resolved only with more training)"),
        (change(-0.1, False), change(+0.1, False), "within the noise at both"),
        (change(-1.0, True), pd.Series(dict(p_holm=math.nan)), "not yet measured (needs 2 seeds of both steps)"),
    ],
)
def test_a_change_is_read_across_budgets(short, long, expected):
    assert B.reading(short, long) == expected


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
