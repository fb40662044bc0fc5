"""The committed reference: reused by key, kept apart from a user's runs, drawn behind them;
run keys follow the data's content; the small-input stem departure."""

import pandas as pd
import pytest
import torch

from roadmap import data as D
from roadmap import runner
from roadmap.config import ArchConfig
from roadmap.model import RoadmapNet
from roadmap.plan import paper_plan
from roadmap.recipe import get_preset, settings
from roadmap.registry import config_for


@pytest.fixture(scope="module")
def reference(tiny_run_shared):
    """A tiny 'committed reference' (2 steps x 2 seeds): conftest's session run, in a folder
    named as `results/<preset>-<data>` is, and the recipe it was trained with."""
    from helpers import TINY

    sets = [v for flag, v in zip(TINY, TINY[1:]) if flag == "--set"]
    ref = tiny_run_shared.folder
    assert ref.name == "demo-fashion-mnist"
    return ref.parent, settings("demo", sets)


def test_a_new_run_reuses_the_reference_and_writes_apart_from_it(reference, tmp_path, monkeypatch, capsys):
    import roadmap.outputs

    root, (recipe, ex) = reference
    ref = root / "demo-fashion-mnist"
    before = sorted(p.name for p in (ref / "runs").iterdir())
    monkeypatch.setattr(roadmap.outputs, "REFERENCE_ROOT", root)
    drawn = {}
    real = roadmap.outputs.plot_trajectory

    def spy(table, folder, **kw):
        drawn.update(kw)
        return real(table, folder, **kw)

    monkeypatch.setattr(roadmap.outputs, "plot_trajectory", spy)
    monkeypatch.chdir(tmp_path)  # the user's default out: runs/<preset>-<data>
    folder = runner.run_plan(
        paper_plan(only=["resnet50", "separate_downsampling"]), recipe, "demo", ex=ex, seeds=(0, 1), progress=False
    )
    assert folder == runner.Path("runs") / "demo-fashion-mnist"
    out = capsys.readouterr().out
    assert out.count("in the committed reference, skipped") == 4
    mine = pd.read_csv(tmp_path / folder / "results.csv")
    theirs = pd.read_csv(ref / "results.csv")
    assert sorted(mine["key"]) == sorted(theirs["key"]) and sorted(mine["top1"]) == sorted(theirs["top1"])
    assert sorted(p.name for p in (ref / "runs").iterdir()) == before  # the reference is untouched
    assert (tmp_path / folder / "trajectory.png").stat().st_size > 5000
    # the user's figure carries the reference's means and intervals, matched by model
    assert sorted(drawn["reference"]["run"]) == ["resnet50", "separate_downsampling"]
    assert set(drawn["reference"]["model_key"]) == set(mine["model_key"])
    # ... and the terminal table says each step lies inside the reference's range
    table = out[out.index("reference (95% range)") :].splitlines()
    assert [line.split()[0] for line in table[1:3]] == ["resnet50", "separate_downsampling"]
    assert all(line.endswith(" ok") for line in table[1:3])


def test_the_step_table_marks_a_mean_outside_the_reference_range():
    from scipy import stats

    from roadmap.stats import range_half

    band = pd.DataFrame([dict(run="a", model_key="m", mean=80.0, half=0.5, sigma=0.4, df=24, n=3)])
    half = stats.t.ppf(0.975, 24) * 0.4 * (1 / 3 + 1 / 1) ** 0.5
    assert range_half(band.iloc[0], 1) == pytest.approx(half)
    summary = pd.DataFrame(
        dict(run=["a", "b"], model_key=["m", "m"], seeds=[1, 1], top1_mean=[80.0 + half * 0.99, 80.0 + half * 1.01])
    ).assign(top1_std=float("nan"), params_m=1.0, gflops_224=0.1)
    lines = runner.step_lines(summary, band).splitlines()
    assert lines[1].endswith(" ok") and lines[2].endswith(" OUT") and f"80.00 ± {half:.2f}" in lines[2]
    assert "reference" not in runner.step_lines(summary).splitlines()[0]


def test_no_reference_trains_instead_of_reusing(reference, tmp_path, monkeypatch, capsys):
    import roadmap.outputs

    root, (recipe, ex) = reference
    monkeypatch.setattr(roadmap.outputs, "REFERENCE_ROOT", root)
    runner.run_plan(
        paper_plan(only=["resnet50"]),
        recipe,
        "demo",
        ex=ex,
        seeds=(0,),
        out=str(tmp_path),
        progress=False,
        plot=False,
        use_reference=False,
    )
    out = capsys.readouterr().out
    assert "committed reference" not in out and "top-1" in out


def test_reference_band_is_the_pooled_interval_of_each_mean(reference):
    from scipy import stats

    from roadmap.analysis import reference_band
    from roadmap.results import read_results

    root, _ = reference
    table = read_results(root / "demo-fashion-mnist")
    band = reference_band(table).set_index("run")
    y = table.pivot(index="run", columns="seed", values="top1").to_numpy()
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    sigma = (resid**2).sum() ** 0.5  # 2 models x 2 seeds: 1 residual df
    for run, row in zip(["resnet50", "separate_downsampling"], y):
        assert band.loc[run, "mean"] == pytest.approx(row.mean())
        assert band.loc[run, "half"] == pytest.approx(stats.t.ppf(0.975, 1) * sigma / 2**0.5)
        assert (band.loc[run, "sigma"], band.loc[run, "df"], band.loc[run, "n"]) == (pytest.approx(sigma), 1, 2)


def test_run_key_changes_with_the_data_content_not_only_its_name():
    ds = D.load_dataset("fashion-mnist").subset(train=256, val=100)
    other = D.Dataset(
        ds.name,
        ds.source,
        ds.num_classes,
        ds.mean,
        ds.std,
        ds.train_images.clone(),
        ds.train_labels.clone(),
        ds.val_images.clone(),
        ds.val_labels.clone(),
    )
    from roadmap.plan import data_identity, plan_runs

    assert data_identity(other) == data_identity(ds)
    other.train_images[0, 0, 0, 0] ^= 1  # one pixel of one image
    assert data_identity(other) != data_identity(ds)
    spec, recipe = paper_plan(only=["resnet50"]), get_preset("demo")
    assert (
        plan_runs(spec, recipe, data_identity(other), [0])[0].key
        != plan_runs(spec, recipe, data_identity(ds), [0])[0].key
    )


def test_folder_fingerprint_sees_a_changed_image(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            colour = (10, 20, 30) if split == "train" else (10, 20, 40)  # val: its own images
            Image.new("RGB", (8, 8), colour).save(tmp_path / split / c / "x.png")
    first = D.load_dataset(str(tmp_path)).fingerprint()
    Image.new("RGB", (8, 8), (99, 20, 30)).save(tmp_path / "train" / "a" / "x.png")
    assert D.load_dataset(str(tmp_path)).fingerprint() != first


@pytest.mark.parametrize("step", ["resnet50", "separate_downsampling"])
def test_small_input_stem_halves_the_stem_stride_only(step):
    cfg = config_for(step).replace(widths=(16, 32, 64, 128), num_classes=10)
    small = cfg.replace(small_input_stem=True)
    x = torch.randn(2, 3, 32, 32)
    big_map = RoadmapNet(cfg).eval().forward_features(x)
    small_net = RoadmapNet(small).eval()
    assert big_map.shape[-1] == 1 and small_net.forward_features(x).shape[-1] == 2
    assert [f["reduction"] for f in small_net.feature_info] == [2, 4, 8, 16]
    assert [f["reduction"] for f in RoadmapNet(cfg).feature_info] == [4, 8, 16, 32]
    # same blocks, same parameters except none: the max-pool has none, the patchify conv shrinks
    if step == "resnet50":
        assert sum(p.numel() for p in small_net.parameters()) == sum(p.numel() for p in RoadmapNet(cfg).parameters())


def test_cifar_preset_applies_the_departure_to_every_step():
    recipe = get_preset("cifar")
    assert recipe.small_input_stem and not get_preset("imagenet").small_input_stem
    assert all(recipe.apply(s.cfg, 10).small_input_stem for s in paper_plan())
    assert not ArchConfig().small_input_stem


def test_the_figure_spans_the_reference_range_it_draws():
    """A reference range wider than our bars (one seed here, three there) is not cut at the edge."""
    from matplotlib.figure import Figure

    import roadmap.plot as P

    summary = pd.DataFrame(
        dict(run=["a"], model_key=["m"], seeds=[1], top1_mean=[80.0], top1_std=[float("nan")], phase=["macro"])
    ).assign(roadmap="paper", change="x", failed=False, variant="", step="a")
    band = pd.DataFrame([dict(model_key="m", mean=83.0, half=0.5, sigma=2.0, df=4, n=3)])
    marks = P._reference_rows(summary, band)
    ((_, mean, half),) = marks
    assert mean == 83.0 and half == pytest.approx(P.range_half(band.iloc[0], 1))
    ax = Figure().subplots()
    P._bars(ax, summary, summary["top1_mean"], "top-1", [mean - half, mean + half])
    lo, hi = ax.get_xlim()
    assert lo <= mean - half and mean + half < hi
    ax = Figure().subplots()
    P._bars(ax, summary, summary["top1_mean"], "top-1")
    assert ax.get_xlim()[1] < mean + half  # without the reach it would be cut: the test can fail
