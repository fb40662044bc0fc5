"""Deciding every change with the fewest seeds: a group-sequential design over the roadmap.

Each change ends in one of three states:
- *resolved*: its sequential p-value, Holm-adjusted over the changes, is below alpha;
- *equivalent*: shown within +-margin of zero by two one-sided tests (TOST), with the same
  sequential p-values and Holm adjustment (its own family-wise error rate, alpha);
- *open*: neither, with the seeds per step it would take to decide it from the measured noise.

The design (`Design`) is fixed before the first look: looks at `planned` seeds per step, then
at counts rising to `max_seeds`, and a share `weights[j]` of alpha spent at look j (the
weights sum to 1). A change's sequential p-value is min_j p_j / w_j over the looks made so
far: by the union bound, P(min_j p_j / w_j <= u) <= sum_j P(p_j <= u w_j) <= u for any
stopping and allocation rule, so Holm over these p-values controls the family-wise error
at alpha however often the design looks and wherever it puts the seeds (Bonferroni
alpha-spending per look, Holm across changes: the closed test of weighted Bonferroni
intersection tests). The union bound is conservative; `benchmarks/sequential_sim.py`
measures the real error rates and the seeds it spends against a fixed design.

Between looks, only the steps that border an open change get seeds: the noisier step of an
open pair goes to the next look's count, the quieter one to its Neyman share
(n_quiet / n_noisy = sd_quiet / sd_noisy), which minimises the change's variance for the
seeds spent. Everything here is a pure function of the runs table: the looks are rebuilt
from the runs' seeds (look j sees, per step, the seeds the looks before it asked for), so
the runner, the report and the simulation all decide with the same code, and a killed run
resumes where it was.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import stats as S
from .errors import RoadmapError

ALPHA = round(S.ALPHA, 12)  # 0.05, without 1 - 0.95 rounding in design.json
MARGIN = 0.5  # top-1 points: a change within +-0.5 of zero is "equivalent" (no difference here)
DESIGN_FILE = "design.json"
STATES = ("resolved", "equivalent", "open")


@dataclass(frozen=True)
class Design:
    """The sequential design of one results folder, fixed before its first look."""

    planned: int  # seeds every step has at the first look
    max_seeds: int  # the cap per step
    looks: Tuple[int, ...]  # seed counts per step at the looks: planned, ..., max_seeds
    weights: Tuple[float, ...]  # share of alpha spent at each look (sums to 1)
    seed_offset: int = 0  # the design's seeds are seed_offset + 0 .. max_seeds - 1
    alpha: float = ALPHA
    margin: float = MARGIN

    @property
    def seeds(self) -> List[int]:
        return [self.seed_offset + i for i in range(self.max_seeds)]

    def to_json(self) -> str:
        return json.dumps(dict(asdict(self), kind="group-sequential, Bonferroni spending per look, Holm"), indent=2)


def make_design(
    planned: int, max_seeds: int, looks: int = 3, seed_offset: int = 0, alpha: float = ALPHA, margin: float = MARGIN
) -> Design:
    """`looks` looks evenly spaced in seeds from `planned` to `max_seeds`, alpha spent equally
    over them (Pocock-like: the first look keeps a fair share, so large changes stop early)."""
    if planned < 2:
        raise RoadmapError(f"--seeds {planned}: the sequential design needs at least 2 planned seeds per step")
    if max_seeds < planned:
        raise RoadmapError(f"--max-seeds {max_seeds} is below --seeds {planned}; use --max-seeds >= {planned}")
    if looks < 1:
        raise RoadmapError(f"--looks {looks}: give at least 1 look")
    counts = sorted({int(round(x)) for x in np.linspace(planned, max_seeds, max(1, looks))})
    return Design(planned, max_seeds, tuple(counts), tuple([1 / len(counts)] * len(counts)), seed_offset, alpha, margin)


def read_design(folder) -> Optional[Design]:
    """The design a results folder declared (`design.json`), or None (a fixed design)."""
    path = Path(folder) / DESIGN_FILE
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
        d.pop("kind", None)
        design = Design(**{**d, "looks": tuple(d["looks"]), "weights": tuple(d["weights"])})
        ok = (
            all(isinstance(getattr(design, k), int) and not isinstance(getattr(design, k), bool)
                for k in ("planned", "max_seeds", "seed_offset"))
            and list(design.looks) == sorted(set(design.looks))
            and design.looks[0] == design.planned and design.looks[-1] <= design.max_seeds
            and len(design.weights) == len(design.looks) and abs(sum(design.weights) - 1) < 1e-9
            and all(w > 0 for w in design.weights) and 0 < design.alpha < 1 and design.margin > 0
        )  # fmt: skip
    except (ValueError, TypeError, KeyError) as e:
        raise RoadmapError(
            f"{path}: not a design file ({type(e).__name__}: {e}); delete it to start the design anew"
        ) from None
    if not ok:
        raise RoadmapError(
            f"{path}: inconsistent design (looks {list(design.looks)}, weights {list(design.weights)}); "
            "it is written by `roadmap run --until-decided`: delete it to start the design anew"
        )
    return design


# ---- one look ------------------------------------------------------------------------------


@dataclass
class Look:
    """The changes' tests at one look: Δ, se, df and the two p-values, per change."""

    seeds: int  # the look's nominal seed count per step (`counts`: what each step had)
    delta: np.ndarray
    se: np.ndarray
    df: np.ndarray
    p: np.ndarray  # two-sided, H0: Δ = 0
    p_eq: np.ndarray  # TOST, H0: |Δ| >= margin
    var: Dict[str, float]  # each model's seed variance (for the allocation)
    counts: Dict[str, int]


def tost_p(delta, se, df, margin: float):
    """p of the two one-sided tests of |Δ| >= margin (the larger of the two one-sided p's)."""
    from scipy import stats

    with np.errstate(divide="ignore", invalid="ignore"):
        return stats.t.sf((margin - np.abs(delta)) / se, df)


def look_at(
    runs: pd.DataFrame, changes: Sequence[Tuple[str, str]], seeds: Optional[int], design: Design, view=None
) -> Look:
    """The tests of `changes` (pairs of model ids) on the runs a look sees: each model's first
    `view[model]` seeds of the design (`seeds` for a model not in `view`; None: every run)."""
    seen = runs if seeds is None else runs[runs["seed"] < design.seed_offset + _limits(runs, seeds, view)]
    f = S.fit(seen)
    rows = [S.contrast(f, a, b) for a, b in changes]
    get = lambda k: np.array([r[k] for r in rows], dtype=float)  # noqa: E731
    delta, se, df = get("delta"), get("se"), get("df")
    return Look(seeds, delta, se, df, get("p"), tost_p(delta, se, df, design.margin), dict(f.var), dict(f.counts))


def _limits(runs: pd.DataFrame, seeds: int, view: Optional[Dict[str, int]]) -> np.ndarray:
    return runs["model"].map(lambda m: (view or {}).get(m, seeds)).to_numpy()


def seen_by(look: Look, models: pd.Series, seeds: pd.Series, design: Design) -> pd.Series:
    """Which runs (their models and seeds) a look saw: a run trained after it is not among them."""
    return pd.to_numeric(seeds) < design.seed_offset + models.map(lambda m: look.counts.get(m, look.seeds))


# ---- the decision over looks -----------------------------------------------------------------


def sequential_p(ps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """min over looks of p_j / w_j, capped at 1 (NaN where no look has a p)."""
    stacked = np.vstack([np.asarray(p, dtype=float) / w for p, w in zip(ps, weights)])
    with np.errstate(invalid="ignore"):
        out = np.fmin.reduce(stacked, axis=0)
    return np.minimum(out, 1.0)


@dataclass
class Decision:
    """Where the design stands: the looks made, each change's state, and the seeds to train next."""

    design: Design
    looks: List[Look]
    table: pd.DataFrame  # per change: state, sign, p_seq, p_seq_holm, p_eq_seq, p_eq_holm, bound, look
    targets: Dict[str, int] = field(default_factory=dict)  # model -> seeds wanted for the next look
    finished: bool = False  # every change decided, or the last look made
    waiting: bool = False  # the next look's seeds are not all in yet

    @property
    def open(self) -> List[int]:
        return [i for i, s in enumerate(self.table["state"]) if s == "open"]


def _holm_levels(p: np.ndarray, alpha: float) -> np.ndarray:
    """The level Holm tests each p at (alpha / (m - rank)), in p's own order."""
    ok = ~np.isnan(p)
    m = int(ok.sum())
    level = np.full(p.shape, np.nan)
    order = np.argsort(np.where(ok, p, np.inf), kind="stable")
    for rank, i in enumerate(order[:m]):
        level[i] = alpha / (m - rank)
    return level


def _states(looks: List[Look], design: Design, judged: np.ndarray) -> pd.DataFrame:
    from scipy import stats

    w = design.weights[: len(looks)]
    p_seq = np.where(judged, sequential_p([lk.p for lk in looks], w), np.nan)
    p_eq_seq = np.where(judged, sequential_p([lk.p_eq for lk in looks], w), np.nan)
    p_holm, p_eq_holm = S.holm(p_seq), S.holm(p_eq_seq)
    resolved = np.nan_to_num(p_holm, nan=1.0) < design.alpha
    equivalent = ~resolved & (np.nan_to_num(p_eq_holm, nan=1.0) < design.alpha)
    # the look that decided it, and its sign then (a decision is not taken back later)
    first = lambda ps, holm_ok: [  # noqa: E731
        next((j for j in range(len(looks)) if ok and ps[j][i] / w[j] <= holm_ok[i]), None) if ok else None
        for i, ok in enumerate(resolved | equivalent)
    ]
    levels = _holm_levels(p_seq, design.alpha)
    eq_levels = _holm_levels(p_eq_seq, design.alpha)
    at = [
        (first([lk.p for lk in looks], levels)[i] if resolved[i] else first([lk.p_eq for lk in looks], eq_levels)[i])
        for i in range(len(judged))
    ]
    # the smallest +-bound shown at each change's Holm level of the equivalence family
    bounds = np.full(len(judged), np.nan)
    for i in np.flatnonzero(judged):
        cands = [
            abs(lk.delta[i]) + stats.t.ppf(1 - eq_levels[i] * wj, lk.df[i]) * lk.se[i]
            for lk, wj in zip(looks, w)
            if np.isfinite(lk.se[i])
        ]
        bounds[i] = min(cands) if cands else np.nan
    last = looks[-1]
    sign = [("+" if looks[a].delta[i] > 0 else "-") if resolved[i] and a is not None else "" for i, a in enumerate(at)]
    state = np.where(resolved, "resolved", np.where(equivalent, "equivalent", "open"))
    state = np.where(judged, state, "")
    return pd.DataFrame(
        dict(
            state=state,
            sign=sign,
            p_seq=p_seq,
            p_seq_holm=p_holm,
            p_eq_seq=p_eq_seq,
            p_eq_holm=p_eq_holm,
            equivalence_bound=bounds,
            decided_at=[design.looks[a] if a is not None else None for a in at],
            delta=last.delta,
        )
    )


def allocate(
    look: Look, changes: Sequence[Tuple[str, str]], open_: Sequence[int], target: int, cap: int
) -> Dict[str, int]:
    """Seeds per model for the next look: for each open change, its noisier step goes to
    `target`, the quieter one to its Neyman share (target x sd_quiet / sd_noisy), never
    fewer than it has; a model bordering two open changes takes the larger of the two."""
    want: Dict[str, int] = {}
    for i in open_:
        a, b = changes[i]
        sa, sb = math.sqrt(max(look.var.get(a, 0.0), 0.0)), math.sqrt(max(look.var.get(b, 0.0), 0.0))
        noisy, quiet = (a, b) if sa >= sb else (b, a)
        s_noisy, s_quiet = max(sa, sb), min(sa, sb)
        share = math.ceil(target * s_quiet / s_noisy) if s_noisy > 0 else target
        for m, n in ((noisy, target), (quiet, max(look.counts.get(quiet, 0), min(target, share)))):
            want[m] = min(cap, max(want.get(m, 0), n))
    return {m: n for m, n in want.items() if n > look.counts.get(m, 0)}


FIXED = Design(planned=1, max_seeds=1, looks=(1,), weights=(1.0,))  # one look at all runs, full alpha


def decide(runs: pd.DataFrame, changes: Sequence[Tuple[str, str]], design: Optional[Design] = None) -> Decision:
    """Replay the design's looks on `runs` (columns model, seed, top1, optional val; one row
    per model and seed) for `changes` (pairs of model ids; a pair of one model twice is not
    judged). Each look is made only when the seeds its allocation asked for are all in.
    Without a design: one look at every run at the full alpha (a fixed design)."""
    judged = np.array([a != b for a, b in changes], dtype=bool)
    if runs.empty:
        raise RoadmapError("no finished runs to decide on")
    if design is None:
        looks = [look_at(runs, changes, None, FIXED)]
        table = _states(looks, FIXED, judged)
        table["decided_at"] = None
        return Decision(FIXED, looks, table, finished=True)
    present = runs.groupby("model")["seed"].apply(lambda s: set(int(x) for x in s))
    planned = set(design.seeds[: design.planned])
    short = [m for m in {m for c in changes for m in c} if not planned <= present.get(m, set())]
    if short:
        return Decision(design, [], pd.DataFrame(dict(state=[""] * len(changes))), finished=False, waiting=True,
                        targets={m: design.planned for m in short})  # fmt: skip
    looks: List[Look] = []
    targets: Dict[str, int] = {}
    # Each model's seeds at the next look: fixed by the looks before it, never by runs trained
    # since (a look remade later sees exactly what it saw when it was first made).
    view = {m: design.planned for c in changes for m in c}
    for j, count in enumerate(design.looks):
        if targets:  # the previous look's allocation must be in before this look is made
            missing = {m: n for m, n in targets.items() if not set(design.seeds[:n]) <= present.get(m, set())}
            if missing:
                table = _states(looks, design, judged)
                return Decision(design, looks, table, targets=targets, waiting=True)
            view.update(targets)
        looks.append(look_at(runs, changes, count, design, view))
        table = _states(looks, design, judged)
        open_ = [i for i, s in enumerate(table["state"]) if s == "open"]
        if not open_ or j == len(design.looks) - 1:
            return Decision(design, looks, table, finished=True)
        targets = allocate(looks[-1], changes, open_, design.looks[j + 1], design.max_seeds)
        if not targets:  # every bordering step already has the next look's seeds
            continue
    return Decision(design, looks, table, finished=True)


# ---- what an open change would need ---------------------------------------------------------


def seeds_to_decide(
    delta: float, var_a: float, var_b: float, test_var: float, alpha: float, margin: float = MARGIN, power: float = 0.8
) -> Optional[int]:
    """Seeds per step (both steps alike) at which, if the true change were `delta` and the steps'
    noise as measured, the change would be resolved or shown equivalent with `power`, testing
    at `alpha` (None: not within 10,000 seeds, e.g. |delta| near the margin and a large
    test-set part). Noncentral t for the resolution; the t approximation for TOST."""
    from scipy import stats

    if not (np.isfinite(delta) and var_a + var_b > 0):
        return None

    def decides(n: int) -> bool:
        se = math.sqrt((var_a + var_b) / n + test_var)
        df = 2 * (n - 1)
        crit = stats.t.ppf(1 - alpha / 2, df)
        ncp = abs(delta) / se
        p_res = stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -ncp)
        crit_eq = stats.t.ppf(1 - alpha, df)
        p_eq = max(0.0, stats.norm.cdf((margin - abs(delta)) / se - crit_eq) - stats.norm.cdf(
            (-margin - abs(delta)) / se + crit_eq))  # fmt: skip
        return max(p_res, p_eq) >= power

    n = 2
    while not decides(n):
        n = n * 2 if n < 64 else n + 64
        if n > 10_000:
            return None
    lo, hi = max(2, n // 2), n
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid) else (mid + 1, hi)
    return hi
