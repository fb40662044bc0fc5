"""`roadmap report`: deltas, intervals, agreement with the paper, the files; TensorBoard logs.

Expected numbers are computed here by hand (numpy, explicit ANOVA formulas, scipy's t
distribution), never by calling roadmap.report; tests/test_stats.py simulates coverage and Holm.
"""

import itertools
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as t_dist

from helpers import ROOT, as_record
from roadmap.analysis import analyse, gather, plot_deltas, transitions
from roadmap.cli import main
from roadmap.errors import RoadmapError
from roadmap.outputs import write_report
from roadmap.report import build
from roadmap.results import ResultsDir
from roadmap.schema import training_identity

# Five paper steps, three seeds each; our top-1 is made up so that the changes are
# up like the paper's (its +0.54 inside our interval), clearly down (paper: a tie), inside
# the noise, and clearly down (paper: up).
STEPS = [  # run, paper top-1, paper sd, params (M), top-1 per seed 0,1,2, train img/s per seed
    ("resnet50", 78.82, 0.07, 1.5, [70.0, 71.0, 70.5], [400, 410, 390]),
    ("stage_ratio", 79.36, 0.07, 1.6, [70.5, 71.7, 71.1], [380, 370, 390]),
    ("patchify_stem", 79.51, 0.18, 1.6, [69.5, 70.6, 70.0], [500, 520, 510]),
    ("depthwise_conv", 78.28, 0.08, 1.2, [69.8, 70.5, 70.1], [450, 460, 440]),
    ("widen", 80.50, 0.02, 2.4, [68.0, 68.9, 68.4], [300, 310, 320]),
]


def synthetic_rows(steps=STEPS, seeds=(0, 1, 2), **extra):
    rows = []
    for order, (run, paper, sd, params, top1, img_s) in enumerate(steps):
        for i, seed in enumerate(seeds):
            rows.append(
                dict(
                    order=order,
                    run=run,
                    step=run,
                    variant="",
                    phase="macro design",
                    roadmap="paper",
                    seed=seed,
                    status="ok",
                    top1=top1[i],
                    paper_top1=paper,
                    paper_top1_sd=sd,
                    params_m=params,
                    gflops_224=1.0,
                    paper_gflops=4.0,
                    train_img_s=img_s[i],
                    infer_img_s=1000.0,
                    data="synthetic",
                    preset="demo",
                    key=f"{run}-{seed}",
                )
            )
            rows[-1].update(extra)
    return rows


def write_csv(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    return folder


def hand_ranks(x):
    return np.argsort(np.argsort(x)) + 1.0  # no ties in these tables


def hand_kendall(x, y):
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return s / len(pairs)


def two_way(steps, seeds):
    """Hand-computed complete-design ANOVA (model + seed): residual variance and df."""
    y = np.array([s[4][: len(seeds)] for s in steps], dtype=float)  # models x seeds
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    df = (y.shape[0] - 1) * (y.shape[1] - 1)
    return (resid**2).sum() / df, df


def own_variances(steps, seeds):
    """Each model's share of the two-way residuals: variance with (n-1)(K-1)/K df."""
    y = np.array([s[4][: len(seeds)] for s in steps], dtype=float)
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    k, n = y.shape
    own_df = (n - 1) * (k - 1) / k
    return (resid**2).sum(1) / own_df, own_df


def welch(va, da, vb, db):
    """Variance of a sum and its Welch-Satterthwaite df."""
    return va + vb, (va + vb) ** 2 / (va**2 / da + vb**2 / db)


def hand_holm(p):
    p = np.asarray(p, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adj = np.maximum.accumulate([(m - i) * p[j] for i, j in enumerate(order)])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def spearman_by_hand(x, y):
    d = hand_ranks(x) - hand_ranks(y)
    n = len(x)
    return 1 - 6 * (d**2).sum() / (n * (n**2 - 1))


def test_deltas_intervals_and_holm_match_hand_computation():
    trans = transitions(pd.DataFrame(synthetic_rows()))
    assert list(trans["from"]) == [s[0] for s in STEPS[:-1]]
    assert list(trans["to"]) == [s[0] for s in STEPS[1:]]
    var, own_df = own_variances(STEPS, (0, 1, 2))
    assert own_df == pytest.approx(2 * 4 / 5)
    p_hand = []
    for k, r in trans.iterrows():
        a, b = STEPS[k], STEPS[k + 1]
        delta = np.mean(b[4]) - np.mean(a[4])  # Δ is the difference of the means
        v, df = welch(var[k] / 3, own_df, var[k + 1] / 3, own_df)
        se, t = math.sqrt(v), t_dist.ppf(0.975, df)
        assert r["delta"] == pytest.approx(delta)
        assert r["se"] == pytest.approx(se) and r["df"] == pytest.approx(df)
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(delta - t * se), pytest.approx(delta + t * se))
        # no per-image correctness here: the full interval is the seed-only one
        assert (r["ci_low_seed"], r["ci_high_seed"]) == (pytest.approx(r["ci_low"]), pytest.approx(r["ci_high"]))
        p_hand.append(2 * t_dist.sf(abs(delta) / se, df))
        assert r["p"] == pytest.approx(p_hand[-1])
        assert r["d_params_m"] == pytest.approx(b[3] - a[3])
        assert r["d_train_img_s"] == pytest.approx(np.mean(b[5]) - np.mean(a[5]))
        assert r["paper_delta"] == pytest.approx(b[1] - a[1])
    assert list(trans["p_holm"]) == pytest.approx(list(hand_holm(p_hand)))
    assert list(trans["resolved"]) == list(hand_holm(p_hand) < 0.05)
    # the data were built so that only patchify_stem -> depthwise_conv is inside the noise
    assert list(trans["resolved"]) == [True, True, False, True]


def test_paper_judged_with_the_pooled_table10_sd_and_sign_table(tmp_path):
    from roadmap.steps import ROADMAP

    sds = [s.paper_top1_sd for s in ROADMAP]
    pooled = math.sqrt(np.mean(np.square(sds)))
    half = t_dist.ppf(0.975, 2 * len(sds)) * pooled * math.sqrt(2 / 3)
    assert pooled == pytest.approx(0.096, abs=5e-4) and half == pytest.approx(0.161, abs=1e-3)  # the audit's
    trans = transitions(pd.DataFrame(synthetic_rows()))
    paper = [b[1] - a[1] for a, b in zip(STEPS, STEPS[1:])]  # +0.54, +0.15, -1.23, +2.22
    assert list(trans["paper_sign"]) == [("0" if abs(d) <= half else "+" if d > 0 else "-") for d in paper]
    assert list(trans["paper_sign"]) == ["+", "0", "-", "+"]
    assert list(trans["ours_sign"]) == ["+", "-", "0", "-"]
    assert list(trans["verdict"]) == [
        "replicates",
        "ours only (paper: within its noise)",
        "open here (paper: resolved)",
        "flips",
    ]
    first = trans.iloc[0]
    assert first["ci_low"] <= first["paper_delta"] <= first["ci_high"]  # what "replicates" means

    write_report([write_csv(tmp_path, synthetic_rows())], plot=False)
    report = json.loads((tmp_path / "report.json").read_text())
    for t in report["transitions"]:  # the contract other tools read
        assert {
            "from",
            "to",
            "delta",
            "ci_low",
            "ci_high",
            "p",
            "p_holm",
            "resolved",
            "paper_delta",
            "paper_sign",
            "ours_sign",
            "ci_low_seed",
            "ci_high_seed",
            "equivalence_bound",
        } <= set(t)
        assert t["state"] in ("resolved", "equivalent", "open") and t["resolved"] == (t["state"] == "resolved")
        assert t["equivalence_bound"] > 0  # every judged change has its bound, resolved or not
    a = report["agreement"]
    assert a["sign_matches"] == 1 and 0 < a["sign_agreement_p"] <= 1
    # rows ours (-, 0, +), columns paper (-, 0, +)
    assert a["sign_table"]["counts"] == [[0, 1, 1], [1, 0, 0], [0, 0, 1]]
    assert a["sign_fisher_p"] is not None and 0 <= a["sign_fisher_p"] <= 1
    # rank correlation of the per-transition Δs, exact permutation p over the 4! pairings
    ours = np.array([np.mean(b[4]) - np.mean(a_[4]) for a_, b in zip(STEPS, STEPS[1:])])
    rho = spearman_by_hand(ours, np.array(paper))
    perms = [spearman_by_hand(ours, np.array(paper)[list(q)]) for q in itertools.permutations(range(4))]
    p_exact = np.mean([abs(r) >= abs(rho) - 1e-12 for r in perms])
    assert a["delta_spearman"]["rho"] == pytest.approx(rho)
    assert a["delta_spearman"]["p"] == pytest.approx(p_exact)
    assert a["delta_kendall"]["tau"] == pytest.approx(hand_kendall(ours, np.array(paper)))
    n = report["noise"]
    sigma, df = math.sqrt(two_way(STEPS, (0, 1, 2))[0]), 8
    assert n["seed_sd"] == pytest.approx(sigma)
    from scipy.stats import chi2

    assert n["seed_sd_ci"] == pytest.approx(
        [sigma * math.sqrt(df / chi2.ppf(0.975, df)), sigma * math.sqrt(df / chi2.ppf(0.025, df))]
    )
    assert set(n["seeds_needed"]) == {"0.3", "0.5", "1.0"} == set(n["power_holm"])
    assert n["seeds_needed"]["0.3"] >= n["seeds_needed"]["0.5"] >= n["seeds_needed"]["1.0"] >= 2
    assert n["family"] == 4 and all(n["power_holm"][k] < n["power_now"][k] for k in n["power_now"])
    md = (tmp_path / "report.md").read_text()
    assert re.search(r"\| patchify_stem → depthwise_conv +\| +\+0.10 \|", md) and "open here (paper: resolved)" in md
    assert "at Holm's strictest level (5% / 4)" in md and "seeds only" in md
    assert "3 of 4 changes are resolved" in report["findings"]
    assert "1 flip (widen)" in report["findings"]
    r = trans.iloc[2]
    assert r["state"] == "open" and r["seeds_to_decide"] >= 2
    assert (
        f"1 is open (neither resolved nor within ±0.5): depthwise_conv ({r['delta']:+.2f}, needs about "
        in (report["findings"])
    )


def test_fisher_on_a_2x2_sign_table_is_the_exact_hypergeometric_p():
    from roadmap import stats as S

    ours, paper = ["+"] * 4 + ["0"] * 4, ["+", "+", "+", "0", "0", "0", "0", "+"]
    t = S.sign_table(ours, paper)

    # [[3, 1], [1, 3]] (ours + / 0 by paper + / 0 after dropping empty rows and columns)
    def prob(a):
        return math.comb(4, a) * math.comb(4, 4 - a) / math.comb(8, 4)

    p_obs = prob(3)
    hand = sum(prob(a) for a in range(5) if prob(a) <= p_obs + 1e-12)
    assert t["fisher_p"] == pytest.approx(hand)


def test_disjoint_seed_sets_use_welch_and_keep_the_difference_of_means():
    a, b, c = STEPS[0], STEPS[1], STEPS[2]
    rows = synthetic_rows([a]) + synthetic_rows([b], seeds=(3, 4, 5)) + synthetic_rows([c], seeds=(0, 7))
    for r in rows[3:6]:
        r["order"] = 1
    for r in rows[6:]:
        r["order"] = 2
    trans = transitions(pd.DataFrame(rows))
    groups = [a[4], b[4], c[4][:2]]
    for k, (x, y) in enumerate([(groups[0], groups[1]), (groups[1], groups[2])]):
        r = trans.iloc[k]
        # no shared seeds, no block: each step's own sample variance, Welch's interval
        v, df = welch(np.var(x, ddof=1) / len(x), len(x) - 1, np.var(y, ddof=1) / len(y), len(y) - 1)
        se = math.sqrt(v)
        half = t_dist.ppf(0.975, df) * se
        assert r["delta"] == pytest.approx(np.mean(y) - np.mean(x))
        assert (r["ci_low"], r["ci_high"]) == (pytest.approx(r["delta"] - half), pytest.approx(r["delta"] + half))


def test_single_seed_step_gets_an_interval_from_the_pool():
    rows = synthetic_rows(STEPS[:3])
    rows = [r for r in rows if not (r["run"] == "stage_ratio" and r["seed"] > 0)]
    trans = transitions(pd.DataFrame(rows))
    assert trans["ci_low"].notna().all()
    assert trans.iloc[0]["delta"] == pytest.approx(STEPS[1][4][0] - np.mean(STEPS[0][4]))


def test_zero_variance_step_never_gives_a_zero_width_resolved_interval(tmp_path):
    rows = synthetic_rows(STEPS[:3])
    for r in rows:
        if r["run"] == "stage_ratio":
            r["top1"] = 72.0  # identical over seeds
    trans = transitions(pd.DataFrame(rows))
    assert (trans["ci_high"] - trans["ci_low"] > 0.1).all()
    same = synthetic_rows(STEPS[:3])
    for r in same:
        r["top1"] = 70.0 + r["order"]  # the seed changes nothing anywhere
    report = write_report([write_csv(tmp_path, same)], plot=False)
    assert not report["transitions"]["resolved"].any()
    assert report["transitions"]["ci_low"].isna().all()
    assert any("seed changed nothing" in w for w in report["warnings"])


def test_nan_top1_is_a_failed_run_with_a_warning(tmp_path, capsys):
    rows = synthetic_rows(STEPS[:3])
    rows[4]["top1"] = float("nan")  # stage_ratio seed 1
    write_csv(tmp_path, rows)
    assert main(["report", str(tmp_path), "--no-plot"]) == 0
    assert "stage_ratio seed 1" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    sr = next(s for s in report["steps"] if s["run"] == "stage_ratio")
    assert sr["seeds"] == 2 and sr["top1_mean"] == pytest.approx((STEPS[1][4][0] + STEPS[1][4][2]) / 2)


def test_a_step_far_noisier_than_the_pool_is_warned_about():
    steps = [(f"s{i}", 80.0, 0.1, 1.0, [70.0 + i, 70.1 + i, 69.9 + i, 70.05 + i], [1, 1, 1, 1]) for i in range(6)]
    steps[3] = ("s3", 80.0, 0.1, 1.0, [70.0, 75.0, 66.0, 73.0], [1, 1, 1, 1])
    report = build(pd.DataFrame(synthetic_rows(steps, seeds=(0, 1, 2, 3))))
    assert any(w.startswith("s3: seed sd") for w in report["warnings"])
    calm = build(pd.DataFrame(synthetic_rows(STEPS)))
    assert not any("seed sd" in w for w in calm["warnings"])


def test_same_model_under_two_labels_is_one_point():
    cfg = json.dumps(dict(kernel_size=7))
    rows = [
        dict(
            order=7,
            run="large_kernel",
            step="large_kernel",
            variant="",
            seed=s,
            status="ok",
            top1=80.0 + s,
            config=cfg,
            key=f"a{s}",
        )
        for s in (0, 1)
    ]
    rows += [
        dict(
            order=7,
            run="large_kernel/k7",
            step="large_kernel",
            variant="k7",
            seed=s,
            status="ok",
            top1=80.0 + s,
            config=cfg,
            key=f"b{s}",
        )
        for s in (2, 3)
    ]
    rows += [
        dict(
            order=8,
            run="gelu",
            step="gelu",
            variant="",
            seed=s,
            status="ok",
            top1=81.0 + s,
            config=json.dumps(dict(kernel_size=7, act="gelu")),
            key=f"c{s}",
        )
        for s in (0, 1)
    ]
    steps, trans, fit = analyse(pd.DataFrame(rows))
    assert len(fit.names) == 2
    pooled = np.mean([80.0, 81.0, 82.0, 83.0])
    assert list(steps.set_index("run").loc[["large_kernel", "large_kernel/k7"], "top1_mean"]) == [pooled] * 2
    same = trans[trans["same_model"]]
    assert len(same) == 1 and same["p"].isna().all() and not same["resolved"].any()


def test_folder_written_by_the_previous_version_is_still_read(tmp_path):
    import shutil

    old = ROOT / "tests" / "data" / "demo-v0.1"
    shutil.copytree(old, tmp_path / "old")
    report = write_report([tmp_path / "old"], plot=False)
    assert len(report["transitions"]) == 12 and any("one seed" in w for w in report["warnings"])


def test_one_seed_says_plainly_no_interval(tmp_path, capsys):
    write_csv(tmp_path, synthetic_rows(seeds=(0,)))
    assert main(["report", str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "no residual degrees of freedom" in out and "--seeds 3" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["warnings"] and "--seeds 3" in report["warnings"][0]
    assert all(t["ci_low"] is None and t["resolved"] is False for t in report["transitions"])
    first = report["transitions"][0]
    assert first["delta"] == pytest.approx(STEPS[1][4][0] - STEPS[0][4][0])
    assert first["ours_sign"] == ""
    assert plot_deltas(pd.DataFrame(synthetic_rows(seeds=(0,)))) is None


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: None, "no results.csv and no runs"),
        (lambda d: (d / "results.csv").write_text(""), "not a readable table"),
        (lambda d: (d / "results.csv").write_text("run,seed\nresnet50,0\n"), "lacks the columns"),
        (
            lambda d: write_csv(d, [{k: v for k, v in r.items() if k != "order"} for r in synthetic_rows()]),
            "lacks the columns ['order']",
        ),
        (lambda d: write_csv(d, synthetic_rows(status="failed")), "no finished runs"),
    ],
)
def test_malformed_folder_is_one_clear_error(tmp_path, capsys, make, message):
    make(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_kernel_sweep_compares_variants_in_kernel_order():
    rows = []
    cfg = dict(kernel_size=3, act="relu", spatial_first=True)
    runs = [
        ("move_up_dwconv", 6, "", cfg),
        ("large_kernel/k3", 7, "k3", cfg),
        ("large_kernel/k11", 7, "k11", dict(cfg, kernel_size=11)),
        ("large_kernel/k5", 7, "k5", dict(cfg, kernel_size=5)),
        ("large_kernel/k7", 7, "k7", dict(cfg, kernel_size=7)),
        ("gelu", 8, "", dict(cfg, kernel_size=7, act="gelu")),
    ]
    for i, (run, order, variant, c) in enumerate(runs):
        for seed in (0, 1):
            rows.append(
                dict(
                    order=order,
                    run=run,
                    step=run.split("/")[0],
                    variant=variant,
                    seed=seed,
                    status="ok",
                    top1=60.0 + i + seed,
                    config=json.dumps(c),
                )
            )
    trans = transitions(pd.DataFrame(rows))
    assert list(zip(trans["from"], trans["to"])) == [
        ("move_up_dwconv", "large_kernel/k3"),
        ("large_kernel/k3", "large_kernel/k5"),
        ("large_kernel/k5", "large_kernel/k7"),
        ("large_kernel/k7", "large_kernel/k11"),
        ("large_kernel/k7", "gelu"),
    ]


def test_independent_roadmap_compares_each_row_with_the_start():
    start = dict(kernel_size=7, act="gelu", norm="layer")
    runs = [
        ("convnext", start),
        ("no_large_kernel", dict(start, kernel_size=3)),
        ("no_gelu", dict(start, act="relu")),
        ("no_layer_norm", dict(start, norm="batch")),
    ]
    rows = [
        dict(order=i, run=run, seed=seed, status="ok", top1=70.0 + i + seed, config=json.dumps(c))
        for i, (run, c) in enumerate(runs)
        for seed in (0, 1)
    ]
    trans = transitions(pd.DataFrame(rows))
    assert list(trans["from"]) == ["convnext"] * 3
    assert list(trans["delta"]) == pytest.approx([1.0, 2.0, 3.0])


def test_custom_roadmap_without_paper_numbers(tmp_path):
    rows = synthetic_rows(roadmap="mine", paper_top1=None, paper_top1_sd=None)
    report = write_report([write_csv(tmp_path, rows)], plot=False)
    assert "no comparison with the paper" in report["findings"]
    assert report["agreement"]["sign_fisher_p"] is None and report["agreement"]["sign_agreement_p"] is None
    assert report["agreement"]["sign_table"]["counts"] == [[0] * 3] * 3


def test_several_folders_merge_and_dedupe(tmp_path):
    rows = synthetic_rows(STEPS[:3])
    a, b = ResultsDir(tmp_path / "job0"), ResultsDir(tmp_path / "job1")
    rows = [as_record(r) for r in rows]
    for r in rows:
        (a if r["seed"] == 0 else b).record(r)
    a.record(rows[1])  # the same run in both folders counts once
    with pytest.raises(RoadmapError, match="--out"):
        write_report([a.root, b.root], plot=False)
    report = write_report([a.root, b.root], out=tmp_path / "all", plot=False)
    assert len(gather([tmp_path / "all"])) == len(rows)
    assert list(report["transitions"]["n_to"]) == [3, 3]
    # the same step and seed with different settings is refused, not averaged
    # (a CUDA bf16 run of the same step and seed: another key, the same model)
    bf16 = dict(training_identity(rows[0]["recipe"], 1), autocast="bfloat16")
    clash = as_record(dict(rows[0], top1=10.0, training=bf16))
    ResultsDir(tmp_path / "job2").record(clash)
    with pytest.raises(RoadmapError, match="resnet50 seed 0 appears 2 times"):
        gather([a.root, tmp_path / "job2"])


@pytest.fixture
def tiny_run(tiny_run_copy):
    # conftest's session run (`roadmap run --only resnet50,separate_downsampling --seeds 2
    # --log tensorboard` on helpers.TINY), copied: the report writes into it
    return tiny_run_copy


def test_report_end_to_end(tiny_run):
    assert (tiny_run / "trajectory.png").stat().st_size > 5000  # drawn with deltas at the end of run
    (tiny_run / "trajectory.png").unlink()
    assert main(["report", str(tiny_run)]) == 0
    md = (tiny_run / "report.md").read_text()
    assert "![trajectory](trajectory.png)" in md and (tiny_run / "trajectory.png").stat().st_size > 5000
    assert "![changes](changes.png)" in md and (tiny_run / "changes.png").stat().st_size > 5000
    assert "| resnet50 → separate_downsampling |" in md and "each step's own seed variance" in md
    assert "78.82 ± 0.07" in md and "81.97 ± 0.06" in md
    report = json.loads((tiny_run / "report.json").read_text())
    (t,) = report["transitions"]
    table = pd.read_csv(tiny_run / "results.csv").set_index(["run", "seed"])["top1"]
    diffs = [table["separate_downsampling", s] - table["resnet50", s] for s in (0, 1)]
    assert t["delta"] == pytest.approx(np.mean(diffs)) and t["n_to"] == 2
    assert report["findings"] in md and not report["warnings"]


def test_tensorboard_gets_every_epochs_score_of_a_run_with_a_curve():
    from roadmap.runner import log_scores

    class Writer:
        points = []

        def add_scalar(self, tag, value, step):
            self.points.append((tag, value, step))

    curve = [dict(epoch=1.0, top1=70.0), dict(epoch=2.0, top1=75.0), dict(epoch=3.0, top1=77.0)]
    log_scores(Writer(), dict(top1=77.0, updates=30, epochs=3.0, curve=curve))
    assert Writer.points == [("val/top1", 70.0, 10), ("val/top1", 75.0, 20), ("val/top1", 77.0, 30)]


def test_tensorboard_curves_one_run_per_step(tiny_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = sorted(p.name for p in (tiny_run / "tensorboard").iterdir())
    assert logs == ["resnet50-seed0", "resnet50-seed1", "separate_downsampling-seed0", "separate_downsampling-seed1"]
    events = EventAccumulator(str(tiny_run / "tensorboard" / "resnet50-seed0"))
    events.Reload()
    from roadmap.train import LOG_EVERY

    updates = 6  # max_updates in TINY
    # one point every LOG_EVERY updates and one at the end: the loop syncs with the host no more often
    logged = [u for u in range(1, updates + 1) if u % LOG_EVERY == 0 or u == updates]
    for tag in ("train/loss", "train/lr", "train/img_s"):
        assert [e.step for e in events.Scalars(tag)] == logged
    (top1,) = events.Scalars("val/top1")
    results = pd.read_csv(tiny_run / "results.csv").query("run == 'resnet50' and seed == 0")
    assert top1.step == updates and top1.value == pytest.approx(results["top1"].iloc[0])


# ---- per-image correctness (val_correct), and the fixes of the second audit ------------------


def records_with_bits(folder, steps=STEPS[:4], seeds=(0, 1, 2), n_img=2000, drop=()):
    """A results folder of JSON records whose top-1 is the mean of synthetic per-image
    correctness (packed as `roadmap run` packs it); `drop`: (run, seed) left without bits."""
    from roadmap.train import pack_bits

    rng = np.random.default_rng(5)
    hard = rng.beta(3, 0.5, n_img)
    results = ResultsDir(folder)
    for row in synthetic_rows(steps, seeds):
        shift = (row["top1"] - 70.0) / 100
        correct = rng.random(n_img) < np.clip(hard + shift, 0, 1)
        row.update(top1=100 * correct.mean(), val_n=n_img, order=row["order"])
        row["data_id"] = dict(name="synthetic", train=60000, val=n_img, classes=10, content="synthetic")
        if (row["run"], row["seed"]) not in drop:
            row["val_correct"] = pack_bits(correct)
        results.record(as_record(row))
    results.write_tables()
    return folder


def test_val_correct_adds_the_test_set_part_to_every_interval(tmp_path):
    folder = records_with_bits(tmp_path / "bits")
    report = write_report([folder], out=tmp_path / "out", plot=False)
    trans = report["transitions"]
    assert trans["test_sd"].notna().all()
    assert ((trans["ci_high"] - trans["ci_low"]) >= (trans["ci_high_seed"] - trans["ci_low_seed"])).all()
    assert (trans["test_sd"] > 0).any()
    # the full variance is the seed part plus the image part, computed by hand here
    import glob

    from roadmap.train import unpack_bits

    recs = [json.loads(open(f).read()) for f in glob.glob(str(folder / "runs" / "*.json"))]
    bits = {(r["run"], r["seed"]): unpack_bits(r["val_correct"], r["val_n"]).astype(float) for r in recs}
    a, b = STEPS[0][0], STEPS[1][0]
    ca, cb = (np.vstack([bits[(m, s)] for s in (0, 1, 2)]) for m in (a, b))
    y = cb - ca
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    inter = (resid**2).sum() / (2 * (y.shape[1] - 1))
    image = 1e4 * (y.mean(0).var(ddof=1) - inter / 3) / y.shape[1]
    r = trans.iloc[0]
    assert r["test_sd"] ** 2 == pytest.approx(image)
    assert r["se"] ** 2 == pytest.approx(r["se_seed"] ** 2 + image)
    assert not any("test-set part is missing" in w for w in report["warnings"])
    # the merged folder keeps the bits in its records (results.csv has no column for them)
    merged = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").glob("*.json")]
    assert all(m.get("val_correct") for m in merged)
    assert "val_correct" not in pd.read_csv(tmp_path / "out" / "results.csv").columns
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["noise"]["test_sd"] > 0 and "test-set" in saved["method"]
    # how much the test set widened the intervals: the ratio of full to seed-only widths
    ratio = (trans["ci_high"] - trans["ci_low"]) / (trans["ci_high_seed"] - trans["ci_low_seed"])
    assert saved["noise"]["widening"] == pytest.approx([ratio.median(), ratio.min(), ratio.max()])
    assert f"a median {ratio.median() - 1:.0%} wider" in (tmp_path / "out" / "report.md").read_text()


def test_records_without_val_correct_are_reported_seed_only_with_a_line(tmp_path):
    report = write_report([write_csv(tmp_path, synthetic_rows())], plot=False)
    assert any("test-set part is missing" in w for w in report["warnings"])
    assert "seed noise only" in report["findings"]
    folder = records_with_bits(tmp_path / "some", drop={("stage_ratio", 1)})
    part = build(gather([folder]))
    first = part["transitions"].iloc[0]
    assert math.isnan(first["test_sd"]) and first["ci_low"] == pytest.approx(first["ci_low_seed"])
    assert any(w.startswith("stage_ratio, patchify_stem: a run lacks per-image") for w in part["warnings"])


def test_a_missing_run_uses_every_run_without_a_block_and_says_so():
    rows = [r for r in synthetic_rows() if not (r["run"] == "widen" and r["seed"] == 2)]
    report = build(pd.DataFrame(rows))
    # one-way pooled variance over every run: sum of within-step squares over (N - K) df
    ys = [s[4] if s[0] != "widen" else s[4][:2] for s in STEPS]
    ss = sum(((np.array(y) - np.mean(y)) ** 2).sum() for y in ys)
    df = sum(len(y) - 1 for y in ys)
    assert report["noise"]["seed_sd"] == pytest.approx(math.sqrt(ss / df)) and report["noise"]["df"] == df
    assert any("Not every step has the same seeds" in w and "Welch" in w for w in report["warnings"])
    last = report["transitions"].iloc[-1]  # depthwise_conv -> widen: widen has 2 runs
    assert last["delta"] == pytest.approx(np.mean(STEPS[4][4][:2]) - np.mean(STEPS[3][4]))
    assert last["n_to"] == 2 and last["n_from"] == 3
    se = math.sqrt(np.var(STEPS[4][4][:2], ddof=1) / 2 + np.var(STEPS[3][4], ddof=1) / 3)
    assert last["se"] == pytest.approx(se)


def test_holm_family_counts_each_real_change_once():
    cfg = lambda **k: json.dumps(dict(dict(kernel_size=3, act="relu"), **k))  # noqa: E731
    runs = [
        ("a", 0, "", cfg(kernel_size=3)),
        ("b", 1, "", cfg(kernel_size=7)),
        ("b/k7", 1, "k7", cfg(kernel_size=7)),
        ("c", 2, "", cfg(kernel_size=7, act="gelu")),
    ]
    rows = [
        dict(
            order=o,
            run=r,
            step=r.split("/")[0],
            variant=v,
            seed=s,
            status="ok",
            config=c,
            top1=70.0 + o + 0.1 * s + 0.05 * (s * o % 3),
            key=f"{r}-{s}",
        )
        for r, o, v, c in runs
        for s in (0, 1, 2)
    ]
    report = build(pd.DataFrame(rows))
    trans = report["transitions"]
    assert int(trans["same_model"].sum()) == 1 and report["noise"]["family"] == 2


def test_same_model_and_seed_under_two_labels_is_one_observation():
    cfg = json.dumps(dict(kernel_size=7))
    rows = [
        dict(order=7, run=label, step="large_kernel", variant=v, seed=s, status="ok", top1=80.0 + s, config=cfg)
        for label, v in (("large_kernel", ""), ("large_kernel/k7", "k7"))
        for s in (0, 1, 2)
    ]
    rows += [
        dict(
            order=8,
            run="gelu",
            step="gelu",
            variant="",
            seed=s,
            status="ok",
            top1=81.0 + 0.5 * s,
            config=json.dumps(dict(kernel_size=7, act="gelu")),
        )
        for s in (0, 1, 2)
    ]
    steps, trans, fit = analyse(pd.DataFrame(rows))
    assert fit.counts == {m: 3 for m in fit.names} and fit.blocked and fit.df == 2
    assert int(steps.set_index("run").loc["large_kernel", "seeds"]) == 3


def test_leave_one_out_text_compares_with_the_start():
    start = dict(kernel_size=7, act="gelu", norm="layer")
    runs = [
        ("convnext", start, 0.0),
        ("no_large_kernel", dict(start, kernel_size=3), -2.0),
        ("no_layer_norm", dict(start, norm="batch"), 3.0),
    ]
    rows = [
        dict(order=i, run=run, seed=seed, status="ok", top1=80.0 + d + 0.1 * seed * (i + 1), config=json.dumps(c))
        for i, (run, c, d) in enumerate(runs)
        for seed in (0, 1, 2)
    ]
    text = build(pd.DataFrame(rows))["findings"]
    assert "compared with convnext" in text and "went from" not in text and "gains" not in text


def test_identical_seeds_are_not_called_unreplicated():
    rows = synthetic_rows(STEPS[:3])
    for r in rows:
        r["top1"] = 70.0 + r["order"]
    text = build(pd.DataFrame(rows))["findings"]
    assert "Without seed replication" not in text and "identical" in text


def test_same_direction_and_the_kernel_sweep_tie_band():
    steps = [
        ("resnet50", 78.82, 0.07, 1.5, [70.0, 71.0, 70.5], [1] * 3),
        ("stage_ratio", 79.36, 0.07, 1.6, [72.0, 73.0, 72.5], [1] * 3),  # +2.0, paper +0.54
        ("k5", 79.56, None, 1.6, [72.1, 73.0, 72.6], [1] * 3),
    ]  # paper +0.20, one run
    trans = transitions(pd.DataFrame(synthetic_rows(steps)))
    assert trans.iloc[0]["verdict"] == "same direction"
    # +0.20 is outside the 3-run band (0.161) but inside a one-run point's (0.228)
    assert trans.iloc[1]["paper_sign"] == "0"
