"""The statistics of `roadmap report`: each step's own seed noise, plus the test set's.

Every finished run is one observation `top1 = model effect (+ seed effect) + noise`, where
the noise variance belongs to the model (the step): measured seed sds differ by an order
of magnitude between steps, and one pooled variance would make the noisy steps' intervals
too narrow. The model effects are the distinct trained models (`large_kernel/k7` and
`large_kernel` are one model).

Seed part. Where every model has the same seeds (the complete design), the seed is a
block: residuals of `top1 ~ model + seed` give each model its own variance with
(n-1)(K-1)/K df, and a change's variance is (v_a + v_b) / n with Welch-Satterthwaite df.
Otherwise (a run missing, or more seeds at some steps) each model's sample variance over
all its own runs is used (Welch; conservative where seeds correlate across steps).
Empirical-Bayes shrinkage of the variances (limma) was measured and rejected: under the
reference's sd profile it covered noisy changes 0.88 of the time (docs/statistics.md).

Test-set part. All runs score the same images, so the test set's sampling error does not
average out over seeds. From per-image correctness, the variance of a change over images
(a two-way seeds x images decomposition, the seed x image interaction counted once, in the
seed part) is added to the seed part.

Holm-adjusted p over the transitions, from the full interval, decides "resolved".
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

LEVEL = 0.95
ALPHA = 1 - LEVEL
PAPER_SEEDS = 3  # Table 10: mean ± sd over 3 seeds
EFFECTS = (0.3, 0.5, 1.0)  # the changes (points of top-1) the power statement is about
POWER = 0.8
BIG_DF = 1e6  # df of a sum whose parts are all exact (zero variance)


@dataclass
class Fit:
    """Per-model means, counts and noise (own variance and its df), and how it was estimated."""

    means: Dict[str, float]
    counts: Dict[str, int]
    sds: Dict[str, float]  # per-model sample sd over the used seeds (NaN with one run)
    sigma: float  # pooled residual sd (NaN when df == 0), for power and targets
    df: int  # pooled residual degrees of freedom
    blocked: bool  # seed entered as a block
    var: Dict[str, float] = field(default_factory=dict)  # each model's noise variance
    var_df: Dict[str, float] = field(default_factory=dict)  # its degrees of freedom
    names: List[str] = field(default_factory=list)
    seeds: List = field(default_factory=list)  # the seeds used (blocked: complete ones)
    borrowed: List[str] = field(default_factory=list)  # models given the pooled variance
    val: Dict[str, Optional[np.ndarray]] = field(default_factory=dict)  # runs x images, bool

    @property
    def method(self) -> str:
        model = "top-1 ~ model + seed (seed as a block)" if self.blocked else "top-1 ~ model"
        return (
            f"{model} with each step's own seed variance, Welch-Satterthwaite df"
            f"{', plus the test-set variance from per-image correctness' if self.has_test else ''}"
            f"; {LEVEL:.0%} t-intervals; Holm-adjusted p over the transitions decides 'resolved'"
        )

    @property
    def usable(self) -> bool:
        """Intervals exist: some replication, and the seeds changed something."""
        return self.df > 0 and self.sigma > 0

    @property
    def has_test(self) -> bool:
        return any(v is not None for v in self.val.values())


def _complete_seeds(runs: pd.DataFrame, names: List[str]) -> List:
    """Seeds that every model has exactly once."""
    per = runs.groupby(["model", "seed"]).size()
    common = None
    for m in names:
        s = set(per[m][per[m] == 1].index)
        common = s if common is None else common & s
    return sorted(common or [])


def fit(runs: pd.DataFrame) -> Fit:
    """Fit finished runs (columns `model`, `seed`, `top1`, optional `val`: bool array per run).

    The seed is a block only in a complete design (every model has the same seeds once each).
    Otherwise (a failed run, or extra seeds at some steps from `--until-decided`) every run
    is used and each model keeps its own sample variance (Welch): dropping the seeds that not
    every model has would throw away exactly the seeds spent where an answer was open."""
    runs = runs.reset_index(drop=True).astype({"top1": float})
    names = list(dict.fromkeys(runs["model"]))
    seeds = _complete_seeds(runs, names)
    complete = len(seeds) * len(names) == len(runs)
    blocked = len(names) > 1 and len(seeds) > 1 and complete
    groups = runs.groupby("model", sort=False)["top1"]
    means, counts = groups.mean().to_dict(), groups.size().to_dict()
    sds = groups.std(ddof=1).to_dict()
    var, var_df, sigma2, df = (_blocked_var if blocked else _own_var)(runs, names, seeds)
    f = Fit(
        means,
        counts,
        sds,
        math.nan,
        0,
        blocked,
        names=names,
        seeds=seeds if blocked else sorted(runs["seed"].unique()),
    )
    f.val = _val_matrices(runs, names)
    if df <= 0:
        return f
    sigma = math.sqrt(max(sigma2, 0.0))
    if sigma < 1e-9 * max(1.0, float(runs["top1"].abs().max())):
        sigma = 0.0  # rounding residue of identical runs: the seed changed nothing
    f.sigma, f.df = sigma, int(df)
    # A model with one run, or whose runs are identical, carries no noise of its own:
    # it borrows the pool's (identical runs mean the seed did not reach it, not zero noise).
    tiny = 1e-12 * max(1.0, float(runs["top1"].abs().max())) ** 2
    for m in names:
        if not var_df.get(m) or var.get(m, 0.0) <= tiny:
            var[m], var_df[m] = sigma**2, df
            f.borrowed.append(m)
    f.var, f.var_df = var, var_df
    return f


def blocked_variances(y: np.ndarray):
    """Residuals of the additive model (model + seed) on a complete design `y` (..., K models,
    n seeds): each model's variance with (n-1)(K-1)/K df, and the pooled one with (n-1)(K-1).
    Vectorized over leading axes (the simulation in the tests uses that)."""
    k, n = y.shape[-2:]
    r = y - y.mean(-1, keepdims=True) - y.mean(-2, keepdims=True) + y.mean((-2, -1), keepdims=True)
    ss = (r**2).sum(-1)
    df = (n - 1) * (k - 1)
    return ss / ((n - 1) * (k - 1) / k), (n - 1) * (k - 1) / k, ss.sum(-1) / df, df


def _blocked_var(runs, names, seeds):
    y = runs.pivot(index="model", columns="seed", values="top1").loc[names, seeds].to_numpy()
    var, own_df, pooled, df = blocked_variances(y)
    return dict(zip(names, map(float, var))), {m: own_df for m in names}, float(pooled), df


def _own_var(runs, names, seeds):
    """Without a block: each model's sample variance over its own seeds; pooled one-way."""
    g = runs.groupby("model", sort=False)["top1"]
    v, n = g.var(ddof=1).to_dict(), g.size().to_dict()
    var = {m: float(v[m]) for m in names if n[m] > 1}
    var_df = {m: n[m] - 1 for m in names if n[m] > 1}
    df = sum(var_df.values())
    pooled = sum(var_df[m] * var[m] for m in var) / df if df else math.nan
    return var, var_df, pooled, df


def _val_matrices(runs, names) -> Dict[str, Optional[np.ndarray]]:
    """Per model, its runs' per-image correctness stacked (runs x images); None where a
    run lacks it or the image counts differ."""
    out = {}
    if "val" not in runs.columns:
        return {m: None for m in names}
    for m in names:
        vals = list(runs[runs["model"] == m].sort_values("seed")["val"])  # paired rows: seed order
        ok = vals and all(isinstance(v, np.ndarray) for v in vals) and len({len(v) for v in vals}) == 1
        out[m] = np.vstack(vals).astype(np.float64) if ok else None
    sizes = {v.shape[1] for v in out.values() if v is not None}
    if len(sizes) > 1:
        return {m: None for m in names}
    return out


def _interaction_ms(c: np.ndarray) -> float:
    """Mean square of the seed x image interaction of a runs x images matrix (0 with one run)."""
    n, N = c.shape
    if n < 2:
        return 0.0
    r = c - c.mean(1, keepdims=True) - c.mean(0, keepdims=True) + c.mean()
    return float((r**2).sum() / ((n - 1) * (N - 1)))


def image_var(ca: np.ndarray, cb: np.ndarray, paired: bool) -> float:
    """Test-set variance (points²) of Δ = mean top-1 of b - of a, from per-image correctness.

    Over images, Δ is the mean of z_i (image i's mean correctness under b minus under a), so
    var(z)/N is its error over images; but var(z) also holds the seed x image interaction,
    which the spread of per-run top-1 over seeds (the seed part) already has. It is taken
    out once: paired (same seeds) from the difference matrix, else from each model's own.
    """
    z = cb.mean(0) - ca.mean(0)
    n_img = z.size
    if paired:
        inter = _interaction_ms(cb - ca) / cb.shape[0]
    else:
        inter = _interaction_ms(ca) / ca.shape[0] + _interaction_ms(cb) / cb.shape[0]
    return 1e4 * max(float(z.var(ddof=1)) - inter, 0.0) / n_img


def satterthwaite(parts: Sequence[Tuple]) -> Tuple:
    """A sum of independent variance estimates, given as (variance, df) pairs, and its
    Welch-Satterthwaite df (numbers or numpy arrays)."""
    total = sum(v for v, _ in parts)
    den = sum(np.asarray(v, dtype=float) ** 2 / d for v, d in parts)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(den > 0, np.asarray(total, dtype=float) ** 2 / np.where(den > 0, den, 1), BIG_DF)
    return total, (float(df) if np.ndim(df) == 0 else df)


def t_quantile(df: float) -> float:
    """The two-sided LEVEL quantile of Student's t with `df` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def range_half(band_row, n_here: int) -> float:
    """Half-width of the 95% range in which the mean of `n_here` new runs of a reference's
    model falls if this machine trains like the reference's (`report.reference_band` row):
    t * sigma * sqrt(1/n + 1/n_here)."""
    return t_quantile(band_row["df"]) * band_row["sigma"] * math.sqrt(1 / band_row["n"] + 1 / max(1, n_here))


def t_interval(delta, var, df):
    """se, 95% interval, two-sided p and the TOST (5%) equivalence bound; arrays welcome."""
    from scipy import stats

    se = np.sqrt(var)
    half = stats.t.ppf(0.5 + LEVEL / 2, df) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(delta) / se, df)
    # TOST at 5%: the smallest ±bound the change is shown to lie within (the 90% interval)
    bound = np.abs(delta) + stats.t.ppf(1 - ALPHA, df) * se
    return se, delta - half, delta + half, p, bound


NAN_CONTRAST = dict(
    delta=math.nan,
    se=math.nan,
    ci_low=math.nan,
    ci_high=math.nan,
    p=math.nan,
    df=math.nan,
    se_seed=math.nan,
    ci_low_seed=math.nan,
    ci_high_seed=math.nan,
    p_seed=math.nan,
    test_sd=math.nan,
    equivalence_bound=math.nan,
)


def contrast(f: Fit, a: str, b: str) -> Dict[str, float]:
    """Change from model `a` to model `b`: Δ (difference of means), the seed-only interval,
    the full interval (seed + test set, where per-image correctness exists) and its p."""
    out = dict(NAN_CONTRAST, delta=f.means[b] - f.means[a])
    if a == b or not f.usable:
        return out
    seed = [(f.var[a] / f.counts[a], f.var_df[a]), (f.var[b] / f.counts[b], f.var_df[b])]
    se, lo, hi, p, _ = t_interval(out["delta"], *satterthwaite(seed))
    out.update(se_seed=float(se), ci_low_seed=float(lo), ci_high_seed=float(hi), p_seed=float(p))
    var, df = satterthwaite(seed)
    ca, cb = f.val.get(a), f.val.get(b)
    if ca is not None and cb is not None:
        v_test = image_var(ca, cb, paired=f.blocked)
        out["test_sd"] = math.sqrt(v_test)
        # The image part is all but known (thousands of images), but it keeps the seed
        # part's df: Satterthwaite would raise the df and could make the full interval
        # narrower than the seed-only one; this way it is never narrower.
        var = var + v_test
    out.update(
        zip(("se", "ci_low", "ci_high", "p", "equivalence_bound"), map(float, t_interval(out["delta"], var, df))), df=df
    )
    return out


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values; NaN stays NaN (and is not counted in the family)."""
    import gc

    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        # statsmodels' Holm ends in gc.collect(); with torch loaded a full collection costs
        # most of a second, so the objects alive now are frozen out of that scan.
        gc.freeze()
        try:
            out[ok] = multipletests(p[ok], alpha=ALPHA, method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def sign(delta: float, resolved: bool) -> str:
    """-, 0 or +: the direction of a change, 0 where it is not resolved."""
    if delta is None or math.isnan(delta):
        return ""
    return ("+" if delta > 0 else "-") if resolved and delta != 0 else "0"


def sd_outliers(f: Fit) -> List[Tuple[str, float, float, float]]:
    """Models whose seed sd is far above the pool of the others: (model, sd, others' sd, p_holm).

    F-test of each model's variance against the pooled variance of all other models
    (independent of it), Holm-adjusted over the models. One-sided: a noisier model makes
    the pooled intervals around it too narrow; a quieter one only makes them wider.
    """
    from scipy import stats

    var = {m: f.sds[m] ** 2 for m in f.names if f.counts[m] > 1 and not math.isnan(f.sds[m])}
    rows, ps = [], []
    for m, v in var.items():
        others = [(f.counts[o] - 1, var[o]) for o in var if o != m]
        dfo = sum(d for d, _ in others)
        if dfo == 0:
            continue
        pooled = sum(d * s for d, s in others) / dfo
        if pooled == 0 and v == 0:
            continue
        ratio = v / pooled if pooled > 0 else math.inf
        d1 = f.counts[m] - 1
        rows.append((m, math.sqrt(v), math.sqrt(pooled)))
        ps.append(float(stats.f.sf(ratio, d1, dfo)))
    adjusted = holm(ps)
    return [(m, s, so, float(p)) for (m, s, so), p in zip(rows, adjusted) if p < ALPHA]


# ---- the paper's side --------------------------------------------------------------------


def pooled_sd(sds: Sequence[float], seeds: int = PAPER_SEEDS) -> Tuple[float, int]:
    """RMS of per-step sds (each from `seeds` runs) and its degrees of freedom."""
    sds = [s for s in sds if s is not None and not math.isnan(s)]
    return math.sqrt(float(np.mean(np.square(sds)))), len(sds) * (seeds - 1)


def paper_half_width(sd: float, df: int, seeds: int = PAPER_SEEDS, seeds_to: Optional[int] = None) -> float:
    """95% half-width of a difference of two of the paper's means (pooled sd; `seeds` runs
    behind the first, `seeds_to` behind the second: 1 for a kernel-sweep point, which has no sd)."""
    from scipy import stats

    seeds_to = seeds if seeds_to is None else seeds_to
    return float(stats.t.ppf(0.5 + LEVEL / 2, df) * sd * math.sqrt(1 / seeds + 1 / seeds_to))


# ---- agreement with the paper -----------------------------------------------------------

SIGNS = ("-", "0", "+")


def sign_table(ours: Sequence[str], paper: Sequence[str]) -> Dict:
    """3x3 counts (rows: our sign, columns: the paper's) and Fisher's exact test on them.

    Fisher's test is two-sided association: a table of opposite signs gets the same p as one
    of matching signs, so it is kept for the record only; `sign_agreement` is the test of
    agreement. Empty rows/columns are dropped first;
    with fewer than two of either left there is nothing to test (p None). A 2x2 table
    is exact; a larger one is scipy's Monte Carlo over tables with the same margins
    (99,999 draws from a fixed generator, so the report is reproducible).
    """
    from scipy import stats

    table = np.zeros((3, 3), dtype=int)
    for o, p in zip(ours, paper):
        if o in SIGNS and p in SIGNS:
            table[SIGNS.index(o), SIGNS.index(p)] += 1
    sub = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    p = None
    if sub.shape[0] >= 2 and sub.shape[1] >= 2:
        if sub.shape == (2, 2):
            p = float(stats.fisher_exact(sub)[1])
        else:  # R x C (scipy >= 1.15)
            method = stats.MonteCarloMethod(n_resamples=99_999, rng=np.random.default_rng(0))
            p = float(np.asarray(stats.fisher_exact(sub, method=method).pvalue).reshape(-1)[0])
    return dict(rows="ours", columns="paper", signs=list(SIGNS), counts=table.tolist(), fisher_p=p)


def _spearman(a, b, axis=-1):
    """Pearson on (average) ranks, vectorized over resamples."""
    from scipy import stats

    return stats.pearsonr(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis), axis=axis).statistic


def _concordance(a, b, axis=-1):
    """The sum of concordance signs of all pairs, vectorized over resamples."""
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    da = np.sign(a[..., :, None] - a[..., None, :])
    db = np.sign(b[..., :, None] - b[..., None, :])
    return (da * db).sum(axis=(-2, -1)) / 2


def delta_correlations(ours: Sequence[float], paper: Sequence[float]) -> Dict:
    """Spearman ρ and Kendall τ between our per-transition Δs and the paper's.

    Per-transition changes, not cumulative levels (levels drift like a random walk and
    correlate by construction). p by permutation of the pairings: exact when n! <= 9999,
    else 9999 random permutations with a fixed generator (so the report is reproducible).
    """
    from scipy import stats

    x, y = np.asarray(ours, dtype=float), np.asarray(paper, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    out = dict(spearman=dict(n=int(len(x))), kendall=dict(n=int(len(x))))
    if len(x) < 3 or np.unique(x).size < 2 or np.unique(y).size < 2:
        return out
    draws = np.random.default_rng(0)
    exact = math.factorial(len(x)) <= 9999
    how = "exact permutation" if exact else "permutation (9999 draws)"

    rho = float(stats.spearmanr(x, y)[0])
    res = stats.permutation_test(
        (x, y),
        _spearman,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=9999,
        alternative="two-sided",
        rng=draws,
    )
    out["spearman"].update(rho=rho, p=float(res.pvalue), p_method=how)
    tau = float(stats.kendalltau(x, y)[0])
    if np.unique(x).size == len(x) and np.unique(y).size == len(y):
        # no ties: scipy's exact null of tau is this permutation distribution
        p = float(stats.kendalltau(x, y, method="exact").pvalue)
        how_tau = "exact"
    else:
        # Ties: permute the pairings. With the margins fixed, tau-b is its numerator (the sum
        # of concordance signs) over a constant, so that sum is the test statistic.
        p = float(
            stats.permutation_test(
                (x, y),
                _concordance,
                permutation_type="pairings",
                vectorized=True,
                n_resamples=9999,
                alternative="two-sided",
                rng=draws,
            ).pvalue
        )
        how_tau = how
    out["kendall"].update(tau=tau, p=p, p_method=how_tau)
    return out


def sign_agreement(ours: Sequence[str], paper: Sequence[str]) -> Dict:
    """How many changes have the same resolved sign (+/+ or -/-) here and in the paper, and the
    one-sided permutation p of that count (pairings shuffled: the margins, i.e. how often each
    side says +, 0, -, are kept, so chance is judged from them). Exact when n! <= 99,999."""
    from scipy import stats

    keep = [(o, p) for o, p in zip(ours, paper) if o in SIGNS and p in SIGNS]
    code = {"-": -1, "0": 0, "+": 1}
    x = np.array([code[o] for o, _ in keep], dtype=float)
    y = np.array([code[p] for _, p in keep], dtype=float)
    matches = int(((x == y) & (x != 0)).sum())
    if len(x) < 2 or not (x != 0).any() or not (y != 0).any():
        return dict(sign_matches=matches, sign_agreement_p=None, n=len(x))

    def count(a, b, axis=-1):
        return ((a == b) & (a != 0)).sum(axis=axis)

    res = stats.permutation_test(
        (x, y),
        count,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=99_999,
        alternative="greater",
        rng=np.random.default_rng(0),
    )
    return dict(sign_matches=matches, sign_agreement_p=float(res.pvalue), n=len(x))


# ---- power ------------------------------------------------------------------------------


def planning_df(seeds: int, models: int) -> float:
    """df of one change in a complete design of `models` x `seeds` when the two steps' noise is
    alike (Satterthwaite of two own variances with (n-1)(K-1)/K df each)."""
    return 2 * (seeds - 1) * (models - 1) / models


def power(effect: float, sigma: float, seeds: int, models: int, alpha: float = ALPHA, test_var: float = 0.0) -> float:
    """Power of the two-sided t-test of one change (steps of seed sd `sigma`, `seeds` each, plus
    a test-set variance `test_var` that more seeds do not shrink); noncentral t, scipy."""
    from scipy import stats

    df = planning_df(seeds, models)
    if not df > 0 or not sigma > 0:
        return math.nan
    ncp = effect / math.sqrt(2 * sigma**2 / seeds + test_var)
    crit = stats.t.ppf(1 - alpha / 2, df)
    # both tails as upper tails: nct.cdf(-crit, df, ncp) is NaN for a large ncp, sf is stable
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -ncp))


def seeds_needed(
    effect: float,
    sigma: float,
    models: int,
    target: float = POWER,
    alpha: float = ALPHA,
    most: int = 10_000,
    test_var: float = 0.0,
) -> Optional[int]:
    """The fewest seeds per model that resolve `effect` with `target` power (None: not
    within `most`, e.g. when the test-set part alone is too wide)."""
    if not sigma > 0 or math.isnan(sigma):
        return None
    ok = lambda n: power(effect, sigma, n, models, alpha, test_var) >= target  # noqa: E731
    lo, hi = 2, 2
    while not ok(hi):
        if hi >= most:
            return None
        lo, hi = hi + 1, min(2 * hi, most)
    while lo < hi:  # power grows with the seeds: bisect for the first that reaches the target
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return hi


def sigma_interval(sigma: float, df: float) -> Tuple[float, float]:
    """95% interval of a pooled sd with `df` degrees of freedom (chi-square)."""
    from scipy import stats

    if not df > 0 or not sigma > 0:
        return (math.nan, math.nan)
    lo_q, hi_q = stats.chi2.ppf([0.5 + LEVEL / 2, 0.5 - LEVEL / 2], df)
    return (sigma * math.sqrt(df / lo_q), sigma * math.sqrt(df / hi_q))
