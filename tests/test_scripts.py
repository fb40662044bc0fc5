"""The helper scripts under scripts/: they read committed records and print what the README quotes."""

import importlib.util
import json
import shutil

import pytest

from helpers import ROOT


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_costs_sums_a_folders_records(tmp_path):
    costs = load("run_costs")
    src = ROOT / "results" / "demo-fashion-mnist" / "runs"
    (tmp_path / "runs").mkdir()
    recs = []
    for p in sorted(src.glob("*.json"))[:4]:
        shutil.copy(p, tmp_path / "runs")
        recs.append(json.loads(p.read_text()))
    c = costs.costs(str(tmp_path))
    minutes = sorted(r["wall_s"] / 60 for r in recs)
    assert c["runs"] == 4 and c["run_lo"] == pytest.approx(minutes[0]) and c["run_hi"] == pytest.approx(minutes[-1])
    assert c["total_min"] == pytest.approx(sum(minutes))
    cpu = sorted(r["wall_s"] / 60 * r["threads"] for r in recs)
    assert c["cpu_min"] == pytest.approx((cpu[1] + cpu[2]) / 2)
    assert c["run_min"] == pytest.approx((minutes[1] + minutes[2]) / 2)


def test_run_costs_names_an_empty_folder(tmp_path):
    from roadmap.errors import RoadmapError

    (tmp_path / "runs").mkdir()
    with pytest.raises(RoadmapError, match="holds no results.csv"):
        load("run_costs").costs(str(tmp_path))
