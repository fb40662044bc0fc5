"""Third hardening wave, records, terminals and environments (issue 31, items 1, 4-7): every
run record read and written through roadmap.schema; only the tool's own temporary files
cleaned; custom toggles that change nothing refused; malformed launcher variables, ASCII-only
terminals, mathtext-like labels and odd mixup batches as one line or the right result."""

import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import REFERENCE_RECORD, ROOT, as_record, rekey, roadmap_cmd
from roadmap import train as T
from roadmap.cli import main
from roadmap.errors import RoadmapError
from roadmap.results import ResultsDir, atomic_write_text, read_results, results_frame, stale_temp_files
from roadmap.schema import (
    TEMP_PREFIX,
    InvalidFiles,
    check_report_text,
    record_text,
    validate_record_text,
)

REFERENCE = ROOT / "results" / "reference-fashion-mnist"


def _cli(*args, env=None, timeout=120):
    environ = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    return subprocess.run(roadmap_cmd(*args), capture_output=True, text=True, cwd=ROOT, env=environ, timeout=timeout)


def _folder(tmp_path, runs=("resnet50", "stage_ratio")) -> Path:
    """A copy of the committed reference's records of `runs` (its 5 planned seeds each)."""
    out = tmp_path / "ref"
    (out / "runs").mkdir(parents=True)
    for p in (REFERENCE / "runs").glob("*.json"):
        record = json.loads(p.read_text())
        if record["run"] in runs and record["seed"] < 5:
            shutil.copy(p, out / "runs")
    return out


def _edit(folder: Path, change) -> Path:
    """Edit one record of `folder` in place (as a user with an editor would); return it."""
    record = sorted((folder / "runs").glob("*.json"))[0]
    row = json.loads(record.read_text())
    change(row)
    record.write_text(json.dumps(row, indent=1))
    return record


def _one_line(err: str, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("roadmap: error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---- 1. the schema: every committed record, and each kind of bad one -----------------------


def test_every_committed_record_and_report_validates_unchanged():
    records = sorted(glob.glob(str(ROOT / "results" / "**" / "runs" / "*.json"), recursive=True))
    assert len(records) >= 200
    for f in records:
        text = Path(f).read_text()
        assert validate_record_text(f, text) == json.loads(text)
    for f in glob.glob(str(ROOT / "results" / "**" / "report.json"), recursive=True):
        check_report_text(Path(f).read_text(), f)
    # each committed folder as the tools read it: one record per run, none dropped
    for runs in {Path(f).parent for f in records}:
        assert len(ResultsDir(runs.parent).rows()) == len(list(runs.glob("*.json")))


@pytest.mark.parametrize(
    "change, field, expected",
    [
        (lambda r: r.update(seed="1"), "seed", "an integer"),
        (lambda r: r.update(seed=1.0), "seed", "an integer"),  # strict: 1.0 is not the int 1
        (lambda r: r.update(top1=150.0), "top1", "a percentage in [0, 100]"),
        (lambda r: r.update(wall_s=-3.0), "wall_s", "a number > 0"),
        (lambda r: r.pop("wall_s"), "wall_s", "every finished run"),
        (lambda r: r.pop("run"), "run", "required"),
        (lambda r: r["recipe"].update(lr="0.004"), "recipe.lr", "number"),
        (lambda r: r.update(status="done"), "status", '"ok" (finished) or "failed"'),
        (lambda r: r.update(top1=r["top1"] + 1), "top1", "val_correct"),  # a hand-edited score
        (lambda r: r.update(seed=r["seed"] + 7), "key", "the hash"),  # the key no longer matches
        (lambda r: r["recipe"].update(lr=0.01), "key", "the hash"),
    ],
)
def test_a_bad_record_is_one_line_naming_file_and_field(tmp_path, capsys, change, field, expected):
    folder = _folder(tmp_path, runs=("resnet50",))
    record = _edit(folder, change)
    before = record.read_text()
    for command in ("report", "plot"):
        assert main([command, str(folder)]) == 2
        _one_line(capsys.readouterr().err, str(record), f"field {field}:", expected, "delete it")
    assert record.read_text() == before  # named, never removed or rewritten
    assert not (folder / "results.csv").exists()


def test_several_bad_records_are_one_line_each(tmp_path, capsys):
    folder = _folder(tmp_path)
    records = sorted((folder / "runs").glob("*.json"))[:2]
    for r in records:
        r.write_text(json.dumps(dict(json.loads(r.read_text()), top1=150.0)))
    assert main(["report", str(folder)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("roadmap: error: ") for line in lines)
    assert [str(r) in line for r, line in zip(records, lines)] == [True, True]


def test_a_bad_record_stops_the_run_before_training_and_is_kept(tmp_path):
    from roadmap.plan import paper_plan
    from roadmap.recipe import get_preset
    from roadmap.runner import run_plan

    folder = _folder(tmp_path, runs=("resnet50",))
    record = _edit(folder, lambda r: r.pop("top5"))
    before = sorted(p.name for p in folder.rglob("*"))
    with pytest.raises(InvalidFiles, match=rf"{record.name}: field top5: expected"):
        run_plan(
            paper_plan(only=["resnet50"]),
            get_preset("reference"),
            "reference",
            seeds=(0, 1, 2),
            out=str(folder),
            progress=False,
            plot=False,
        )
    assert sorted(p.name for p in folder.rglob("*")) == before  # nothing trained over it


def test_records_are_written_as_validated_and_ints_stay_ints(tmp_path):
    row = as_record(dict(step="gelu", run="gelu", seed=3, top1=70.0, recipe=dict(_recipe(), epochs=4)))
    results = ResultsDir(tmp_path)
    results.record(row)
    text = results.run_file(row["key"]).read_text()
    assert '"epochs": 4,' in text and '"seed": 3,' in text  # not 4.0: the key hashes the JSON
    assert results.load(row["key"]) == json.loads(text)
    with pytest.raises(InvalidFiles, match="field top1: expected a percentage"):
        results.record(dict(row, top1=101.0))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [f"{row['key']}.json"]
    with pytest.raises(InvalidFiles, match="field seed"):
        record_text(dict(row, seed=3.0))


def _recipe():
    return json.loads(REFERENCE_RECORD.read_text())["recipe"]


def test_old_records_without_val_correct_model_key_or_data_id_validate():
    old = sorted((ROOT / "tests" / "data" / "demo-v0.1" / "runs").glob("*.json"))
    assert old and not any("data_id" in json.loads(p.read_text()) for p in old)
    for p in old:
        validate_record_text(p, p.read_text())


def test_a_copied_record_is_one_run_reported_as_a_duplicate(tmp_path, capsys):
    folder = _folder(tmp_path)
    n = len(read_results(folder))
    original = sorted((folder / "runs").glob("*.json"))[0]
    copy = folder / "runs" / "copy of run.json"
    shutil.copy(original, copy)
    table = read_results(folder)
    assert len(table) == n and table["key"].is_unique  # not a fourth seed
    err = capsys.readouterr().err
    assert f"{copy} is a copy of {original}" in err and "counted once" in err
    # a copy whose numbers were changed is not the same run: named, not averaged
    row = json.loads(copy.read_text())
    row.pop("val_correct"), row.pop("val_n")
    copy.write_text(json.dumps(dict(row, top1=row["top1"] - 5)))
    assert main(["report", str(folder)]) == 2
    _one_line(capsys.readouterr().err, str(copy), f"has the key of {original.name} but another top1")


def test_a_record_under_another_name_only_is_named(tmp_path, capsys):
    folder = _folder(tmp_path, runs=("resnet50",))
    record = sorted((folder / "runs").glob("*.json"))[0]
    moved = record.rename(record.with_name("mine.json"))
    assert main(["report", str(folder)]) == 2
    _one_line(capsys.readouterr().err, str(moved), f"rename it to {record.name}")


def test_runs_on_other_data_of_the_same_name_are_never_pooled(tmp_path, capsys):
    """Two folders of the same steps, seeds and data name, but other images (content)."""
    a = _folder(tmp_path / "a", runs=("resnet50",))
    b = tmp_path / "b"
    (b / "runs").mkdir(parents=True)
    for p in (a / "runs").glob("*.json"):
        row = json.loads(p.read_text())
        row = rekey(dict(row, data_id=dict(row["data_id"], content="0" * 16), top1=50.0))
        (b / "runs" / f"{row['key']}.json").write_text(json.dumps(row))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "m"), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "different data under one name" in err and "Traceback" not in err
    assert not (tmp_path / "m" / "report.md").exists()
    # in one folder too: a step on other images is no change of the architecture
    one = _folder(tmp_path / "one", runs=("resnet50",))
    for p in (b / "runs").glob("*.json"):
        row = json.loads(p.read_text())
        row = rekey(dict(row, run="stage_ratio", step="stage_ratio", config=_config("stage_ratio")))
        (one / "runs" / f"{row['key']}.json").write_text(json.dumps(row))
    assert main(["report", str(one), "--no-plot"]) == 2
    _one_line(capsys.readouterr().err, "different data under one name")


def _config(step: str) -> dict:
    from roadmap.registry import config_for

    return config_for(step).replace(num_classes=10, widths=(24, 48, 96, 192)).to_dict()


def test_a_bad_results_csv_row_names_file_row_and_field(tmp_path, capsys):
    (tmp_path / "results.csv").write_text("order,run,step,seed,status,top1\n0,resnet50,resnet50,0,ok,150\n")
    assert main(["report", str(tmp_path)]) == 2
    _one_line(capsys.readouterr().err, "results.csv: field top1: expected a percentage in [0, 100]", "row 2")


# ---- 4. only the tool's own temporary files ------------------------------------------------


def test_temporary_files_carry_the_prefix_and_pid_and_only_they_are_swept(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    atomic_write_text(tmp_path / "results.csv", "x\n")
    assert seen[0].startswith(f"{TEMP_PREFIX}{os.getpid()}-") and seen[0].endswith("-results.csv.part")
    monkeypatch.undo()
    old = time.time() - 3600
    ours = tmp_path / f"{TEMP_PREFIX}123-beef0000-a.json.part"
    users = [tmp_path / "foo.tmp1", tmp_path / ".a.json.tmp123-beef", tmp_path / "notes.tmp"]
    for p in [ours, *users]:
        p.write_text("half")
        os.utime(p, (old, old))
    assert stale_temp_files([tmp_path]) == [ours]
    assert ResultsDir(tmp_path).sweep_temp_files() == [ours]
    assert not ours.exists() and all(p.read_text() == "half" for p in users)


def test_a_full_disk_while_writing_a_record_or_a_checkpoint_says_so(tmp_path, monkeypatch):
    from roadmap import train as T
    from roadmap.train import state

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    row = as_record(dict(step="gelu", run="gelu", seed=0, top1=70.0))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RoadmapError, match=f"no space left on {tmp_path / 'runs'}"):
        ResultsDir(tmp_path).record(row)
    monkeypatch.undo()
    monkeypatch.setattr(state.torch, "save", full)  # torch's own writer
    with pytest.raises(RoadmapError, match=f"no space left on {tmp_path}"):
        T.atomic_torch_save({"a": 1}, str(tmp_path / "k.pt"))
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # no half-written file left


class _TermWhilePickled:
    """Sends this process SIGTERM while torch.save pickles it: an interrupt mid-checkpoint."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        return (dict, ())


def test_sigterm_during_a_checkpoint_waits_for_the_whole_file(tmp_path):
    # Raised inside torch.save's writer, the interrupt became a C++ RuntimeError ("unexpected
    # pos"): the run was recorded as failed and the checkpoint lost. Now the file is written
    # whole, then the interrupt arrives as usual.
    def terminated(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with pytest.raises(KeyboardInterrupt):
            T.atomic_torch_save({"w": torch.ones(1000), "x": _TermWhilePickled()}, str(tmp_path / "k.pt"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    with torch.serialization.safe_globals([dict]):  # what _TermWhilePickled pickles as
        assert torch.equal(torch.load(tmp_path / "k.pt", weights_only=True)["w"], torch.ones(1000))
    assert [p.name for p in tmp_path.iterdir()] == ["k.pt"]  # no temporary file left


# ---- 5. custom roadmaps: a change that changes nothing ----------------------------------


@pytest.mark.parametrize(
    "step, where, what",
    [
        # patch_size is read by the patchify stem only; resnet50 has the ResNet stem
        (dict(name="p", changes=dict(patch_size=2)), "steps[0]", "step 'p' changes nothing"),
        # a real change with a toggle beside it that is already so: refused by name
        (dict(name="g", changes=dict(act="gelu", kernel_size=3)), "key changes.kernel_size", "kernel_size = 3"),
        (dict(name="s", changes=dict(small_input_stem=True)), "key changes.small_input_stem", "set at run time"),
    ],
)
def test_a_toggle_that_changes_nothing_is_refused_by_name(step, where, what):
    from roadmap.custom import Roadmap

    with pytest.raises(RoadmapError) as err:
        Roadmap("noop", steps=[step])
    assert where in str(err.value) and what in str(err.value), str(err.value)


def test_a_no_op_toggle_in_a_file_is_one_line(tmp_path):
    toml = tmp_path / "noop.toml"
    toml.write_text('start = "resnet50"\n[[step]]\nname = "gelu"\nchanges = { act = "gelu", patch_size = 2 }\n')
    res = _cli("run", "--roadmap", toml, "--out", tmp_path / "out", "--no-reference")
    assert res.returncode == 2
    _one_line(res.stderr, f"{toml}, line 4", "patch_size = 2 changes nothing", "patchify stem")
    assert not (tmp_path / "out").exists()


def test_custom_is_parse_validate_plan_over_plain_data():
    from roadmap.custom import RoadmapSpec, _Origin, parse, plan_rows, validate

    origin = _Origin("test")
    spec = parse(origin, "mine", "resnet50", [dict(paper_step="stage_ratio")], "cumulative", "")
    assert isinstance(spec, RoadmapSpec) and spec.steps[0].paper_step == ("stage_ratio",)
    rows = validate(spec, origin)
    assert [r.name for r in rows] == ["resnet50", "stage_ratio"] and rows[1].changes
    specs = plan_rows("mine", rows)
    assert [s.name for s in specs] == ["resnet50", "stage_ratio"] and specs[1].paper_top1 is not None


# ---- 6. environments and terminals ------------------------------------------------------


@pytest.mark.parametrize(
    "env, needle",
    [
        (dict(WORLD_SIZE="2", RANK="x", LOCAL_RANK="0", MASTER_ADDR="h", MASTER_PORT="1"), "RANK='x'"),
        (dict(WORLD_SIZE="two"), "WORLD_SIZE='two'"),
        (dict(WORLD_SIZE="-1"), "WORLD_SIZE='-1'"),
        (dict(WORLD_SIZE="2", RANK="", LOCAL_RANK="0", MASTER_ADDR="h", MASTER_PORT="1"), "without RANK"),
    ],
)
def test_malformed_launcher_variables_are_one_line(tmp_path, env, needle):
    res = _cli("run", "--only", "resnet50", "--out", tmp_path, env=env)
    assert res.returncode == 2
    _one_line(res.stderr, needle)


def test_an_empty_world_size_is_one_process(monkeypatch):
    from roadmap.env import env_int

    monkeypatch.setenv("WORLD_SIZE", "")
    assert env_int("WORLD_SIZE", 1, minimum=1) == 1
    monkeypatch.setenv("WORLD_SIZE", " 3 ")
    assert env_int("WORLD_SIZE", 1, minimum=1) == 3
    monkeypatch.delenv("WORLD_SIZE")
    assert env_int("WORLD_SIZE", 1, minimum=1) == 1


def test_an_ascii_only_stdout_gets_escapes_not_a_traceback(tmp_path):
    res = subprocess.run(
        roadmap_cmd("list"),
        capture_output=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONIOENCODING="ascii", LANG="C", LC_ALL="C"),
        timeout=120,
    )
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr
    assert b"\\xb1" in res.stdout  # the paper's "78.82 ± 0.07"
    res.stdout.decode("ascii")  # every byte ASCII


def test_labels_matplotlib_would_read_as_mathtext_are_drawn_as_written(tmp_path):
    from matplotlib.figure import Figure

    from roadmap.plot import _plain_text, plot_trajectory

    names = ["$x_1$", "$x_$", "a_b$c", r"$\foo$"]  # "$x_$" and "$\foo$" are bad mathtext
    rows = [
        dict(order=i, run=n, step=n, variant="", phase="macro design", roadmap="mine", seed=0, status="ok")
        for i, n in enumerate(names)
    ]
    table = results_frame([dict(r, top1=80.0 + r["order"], data="d$_x", preset="demo") for r in rows])
    paths = plot_trajectory(table, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
    fig = Figure()
    t = fig.text(0, 0, "$x_$")
    _plain_text(fig)
    assert t.get_parse_math() is False


def test_mixup_with_an_odd_batch_is_refused_before_loading(tmp_path):
    from roadmap.recipe import settings

    with pytest.raises(RoadmapError, match="batch_size=5: mixup and cutmix pair the images"):
        settings("demo", ["batch_size=5", "mixup=0.2"])
    recipe, _ = settings("demo", ["batch_size=6", "cutmix=1.0"])
    assert recipe.batch_size == 6
    res = _cli("run", "--only", "resnet50", "--set", "batch_size=3", "--set", "cutmix=1", "--out", tmp_path)
    assert res.returncode == 2
    _one_line(res.stderr, "batch_size=3", "use batch_size=4")


def test_docs_formats_lists_every_field_as_the_schema_declares_it():
    from roadmap.schema import DOCUMENTED, doc_table

    doc = (ROOT / "docs" / "formats.md").read_text(encoding="utf-8")
    for title, model in DOCUMENTED.items():
        assert f"## {title}\n\n{doc_table(model)}\n" in doc, f"docs/formats.md: regenerate the {title} table"


# ---- 7. faults: SIGTERM to the whole process group, DataLoader workers included -----------


@pytest.mark.slow  # ~15 s on the shared 2-core machine: a real run with two loader workers
def test_sigterm_to_the_process_group_with_loader_workers_is_the_interrupted_line(tmp_path):
    import signal

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / c / f"{i}.png"
                )
    sets = dict(batch_size=4, img_size=32, workers=2, max_updates=100000, epochs=1000, width_scale=0.125)
    sets.update(eval_batch_size=8, max_shift=0)
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.Popen(
        roadmap_cmd(
            "run", "--only", "resnet50", "--data", tmp_path / "imgs", "--no-reference", "--out", tmp_path / "out"
        )
        + ["--threads", "1", "--no-progress", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a scheduler starts it
    )
    for line in proc.stdout:
        if line.startswith("roadmap run:"):
            break
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGTERM)  # the training process and its loader workers alike
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    _one_line(err.replace("roadmap: interrupted", "roadmap: error: interrupted"), "interrupted (SIGTERM)", "rerun")
    assert not list((tmp_path / "out").rglob(f"{TEMP_PREFIX}*"))
    assert not list((tmp_path / "out").rglob("*.json"))  # no run recorded as failed by the signal


def test_names_in_bytes_that_are_not_utf8_work(tmp_path, capsys):
    """A folder named in bytes that are not UTF-8 (Linux allows any): records, report.json."""
    folder = tmp_path / os.fsdecode(b"ref-\xff\xfe")
    shutil.copytree(_folder(tmp_path, runs=("resnet50", "stage_ratio")), folder)
    assert main(["report", str(folder), "--no-plot"]) == 0, capsys.readouterr().err
    assert json.loads((folder / "report.json").read_text())["sources"] == [str(folder)]
    row = as_record(dict(step="gelu", run="gelu", seed=0, status="failed", error=f"cannot read {folder}/x.png"))
    for k in ("top1", "top5", "train_loss", "wall_s"):
        row.pop(k)
    ResultsDir(tmp_path / "new").record(row)
    assert ResultsDir(tmp_path / "new").load(row["key"])["error"] == row["error"]


def test_a_full_disk_anywhere_else_is_the_same_documented_line(tmp_path, monkeypatch, capsys):
    import roadmap.cli as C

    def full(argv):  # e.g. a library's own writer (tensorboard, a cache) meets a full disk
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "events.out"))

    monkeypatch.setattr(C, "run_command", full)
    assert main(["list"]) == 2
    _one_line(capsys.readouterr().err, f"no space left on {tmp_path} (writing events.out)")


def test_a_full_disk_while_training_stops_the_run_with_the_line_and_records_nothing(tmp_path, monkeypatch):
    import roadmap.runner as R
    from roadmap.plan import paper_plan
    from roadmap.recipe import settings

    def full(*args, **kwargs):
        raise RoadmapError(f"no space left on {tmp_path} (writing the checkpoint k.pt)")

    monkeypatch.setattr(R, "train_run", full)
    recipe, ex = settings("demo", ["train_subset=256", "val_subset=64"])
    with pytest.raises(RoadmapError, match=f"^no space left on {tmp_path}"):
        R.run_plan(
            paper_plan(only=["resnet50", "stage_ratio"]),
            recipe,
            "demo",
            ex=ex,
            out=str(tmp_path / "out"),
            use_reference=False,
            progress=False,
            plot=False,
        )
    assert not list((tmp_path / "out").rglob("*.json"))  # not recorded as a failed run; the next not tried


def test_hidden_files_in_runs_are_not_records(tmp_path):
    folder = _folder(tmp_path, runs=("resnet50",))
    n = len(read_results(folder))
    record = sorted((folder / "runs").glob("*.json"))[0]
    (folder / "runs" / f"._{record.name}").write_bytes(b"\x00\x05\x16\x07Mac OS X")  # AppleDouble
    assert len(read_results(folder)) == n
