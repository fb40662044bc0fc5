"""The analysis behind `roadmap report`, as DataFrames: steps, transitions, states, noise.

A transition is one roadmap change, run A -> run B; its Δ is the difference of the two
models' mean top-1 over their finished runs. Intervals come from one linear model over
all runs of the roadmap (`roadmap.stats`: each step's own seed noise, a seed block where
the design is complete, the test set's part), and `roadmap.sequential` decides each
change's state: resolved, equivalent to zero, or open. The paper's changes are judged with the pooled
Table-10 sd. Runs of the same configuration and recipe are one model
(`large_kernel/k7` is `large_kernel`, `large_kernel/k3` is `move_up_dwconv`).

Each run is compared with the earlier run (in roadmap order) whose configuration differs
from it in the fewest toggles, the latest on a tie: on a cumulative roadmap that is the
step before; in a kernel sweep the previous kernel size (and `gelu` is compared with
`large_kernel/k7`); on an "independent" custom roadmap (leave one out) the start. Without
recorded configurations, consecutive runs are compared.
"""

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import sequential as Q
from . import stats as S
from .errors import RoadmapError
from .results import RESULT_COLUMNS, check_labels, model_identity, order_key, read_results, summarize

REQUIRED = ("order", "run", "seed", "status", "top1")


# ---- reading ---------------------------------------------------------------------------


def _read(folder) -> pd.DataFrame:
    try:
        table = read_results(folder)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise RoadmapError(f"{Path(folder) / 'results.csv'} is not a readable table ({e})") from None
    return table  # per-image correctness comes from the JSON records (no column of results.csv)


def gather(dirs: Sequence) -> pd.DataFrame:
    """The results of one or more folders as one table; a run found twice (same key) counts once."""
    table = pd.concat([_read(d) for d in dirs], ignore_index=True)
    if "key" in table.columns:
        keyed = table["key"].notna()
        table = pd.concat([table[keyed].drop_duplicates("key"), table[~keyed]], ignore_index=True)
    check_labels(table, ", ".join(map(str, dirs)) or "the results")  # models, recipes, data: one each
    check(table, dirs)
    return table


def check(table: pd.DataFrame, dirs: Sequence = ()):
    """Raise one clear RoadmapError if the table cannot be reported on."""
    where = ", ".join(map(str, dirs)) or "the results"
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RoadmapError(f"{where}: the results lack the columns {missing}; they were not written by `roadmap run`")
    ok = table[table["status"] == "ok"]
    if not len(ok):
        raise RoadmapError(f"{where}: no finished runs to report on")
    for col in ("order", "seed"):
        if pd.to_numeric(ok[col], errors="coerce").isna().any():
            raise RoadmapError(f"{where}: column {col!r} has empty or non-numeric values in finished runs")
    dup = ok[ok.duplicated(["run", "seed"], keep=False)]
    if len(dup):
        r = dup.iloc[0]
        times = int(((ok["run"] == r["run"]) & (ok["seed"] == r["seed"])).sum())
        raise RoadmapError(
            f"{where}: run {r['run']} seed {r['seed']} appears {times} times with different "
            "settings (recipe or data); report those results separately"
        )
    for col in ("data", "preset"):
        values = sorted(map(str, ok[col].dropna().unique())) if col in ok.columns else []
        if len(values) > 1:
            raise RoadmapError(f"{where}: the results mix {col} {values}; report each separately")


def _complete(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for col in RESULT_COLUMNS:
        if col not in table.columns:
            table[col] = None
    return table


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _num(v) -> float:
    v = pd.to_numeric(v, errors="coerce")
    return float(v) if pd.notna(v) else math.nan


# ---- per step ----------------------------------------------------------------------------


def bad_top1(table: pd.DataFrame) -> List[str]:
    """Runs marked finished whose top-1 is NaN, inf or missing: reported as failed runs."""
    ok = table[table["status"] == "ok"]
    bad = ok[~np.isfinite(pd.to_numeric(ok["top1"], errors="coerce"))]
    return [f"{r['run']} seed {r['seed']}" for _, r in bad.iterrows()]


def step_table(table: pd.DataFrame, ok: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per run in roadmap order: mean/sd over finished seeds and the paper's numbers.

    Runs of one model under two labels (`large_kernel/k7`, `large_kernel`) pool their seeds.
    """
    table = _complete(table)
    ok = finished(table) if ok is None else ok
    clean = table[~(table["status"] == "ok") | table.index.isin(ok.index)].copy()
    clean.loc[~clean.index.isin(ok.index), "status"] = clean["status"].where(clean["status"] != "ok", "failed")
    steps = summarize(clean)
    if not len(steps):
        return steps
    model_of = _model_of(ok)
    pooled = once(ok).groupby("model")["top1"]
    for i, run in enumerate(steps["run"]):
        m = model_of.get(run)
        if m is not None:
            values = pooled.get_group(m)
            steps.loc[i, ["top1_mean", "top1_std", "seeds"]] = [
                values.mean(),
                values.std(ddof=1) if len(values) > 1 else None,
                len(values),
            ]
    idx = sorted(range(len(steps)), key=lambda i: order_key(*steps.iloc[i][["order", "variant", "run"]]))
    steps = steps.iloc[idx].reset_index(drop=True)
    configs = table.groupby("run", sort=False)["config"].first()
    steps["config"] = [_config(configs.get(r)) for r in steps["run"]]
    return steps


def _config(v) -> Optional[Dict]:
    if isinstance(v, dict):
        return v
    try:
        v = json.loads(v)
    except (TypeError, ValueError):
        return None
    return v if isinstance(v, dict) else None


def _predecessor(steps: pd.DataFrame, i: int) -> int:
    """Index of the earlier run that run i differs from least (ties: the latest); see the docstring."""
    mine = steps["config"][i]
    if mine is None or any(c is None for c in steps["config"][:i]):
        return i - 1
    return min(range(i - 1, -1, -1), key=lambda j: _config_distance(steps["config"][j], mine))


def _config_distance(a: Dict, b: Dict) -> int:
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))


# ---- the model and the transitions ------------------------------------------------------


def model_ids(table: pd.DataFrame) -> pd.Series:
    """Which trained model each run is: its configuration and recipe (the run label where
    they were not recorded). `large_kernel/k7` and `large_kernel` are one model."""
    if not len(table):
        return pd.Series(dtype=str)
    known = table["config"].map(_config).notna()
    # the store's identity: the keyed recipe fields, so records of every vintage compare
    return model_identity(table).where(known, "run:" + table["run"].astype(str))


def finished(table: pd.DataFrame) -> pd.DataFrame:
    """Finished runs with a finite top-1, each with its model id (and per-image correctness)."""
    ok = table[table["status"] == "ok"].copy()
    ok["top1"] = pd.to_numeric(ok["top1"], errors="coerce")
    ok = ok[np.isfinite(ok["top1"])]
    ok["seed"] = pd.to_numeric(ok["seed"])
    ok["model"] = model_ids(ok)
    ok["val"] = [_bits(r) for r in ok.to_dict("records")] if len(ok) else []
    return ok


def run_minutes(ok: pd.DataFrame) -> pd.DataFrame:
    """Each finished run's recorded cost: `wall_s` (every process it took, resumes included)
    in minutes, and CPU-minutes (wall x the threads it was given). A record's time is that
    of whatever else its machine ran beside it."""
    minutes = pd.to_numeric(ok["wall_s"], errors="coerce") / 60
    cpu = minutes * pd.to_numeric(ok["threads"], errors="coerce")
    return pd.DataFrame({"seed": ok["seed"], "minutes": minutes, "cpu_minutes": cpu})


def once(ok: pd.DataFrame) -> pd.DataFrame:
    """One observation per model and seed: that is one run (its key hashes configuration,
    recipe, data and seed), so the same run under two labels (`large_kernel/k7`,
    `large_kernel`) counts once; the labels still both show it."""
    return ok[~ok.duplicated(["model", "seed"])]


def _bits(row) -> Optional[np.ndarray]:
    """The run's per-image top-1 correctness, or None where it was not recorded."""
    text, n = row.get("val_correct"), pd.to_numeric(row.get("val_n"), errors="coerce")
    if not isinstance(text, str) or not text or pd.isna(n):
        return None
    from .train import unpack_bits

    return unpack_bits(text, int(n))


def duplicate_runs(table: pd.DataFrame) -> List[str]:
    """Runs that repeat a model and seed under another label with a different top-1 (the
    first is kept); an identical repeat is the same record twice and needs no word."""
    ok = finished(table)
    dup = ok[ok.duplicated(["model", "seed"])]
    first = once(ok).set_index(["model", "seed"])["top1"]
    return [f"{r['run']} seed {r['seed']:g}" for _, r in dup.iterrows() if r["top1"] != first[(r["model"], r["seed"])]]


def _model_of(ok: pd.DataFrame) -> Dict[str, str]:
    return dict(zip(ok["run"], ok["model"]))


def paper_noise() -> Tuple[float, int, float]:
    """The pooled Table-10 seed sd, its df, and the 95% half-width of a paper change."""
    from .registry import ROADMAP

    sd, df = S.pooled_sd([s.paper_top1_sd for s in ROADMAP])
    return sd, df, S.paper_half_width(sd, df)


def _paper_sign(a, b, sd: float, df: int) -> str:
    # a kernel-sweep point has no sd: one run behind it, not three, so its tie band is wider
    n = [S.PAPER_SEEDS if pd.notna(_num(r["paper_top1_sd"])) else 1 for r in (a, b)]
    delta = _num(b["paper_top1"]) - _num(a["paper_top1"])
    return S.sign(delta, abs(delta) > S.paper_half_width(sd, df, *n))


TRANSITION_COLUMNS = [
    "from",
    "to",
    "order_from",
    "order_to",
    "phase",
    "delta",
    "ci_low",
    "ci_high",
    "se",
    "p",
    "p_holm",
    "resolved",
    "ours_sign",
    "n_from",
    "n_to",
    "same_model",
    "top1_from",
    "top1_to",
    "paper_from",
    "paper_to",
    "paper_delta",
    "paper_sign",
    "verdict",
    "d_params_m",
    "d_gflops",
    "d_gflops_224",
    "d_train_img_s",
    "d_infer_img_s",
    "ci_low_seed",
    "ci_high_seed",
    "p_seed",
    "se_seed",
    "df",
    "test_sd",
    "equivalence_bound",
    "state",
    "p_eq_holm",
    "decided_at",
    "seeds_to_decide",
]


def _transition(a, b, f, model_of, paper) -> Dict:
    ma, mb = model_of.get(a["run"]), model_of.get(b["run"])
    ours = dict(S.NAN_CONTRAST)
    if f is not None and ma is not None and mb is not None:
        ours = S.contrast(f, ma, mb)
    paper_delta = _num(b["paper_top1"]) - _num(a["paper_top1"])
    row = {
        "from": a["run"],
        "to": b["run"],
        "order_from": a["order"],
        "order_to": b["order"],
        "phase": b["phase"],
        **ours,
        "n_from": int(a["seeds"]),
        "n_to": int(b["seeds"]),
        "same_model": ma is not None and ma == mb,
        "top1_from": a["top1_mean"],
        "top1_to": b["top1_mean"],
        "paper_from": _num(a["paper_top1"]),
        "paper_to": _num(b["paper_top1"]),
        "paper_delta": paper_delta,
        "paper_sign": _paper_sign(a, b, *paper),
    }
    if f is not None and ma in f.counts and mb in f.counts:
        row["n_from"], row["n_to"] = f.counts[ma], f.counts[mb]  # the runs the interval uses
    for col in ("params_m", "gflops", "gflops_224"):
        row[f"d_{col}"] = _num(b[col]) - _num(a[col])
    for col in ("train_img_s", "infer_img_s"):
        row[f"d_{col}"] = _num(b[f"{col}_mean"]) - _num(a[f"{col}_mean"])
    return row


def analyse(
    table: pd.DataFrame, design: Optional[Q.Design] = None
) -> Tuple[pd.DataFrame, pd.DataFrame, Optional[S.Fit]]:
    """The step table, the transitions and the fitted model of a results table.

    Each change's state (resolved / equivalent / open) comes from `sequential.decide`: over
    the looks of `design` (a folder's `design.json`, written by `run --until-decided`), or,
    without one, a single look at every finished run (a fixed design at the full alpha)."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RoadmapError(f"the results lack the columns {missing}; they were not written by roadmap")
    table = _complete(table)
    ok = finished(table)
    pending = 0
    if design is not None and len(ok):
        # a sequential design reports what its last look saw: the runs of a round still in
        # training count from the look that asks for them, not before
        seen = _at_last_look(table, ok, design)
        pending, ok = len(ok) - len(seen), seen
    steps = step_table(table, ok)
    runs = once(ok)
    f = S.fit(runs) if len(ok) else None
    model_of, paper = _model_of(ok), paper_noise()[:2]
    rows = [
        _transition(steps.iloc[_predecessor(steps, i)], steps.iloc[i], f, model_of, paper) for i in range(1, len(steps))
    ]
    trans = pd.DataFrame(rows, columns=TRANSITION_COLUMNS)
    if len(trans):
        _decide(trans, runs, model_of, f, design)
        judged = trans["p"].notna()
        trans["ours_sign"] = [S.sign(d, r) if j else "" for d, r, j in zip(trans["delta"], trans["resolved"], judged)]
        trans["verdict"] = [_verdict(r) for _, r in trans.iterrows()]
        trans.attrs["pending_runs"] = pending
    return steps, trans, f


def _at_last_look(table: pd.DataFrame, ok: pd.DataFrame, design: Q.Design) -> pd.DataFrame:
    """The finished runs the design's last look made saw (all of them before any look)."""
    d, _ = decision(table, design, ok)
    if not d.looks:
        return ok
    return ok[Q.seen_by(d.looks[-1], ok["model"], ok["seed"], design)]


def _decide(trans: pd.DataFrame, runs: pd.DataFrame, model_of: Dict, f: Optional[S.Fit], design) -> None:
    """Fill each change's state, Holm p (sequential over the design's looks), equivalence
    bound and, for an open one, the seeds per step it would take to decide it."""
    # The same model twice (k7 and large_kernel) is no test, and a change without an
    # interval is not judged: both are left out of Holm's family.
    pairs = [(model_of.get(a), model_of.get(b)) for a, b in zip(trans["from"], trans["to"])]
    judged = trans["p"].notna() & ~trans["same_model"].astype(bool)
    idx = [i for i in range(len(trans)) if judged.iloc[i]]
    for col, v in (("state", ""), ("p_eq_holm", math.nan), ("decided_at", None), ("seeds_to_decide", None)):
        trans[col] = pd.Series([v] * len(trans), dtype=object)
    trans["p_holm"], trans["resolved"] = math.nan, False
    if not idx or f is None:
        trans["equivalence_bound"] = math.nan
        return
    cols = ["model", "seed", "top1"] + (["val"] if "val" in runs.columns else [])
    d = Q.decide(runs[cols], [pairs[i] for i in idx], design)
    labels: Dict[str, List[str]] = {}
    for run, m in model_of.items():
        labels.setdefault(m, []).append(run)
    # where the design stands, for the report's text (attrs: not a column of the table)
    trans.attrs["looks_made"] = [lk.seeds for lk in d.looks] if design is not None else []
    trans.attrs["next"] = {"/".join(labels.get(m, [m])): n for m, n in d.targets.items()} if d.waiting else {}
    t = d.table
    trans["equivalence_bound"] = math.nan
    for j, i in enumerate(idx):
        trans.at[i, "state"] = t["state"].iloc[j]
        trans.at[i, "p_holm"] = t["p_seq_holm"].iloc[j]
        trans.at[i, "p_eq_holm"] = t["p_eq_holm"].iloc[j]
        trans.at[i, "equivalence_bound"] = t["equivalence_bound"].iloc[j]
        trans.at[i, "decided_at"] = t["decided_at"].iloc[j]
    trans["resolved"] = (trans["state"] == "resolved").astype(bool)
    still = [i for i in idx if trans.at[i, "state"] == "open"]
    last = d.looks[-1] if d.looks else None
    alpha = (design.alpha * design.weights[-1] if design else S.ALPHA) / max(1, len(still))
    for i in still:
        a, b = pairs[i]
        v_test = _num(trans.at[i, "test_sd"]) ** 2
        var = last.var if last is not None else f.var
        v_test = 0.0 if math.isnan(v_test) else v_test
        margin = design.margin if design else Q.MARGIN
        delta = _num(trans.at[i, "delta"])
        trans.at[i, "seeds_to_decide"] = Q.seeds_to_decide(
            delta, var.get(a, math.nan), var.get(b, math.nan), v_test, alpha, margin
        )


def decision(
    table: pd.DataFrame, design: Optional[Q.Design], ok: Optional[pd.DataFrame] = None
) -> Tuple[Q.Decision, Dict[str, List[str]]]:
    """Where `design` stands on a results table (`sequential.decide` over the roadmap's real
    changes), and each model's run labels, to turn the models it asks seeds for into steps."""
    table = _complete(table)
    ok = finished(table) if ok is None else ok
    if not len(ok):
        raise RoadmapError("no finished runs yet: train the planned seeds first")
    steps = step_table(table, ok)
    model_of = _model_of(ok)
    pairs = []
    for i in range(1, len(steps)):
        a, b = model_of.get(steps.iloc[_predecessor(steps, i)]["run"]), model_of.get(steps.iloc[i]["run"])
        if a is not None and b is not None and a != b:
            pairs.append((a, b))
    runs = once(ok)
    cols = ["model", "seed", "top1"] + (["val"] if "val" in runs.columns else [])
    labels: Dict[str, List[str]] = {}
    for run, m in model_of.items():
        labels.setdefault(m, []).append(run)
    return Q.decide(runs[cols], pairs, design), labels


VERDICTS = (
    "replicates",
    "same direction",
    "flips",
    "equivalent here (paper: resolved)",
    "open here (paper: resolved)",
    "neither resolved",
    "ours only (paper: within its noise)",
)


def _verdict(r) -> str:
    """How our change reads against the paper's (definitions: docs/statistics.md)."""
    ours, paper = r["ours_sign"], r["paper_sign"]
    if not ours or not paper:
        return ""
    if ours == "0":
        if paper == "0":
            return "neither resolved"
        return "equivalent here (paper: resolved)" if r.get("state") == "equivalent" else "open here (paper: resolved)"
    if paper == "0":
        return "ours only (paper: within its noise)"
    if ours != paper:
        return "flips"
    inside = r["ci_low"] <= r["paper_delta"] <= r["ci_high"]
    return "replicates" if inside else "same direction"


def reference_band(table: pd.DataFrame) -> Optional[pd.DataFrame]:
    """Per run of a reference: its mean top-1, the 95% half-width of that mean from the
    pooled seed sd, and what `stats.range_half` needs (sigma, df, n); None without a noise estimate.
    A drawing aid: the pooled sd, as one step's own 2 df would make every range huge."""
    ok = finished(_complete(table))
    if not len(ok):
        return None
    f = S.fit(once(ok))
    if not f.usable:
        return None
    t = S.t_quantile(f.df)
    rows = [
        dict(run=run, mean=f.means[m], half=t * f.sigma / math.sqrt(f.counts[m]), sigma=f.sigma, df=f.df, n=f.counts[m])
        for run, m in _model_of(ok).items()
    ]
    return pd.DataFrame(rows)


def transitions(table: pd.DataFrame) -> pd.DataFrame:
    """One row per roadmap change: Δ top-1 with its interval and Holm-adjusted p, the paper's
    change and sign, and the costs. `to` is the later run's label."""
    return analyse(table)[1]


def plot_deltas(table: pd.DataFrame) -> Optional[pd.DataFrame]:
    """The transitions that have an interval, for the figures; None if none."""
    deltas = transitions(table)
    deltas = deltas[deltas["ci_low"].notna()]
    return deltas if len(deltas) else None


# ---- agreement with the paper and noise ----------------------------------------------------


def _real(trans: pd.DataFrame) -> pd.DataFrame:
    return trans[~trans["same_model"].astype(bool)] if len(trans) else trans


def agreement(trans: pd.DataFrame) -> Dict:
    """Our sign against the paper's (3x3 table; one-sided test of the matching signs) and rank
    correlation of the per-transition Δs."""
    real = _real(trans)
    ours, paper = list(real["ours_sign"]), list(real["paper_sign"])
    signs, agree = S.sign_table(ours, paper), S.sign_agreement(ours, paper)
    corr = S.delta_correlations(real["delta"].to_numpy(dtype=float), real["paper_delta"].to_numpy(dtype=float))
    return dict(
        sign_table=signs,
        sign_fisher_p=signs["fisher_p"],
        sign_matches=agree["sign_matches"],
        sign_agreement_p=agree["sign_agreement_p"],
        delta_spearman=corr["spearman"],
        delta_kendall=corr["kendall"],
        verdicts={v: [f"{r['from']} -> {r['to']}" for _, r in real.iterrows() if r["verdict"] == v] for v in VERDICTS},
    )


def noise(f: Optional[S.Fit], trans: pd.DataFrame) -> Dict:
    """The pooled seed sd (with its interval) and what it would take: seeds for 0.3 / 0.5 /
    1.0 points at 80% power, and the power now, unadjusted and at Holm's strictest level."""
    paper_sd, paper_df, paper_half = paper_noise()
    out = dict(
        seed_sd=None,
        seed_sd_ci=None,
        df=0,
        method=None,
        seeds_needed={},
        seeds_needed_holm={},
        power_now={},
        power_holm={},
        test_sd=None,
        paper_seed_sd=paper_sd,
        paper_df=paper_df,
        paper_half_width=paper_half,
    )
    if f is None or not f.usable:
        return out
    models = len(f.names)
    family = int(trans["p_holm"].notna().sum()) if len(trans) else 0
    seeds = sorted(set(f.counts.values()))
    halves = (trans["ci_high"] - trans["ci_low"]) / 2 if len(trans) else pd.Series(dtype=float)
    test = trans["test_sd"].dropna() if len(trans) else pd.Series(dtype=float)
    test_var = float(np.median(test**2)) if len(test) else 0.0
    # how much counting the test set widened the intervals: full / seed-only half-width
    widened = pd.Series(dtype=float)
    if len(test):
        full, seed_only = trans["ci_high"] - trans["ci_low"], trans["ci_high_seed"] - trans["ci_low_seed"]
        widened = (full / seed_only)[trans["test_sd"].notna()].dropna()
    out.update(
        seed_sd=f.sigma,
        seed_sd_ci=list(S.sigma_interval(f.sigma, f.df)),
        df=f.df,
        method=f.method,
        models=models,
        family=family,
        test_sd=math.sqrt(test_var) if len(test) else None,
        median_half_width=float(halves.median()) if halves.notna().any() else None,
        widening=[float(widened.median()), float(widened.min()), float(widened.max())] if len(widened) else None,
    )
    holm_alpha = S.ALPHA / max(family, 1)
    for e in S.EFFECTS:
        key = f"{e:.1f}"
        out["seeds_needed"][key] = S.seeds_needed(e, f.sigma, models, test_var=test_var)
        out["seeds_needed_holm"][key] = S.seeds_needed(e, f.sigma, models, alpha=holm_alpha, test_var=test_var)
        if len(seeds) == 1 and seeds[0] > 1:
            out["power_now"][key] = S.power(e, f.sigma, seeds[0], models, test_var=test_var)
            out["power_holm"][key] = S.power(e, f.sigma, seeds[0], models, holm_alpha, test_var)
    return out
