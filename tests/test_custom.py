"""Custom roadmaps: the two shipped examples, the Python API, `run --roadmap`, invalid files."""

import textwrap

import pandas as pd
import pytest
import torch

from helpers import ROOT, TINY, run_roadmap
from roadmap.config import ArchConfig
from roadmap.custom import CustomStep, Roadmap, load_roadmap
from roadmap.errors import RoadmapError
from roadmap.measure import count_gflops
from roadmap.model import RoadmapNet
from roadmap.recipe import get_preset
from roadmap.registry import config_for, get_step, step_names

CONVNEXT_T = config_for("separate_downsampling")


def demo_model(cfg: ArchConfig) -> RoadmapNet:
    # the model `roadmap run` trains on the demo preset: widths x0.25, 10 classes
    return RoadmapNet(get_preset("demo").apply(cfg, num_classes=10)).eval()


def _unique_configs():
    seen = {}
    for name in ("micro_first", "leave_one_out"):
        for spec in load_roadmap(name).plan():
            seen.setdefault(spec.cfg, f"{name}:{spec.name}")
    return [pytest.param(cfg, id=label) for cfg, label in seen.items()]


# ---- the shipped examples -----------------------------------------------------------


@pytest.mark.parametrize("cfg", _unique_configs())
def test_every_example_row_builds_runs_and_counts_flops(cfg):
    model = demo_model(cfg)
    assert count_gflops(model, resolution=32) > 0
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_micro_first_reorders_the_paper_roadmap_to_the_same_end():
    rm = load_roadmap("micro_first")
    names = rm.names()
    assert names[:5] == ["resnet50", "gelu", "fewer_activations", "fewer_norms", "layer_norm"]
    assert sorted(names) == sorted(step_names())  # the same twelve changes, another order
    assert rm.rows[-1].cfg == CONVNEXT_T and rm.rows[0].cfg == config_for("resnet50")
    specs = rm.plan()
    assert [s.order for s in specs] == list(range(13)) and {s.roadmap for s in specs} == {rm.name}
    # rows that are exactly a paper step's model carry its numbers; the others none
    assert specs[-1].paper_top1 == 81.97 and specs[0].paper_top1 == 78.82
    assert specs[-2].paper_top1 == get_step("layer_norm").paper_top1  # all but the last change
    assert all(s.paper_top1 is None for s in specs[1:-2])
    assert [s.phase for s in specs[1:5]] == ["micro design"] * 4


def test_leave_one_out_rows_each_revert_exactly_one_change():
    rm = load_roadmap("leave_one_out")
    assert rm.mode == "independent" and rm.rows[0].cfg == CONVNEXT_T
    removed = set()
    for row in rm.rows[1:]:
        diff = CONVNEXT_T.diff(row.cfg)
        assert set(diff) == set(row.changes), row.name
        paper = row.name[len("no_") :]
        if paper in step_names() and paper != "separate_downsampling":
            assert set(diff) == set(get_step(paper).changes), row.name
        else:
            assert len(diff) == 1, row.name  # the last step's three toggles, one at a time
        removed |= set(diff)
    every_change = {k for name in step_names() for k in get_step(name).changes}
    assert removed == every_change
    assert rm.configs()["no_large_kernel"].kernel_size == 3
    assert rm.configs()["no_layer_scale"].layer_scale_init is None


@pytest.mark.parametrize(
    "roadmap,window",
    [
        ("micro_first", ["--upto", "gelu"]),
        ("steps/leave_one_out.toml", ["--from", "no_gelu", "--upto", "no_fewer_activations"]),
    ],
)
def test_tiny_run_of_an_example_writes_results(roadmap, window, tmp_path):
    proc = run_roadmap("run", "--roadmap", roadmap, *window, "--out", tmp_path, "--no-plot", *TINY)
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(tmp_path / "results.csv")
    rm = load_roadmap(roadmap)
    first, last = (window[1], window[-1]) if window[0] == "--from" else (rm.names()[0], window[-1])
    expected = rm.names()[rm.names().index(first) : rm.names().index(last) + 1]
    assert list(table["run"]) == expected and len(expected) == 2
    assert set(table["status"]) == {"ok"} and set(table["roadmap"]) == {rm.name}
    assert table["top1"].between(0, 100).all()


# ---- the Python API -----------------------------------------------------------------


def test_python_roadmap_matches_its_toml_twin(tmp_path):
    steps = [CustomStep(paper_step="gelu"), dict(name="k5", changes={"kernel_size": 5})]
    rm = Roadmap("mine", start="large_kernel", steps=steps)
    assert rm.names() == ["large_kernel", "gelu", "k5"]
    assert rm.rows[1].cfg == config_for("gelu") and rm.plan()[1].paper_top1 == 80.62
    assert rm.rows[2].cfg == config_for("gelu", kernel_size=5) and rm.rows[2].phase == "large kernel"
    path = tmp_path / "mine.toml"
    path.write_text(
        textwrap.dedent("""\
        start = "large_kernel"
        [[step]]
        paper_step = "gelu"
        [[step]]
        name = "k5"
        changes = { kernel_size = 5 }
    """)
    )
    from_file = load_roadmap(path)
    assert from_file.name == "mine" and from_file.configs() == rm.configs()
    assert [s.name for s in from_file.plan(start="gelu")] == ["gelu", "k5"]


def test_upto_from_name_the_roadmaps_own_steps():
    rm = load_roadmap("micro_first")
    with pytest.raises(
        RoadmapError,
        match=r"--upto 'gleu' is not a step of roadmap .*"
        r"Did you mean 'gelu'.*Its steps, in order: resnet50, gelu",
    ):
        rm.plan(upto="gleu")
    with pytest.raises(RoadmapError, match="comes after"):
        rm.plan(start="widen", upto="gelu")


# ---- invalid files ------------------------------------------------------------------

GOOD_HEAD = 'name = "bad"\nstart = "resnet50"\n\n[[step]]\nname = "ok"\nchanges = { act = "gelu" }\n\n'


@pytest.mark.parametrize(
    "body,where,what",
    [
        (
            '[[step]]\nname = "k"\nchanges = { kernal_size = 7 }\n',
            "line 10: [[step]] #2, key changes.kernal_size",
            "unknown toggle 'kernal_size'. Did you mean 'kernel_size'? Valid toggles: depths, widths",
        ),
        (
            '[[step]]\nname = "k"\nchanges = { kernel_size = "7" }\n',
            "line 10: [[step]] #2, key changes.kernel_size",
            'kernel_size = "7" is not allowed; kernel_size takes a positive integer',
        ),
        (
            '[[step]]\nname = "d"\n[step.changes]\ndepths = 3\n',
            "line 11: [[step]] #2, key changes.depths",
            "depths = 3 is not allowed; depths takes a list of positive integers, one per stage",
        ),
        (
            '[[step]]\nname = "n"\nchanges = { norm = "group" }\n',
            "line 10: [[step]] #2, key changes.norm",
            'norm takes one of "batch", "layer"',
        ),
        (
            '[[step]]\nname = "same"\nchanges = { act = "gelu" }\n',
            "line 8: [[step]] #2",
            "step 'same' changes nothing: act = \"gelu\" is already so in row 'ok'",
        ),
        (
            '[[step]]\npaper_step = "large_kernal"\n',
            "line 9: [[step]] #2, key paper_step",
            "unknown step 'large_kernal'. Did you mean 'large_kernel'? Valid steps, in order: resnet50",
        ),
        (
            '[[step]]\nname = "ok"\nchanges = { kernel_size = 5 }\n',
            "line 9: [[step]] #2, key name",
            "'ok' names an earlier row too; row names must be unique",
        ),
        (
            '[[step]]\nname = "x"\nchange = { act = "relu" }\n',
            "line 10: [[step]] #2, key change",
            "unknown key. Did you mean 'changes'? A step's keys: name",
        ),
        (
            '[[step]]\nname = "c"\nchanges = { num_classes = 10 }\n',
            "line 10: [[step]] #2, key changes.num_classes",
            "num_classes is set at run time by the data",
        ),
    ],
)
def test_invalid_file_is_one_error_naming_file_line_key_and_what_is_allowed(tmp_path, body, where, what):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_HEAD + body)
    with pytest.raises(RoadmapError) as err:
        load_roadmap(path)
    assert str(err.value).startswith(f"{path}, {where}: "), str(err.value)
    assert what in str(err.value)


@pytest.mark.parametrize(
    "text,what",
    [
        (
            'start = "resnet5O"\n[[step]]\npaper_step = "gelu"\n',
            "line 1: key start: \"resnet5O\" is not a paper step. Did you mean 'resnet50'?",
        ),
        (
            'mode = "sequential"\n[[step]]\npaper_step = "gelu"\n',
            'line 1: key mode: "sequential" is not allowed; mode is one of "cumulative", "independent"',
        ),
        ('start = "resnet50"\n', "key step: a roadmap needs a list of steps"),
        (
            'start = "resnet50"\n[[step]\n',
            "not valid TOML: Expected ']]' at the end of an array declaration (at line 2, column 7)",
        ),
    ],
)
def test_invalid_top_level(tmp_path, text, what):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RoadmapError, match="^" + str(path).replace("\\", "\\\\")) as err:
        load_roadmap(path)
    assert what in str(err.value)


def test_yaml_roadmap_and_its_errors(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "y.yaml"
    path.write_text(
        "start: widen\nmode: independent\nstep:\n  - paper_step: gelu\n"
        "  - revert: widen\n  - name: k\n    changes:\n      kernel_size: 8\n"
    )
    with pytest.raises(RoadmapError) as err:
        load_roadmap(path)
    assert str(err.value).startswith(f"{path}, line 8: step #3, key changes.kernel_size: kernel_size=8: use an odd")
    path.write_text(path.read_text().replace("8\n", "7\n"))
    rm = load_roadmap(path)
    assert rm.names() == ["widen", "gelu", "no_widen", "k"]
    assert rm.rows[2].cfg == config_for("depthwise_conv")  # independent: applied to `widen` alone


def test_cli_invalid_file_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD_HEAD + '[[step]]\nname = "w"\nchanges = { widths = [96, 192] }\n')
    proc = run_roadmap("run", "--roadmap", path, "--out", tmp_path / "out", *TINY, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"roadmap: error: {path}, line 10: [[step]] #2, key changes.widths: depths (3, 4, 6, 3) "
        "and widths (96, 192) must have one entry per stage"
    ]
    assert not (tmp_path / "out").exists()


def test_unknown_roadmap_name_lists_the_shipped_ones():
    with pytest.raises(RoadmapError, match="no such file.*leave_one_out, micro_first"):
        load_roadmap("micro_frist")


def test_readme_example_loads(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Your own roadmaps") :]
    path = tmp_path / "my_roadmap.toml"
    path.write_text(section[section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml"))])
    rm = load_roadmap(path)
    assert rm.names() == ["large_kernel", "gelu", "k5", "no_stage_ratio"]
    assert str(rm.default_out("demo", "fashion-mnist")) == "runs/demo-fashion-mnist-my_roadmap"
