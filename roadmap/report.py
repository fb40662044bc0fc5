"""`roadmap report`: what each change did on your data, with confidence, next to the paper.

A transition is one roadmap change, run A -> run B. Its change in top-1 is paired by
seed where both runs share at least two seeds (a t-interval over the per-seed
differences); otherwise, with at least two seeds on each side, a Welch t-interval over
the two groups. A change is "outside the noise" when its 95% interval excludes zero.
The paper's changes are judged the same way from Table 10 (mean ± sd over 3 seeds).

Each run is compared with the earlier run (in roadmap order) whose configuration differs
from it in the fewest toggles, the latest on a tie: on a cumulative roadmap that is the
step before; in a kernel sweep the previous kernel size (and `gelu` is compared with
`large_kernel/k7`); on an "independent" custom roadmap (leave one out) the start. Without
recorded configurations, consecutive runs are compared.
"""
import json
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from .errors import RoadmapError
from .results import RESULT_COLUMNS, ResultsDir, atomic_write_text, read_results, summarize

LEVEL = 0.95
PAPER_SEEDS = 3  # Table 10: mean ± sd over 3 seeds
REQUIRED = ("order", "run", "seed", "status", "top1")
METHOD = (f"paired t-interval over seeds ({LEVEL:.0%}); Welch t-interval where the two runs "
          "share fewer than two seeds")


# ---- reading ---------------------------------------------------------------------------

def _read(folder) -> pd.DataFrame:
    try:
        return read_results(folder)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise RoadmapError(f"{Path(folder) / 'results.csv'} is not a readable table ({e})") from None


def gather(dirs: Sequence) -> pd.DataFrame:
    """The results of one or more folders as one table; a run found twice (same key) counts once."""
    table = pd.concat([_read(d) for d in dirs], ignore_index=True)
    if "key" in table.columns:
        keyed = table["key"].notna()
        table = pd.concat([table[keyed].drop_duplicates("key"), table[~keyed]], ignore_index=True)
    check(table, dirs)
    return table


def check(table: pd.DataFrame, dirs: Sequence = ()):
    """Raise one clear RoadmapError if the table cannot be reported on."""
    where = ", ".join(map(str, dirs)) or "the results"
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RoadmapError(f"{where}: the results lack the columns {missing}; "
                           "they were not written by `roadmap run`")
    ok = table[table["status"] == "ok"]
    if not len(ok):
        raise RoadmapError(f"{where}: no finished runs to report on")
    for col in ("top1", "order", "seed"):
        if pd.to_numeric(ok[col], errors="coerce").isna().any():
            raise RoadmapError(f"{where}: column {col!r} has empty or non-numeric values in finished runs")
    dup = ok[ok.duplicated(["run", "seed"], keep=False)]
    if len(dup):
        r = dup.iloc[0]
        times = int(((ok["run"] == r["run"]) & (ok["seed"] == r["seed"])).sum())
        raise RoadmapError(f"{where}: run {r['run']} seed {r['seed']} appears {times} times with different "
                           "settings (recipe or data); report those results separately")
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

def _position(order, variant, run):
    # the plain step first, then kernel variants by size (k3 < k5 < k11), then others by name
    o, variant = _num(order), _text(variant)
    kernel = re.fullmatch(r"k(\d+)", variant)
    kind = 0 if not variant else 1 if kernel else 2
    return (math.inf if math.isnan(o) else o, kind, int(kernel.group(1)) if kernel else 0, variant, str(run))


def step_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per run in roadmap order: mean/sd over finished seeds and the paper's numbers."""
    table = _complete(table)
    steps = summarize(table)
    if not len(steps):
        return steps
    idx = sorted(range(len(steps)), key=lambda i: _position(*steps.iloc[i][["order", "variant", "run"]]))
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


# ---- intervals ---------------------------------------------------------------------------

def _half_width(se: float, df: float) -> float:
    from scipy import stats  # imported late: a second of start-up every `roadmap` command would pay
    if se == 0:
        return 0.0
    return float(stats.t.ppf(0.5 + LEVEL / 2, df) * se)


def _welch(ma, sa, na, mb, sb, nb):
    """(difference of means, half-width of its t-interval) from summary statistics."""
    va, vb = sa ** 2 / na, sb ** 2 / nb
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)) if se > 0 else 1.0
    return mb - ma, _half_width(se, df)


def seed_interval(a: pd.Series, b: pd.Series) -> Dict:
    """Change from a to b (top-1 indexed by seed): mean, interval, number of seeds, method."""
    common = a.index.intersection(b.index)
    if len(common) >= 2:
        d = (b[common] - a[common]).astype(float)
        half = _half_width(d.std(ddof=1) / math.sqrt(len(d)), len(d) - 1)
        return _interval(d.mean(), half, len(d), "paired t")
    if len(a) >= 2 and len(b) >= 2:
        delta, half = _welch(a.mean(), a.std(ddof=1), len(a), b.mean(), b.std(ddof=1), len(b))
        return _interval(delta, half, min(len(a), len(b)), "Welch t")
    # a single seed on one side: a point change (paired if the seeds match), no interval
    delta = (b[common] - a[common]).mean() if len(common) else b.mean() - a.mean()
    return dict(delta_mean=float(delta), ci_low=math.nan, ci_high=math.nan, n=min(len(a), len(b)),
                method="none")


def _interval(delta: float, half: float, n: int, method: str) -> Dict:
    return dict(delta_mean=float(delta), ci_low=float(delta - half), ci_high=float(delta + half), n=n,
                method=method)


def _sign(delta: float, within_noise: bool) -> str:
    if math.isnan(delta):
        return ""
    if within_noise or delta == 0:
        return "0"
    return "+" if delta > 0 else "-"


def paper_change(a: pd.Series, b: pd.Series) -> Dict:
    """The paper's change between two steps and whether its 95% Welch interval excludes zero."""
    ma, mb = _num(a["paper_top1"]), _num(b["paper_top1"])
    sa, sb = _num(a["paper_top1_sd"]), _num(b["paper_top1_sd"])
    if math.isnan(ma) or math.isnan(mb):
        return dict(paper_delta=math.nan, paper_sign="")
    delta = mb - ma
    if math.isnan(sa) or math.isnan(sb):
        # no sd (the kernel sweep): only a change that rounds to 0.00 is a tie
        return dict(paper_delta=delta, paper_sign=_sign(delta, abs(delta) < 0.005))
    _, half = _welch(ma, sa, PAPER_SEEDS, mb, sb, PAPER_SEEDS)
    return dict(paper_delta=delta, paper_sign=_sign(delta, abs(delta) <= half))


def _sign_match(ours: str, paper: str, judged: bool) -> str:
    if not ours or not paper:
        return ""
    if not judged:
        return "unjudged"  # ours has no interval (one seed): only the raw sign can be compared
    if "0" in (ours, paper):
        return "tie"
    return "match" if ours == paper else "mismatch"


# ---- transitions -------------------------------------------------------------------------

TRANSITION_COLUMNS = [
    "from", "to", "order_from", "order_to", "phase", "delta_mean", "ci_low", "ci_high", "n", "method",
    "significant", "ours_sign", "top1_from", "top1_to", "paper_from", "paper_to", "paper_delta",
    "paper_sign", "sign_match", "same_sign", "d_params_m", "d_gflops", "d_gflops_224",
    "d_train_img_s", "d_infer_img_s",
]


def transitions(table: pd.DataFrame) -> pd.DataFrame:
    """One row per roadmap change: top-1 change with its interval, the paper's, and the costs.

    `to` is the later run's label; `delta_mean` and `significant` are what the figure marks.
    """
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise RoadmapError(f"the results lack the columns {missing}; they were not written by roadmap")
    table = _complete(table)
    steps = step_table(table)
    ok = table[table["status"] == "ok"].copy()
    ok["top1"] = pd.to_numeric(ok["top1"], errors="coerce")
    top1 = {run: g.groupby("seed")["top1"].mean().dropna() for run, g in ok.groupby("run")}
    rows = []
    for i in range(1, len(steps)):
        a, b = steps.iloc[_predecessor(steps, i)], steps.iloc[i]
        ours = seed_interval(top1.get(a["run"], pd.Series(dtype=float)),
                             top1.get(b["run"], pd.Series(dtype=float)))
        judged = ours["method"] != "none"
        significant = judged and (ours["ci_low"] > 0 or ours["ci_high"] < 0)
        row = {"from": a["run"], "to": b["run"], "order_from": a["order"], "order_to": b["order"],
               "phase": b["phase"], **ours, "significant": bool(significant),
               "ours_sign": _sign(ours["delta_mean"], judged and not significant),
               "top1_from": a["top1_mean"], "top1_to": b["top1_mean"],
               "paper_from": _num(a["paper_top1"]), "paper_to": _num(b["paper_top1"]),
               **paper_change(a, b)}
        row["sign_match"] = _sign_match(row["ours_sign"], row["paper_sign"], judged)
        comparable = not (math.isnan(row["delta_mean"]) or math.isnan(row["paper_delta"]))
        row["same_sign"] = bool(np.sign(row["delta_mean"]) == np.sign(row["paper_delta"])) if comparable else None
        for col in ("params_m", "gflops", "gflops_224"):
            row[f"d_{col}"] = _num(b[col]) - _num(a[col])
        for col in ("train_img_s", "infer_img_s"):
            row[f"d_{col}"] = _num(b[f"{col}_mean"]) - _num(a[f"{col}_mean"])
        rows.append(row)
    return pd.DataFrame(rows, columns=TRANSITION_COLUMNS)


def plot_deltas(table: pd.DataFrame) -> Optional[pd.DataFrame]:
    """The transitions that have an interval (two or more seeds), for the figure; None if none."""
    deltas = transitions(table)
    deltas = deltas[deltas["ci_low"].notna()]
    return deltas if len(deltas) else None


# ---- agreement with the paper ------------------------------------------------------------

def agreement(steps: pd.DataFrame, trans: pd.DataFrame) -> Dict:
    """Sign agreement per transition and rank correlation of per-step top-1 with the paper's."""
    from scipy import stats
    signs, same = trans["sign_match"], trans["same_sign"].dropna()
    count = {k: int((signs == k).sum()) for k in ("match", "mismatch", "tie", "unjudged")}
    out = {"sign": dict(**count, not_comparable=int((signs == "").sum()),
                        raw_match=int(same.astype(bool).sum()), raw_total=len(same),
                        mismatches=[f"{r['from']} -> {r['to']}" for _, r in trans.iterrows()
                                    if r["sign_match"] == "mismatch"])}
    ours = pd.to_numeric(steps["top1_mean"], errors="coerce")
    paper = pd.to_numeric(steps["paper_top1"], errors="coerce")
    keep = ours.notna() & paper.notna()
    n = int(keep.sum())
    out["spearman"], out["kendall"] = dict(n=n), dict(n=n)
    if n >= 3 and ours[keep].nunique() > 1 and paper[keep].nunique() > 1:
        rho, p_rho = stats.spearmanr(ours[keep], paper[keep])
        tau, p_tau = stats.kendalltau(ours[keep], paper[keep])
        out["spearman"].update(rho=float(rho), p=float(p_rho))
        out["kendall"].update(tau=float(tau), p=float(p_tau))
    return out


# ---- the report ------------------------------------------------------------------------

def _f(v, fmt="{:.2f}", none="–") -> str:
    v = _num(v)
    return none if math.isnan(v) else fmt.format(v)


def _seed_counts(steps: pd.DataFrame) -> List[int]:
    return sorted(set(int(s) for s in steps["seeds"] if s > 0))


def warnings_for(steps: pd.DataFrame) -> List[str]:
    seeds = _seed_counts(steps)
    single = [r for r, s in zip(steps["run"], steps["seeds"]) if s == 1]
    if seeds == [1]:
        return ["Only one seed per step: no confidence interval can be given, so no change can be "
                "told apart from seed noise. Rerun with `--seeds 3` (finished runs are skipped)."]
    if single:
        return [f"Only one seed for {', '.join(single)}: the changes into and out of "
                f"{'it' if len(single) == 1 else 'them'} have no interval. Rerun with `--seeds 3`."]
    return []


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _change_list(rows: pd.DataFrame) -> str:
    return ", ".join(f"{r['to']} ({r['delta_mean']:+.2f})" for _, r in rows.iterrows())


def findings(steps: pd.DataFrame, trans: pd.DataFrame, agree: Dict, data: str, preset: str) -> str:
    """One paragraph of plain-language findings, every number from the tables."""
    done = steps[pd.to_numeric(steps["top1_mean"], errors="coerce").notna()]
    measured = trans[trans["delta_mean"].notna()]
    judged = measured[measured["method"] != "none"]
    out = _overview(steps, done, data, preset) + _change_sentences(measured, judged)
    out += _paper_sentences(agree, bool(len(judged))) + _cost_sentences(done)
    return " ".join(out)


def _overview(steps, done, data, preset) -> List[str]:
    seeds = _seed_counts(steps)
    seed_text = _n(seeds[0], "seed") if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    out = []
    if len(done):
        first, last = done.iloc[0], done.iloc[-1]
        out.append(f"Over {seed_text} per step on {data}{f' (preset {preset})' if preset else ''}, "
                   f"top-1 went from {first['top1_mean']:.2f}% ({first['run']}) to {last['top1_mean']:.2f}% "
                   f"({last['run']}), {last['top1_mean'] - first['top1_mean']:+.2f} points.")
    failed = [r for r, f, s in zip(steps["run"], steps["failed"], steps["seeds"]) if f and not s]
    if failed:
        out.append(f"{', '.join(failed)} failed on every seed, so the changes around "
                   f"{'it' if len(failed) == 1 else 'them'} are missing.")
    return out


def _change_sentences(measured, judged) -> List[str]:
    if not len(measured):
        return ["There is no pair of finished steps, so no change can be measured."]
    if not len(judged):
        return ["With one seed per step no confidence interval can be given, so none of the "
                f"{_n(len(measured), 'change')} can be told apart from seed noise; rerun with `--seeds 3`."]
    sig = judged[judged["significant"]]
    up, down = sig[sig["delta_mean"] > 0], sig[sig["delta_mean"] < 0]
    parts = ([f"{_change_list(up)} helped"] if len(up) else []) + \
            ([f"{_change_list(down)} hurt"] if len(down) else [])
    rest = len(judged) - len(sig)
    text = (f"{len(sig)} of {_n(len(judged), 'change')} {'is' if len(sig) == 1 else 'are'} distinguishable "
            f"from zero ({LEVEL:.0%} interval)" + (": " + "; ".join(parts) if parts else "")
            + (f"; the other {rest} {'is' if rest == 1 else 'are'} within seed noise." if rest else "."))
    out = [text]
    if len(measured) > len(judged):
        out.append(f"{_n(len(measured) - len(judged), 'change')} with a single-seed step cannot be judged.")
    best, worst = measured.loc[measured["delta_mean"].idxmax()], measured.loc[measured["delta_mean"].idxmin()]
    if len(measured) >= 2 and best["delta_mean"] > 0:
        out.append(f"The largest gain is {best['to']} ({best['delta_mean']:+.2f})"
                   + (f", the largest loss {worst['to']} ({worst['delta_mean']:+.2f})."
                      if worst["delta_mean"] < 0 else "."))
    return out


def _cost_sentences(done) -> List[str]:
    if len(done) < 2:
        return []
    first, last = done.iloc[0], done.iloc[-1]
    return [f"Parameters went from {_f(first['params_m'])} M to {_f(last['params_m'])} M, "
            f"GFLOPs at 224 px from {_f(first['gflops_224'])} to {_f(last['gflops_224'])}, "
            f"measured training throughput from {_f(first['train_img_s_mean'], '{:.0f}')} to "
            f"{_f(last['train_img_s_mean'], '{:.0f}')} img/s."]


def _paper_sentences(agree: Dict, judged: bool) -> List[str]:
    s = agree["sign"]
    if not s["raw_total"]:
        return ["These runs carry no paper numbers (a custom roadmap?), so there is no comparison "
                "with the paper."]
    out = []
    if judged:
        text = (f"Against the paper's Table 10, the sign of the change matches on {s['match']} of "
                f"{_n(s['match'] + s['mismatch'], 'change')} outside the noise on both sides")
        text += f" (not on {', '.join(s['mismatches'])})" if s["mismatches"] else ""
        text += f"; {_n(s['tie'], 'tie')} within noise on one side or both"
        text += f"; {s['unjudged']} without an interval not counted." if s["unjudged"] else "."
        out.append(text)
    else:
        out.append(f"Ignoring noise, the sign of the change matches the paper's on {s['raw_match']} "
                   f"of {s['raw_total']} changes.")
    if "rho" in agree["spearman"]:
        out.append(f"Per-step top-1 ranks like the paper's with Spearman ρ = {agree['spearman']['rho']:.2f} "
                   f"and Kendall τ = {agree['kendall']['tau']:.2f} over {agree['spearman']['n']} steps "
                   "(the paper's numbers are ImageNet-1K at 224 px: compare shapes, not levels).")
    return out


def _ci(r) -> str:
    return "–" if math.isnan(_num(r["ci_low"])) else f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def _noise(r) -> str:
    if r["method"] == "none":
        return "–"
    return "**yes**" if r["significant"] else "no (noise)"


def _agree_cell(r) -> str:
    if r["sign_match"] == "unjudged":
        return f"{'same' if r['same_sign'] else 'opposite'} sign (no CI)"
    return r["sign_match"] or "–"


def transitions_markdown(trans: pd.DataFrame) -> str:
    head = ("| change | Δ top-1 | 95% CI | seeds | method | outside noise | paper Δ | sign vs paper "
            "| Δ params (M) | Δ GFLOPs@224 | Δ train img/s | Δ infer img/s |\n"
            "|---|---:|---|---:|---|---|---:|---|---:|---:|---:|---:|\n")
    lines = [f"| {r['from']} → {r['to']} | {_f(r['delta_mean'], '{:+.2f}')} | {_ci(r)} | {r['n']} "
             f"| {r['method']} | {_noise(r)} | {_f(r['paper_delta'], '{:+.2f}')} | {_agree_cell(r)} "
             f"| {_f(r['d_params_m'], '{:+.2f}')} | {_f(r['d_gflops_224'], '{:+.3f}')} "
             f"| {_f(r['d_train_img_s'], '{:+.0f}')} | {_f(r['d_infer_img_s'], '{:+.0f}')} |"
             for _, r in trans.iterrows()]
    return head + "\n".join(lines) + "\n"


def steps_markdown(steps: pd.DataFrame) -> str:
    head = ("| # | run | phase | seeds | top-1 (mean ± sd) | paper top-1 | params (M) "
            "| GFLOPs@224 (ours / paper) | train img/s | infer img/s |\n"
            "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for _, r in steps.iterrows():
        ours = _f(r["top1_mean"]) + (f" ± {_f(r['top1_std'])}" if pd.notna(r["top1_std"]) else "")
        paper = _f(r["paper_top1"]) + (f" ± {_f(r['paper_top1_sd'])}" if pd.notna(r["paper_top1_sd"]) else "")
        lines.append(f"| {_f(r['order'], '{:.0f}')} | {r['run']} | {_text(r['phase']) or '–'} | {r['seeds']} "
                     f"| {ours} | {paper} | {_f(r['params_m'])} "
                     f"| {_f(r['gflops_224'])} / {_f(r['paper_gflops'])} "
                     f"| {_f(r['train_img_s_mean'], '{:.0f}')} | {_f(r['infer_img_s_mean'], '{:.0f}')} |")
    return head + "\n".join(lines) + "\n"


def _agreement_markdown(agree: Dict) -> str:
    s = agree["sign"]
    lines = [f"- Sign of the change vs Table 10: {s['match']} match, {s['mismatch']} mismatch, "
             f"{s['tie']} tie (within noise on one side or both), {s['unjudged']} without our interval, "
             f"{s['not_comparable']} without a paper number; "
             f"ignoring noise, {s['raw_match']} of {s['raw_total']} signs agree."]
    for name, sym, key in (("Spearman", "ρ", "rho"), ("Kendall", "τ-b", "tau")):
        c = agree[name.lower()]
        lines.append(f"- {name} {sym} = {c[key]:.3f} (p = {c['p']:.3g}, {c['n']} steps)" if key in c
                     else f"- {name} {sym}: needs at least 3 steps with both numbers and some spread "
                          f"({c['n']} here)")
    return "\n".join(lines) + "\n"


def _first(table: pd.DataFrame, col: str) -> str:
    values = table[col].dropna() if col in table.columns else []
    return str(values.iloc[0]) if len(values) else ""


def build(table: pd.DataFrame) -> Dict:
    """Everything in the report, as plain data."""
    steps, trans = step_table(table), transitions(table)
    agree = agreement(steps, trans)
    data, preset = _first(table, "data") or "the data", _first(table, "preset")
    return dict(data=data, preset=preset, method=METHOD, level=LEVEL, warnings=warnings_for(steps),
                findings=findings(steps, trans, agree, data, preset), agreement=agree,
                steps=steps.drop(columns=["config"]), transitions=trans)


def markdown(report: Dict, figure: Optional[str]) -> str:
    title = f"# Roadmap report: {report['data']}" + (f", preset {report['preset']}" if report["preset"] else "")
    parts = [title, ""]
    parts += [f"> **Warning:** {w}\n" for w in report["warnings"]]
    if figure:
        parts += [f"![trajectory]({figure})", ""]
    parts += ["## Findings", "", report["findings"], "", "## Changes", "",
              transitions_markdown(report["transitions"]),
              "Each run is compared with the earlier run it differs from in the fewest toggles "
              "(the step before, on a cumulative roadmap). "
              f"Method: {report['method']}. *Outside noise* means the interval excludes 0. "
              "The paper's change is judged from Table 10 (mean ± sd over 3 seeds, Welch); "
              "kernel-sweep numbers carry no sd, so only a change of 0.00 counts as a tie there. "
              "Δ img/s are differences of measured means, no interval.", "",
              "## Agreement with the paper", "", _agreement_markdown(report["agreement"]),
              "Rank correlations: scipy's Spearman ρ and Kendall τ-b between our mean top-1 and the "
              "paper's top-1 over the steps that have both.", "",
              "## Steps", "", steps_markdown(report["steps"])]
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


def to_json(report: Dict, figure: Optional[str], sources: Sequence) -> str:
    out = {k: v for k, v in report.items() if k not in ("steps", "transitions")}
    out.update(sources=[str(s) for s in sources], figure=figure,
               steps=report["steps"].to_dict("records"), transitions=report["transitions"].to_dict("records"))
    return json.dumps(_clean(out), indent=1, default=str)


def merge_into(out: Path, table: pd.DataFrame):
    """Copy every run into `out/runs/` so the merged folder is itself a results folder."""
    results = ResultsDir(out)
    for row in table.to_dict("records"):
        if pd.isna(row.get("key")):
            raise RoadmapError(f"run {row['run']} seed {row['seed']} has no key; only folders written "
                               "by `roadmap run` can be merged")
        if not results.is_done(row["key"]):
            row = {k: (_config(v) if k in ("config", "recipe", "versions") and isinstance(v, str) else v)
                   for k, v in row.items()}
            results.record(_clean(row))
    results.write_tables()


def write_report(dirs: Sequence, out=None, plot: bool = True) -> Dict:
    """Write report.md and report.json (and the figure) for the results in `dirs`; return the report."""
    dirs = [Path(d) for d in dirs]
    if out is None and len(dirs) > 1:
        raise RoadmapError("several results folders: name the merged folder with --out DIR")
    out = Path(out) if out is not None else dirs[0]
    table = gather(dirs)
    if [out] != dirs:
        merge_into(out, table)
        table = gather([out])
    report = build(table)
    figure = None
    lacking = [c for c in RESULT_COLUMNS if c not in table.columns]
    if plot and lacking:
        # a hand-made table: the numbers can be reported, the figure needs every column
        report["warnings"].append(f"No figure: the results lack the columns {lacking}.")
    elif plot:
        from .plot import plot_trajectory
        figure = plot_trajectory(out, deltas=plot_deltas(table))[0].name
    atomic_write_text(out / "report.md", markdown(report, figure))
    atomic_write_text(out / "report.json", to_json(report, figure, dirs))
    report.update(paths=[out / "report.md", out / "report.json"], figure=figure)
    return report


def cmd_report(args):
    report = write_report(args.dirs, out=args.out, plot=not args.no_plot)
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(report["findings"])
    for p in report["paths"]:
        print(p)


def add_parser(sub):
    p = sub.add_parser("report", help="per-step changes with 95% intervals, agreement with the paper: "
                                      "report.md, report.json")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="results folder(s); several are merged")
    p.add_argument("--out", metavar="DIR", help="where to write (default: the one DIR; required with several)")
    p.add_argument("--no-plot", action="store_true", help="skip the figure")
    p.set_defaults(func=cmd_report)
    return p
