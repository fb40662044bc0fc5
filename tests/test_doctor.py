"""`roadmap doctor` on this CPU: exits 0 with its table; the GPU checks say why they skip."""

import pytest

from helpers import run_roadmap
from roadmap.doctor import Check, families, table


def test_roadmap_doctor_exits_0_on_the_cpu_with_its_table():
    proc = run_roadmap("doctor", "--device", "cpu", "--threads", "1", timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["check", "result", "figure"] and lines[0].rstrip().endswith("if it fails")
    rows = {line[:30].strip(): line for line in lines[2:] if line.strip()}
    for name in ["install", "data", "host reads"] + [f"family {s}" for s in families()]:
        assert rows[name][30:].split()[0] == "ok", rows[name]
    assert "img/s" in rows["family separate_downsampling"] and "0.10 reads/update" in rows["host reads"]
    for name in [
        "bf16 / TF32",
        "step resnet50",
        "step separate_downsampling",
        "loader feed",
        "DDP 1 process",
        "kill / resume",
        "torch.compile",
    ]:
        assert "skipped  no CUDA device is visible; --all runs it here" in rows[name], rows[name]
    assert "28 of 28 checks passed or skipped" in proc.stdout


def test_a_failed_check_is_a_row_and_the_exit_status(monkeypatch):
    from roadmap import doctor as doc

    monkeypatch.setattr(doc.Doctor, "load_data", lambda self: doc.D.load_dataset("/nonexistent/data"))
    monkeypatch.setattr(doc.Doctor, "_run", lambda self: self.check("data", "make data", self.load_data))
    assert doc.doctor("cpu", verbose=False) == 1


@pytest.mark.parametrize("result", ["ok", "FAIL", "skipped"])
def test_the_table_has_one_row_a_check(result):
    text = table([Check("install", result, "figure", "fix it")])
    assert text.splitlines()[2].split() == ["install", result, "figure", "fix", "it"]
