"""The whole demo roadmap, as `make run` runs it (about 12 minutes on 2 cores): select with -m slow."""

import pandas as pd
import pytest

import roadmap
from helpers import run_roadmap


@pytest.mark.slow
def test_full_demo_roadmap_learns_every_step(tmp_path):
    proc = run_roadmap("run", "--out", tmp_path, "--no-progress", timeout=3600)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["run"]) == list(roadmap.step_names())
    assert (table["status"] == "ok").all()
    # Fashion-MNIST has 10 balanced classes: chance is 10%.
    assert (table["top1"] > 60).all(), table[["run", "top1"]]
