"""`roadmap report`: what each change did on your data, with confidence, next to the paper.

A transition is one roadmap change, run A -> run B; its Δ is the difference of the two
models' mean top-1 over their finished runs. Intervals come from one linear model over
all runs of the roadmap (`roadmap.stats`: model effects, seed as a block where the
design allows, pooled residual variance), and Holm-adjusted p over the transitions
decides which changes are *resolved*. The paper's changes are judged with the pooled
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

from . import stats as S
from .errors import RoadmapError
from .results import RESULT_COLUMNS, atomic_write_text, check_labels, model_identity, order_key, read_results, summarize
from .schema import check_report_text

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
    if f is not None and f.dropped and ma in f.counts and mb in f.counts:
        row["n_from"], row["n_to"] = f.counts[ma], f.counts[mb]  # the runs the interval uses
    for col in ("params_m", "gflops", "gflops_224"):
        row[f"d_{col}"] = _num(b[col]) - _num(a[col])
    for col in ("train_img_s", "infer_img_s"):
        row[f"d_{col}"] = _num(b[f"{col}_mean"]) - _num(a[f"{col}_mean"])
    return row


def analyse(table: pd.DataFrame) -> Tuple[pd.DataFrame, pd.DataFrame, Optional[S.Fit]]:
    """The step table, the transitions and the fitted model of a results table."""
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RoadmapError(f"the results lack the columns {missing}; they were not written by roadmap")
    table = _complete(table)
    ok = finished(table)
    steps = step_table(table, ok)
    f = S.fit(once(ok)) if len(ok) else None
    model_of, paper = _model_of(ok), paper_noise()[:2]
    rows = [
        _transition(steps.iloc[_predecessor(steps, i)], steps.iloc[i], f, model_of, paper) for i in range(1, len(steps))
    ]
    trans = pd.DataFrame(rows, columns=TRANSITION_COLUMNS)
    if len(trans):
        # The same model twice (k7 and large_kernel) is no test: left out of Holm's family.
        p = trans["p"].where(~trans["same_model"].astype(bool))
        trans["p_holm"] = S.holm(p.to_numpy(dtype=float))
        trans["resolved"] = (trans["p_holm"] < S.ALPHA).fillna(False).astype(bool)
        # an equivalence bound is the reading of a change that is not resolved
        trans["equivalence_bound"] = trans["equivalence_bound"].where(~trans["resolved"] & p.notna())
        judged = trans["p"].notna()
        trans["ours_sign"] = [S.sign(d, r) if j else "" for d, r, j in zip(trans["delta"], trans["resolved"], judged)]
        trans["verdict"] = [_verdict(r) for _, r in trans.iterrows()]
    return steps, trans, f


VERDICTS = (
    "replicates",
    "same direction",
    "flips",
    "below our noise",
    "both within noise",
    "ours only (paper: within its noise)",
)


def _verdict(r) -> str:
    """How our change reads against the paper's (definitions: docs/statistics.md)."""
    ours, paper = r["ours_sign"], r["paper_sign"]
    if not ours or not paper:
        return ""
    if ours == "0":
        return "below our noise" if paper != "0" else "both within noise"
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


# ---- the report ------------------------------------------------------------------------


def _f(v, fmt="{:.2f}", none="–") -> str:
    v = _num(v)
    return none if math.isnan(v) else fmt.format(v)


def _seed_counts(steps: pd.DataFrame) -> List[int]:
    return sorted(set(int(s) for s in steps["seeds"] if s > 0))


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def warnings_for(
    table: pd.DataFrame, steps: pd.DataFrame, f: Optional[S.Fit], trans: Optional[pd.DataFrame] = None
) -> List[str]:
    out = []
    full = _complete(table)
    bad = bad_top1(full)
    if bad:
        out.append(f"{', '.join(bad)}: marked finished but top-1 is not a number; counted as failed.")
    dup = duplicate_runs(full)
    if dup:
        out.append(
            f"{', '.join(dup)}: the same model and seed as a run under another label, with "
            "another top-1; only the first is counted."
        )
    seeds = _seed_counts(steps)
    if seeds == [1]:
        out.append(
            "Only one seed per step: the model has no residual degrees of freedom, so no "
            "change can be told apart from seed noise. Rerun with `--seeds 3` (finished "
            "runs are skipped)."
        )
    elif f is not None and f.df > 0 and f.sigma == 0:
        out.append(
            "Every step gave the same top-1 on every seed: the seed changed nothing, so "
            "there is no noise estimate and no interval (check that seeds reach the run)."
        )
    if f is not None and f.usable:
        out += _noise_warnings(f, full, trans)
    return out


def _noise_warnings(f: S.Fit, table: pd.DataFrame, trans: Optional[pd.DataFrame]) -> List[str]:
    out, runs_of = [], {}
    for run, m in _model_of(finished(table)).items():
        runs_of.setdefault(m, []).append(run)
    label = lambda m: "/".join(runs_of.get(m, [m]))  # noqa: E731
    if f.dropped:
        left = ", ".join(f"{label(m)} seed {s:g}" for m, s in f.dropped)
        out.append(
            f"Not every step has every seed: the seed block is kept on the seeds every step "
            f"has ({', '.join(f'{s:g}' for s in f.seeds)}), so {left} "
            f"{'is' if len(f.dropped) == 1 else 'are'} left out of Δ and the intervals."
        )
    if f.borrowed:
        out.append(
            f"{', '.join(label(m) for m in f.borrowed)}: one run, or identical runs, so no "
            f"noise of its own; its intervals use the pooled seed sd {f.sigma:.2f}."
        )
    for m, sd, others, p in S.sd_outliers(f):
        out.append(
            f"{label(m)}: seed sd {sd:.2f} is far above the other steps' pooled {others:.2f} "
            f"(F-test, Holm p = {p:.3g}); its changes get their own, wider intervals."
        )
    if trans is not None and len(trans):
        real = _real(trans)
        lacking = real[real["p"].notna() & real["test_sd"].isna()]
        if len(lacking) == len(real[real["p"].notna()]) and len(lacking):
            out.append(
                "The runs carry no per-image correctness (`val_correct`, recorded by newer "
                "versions), so the test-set part is missing: every interval holds the seed "
                "noise only and is too narrow by the test set's sampling error (about 0.2 "
                "points for a change on 10,000 images)."
            )
        elif len(lacking):
            out.append(
                f"{_names([f'{a} -> {b}' for a, b in zip(lacking['from'], lacking['to'])])}: "
                "a run lacks per-image correctness, so the test-set part is missing from "
                "these changes' intervals (seed noise only)."
            )
    return out


def _change_list(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r['to']} ({r['delta']:+.2f}, p_holm {r['p_holm']:.2g})" for _, r in rows.iterrows())


def findings(steps: pd.DataFrame, trans: pd.DataFrame, agree: Dict, noise_: Dict, data: str, preset: str) -> str:
    """One paragraph of plain-language findings, every number from the tables."""
    done = steps[pd.to_numeric(steps["top1_mean"], errors="coerce").notna()]
    out = _overview(steps, done, trans, data, preset) + _change_sentences(trans, noise_)
    out += _paper_sentences(trans, agree) + _cost_sentences(done, trans)
    return " ".join(out)


def _independent(trans: pd.DataFrame) -> bool:
    """Every row compared with the same start (a leave-one-out roadmap)."""
    return len(trans) > 1 and trans["from"].nunique() == 1


def _overview(steps, done, trans, data, preset) -> List[str]:
    seeds = _seed_counts(steps)
    seed_text = _n(seeds[0], "seed") if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    where = f"{data}{f' (preset {preset})' if preset else ''}"
    out = []
    if len(done) and _independent(trans):
        first = done.iloc[0]
        out.append(
            f"Over {seed_text} per run on {where}, each run is compared with {first['run']} "
            f"({first['top1_mean']:.2f}%), the one change it makes to it."
        )
    elif len(done):
        first, last = done.iloc[0], done.iloc[-1]
        out.append(
            f"Over {seed_text} per step on {where}, "
            f"top-1 went from {first['top1_mean']:.2f}% ({first['run']}) to {last['top1_mean']:.2f}% "
            f"({last['run']}), {last['top1_mean'] - first['top1_mean']:+.2f} points."
        )
    failed = [r for r, f, s in zip(steps["run"], steps["failed"], steps["seeds"]) if f and not s]
    if failed:
        out.append(
            f"{', '.join(failed)} failed on every seed, so the changes around "
            f"{'it' if len(failed) == 1 else 'them'} are missing."
        )
    return out


def _covers(trans) -> str:
    real = _real(trans)
    judged = real[real["p"].notna()]
    if len(judged) and judged["test_sd"].notna().all():
        return "intervals with seed and test-set noise"
    if len(judged) and judged["test_sd"].notna().any():
        return "intervals with seed and test-set noise where recorded"
    return "intervals with seed noise only; the test-set part is missing"


def _change_sentences(trans, noise_) -> List[str]:
    real = _real(trans)
    measured = real[real["delta"].notna()]
    judged = measured[measured["p"].notna()]
    if not len(measured):
        return ["There is no pair of finished steps, so no change can be measured."]
    if not len(judged):
        if max(list(measured["n_from"]) + list(measured["n_to"])) > 1:
            return [
                "The seeds gave identical top-1s, so there is no noise estimate and none of the "
                f"{_n(len(measured), 'change')} can be told apart from noise."
            ]
        return [
            "Without seed replication there is no noise estimate, so none of the "
            f"{_n(len(measured), 'change')} can be told apart from seed noise; rerun with `--seeds 3`."
        ]
    res = judged[judged["resolved"]]
    up, down = res[res["delta"] > 0], res[res["delta"] < 0]
    more, less = ("higher than the start", "lower than the start") if _independent(trans) else ("gains", "losses")
    text = (
        f"{len(res)} of {_n(len(judged), 'change')} {'is' if len(res) == 1 else 'are'} resolved "
        f"(Holm-adjusted p < 0.05 over the {len(judged)}, {_covers(trans)})"
    )
    parts = ([f"{more}: {_change_list(up)}"] if len(up) else []) + (
        [f"{less}: {_change_list(down)}"] if len(down) else []
    )
    text += ": " + "; ".join(parts) + "." if parts else "."
    rest = judged[~judged["resolved"]]
    if len(rest):
        text += (
            f" The other {len(rest)} {'is' if len(rest) == 1 else 'are'} not resolved; each is "
            "shown within (TOST, 5%): "
            + ", ".join(f"{r['to']} ±{r['equivalence_bound']:.2f}" for _, r in rest.iterrows())
            + " points."
        )
        hint = rest[(rest["ci_low"] > 0) | (rest["ci_high"] < 0)]
        if len(hint):
            text += (
                f" Of these, {', '.join(hint['to'])} {'has' if len(hint) == 1 else 'have'} an "
                "unadjusted 95% interval that excludes 0 (not enough after Holm)."
            )
    out = [text]
    if noise_.get("seed_sd") is not None:
        lo, hi = noise_["seed_sd_ci"]
        out.append(
            f"Pooled seed sd {noise_['seed_sd']:.3f} points (95% CI {lo:.3f}-{hi:.3f}, "
            f"{noise_['df']} df); median 95% half-width {_f(noise_.get('median_half_width'))} "
            f"points; resolving a 0.3 / 0.5 / 1.0-point change with 80% power takes "
            f"{_need(noise_['seeds_needed'])} seeds per step unadjusted, "
            f"{_need(noise_['seeds_needed_holm'])} at Holm's level."
        )
    return out


def _need(d: Dict) -> str:
    return " / ".join(str(d.get(k) or ">10000") for k in ("0.3", "0.5", "1.0"))


def _cost_sentences(done, trans) -> List[str]:
    if len(done) < 2 or _independent(trans):
        return []
    first, last = done.iloc[0], done.iloc[-1]
    return [
        f"Parameters went from {_f(first['params_m'])} M to {_f(last['params_m'])} M, "
        f"GFLOPs at 224 px from {_f(first['gflops_224'])} to {_f(last['gflops_224'])}, "
        f"measured training throughput from {_f(first['train_img_s_mean'], '{:.0f}')} to "
        f"{_f(last['train_img_s_mean'], '{:.0f}')} img/s."
    ]


def _names(items: List[str]) -> str:
    return ", ".join(i.split(" -> ")[1] for i in items)


def _count(v: Dict, key: str, word: str) -> str:
    return f"{len(v[key])} {word}" + (f" ({_names(v[key])})" if v[key] else "")


def _paper_sentences(trans, agree: Dict) -> List[str]:
    if not len(trans) or trans["paper_delta"].isna().all():
        return ["These runs carry no paper numbers (a custom roadmap?), so there is no comparison with the paper."]
    v = agree["verdicts"]
    if not any(trans["ours_sign"].astype(str) != ""):
        return []
    out = [
        "Against the paper's Table 10 (its changes judged with the pooled Table-10 sd): "
        + _count(v, "replicates", "replicate (same sign, the paper's Δ inside our interval)")
        + ", "
        + _count(v, "same direction", "same direction but a different size")
        + ", "
        + _count(v, "flips", "flip")
        + f", {len(v['below our noise'])} of the paper's resolved changes not resolved here"
        + (
            f", {len(v['ours only (paper: within its noise)'])} resolved here but within the paper's noise"
            if v["ours only (paper: within its noise)"]
            else ""
        )
        + "."
    ]
    p = agree["sign_agreement_p"]
    sp, kt = agree["delta_spearman"], agree["delta_kendall"]
    if p is not None:
        out.append(
            f"Resolved signs match the paper's on {_n(agree['sign_matches'], 'change')}; that "
            f"many or more by chance (one-sided permutation test): p = {p:.3g}."
        )
    if "rho" in sp:
        out.append(
            f"Per-change Δs rank like the paper's with Spearman ρ = {sp['rho']:.2f} (p = {sp['p']:.3g}) "
            f"and Kendall τ = {kt['tau']:.2f} (p = {kt['p']:.3g}) over {sp['n']} changes "
            "(the paper's numbers are ImageNet-1K at 224 px: compare directions, not sizes)."
        )
    return out


def _ci(r, suffix="") -> str:
    lo, hi = _num(r[f"ci_low{suffix}"]), _num(r[f"ci_high{suffix}"])
    return "–" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def _resolved_cell(r) -> str:
    if r["same_model"]:
        return "same model"
    if math.isnan(_num(r["p"])):
        return "–"
    return "**yes**" if r["resolved"] else "no"


def _reading(r) -> str:
    # not resolved after Holm, yet its own 95% interval excludes 0: say so beside the verdict
    hint = not r["resolved"] and (_num(r["ci_low"]) > 0 or _num(r["ci_high"]) < 0)
    return (r["verdict"] or "–") + (" (unadjusted CI excludes 0)" if hint and r["verdict"] else "")


def transitions_markdown(trans: pd.DataFrame) -> str:
    head = (
        "| change | Δ top-1 | 95% CI | 95% CI (seeds only) | p | p (Holm) | resolved | within ± "
        "| paper Δ | ours / paper | reading | Δ params (M) | Δ GFLOPs@224 | Δ train img/s | Δ infer img/s |\n"
        "|---|---:|---|---|---:|---:|---|---:|---:|---|---|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['from']} → {r['to']} | {_f(r['delta'], '{:+.2f}')} | {_ci(r)} | {_ci(r, '_seed')} "
        f"| {_f(r['p'], '{:.2g}')} | {_f(r['p_holm'], '{:.2g}')} | {_resolved_cell(r)} "
        f"| {_f(r['equivalence_bound'])} | {_f(r['paper_delta'], '{:+.2f}')} "
        f"| {r['ours_sign'] or '–'} / {r['paper_sign'] or '–'} | {_reading(r)} "
        f"| {_f(r['d_params_m'], '{:+.2f}')} | {_f(r['d_gflops_224'], '{:+.3f}')} "
        f"| {_f(r['d_train_img_s'], '{:+.0f}')} | {_f(r['d_infer_img_s'], '{:+.0f}')} |"
        for _, r in trans.iterrows()
    ]
    return head + "\n".join(lines) + "\n"


def steps_markdown(steps: pd.DataFrame) -> str:
    head = (
        "| # | run | phase | seeds | top-1 (mean ± sd) | paper top-1 | params (M) "
        "| GFLOPs@224 (ours / paper) | train img/s | infer img/s |\n"
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for _, r in steps.iterrows():
        ours = _f(r["top1_mean"]) + (f" ± {_f(r['top1_std'])}" if pd.notna(r["top1_std"]) else "")
        paper = _f(r["paper_top1"]) + (f" ± {_f(r['paper_top1_sd'])}" if pd.notna(r["paper_top1_sd"]) else "")
        lines.append(
            f"| {_f(r['order'], '{:.0f}')} | {r['run']} | {_text(r['phase']) or '–'} | {r['seeds']} "
            f"| {ours} | {paper} | {_f(r['params_m'])} "
            f"| {_f(r['gflops_224'])} / {_f(r['paper_gflops'])} "
            f"| {_f(r['train_img_s_mean'], '{:.0f}')} | {_f(r['infer_img_s_mean'], '{:.0f}')} |"
        )
    return head + "\n".join(lines) + "\n"


def _agreement_markdown(agree: Dict) -> str:
    t = agree["sign_table"]
    rows = ["| ours \\ paper | − | 0 | + |", "|---|---:|---:|---:|"]
    for sign, counts in zip(("−", "0", "+"), t["counts"]):
        rows.append(f"| {sign} | " + " | ".join(str(c) for c in counts) + " |")
    p, fisher = agree["sign_agreement_p"], agree["sign_fisher_p"]
    lines = [
        "\n".join(rows),
        "",
        f"- Matching resolved signs (+/+ or −/−): {agree['sign_matches']}; one-sided permutation "
        "test of that count (margins kept): "
        + (f"p = {p:.3g}" if p is not None else "not testable (no resolved sign on a side)"),
        "- Fisher's exact test of association (two-sided: opposite signs would score alike, "
        "so it is no test of agreement): " + (f"p = {fisher:.3g}" if fisher is not None else "–"),
    ]
    for name, sym, key in (("delta_spearman", "Spearman ρ", "rho"), ("delta_kendall", "Kendall τ-b", "tau")):
        c = agree[name]
        lines.append(
            f"- {sym} of the per-change Δs = {c[key]:.3f} (p = {c['p']:.3g}, {c['p_method']}, {c['n']} changes)"
            if key in c
            else f"- {sym}: needs at least 3 changes with both Δs and some spread ({c['n']} here)"
        )
    return "\n".join(lines) + "\n"


def _noise_markdown(n: Dict) -> str:
    lines = [
        f"- The paper's noise: pooled Table-10 sd {n['paper_seed_sd']:.3f} ({n['paper_df']} df), so a "
        f"paper change within ±{n['paper_half_width']:.3f} points is a tie (0); a kernel-sweep point "
        "(one run, no sd) gets the wider band of a single run."
    ]
    if n["seed_sd"] is None:
        return "\n".join(lines + ["- Ours: no noise estimate (no seed replication, or every seed identical)."]) + "\n"
    lo, hi = n["seed_sd_ci"]
    lines += [
        f"- Ours: pooled seed sd {n['seed_sd']:.3f} points, 95% CI [{lo:.3f}, {hi:.3f}] ({n['df']} df, "
        f"{n['models']} models); each change uses its two steps' own sds. Median 95% half-width "
        f"of a change {_f(n.get('median_half_width'), '{:.3f}')} points."
        + (
            f" Test-set sd of a change (median): {n['test_sd']:.3f} points"
            + (
                ": the full intervals are a median {:.0%} wider than the seed-only ones ({:.2f}x-{:.2f}x).".format(
                    n["widening"][0] - 1, n["widening"][1], n["widening"][2]
                )
                if n.get("widening")
                else "."
            )
            if n["test_sd"] is not None
            else " Test-set part: not recorded (no `val_correct`)."
        ),
        f"- Seeds per step to resolve a 0.3 / 0.5 / 1.0-point change with 80% power (steps of the "
        f"pooled sd{', plus the test-set variance, which more seeds do not shrink' if n['test_sd'] else ''}): "
        f"{_need(n['seeds_needed'])} unadjusted (two-sided 5%), {_need(n['seeds_needed_holm'])} at "
        f"Holm's strictest level (5% / {n['family']}).",
    ]
    if n["power_now"]:
        pct = lambda d: " / ".join(f"{d[k]:.0%}" for k in ("0.3", "0.5", "1.0"))  # noqa: E731
        lines.append(
            f"- Power now, per change of 0.3 / 0.5 / 1.0 points: {pct(n['power_now'])} unadjusted, "
            f"{pct(n['power_holm'])} at Holm's strictest level."
        )
    return "\n".join(lines) + "\n"


def _first(table: pd.DataFrame, col: str) -> str:
    values = table[col].dropna() if col in table.columns else []
    return str(values.iloc[0]) if len(values) else ""


def build(table: pd.DataFrame) -> Dict:
    """Everything in the report, as plain data."""
    steps, trans, f = analyse(table)
    agree, noise_ = agreement(trans), noise(f, trans)
    data, preset = _first(table, "data") or "the data", _first(table, "preset")
    method = f.method if f is not None else "no finished runs"
    return dict(
        data=data,
        preset=preset,
        method=method,
        level=S.LEVEL,
        warnings=warnings_for(table, steps, f, trans),
        findings=findings(steps, trans, agree, noise_, data, preset),
        agreement=agree,
        noise=noise_,
        steps=steps.drop(columns=["config"]),
        transitions=trans,
    )


def markdown(report: Dict, figures: Sequence[str]) -> str:
    title = f"# Roadmap report: {report['data']}" + (f", preset {report['preset']}" if report["preset"] else "")
    parts = [title, ""]
    parts += [f"> **Warning:** {w}\n" for w in report["warnings"]]
    for fig in figures:
        parts += [f"![{Path(fig).stem}]({fig})", ""]
    parts += [
        "## Findings",
        "",
        report["findings"],
        "",
        "## Changes",
        "",
        transitions_markdown(report["transitions"]),
        "Each run is compared with the earlier run it differs from in the fewest toggles "
        "(the step before, on a cumulative roadmap). Δ is the difference of the two mean top-1s. "
        f"Method: {report['method']}. The 95% CI covers the change in expected top-1 on the "
        "data's distribution: seed noise (each step's own) plus the test set's sampling error "
        "(all runs score the same test images, so it does not average out over seeds), where "
        "per-image correctness was recorded; the seeds-only CI beside it covers the change on "
        "this test set. p is per change, unadjusted, and belongs to the full 95% CI; *resolved* "
        "uses its Holm-adjusted p. *within ±* is the TOST (5%) equivalence bound of a change "
        "that is not resolved. Signs: + / − for a resolved change, 0 for one that is not. The "
        "paper's change is 0 when it is within the paper's own noise (below). Readings: "
        "docs/statistics.md. Δ img/s are differences of measured means, no interval.",
        "",
        "## Noise and power",
        "",
        _noise_markdown(report["noise"]),
        "## Agreement with the paper",
        "",
        _agreement_markdown(report["agreement"]),
        "## Steps",
        "",
        steps_markdown(report["steps"]),
    ]
    return "\n".join(parts)


def _clean(v):
    """JSON-safe: NaN -> null, numpy scalars -> Python."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def to_json(report: Dict, figures: Sequence[str], sources: Sequence) -> str:
    out = {k: v for k, v in report.items() if k not in ("steps", "transitions")}
    out.update(
        sources=[str(s) for s in sources],
        figure=figures[0] if figures else None,
        figures=list(figures),
        steps=report["steps"].to_dict("records"),
        transitions=report["transitions"].to_dict("records"),
    )
    return json.dumps(_clean(out), indent=1, default=str)


def write_files(report: Dict, out: Path, figures: Sequence[str], sources: Sequence) -> List[Path]:
    """Write report.md and report.json of a built report into `out`; return their paths."""
    paths = [Path(out) / "report.md", Path(out) / "report.json"]
    atomic_write_text(paths[0], markdown(report, figures))
    atomic_write_text(paths[1], check_report_text(to_json(report, figures, sources), paths[1]))
    return paths


def _subtitle(report: Dict) -> str:
    n = report["noise"]
    real = report["transitions"][~report["transitions"]["same_model"].astype(bool)]
    k = int(real["resolved"].sum())
    return (
        f"{report['data']}, preset {report['preset']}: {k} of {int(real['p'].notna().sum())} changes "
        f"resolved (Holm), pooled seed sd {n['seed_sd']:.2f} ({n['df']} df)"
    )
