"""The statistics of `roadmap report`: one linear model over all runs of a roadmap.

Every finished run is one observation `top1 = model effect (+ seed effect) + noise`.
The model effects are the distinct trained models (`large_kernel/k7` and `large_kernel`
are one model); a seed is a block when every model has the same seeds (then a seed that
is lucky for all models alike is taken out of the noise), otherwise the model has the
model effects alone. Either way the noise variance is pooled over all runs, so every
transition gets an interval with the degrees of freedom of the whole experiment, also
with unequal or disjoint seed sets and single-seed steps, and its centre is always the
difference of the two models' mean top-1.

Which changes count as resolved is decided by Holm-adjusted p over the transitions,
so that "k of 12 resolved" calls a change under the null about 5% of the time at most.
statsmodels fits the model and adjusts the p-values; scipy gives the distributions.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

LEVEL = 0.95
ALPHA = 1 - LEVEL
PAPER_SEEDS = 3                 # Table 10: mean ± sd over 3 seeds
EFFECTS = (0.3, 0.5, 1.0)       # the changes (points of top-1) the power statement is about
POWER = 0.8


@dataclass
class Fit:
    """A fitted model: per-model means and counts, the pooled noise, and how it was pooled."""
    means: Dict[str, float]
    counts: Dict[str, int]
    sds: Dict[str, float]               # per-model sample sd over seeds (NaN with one run)
    sigma: float                        # pooled residual sd (NaN when df == 0)
    df: int                             # residual degrees of freedom
    blocked: bool                       # seed entered as a block
    cov: Optional[np.ndarray] = None    # covariance of the model effects (statsmodels)
    names: List[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        model = "top-1 ~ model + seed (seed as a block)" if self.blocked else "top-1 ~ model"
        return (f"one OLS model over all runs ({model}), pooled residual sd, t-intervals with "
                f"{self.df} df ({LEVEL:.0%}); Holm-adjusted p over the transitions decides 'resolved'")

    @property
    def usable(self) -> bool:
        """Intervals exist: some replication, and the seeds changed something."""
        return self.df > 0 and self.sigma > 0


def fit(runs: pd.DataFrame) -> Fit:
    """Fit `top1 ~ model (+ seed)` to finished runs (columns `model`, `seed`, `top1`)."""
    import statsmodels.api as sm

    runs = runs[["model", "seed", "top1"]].astype({"top1": float}).reset_index(drop=True)
    names = list(dict.fromkeys(runs["model"]))
    groups = runs.groupby("model", sort=False)["top1"]
    means, counts = groups.mean().to_dict(), groups.size().to_dict()
    sds = groups.std(ddof=1).to_dict()
    seed_sets = {frozenset(s) for _, s in runs.groupby("model", sort=False)["seed"]}
    seeds = sorted(runs["seed"].unique())
    # A seed block only where it keeps every contrast equal to the difference of the means:
    # a complete design (every model run with the same seeds, once each).
    blocked = (len(seed_sets) == 1 and len(seeds) > 1
               and all(c == len(seeds) for c in counts.values()))
    x = pd.get_dummies(pd.Categorical(runs["model"], categories=names)).astype(float)
    if blocked:
        x = pd.concat([x, pd.get_dummies(runs["seed"].astype(str), prefix="seed",
                                         drop_first=True).astype(float)], axis=1)
        # sum-to-zero seed effects: the model coefficients are then exactly the model means
        seed_cols = [c for c in x.columns if str(c).startswith("seed_")]
        first = ~x[seed_cols].any(axis=1)
        x.loc[first, seed_cols] = -1.0
    df = len(runs) - x.shape[1]
    if df <= 0:
        return Fit(means, counts, sds, math.nan, 0, blocked, None, names)
    res = sm.OLS(runs["top1"].to_numpy(), x.to_numpy()).fit()
    sigma = math.sqrt(max(res.scale, 0.0))
    if sigma < 1e-9 * max(1.0, float(runs["top1"].abs().max())):
        sigma = 0.0  # rounding residue of identical runs: the seed changed nothing
    return Fit(means, counts, sds, sigma, int(res.df_resid), blocked,
               np.asarray(res.cov_params())[:len(names), :len(names)], names)


def contrast(f: Fit, a: str, b: str) -> Dict[str, float]:
    """Change from model `a` to model `b`: Δ (difference of means), its interval and p."""
    from scipy import stats
    delta = f.means[b] - f.means[a]
    out = dict(delta=delta, se=math.nan, ci_low=math.nan, ci_high=math.nan, p=math.nan)
    if a == b or not f.usable:
        return out
    i, j = f.names.index(a), f.names.index(b)
    se = math.sqrt(f.cov[i, i] + f.cov[j, j] - 2 * f.cov[i, j])
    half = stats.t.ppf(0.5 + LEVEL / 2, f.df) * se
    p = 2 * stats.t.sf(abs(delta) / se, f.df)
    return dict(delta=delta, se=se, ci_low=delta - half, ci_high=delta + half, p=float(p))


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


def paper_half_width(sd: float, df: int, seeds: int = PAPER_SEEDS) -> float:
    """95% half-width of a difference of two of the paper's means (pooled sd, `seeds` each)."""
    from scipy import stats
    return float(stats.t.ppf(0.5 + LEVEL / 2, df) * sd * math.sqrt(2 / seeds))


# ---- agreement with the paper -----------------------------------------------------------

SIGNS = ("-", "0", "+")


def sign_table(ours: Sequence[str], paper: Sequence[str]) -> Dict:
    """3x3 counts (rows: our sign, columns: the paper's) and Fisher's exact test on them.

    Fisher's test conditions on the margins, so chance agreement is judged from how
    often each sign occurs, not from a coin flip. Empty rows/columns are dropped first;
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

    def spearman(a, b, axis=-1):  # Pearson on (average) ranks, vectorized over resamples
        return stats.pearsonr(stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis), axis=axis).statistic

    rho = float(stats.spearmanr(x, y)[0])
    res = stats.permutation_test((x, y), spearman, permutation_type="pairings", vectorized=True,
                                 n_resamples=9999, alternative="two-sided", rng=draws)
    out["spearman"].update(rho=rho, p=float(res.pvalue), p_method=how)
    tau = float(stats.kendalltau(x, y)[0])
    if np.unique(x).size == len(x) and np.unique(y).size == len(y):
        # no ties: scipy's exact null of tau is this permutation distribution
        p = float(stats.kendalltau(x, y, method="exact").pvalue)
        how_tau = "exact"
    else:
        # Ties: permute the pairings. With the margins fixed, tau-b is its numerator (the sum
        # of concordance signs) over a constant, so that sum is the test statistic.
        def concordance(a, b, axis=-1):
            a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
            da = np.sign(a[..., :, None] - a[..., None, :])
            db = np.sign(b[..., :, None] - b[..., None, :])
            return (da * db).sum(axis=(-2, -1)) / 2
        p = float(stats.permutation_test((x, y), concordance, permutation_type="pairings",
                                         vectorized=True, n_resamples=9999,
                                         alternative="two-sided", rng=draws).pvalue)
        how_tau = how
    out["kendall"].update(tau=tau, p=p, p_method=how_tau)
    return out


# ---- power ------------------------------------------------------------------------------

def power(effect: float, sigma: float, seeds: int, models: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test of one transition in a complete design of `models`
    models x `seeds` seeds with seed as a block (noncentral t, scipy)."""
    from scipy import stats
    df = (models - 1) * (seeds - 1)
    if df < 1:
        return math.nan
    ncp = effect / (sigma * math.sqrt(2 / seeds))
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_needed(effect: float, sigma: float, models: int, target: float = POWER,
                 alpha: float = ALPHA, most: int = 10_000) -> Optional[int]:
    """The fewest seeds per model that resolve `effect` with `target` power."""
    if not sigma > 0 or math.isnan(sigma):
        return None
    lo, hi = 2, 2
    while power(effect, sigma, hi, models, alpha) < target:
        if hi >= most:
            return None
        lo, hi = hi, min(2 * hi, most)
    while lo < hi:  # power grows with the seeds: bisect for the first that reaches the target
        mid = (lo + hi) // 2
        if power(effect, sigma, mid, models, alpha) >= target:
            hi = mid
        else:
            lo = mid + 1
    return hi
