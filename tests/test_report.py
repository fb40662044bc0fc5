"""`roadmap report`: deltas, intervals, agreement with the paper, the files; TensorBoard logs.

Expected numbers are computed here by hand (numpy, explicit formulas, tabulated t
quantiles), never by calling roadmap.report.
"""
import json
import math

import numpy as np
import pandas as pd
import pytest

from helpers import TINY, run_roadmap
from roadmap.cli import main
from roadmap.errors import RoadmapError
from roadmap.report import gather, plot_deltas, transitions, write_report
from roadmap.results import ResultsDir

T975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}  # t quantiles, 97.5%

# Five paper steps, three seeds each; our top-1 is made up so that the changes are
# clearly up, clearly down (paper: a tie), inside the noise, and clearly down (paper: up).
STEPS = [  # run, paper top-1, paper sd, params (M), top-1 per seed 0,1,2, train img/s per seed
    ("resnet50", 78.82, 0.07, 1.5, [70.0, 71.0, 70.5], [400, 410, 390]),
    ("stage_ratio", 79.36, 0.07, 1.6, [72.0, 72.6, 72.2], [380, 370, 390]),
    ("patchify_stem", 79.51, 0.18, 1.6, [71.0, 71.9, 71.1], [500, 520, 510]),
    ("depthwise_conv", 78.28, 0.08, 1.2, [71.5, 71.2, 71.6], [450, 460, 440]),
    ("widen", 80.50, 0.02, 2.4, [69.0, 68.9, 69.4], [300, 310, 320]),
]


def synthetic_rows(steps=STEPS, seeds=(0, 1, 2), **extra):
    rows = []
    for order, (run, paper, sd, params, top1, img_s) in enumerate(steps):
        for i, seed in enumerate(seeds):
            rows.append(dict(order=order, run=run, step=run, variant="", phase="macro design",
                             roadmap="paper", seed=seed, status="ok", top1=top1[i], paper_top1=paper,
                             paper_top1_sd=sd, params_m=params, gflops_224=1.0, paper_gflops=4.0,
                             train_img_s=img_s[i], infer_img_s=1000.0, data="synthetic",
                             preset="demo", key=f"{run}-{seed}"))
            rows[-1].update(extra)
    return rows


def write_csv(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def paired(a, b):
    d = np.array(b) - np.array(a)
    half = T975[len(d) - 1] * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean(), d.mean() - half, d.mean() + half


def welch_half(sa, na, sb, nb):
    from scipy.stats import t
    va, vb = sa ** 2 / na, sb ** 2 / nb
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return t.ppf(0.975, df) * math.sqrt(va + vb)


def hand_ranks(x):
    return np.argsort(np.argsort(x)) + 1.0  # no ties in these tables


def hand_kendall(x, y):
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return s / len(pairs)


def test_deltas_and_intervals_match_hand_computation():
    trans = transitions(pd.DataFrame(synthetic_rows()))
    assert list(trans["from"]) == [s[0] for s in STEPS[:-1]]
    assert list(trans["to"]) == [s[0] for s in STEPS[1:]]
    for k, r in trans.iterrows():
        a, b = STEPS[k], STEPS[k + 1]
        mean, lo, hi = paired(a[4], b[4])
        assert r["method"] == "paired t" and r["n"] == 3
        assert r["delta_mean"] == pytest.approx(mean)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
        assert r["significant"] == (lo > 0 or hi < 0)
        assert r["d_params_m"] == pytest.approx(b[3] - a[3])
        assert r["d_train_img_s"] == pytest.approx(np.mean(b[5]) - np.mean(a[5]))
        assert r["paper_delta"] == pytest.approx(b[1] - a[1])
    # the data were built so that only depthwise_conv's change is inside the noise
    assert list(trans["significant"]) == [True, True, False, True]


def test_sign_agreement_and_rank_correlation_match_hand_computation(tmp_path):
    trans = transitions(pd.DataFrame(synthetic_rows()))
    # the paper's own changes, 95% Welch from Table 10's mean ± sd over 3 seeds
    paper_tie = [abs(b[1] - a[1]) <= welch_half(a[2], 3, b[2], 3) for a, b in zip(STEPS, STEPS[1:])]
    assert paper_tie == [False, True, False, False]  # stage_ratio -> patchify_stem: +0.15 ± 0.38
    assert list(trans["paper_sign"]) == ["+", "0", "-", "+"]
    assert list(trans["ours_sign"]) == ["+", "-", "0", "-"]
    assert list(trans["sign_match"]) == ["match", "tie", "tie", "mismatch"]

    write_report([write_csv(tmp_path, synthetic_rows())], plot=False)
    report = json.loads((tmp_path / "report.json").read_text())
    sign = report["agreement"]["sign"]
    assert (sign["match"], sign["mismatch"], sign["tie"]) == (1, 1, 2)
    assert sign["mismatches"] == ["depthwise_conv -> widen"]
    ours = np.array([np.mean(s[4]) for s in STEPS])
    paper = np.array([s[1] for s in STEPS])
    d = hand_ranks(ours) - hand_ranks(paper)
    n = len(ours)
    rho = 1 - 6 * (d ** 2).sum() / (n * (n ** 2 - 1))
    assert rho == pytest.approx(-0.5)
    assert report["agreement"]["spearman"]["rho"] == pytest.approx(rho)
    assert report["agreement"]["kendall"]["tau"] == pytest.approx(hand_kendall(ours, paper))
    assert [s["paper_top1"] for s in report["steps"]] == list(paper)
    md = (tmp_path / "report.md").read_text()
    assert "paired t-interval over seeds (95%)" in md
    assert "| depthwise_conv → widen | -2.33 |" in md and "no (noise)" in md
    assert "Spearman ρ = -0.500" in md
    assert "3 of 4 changes are distinguishable from zero" in report["findings"]
    assert "not on depthwise_conv -> widen" in report["findings"]


def test_unmatched_seeds_use_a_welch_interval():
    a, b = STEPS[0], STEPS[1]
    rows = synthetic_rows([a]) + synthetic_rows([b], seeds=(3, 4, 5))
    for r in rows[3:]:
        r["order"] = 1
    r = transitions(pd.DataFrame(rows)).iloc[0]
    half = welch_half(np.std(a[4], ddof=1), 3, np.std(b[4], ddof=1), 3)
    delta = np.mean(b[4]) - np.mean(a[4])
    assert r["method"] == "Welch t"
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(delta - half), pytest.approx(delta + half))


def test_one_seed_says_plainly_no_interval(tmp_path, capsys):
    write_csv(tmp_path, synthetic_rows(seeds=(0,)))
    assert main(["report", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "no confidence interval can be given" in out and "--seeds 3" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warnings"] and "--seeds 3" in report["warnings"][0]
    assert all(t["ci_low"] is None and t["method"] == "none" for t in report["transitions"])
    first = report["transitions"][0]
    assert first["delta_mean"] == pytest.approx(72.0 - 70.0)
    assert first["sign_match"] == "unjudged" and first["same_sign"] is True  # paper: +0.54
    assert "no confidence interval can be given" in (tmp_path / "report.md").read_text()
    assert plot_deltas(pd.DataFrame(synthetic_rows(seeds=(0,)))) is None


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no results.csv and no runs"),
    (lambda d: (d / "results.csv").write_text(""), "not a readable table"),
    (lambda d: (d / "results.csv").write_text("run,seed\nresnet50,0\n"), "lacks the columns"),
    (lambda d: write_csv(d, [{k: v for k, v in r.items() if k != "order"} for r in synthetic_rows()]),
     "lack the columns ['order']"),
    (lambda d: write_csv(d, synthetic_rows(status="failed")), "no finished runs"),
])
def test_malformed_folder_is_one_clear_error(tmp_path, capsys, make, message):
    make(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_kernel_sweep_compares_variants_in_kernel_order():
    rows = []
    cfg = dict(kernel_size=3, act="relu", spatial_first=True)
    runs = [("move_up_dwconv", 6, "", cfg), ("large_kernel/k3", 7, "k3", cfg),
            ("large_kernel/k11", 7, "k11", dict(cfg, kernel_size=11)),
            ("large_kernel/k5", 7, "k5", dict(cfg, kernel_size=5)),
            ("large_kernel/k7", 7, "k7", dict(cfg, kernel_size=7)),
            ("gelu", 8, "", dict(cfg, kernel_size=7, act="gelu"))]
    for i, (run, order, variant, c) in enumerate(runs):
        for seed in (0, 1):
            rows.append(dict(order=order, run=run, step=run.split("/")[0], variant=variant, seed=seed,
                             status="ok", top1=60.0 + i + seed, config=json.dumps(c)))
    trans = transitions(pd.DataFrame(rows))
    assert list(zip(trans["from"], trans["to"])) == [
        ("move_up_dwconv", "large_kernel/k3"), ("large_kernel/k3", "large_kernel/k5"),
        ("large_kernel/k5", "large_kernel/k7"), ("large_kernel/k7", "large_kernel/k11"),
        ("large_kernel/k7", "gelu")]


def test_independent_roadmap_compares_each_row_with_the_start():
    start = dict(kernel_size=7, act="gelu", norm="layer")
    runs = [("convnext", start), ("no_large_kernel", dict(start, kernel_size=3)),
            ("no_gelu", dict(start, act="relu")), ("no_layer_norm", dict(start, norm="batch"))]
    rows = [dict(order=i, run=run, seed=seed, status="ok", top1=70.0 + i + seed, config=json.dumps(c))
            for i, (run, c) in enumerate(runs) for seed in (0, 1)]
    trans = transitions(pd.DataFrame(rows))
    assert list(trans["from"]) == ["convnext"] * 3
    assert list(trans["delta_mean"]) == pytest.approx([1.0, 2.0, 3.0])


def test_custom_roadmap_without_paper_numbers(tmp_path):
    rows = synthetic_rows(roadmap="mine", paper_top1=None, paper_top1_sd=None)
    report = write_report([write_csv(tmp_path, rows)], plot=False)
    assert "no comparison with the paper" in report["findings"]
    assert report["agreement"]["sign"]["raw_total"] == 0


def test_several_folders_merge_and_dedupe(tmp_path):
    rows = synthetic_rows(STEPS[:3])
    a, b = ResultsDir(tmp_path / "job0"), ResultsDir(tmp_path / "job1")
    for r in rows:
        (a if r["seed"] == 0 else b).record(r)
    a.record(rows[1])  # the same run in both folders counts once
    with pytest.raises(RoadmapError, match="--out"):
        write_report([a.root, b.root], plot=False)
    report = write_report([a.root, b.root], out=tmp_path / "all", plot=False)
    assert len(gather([tmp_path / "all"])) == len(rows)
    assert list(report["transitions"]["n"]) == [3, 3]
    # the same step and seed with different settings is refused, not averaged
    clash = dict(rows[0], key="other-recipe", top1=10.0)
    ResultsDir(tmp_path / "job2").record(clash)
    with pytest.raises(RoadmapError, match="resnet50 seed 0 appears 2 times"):
        gather([a.root, tmp_path / "job2"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report_run")
    proc = run_roadmap("run", "--only", "resnet50,separate_downsampling", "--seeds", "2",
                       "--log", "tensorboard", "--out", out, *TINY)
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_end_to_end(tiny_run):
    assert (tiny_run / "trajectory.png").stat().st_size > 5000  # drawn with deltas at the end of run
    (tiny_run / "trajectory.png").unlink()
    assert main(["report", str(tiny_run)]) == 0
    md = (tiny_run / "report.md").read_text()
    assert "![trajectory](trajectory.png)" in md and (tiny_run / "trajectory.png").stat().st_size > 5000
    assert "| resnet50 → separate_downsampling |" in md and "paired t" in md
    assert "78.82 ± 0.07" in md and "81.97 ± 0.06" in md
    report = json.loads((tiny_run / "report.json").read_text())
    (t,) = report["transitions"]
    table = pd.read_csv(tiny_run / "results.csv").set_index(["run", "seed"])["top1"]
    diffs = [table["separate_downsampling", s] - table["resnet50", s] for s in (0, 1)]
    assert t["delta_mean"] == pytest.approx(np.mean(diffs)) and t["n"] == 2
    assert report["findings"] in md and not report["warnings"]


def test_tensorboard_curves_one_run_per_step(tiny_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    logs = sorted(p.name for p in (tiny_run / "tensorboard").iterdir())
    assert logs == ["resnet50-seed0", "resnet50-seed1", "separate_downsampling-seed0",
                    "separate_downsampling-seed1"]
    events = EventAccumulator(str(tiny_run / "tensorboard" / "resnet50-seed0"))
    events.Reload()
    updates = 6  # max_updates in TINY
    for tag in ("train/loss", "train/lr", "train/img_s"):
        assert [e.step for e in events.Scalars(tag)] == list(range(1, updates + 1))
    (top1,) = events.Scalars("val/top1")
    results = pd.read_csv(tiny_run / "results.csv").query("run == 'resnet50' and seed == 0")
    assert top1.step == updates and top1.value == pytest.approx(results["top1"].iloc[0])
