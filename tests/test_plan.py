"""One place makes a run (plan_runs), one store keeps it, one function draws it (issues 16, 22)."""

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest

from helpers import rekey
from roadmap import data as D
from roadmap.cli import main
from roadmap.custom import from_dict, load_roadmap
from roadmap.errors import RoadmapError
from roadmap.outputs import REFERENCE_ROOT, write_outputs
from roadmap.plan import data_identity, paper_plan, plan_runs
from roadmap.recipe import KEY_FIELDS, KEY_FIELDS_LATER, Execution, Recipe, get_preset, settings
from roadmap.runner import run_plan

REFERENCE = REFERENCE_ROOT / "reference-fashion-mnist"


@pytest.fixture(scope="module")
def fmnist_id():
    return data_identity(D.load_dataset("fashion-mnist"))


def test_every_recipe_field_is_placed_in_or_out_of_the_key():
    recipe = {f.name for f in fields(Recipe)}
    assert recipe == set(KEY_FIELDS) | set(KEY_FIELDS_LATER) | {"description"}
    assert not recipe & {f.name for f in fields(Execution)}
    # a switch that only changes speed does not change the key
    r, ex = settings("reference", ["workers=3", "compile=true", "eval_batch_size=7"])
    assert r == get_preset("reference") and ex.workers == 3 and ex.compile


def test_the_committed_reference_keeps_its_keys(fmnist_id):
    """`roadmap run --preset reference --seeds 5` finds all 65 planned runs by key, and every
    other record is a seed its sequential design (`design.json`, up to --max-seeds) asked for."""
    from roadmap.sequential import read_design

    planned = plan_runs(paper_plan(), get_preset("reference"), fmnist_id, range(5))
    have = {p.stem for p in (REFERENCE / "runs").glob("*.json")}
    assert len(planned) == 65 and {r.key for r in planned} <= have
    design = read_design(REFERENCE)
    cap = design.max_seeds if design else 5
    runs = plan_runs(paper_plan(), get_preset("reference"), fmnist_id, range(cap))
    assert have <= {r.key for r in runs}
    models = {
        json.loads(p.read_text())["key"]: json.loads(p.read_text())["model_key"]
        for p in (REFERENCE / "runs").glob("*.json")
    }
    assert all(models[r.key] == r.model_key for r in runs if r.key in have)  # the backfilled model keys agree
    assert len({r.model_key for r in runs}) == 13


def test_rows_rounded_to_the_same_widths_keep_their_own_keys(fmnist_id):
    recipe = get_preset("reference").with_overrides(["width_scale=0.01"])
    runs = plan_runs(paper_plan(only=["depthwise_conv", "widen"]), recipe, fmnist_id, [0])
    assert runs[0].cfg.widths == runs[1].cfg.widths == (8, 8, 8, 8)
    assert runs[0].key != runs[1].key
    rm = from_dict(
        {"name": "w", "start": "resnet50", "step": [{"name": "w68", "changes": {"widths": [68, 128, 256, 512]}}]}
    )
    a, b = plan_runs(rm.plan(), get_preset("reference"), fmnist_id, [0])
    assert a.cfg.widths == b.cfg.widths and a.key != b.key


def test_mixed_precision_on_cuda_is_in_the_key(fmnist_id):
    spec = paper_plan(only=["resnet50"])
    cpu = plan_runs(spec, get_preset("reference"), fmnist_id, [0])[0]
    bf16 = plan_runs(spec, get_preset("reference"), fmnist_id, [0], autocast="bfloat16")[0]
    assert cpu.key != bf16.key


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["width_scale=1e6"], r"width_scale=1e6: width_scale takes a number in \(0, 16\]"),
        (["batch_size=1"], "batch_size=1: batch_size takes an integer >= 2"),
        (["min_lr=1"], "min_lr=1: the cosine decays from lr to min_lr"),
        (["warmup_epochs=5"], "warmup_epochs=5: the warmup must be shorter than the training"),
    ],
)
def test_recipes_that_cannot_mean_what_they_say_are_refused(sets, needle):
    with pytest.raises(RoadmapError, match=needle):
        settings("reference", sets)


@pytest.mark.parametrize(
    "roadmap, upto, order", [("micro_first", "resnet50", 0), ("leave_one_out", "separate_downsampling", 0)]
)
def test_a_reused_run_takes_the_labels_of_the_roadmap_that_reuses_it(tmp_path, roadmap, upto, order):
    rm = load_roadmap(roadmap)
    run_plan(
        rm.plan(upto=upto),
        get_preset("reference"),
        "reference",
        seeds=(0,),
        out=str(tmp_path),
        roadmap=rm.name,
        progress=False,
        plot=False,
    )
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert record["roadmap"] == rm.plan()[0].roadmap != "paper"
    assert record["order"] == order and record["run"] == rm.plan()[0].name
    assert record["reused_from"].startswith(str(REFERENCE))


def _copy_reference(tmp_path, runs=("resnet50", "stage_ratio")) -> Path:
    out = tmp_path / "ref"
    (out / "runs").mkdir(parents=True)
    for p in (REFERENCE / "runs").glob("*.json"):
        record = json.loads(p.read_text())
        if record["run"] in runs and record["seed"] < 5:  # the planned seeds: a complete design
            shutil.copy(p, out / "runs")
    return out


def _other_recipe_run(folder: Path, label="resnet50", **recipe):
    """A record labelled `label` made with another recipe (as `--set lr=1e-2` would make)."""
    src = next(p for p in (folder / "runs").glob("*.json") if json.loads(p.read_text())["run"] == label)
    row = json.loads(src.read_text())
    row["recipe"].update(recipe)
    row = rekey(dict(row, top1=10.0))  # a valid record of another run
    (folder / "runs" / f"{row['key']}.json").write_text(json.dumps(row))


def test_tables_never_average_two_models_under_one_label(tmp_path, capsys):
    folder = _copy_reference(tmp_path)
    _other_recipe_run(folder, lr=1e-2)
    before = sorted(p.name for p in folder.iterdir())
    for argv in (["plot", str(folder)], ["report", str(folder)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "different models" in err or "mix recipes" in err, err
        assert "lr 0.004 vs 0.01" in err and err.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    # run refuses before training anything
    with pytest.raises(RoadmapError, match=r"mix recipes or data \(lr 0.004 vs 0.01\)"):
        run_plan(
            paper_plan(only=["resnet50"]),
            get_preset("reference"),
            "reference",
            seeds=(1,),
            out=str(folder),
            progress=False,
            plot=False,
        )


def test_an_edited_roadmap_row_is_not_a_seed_of_the_old_one(tmp_path, capsys):
    """The same label, recipe and data, another configuration (a row edited from k9 to k11)."""
    folder = _copy_reference(tmp_path)
    src = next(p for p in (folder / "runs").glob("*.json") if json.loads(p.read_text())["run"] == "stage_ratio")
    row = json.loads(src.read_text())
    row["config"]["kernel_size"] = 11
    row = rekey(row)
    (folder / "runs" / f"{row['key']}.json").write_text(json.dumps(row))
    assert main(["plot", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "runs labelled stage_ratio are of different models (kernel_size 3 vs 11)" in err


def test_report_refuses_a_recipe_mix_before_writing_the_merged_folder(tmp_path, capsys):
    a = _copy_reference(tmp_path, runs=("resnet50",))
    b = _copy_reference(tmp_path / "b", runs=("stage_ratio",))
    for p in (b / "runs").glob("*.json"):
        row = json.loads(p.read_text())
        row["recipe"]["width_scale"] = 0.5
        p.unlink()
        row = rekey(row)
        (b / "runs" / f"{row['key']}.json").write_text(json.dumps(row))
    before = sorted(p.name for p in (a / "runs").iterdir())
    assert main(["report", str(a), str(b), "--out", str(a)]) == 2
    assert "width_scale 0.25 vs 0.5" in capsys.readouterr().err
    assert sorted(p.name for p in (a / "runs").iterdir()) == before and not (a / "report.md").exists()


def test_a_table_without_records_is_not_overwritten(tmp_path):
    (tmp_path / "results.csv").write_text("order,run,step,seed,status,top1\n0,resnet50,resnet50,0,ok,90\n")
    with pytest.raises(RoadmapError, match="holds a results.csv but no runs/"):
        run_plan(
            paper_plan(only=["resnet50"]),
            get_preset("reference"),
            "reference",
            out=str(tmp_path),
            progress=False,
            plot=False,
        )
    assert "90" in (tmp_path / "results.csv").read_text()


FIGURES = ("trajectory.png", "changes.png", "trajectory.svg", "changes.svg")


def test_one_folder_gives_the_same_figure_from_run_plot_and_report(tmp_path, capsys):
    """Byte for byte, SVG too (no date, fixed ids): a committed figure changes only with its content."""
    folder = _copy_reference(tmp_path, runs=("resnet50", "stage_ratio", "patchify_stem"))
    shown = []
    for argv in (["plot", str(folder)], ["report", str(folder)]):
        assert main(argv) == 0
        shown.append({p: (folder / p).read_bytes() for p in FIGURES})
    first = write_outputs(folder)
    assert [p.name for p in first["figures"]] == ["trajectory.png", "changes.png"]
    assert shown[0] == shown[1] == {p: (folder / p).read_bytes() for p in shown[0]}
    table = pd.read_csv(folder / "results.csv")
    assert list(table["run"]) == ["resnet50"] * 5 + ["stage_ratio"] * 5 + ["patchify_stem"] * 5


def test_no_import_switches_matplotlibs_backend():
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import roadmap.outputs, roadmap.plot; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg"]
