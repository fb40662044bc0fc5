"""roadmap.stats on its own: simulated coverage and Holm under unequal noise, the test-set
variance, TOST bounds, power, seeds needed, the sign-agreement test. Fast and vectorized;
every random draw comes from a fixed generator."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from roadmap import stats as S

# Per-step seed sds of results/reference-fashion-mnist (13 steps x 3 seeds, RMS 0.25):
# the unequal-noise profile the second audit simulated under.
REFERENCE_SDS = np.array([0.226, 0.425, 0.117, 0.407, 0.104, 0.046, 0.074, 0.258, 0.389, 0.032, 0.071, 0.427, 0.081])


def simulate(sds, sims, null, rng, seeds=3):
    """Roadmaps of len(sds) steps x `seeds` seeds (a seed effect shared by all steps, each step
    its own noise sd); the report's intervals for the 12 changes, vectorized over roadmaps."""
    k = len(sds)
    effects = np.zeros((sims, k)) if null else rng.normal(0, 1.0, (sims, k))
    y = (
        80
        + effects[:, :, None]
        + rng.normal(0, 0.3, (sims, 1, seeds))
        + rng.normal(0, 1, (sims, k, seeds)) * sds[None, :, None]
    )
    var, own_df, _, _ = S.blocked_variances(y)
    v, df = S.satterthwaite([(var[:, :-1] / seeds, own_df), (var[:, 1:] / seeds, own_df)])
    means = y.mean(-1)
    delta = means[:, 1:] - means[:, :-1]
    _, lo, hi, p, _ = S.t_interval(delta, v, df)
    return effects[:, 1:] - effects[:, :-1], lo, hi, p


def test_coverage_and_holm_under_the_reference_sd_profile():
    rng = np.random.default_rng(18)
    true, lo, hi, _ = simulate(REFERENCE_SDS, 8000, null=False, rng=rng)
    coverage = ((lo <= true) & (true <= hi)).mean(0)
    assert coverage.min() >= 0.93, coverage  # every change, the noisy ones too
    _, _, _, p = simulate(REFERENCE_SDS, 8000, null=True, rng=rng)
    # Holm resolves something iff the smallest p is below alpha / m
    false_resolve = (p.min(1) * p.shape[1] < S.ALPHA).mean()
    assert false_resolve <= 0.05, false_resolve


def test_equal_noise_is_still_covered():
    rng = np.random.default_rng(3)
    true, lo, hi, _ = simulate(np.full(13, 0.25), 4000, null=False, rng=rng)
    assert 0.93 <= ((lo <= true) & (true <= hi)).mean() <= 0.98  # a little conservative


def test_blocked_variances_match_the_fit():
    import pandas as pd

    rng = np.random.default_rng(0)
    y = rng.normal(80, 0.3, (4, 3))
    runs = pd.DataFrame(dict(model=np.repeat(list("abcd"), 3), seed=np.tile([0, 1, 2], 4), top1=y.ravel()))
    f = S.fit(runs)
    r = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    assert f.blocked and f.df == 6 and f.sigma == pytest.approx(math.sqrt((r**2).sum() / 6))
    assert [f.var[m] for m in "abcd"] == pytest.approx(list((r**2).sum(1) / (2 * 3 / 4)))
    # two models: the own-variance interval is the paired t-interval over the seeds
    two = S.fit(runs[runs["model"].isin(["a", "b"])])
    c = S.contrast(two, "a", "b")
    d = y[1] - y[0]
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
    assert (c["ci_low"], c["ci_high"]) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))


def test_a_missing_run_uses_every_run_with_each_models_own_variance():
    """An incomplete design (a failed run, or extra seeds where a change was open) keeps every
    run: no seed block, each model's sample variance over its own seeds (Welch)."""
    import pandas as pd

    rng = np.random.default_rng(1)
    y = rng.normal(80, 0.3, (4, 3)) + np.array([0.0, 0.5, -0.4])  # a strong seed effect
    runs = pd.DataFrame(dict(model=np.repeat(list("abcd"), 3), seed=np.tile([0, 1, 2], 4), top1=y.ravel()))
    f = S.fit(runs.drop(index=4))  # b, seed 1 is missing
    assert not f.blocked and f.counts == {"a": 3, "b": 2, "c": 3, "d": 3}
    assert f.means["a"] == pytest.approx(y[0].mean()) and f.means["b"] == pytest.approx(y[1, [0, 2]].mean())
    assert f.var["b"] == pytest.approx(y[1, [0, 2]].var(ddof=1)) and f.var_df["b"] == 1
    c = S.contrast(f, "a", "b")
    se = math.sqrt(y[0].var(ddof=1) / 3 + y[1, [0, 2]].var(ddof=1) / 2)
    assert c["se"] == pytest.approx(se)
    assert stats.ttest_ind(y[1, [0, 2]], y[0], equal_var=False).pvalue == pytest.approx(c["p"])


def correctness(p_img, seeds, rng):
    """Per-image correctness of `seeds` runs of a model whose image i is right with p_img[i]."""
    return rng.random((seeds, p_img.size)) < p_img


def test_test_set_part_matches_the_spread_over_test_sets():
    """Runs of two models on fresh test sets: the seed part plus the image part predicts the
    variance of Δ over (seeds, test sets) that the report's full interval stands for."""
    rng = np.random.default_rng(7)
    n_img, seeds, reps = 2000, 3, 400
    deltas, predicted = [], []
    for _ in range(reps):
        hard = rng.beta(2, 0.6, n_img)  # image difficulty, shared by both
        pa, pb = hard, np.clip(hard + rng.normal(0.01, 0.05, n_img), 0, 1)
        ca, cb = correctness(pa, seeds, rng), correctness(pb, seeds, rng)
        per_seed = 100 * (cb.mean(1) - ca.mean(1))
        deltas.append(per_seed.mean())
        seed_var = per_seed.var(ddof=1) / seeds  # paired seed part
        predicted.append(seed_var + S.image_var(ca.astype(float), cb.astype(float), paired=True))
    assert np.mean(predicted) == pytest.approx(np.var(deltas, ddof=1), rel=0.2)


def test_test_set_part_of_identical_predictions_is_zero_and_discordance_adds():
    c = np.tile(np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=float), (3, 1))
    assert S.image_var(c, c, paired=True) == 0.0
    flip = c.copy()
    flip[:, :2] = 1 - flip[:, :2]  # two images change for every seed
    z = flip.mean(0) - c.mean(0)
    assert S.image_var(c, flip, paired=True) == pytest.approx(1e4 * z.var(ddof=1) / z.size)


def test_tost_bound_is_where_both_one_sided_tests_reach_five_percent():
    delta, se, df = 0.12, 0.1, 6.0
    _, _, _, _, bound = S.t_interval(delta, se**2, df)
    p_upper = stats.t.cdf((delta - bound) / se, df)  # H0: Δ >= +bound
    p_lower = stats.t.sf((delta + bound) / se, df)  # H0: Δ <= -bound
    assert max(p_upper, p_lower) == pytest.approx(0.05)


def test_power_is_finite_for_large_effects_and_matches_a_monte_carlo():
    assert S.power(5.0, 0.05, 3, 13) == pytest.approx(1.0)  # nct.cdf(-crit) gave NaN here
    assert all(math.isfinite(S.power(e, 0.1, 3, 13, S.ALPHA / 12)) for e in (0.3, 1.0, 3.0, 10.0))
    rng = np.random.default_rng(0)
    df = S.planning_df(4, 13)
    ncp = 0.5 / math.sqrt(2 * 0.3**2 / 4)
    t = (rng.normal(ncp, 1, 200_000)) / np.sqrt(rng.chisquare(df, 200_000) / df)
    mc = (np.abs(t) > stats.t.ppf(0.975, df)).mean()
    assert S.power(0.5, 0.3, 4, 13) == pytest.approx(mc, abs=0.005)


@pytest.mark.parametrize("models", [3, 13])
def test_seeds_needed_is_the_first_seed_count_that_reaches_the_power(models):
    for sigma, effect, alpha in itertools.product((0.13, 0.25, 0.4), (0.5, 1.0), (0.05, 0.05 / 12)):
        n = S.seeds_needed(effect, sigma, models, alpha=alpha)
        first = next(k for k in range(2, 500) if S.power(effect, sigma, k, models, alpha) >= 0.8)
        assert n == first, (models, sigma, effect, alpha)
    # the audit's case: 3 models, sigma 0.13, 1.0 point at alpha/12 needs more than 2 seeds
    assert S.seeds_needed(1.0, 0.13, 3, alpha=0.05 / 12) > 2


def test_seeds_cannot_beat_the_test_set_part():
    # a test-set sd of 0.4 points alone leaves a 0.3-point change far from 80% power
    assert S.seeds_needed(0.3, 0.25, 13, test_var=0.4**2, most=2000) is None
    assert S.seeds_needed(1.0, 0.25, 13, test_var=0.2**2) >= S.seeds_needed(1.0, 0.25, 13)


def test_sigma_interval_is_the_chi_square_interval():
    lo, hi = S.sigma_interval(0.226, 24)
    assert (round(lo, 3), round(hi, 3)) == (0.176, 0.314)  # the numbers


def test_sign_agreement_is_one_sided_and_exact_on_small_tables():
    ours, paper = ["+", "+", "-", "0", "0"], ["+", "+", "-", "-", "+"]
    out = S.sign_agreement(ours, paper)
    code = {"-": -1, "0": 0, "+": 1}
    x, y = np.array([code[s] for s in ours]), np.array([code[s] for s in paper])
    counts = [((x == y[list(q)]) & (x != 0)).sum() for q in itertools.permutations(range(5))]
    assert out["sign_matches"] == 3
    assert out["sign_agreement_p"] == pytest.approx(np.mean(np.array(counts) >= 3))
    # every sign the opposite of the paper's: no agreement (Fisher's two-sided p could not tell)
    anti = S.sign_agreement(["+", "+", "-", "-"], ["-", "-", "+", "+"])
    assert anti["sign_matches"] == 0 and anti["sign_agreement_p"] == 1.0


def test_kernel_sweep_point_gets_the_single_run_tie_band():
    sd, df = 0.096, 26
    assert S.paper_half_width(sd, df, 3, 1) == pytest.approx(stats.t.ppf(0.975, df) * sd * math.sqrt(1 / 3 + 1))
    assert S.paper_half_width(sd, df, 1, 1) > S.paper_half_width(sd, df, 3, 1) > S.paper_half_width(sd, df)
