"""The report's findings in plain words: what the tables say, one sentence at a time.

Every number comes from the DataFrames of `roadmap.analysis`; `roadmap.report` places these
sentences above its tables, and the warnings (failed runs, borrowed noise, missing test-set
parts) above everything.
"""

import math
from typing import Dict, List, Optional

import pandas as pd

from . import sequential as Q
from . import speed
from . import stats as S
from .analysis import _complete, _model_of, _num, _real, bad_top1, duplicate_runs, finished


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
    if not f.blocked and len(set(f.counts.values())) > 1:
        out.append(
            "Not every step has the same seeds (a failed run, or more seeds where a change was "
            "open): every run is used, each step with its own sample variance (Welch), no seed block."
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
    res = judged[judged["state"] == "resolved"]
    up, down = res[res["delta"] > 0], res[res["delta"] < 0]
    more, less = ("higher than the start", "lower than the start") if _independent(trans) else ("gains", "losses")
    text = (
        f"{len(res)} of {_n(len(judged), 'change')} {'is' if len(res) == 1 else 'are'} resolved "
        f"(Holm-adjusted p < 0.05 over the {len(judged)}{_looks_text(trans)}, {_covers(trans)})"
    )
    parts = ([f"{more}: {_change_list(up)}"] if len(up) else []) + (
        [f"{less}: {_change_list(down)}"] if len(down) else []
    )
    text += ": " + "; ".join(parts) + "." if parts else "."
    eq = judged[judged["state"] == "equivalent"]
    if len(eq):
        text += (
            f" {len(eq)} {'is' if len(eq) == 1 else 'are'} shown equivalent to zero, within ±{Q.MARGIN:g} "
            "points (TOST, Holm over the changes): "
            + ", ".join(
                f"{r['to']} ({r['delta']:+.2f}, within ±{r['equivalence_bound']:.2f})" for _, r in eq.iterrows()
            )
            + "."
        )
    rest = judged[judged["state"] == "open"]
    if len(rest):
        text += (
            f" {len(rest)} {'is' if len(rest) == 1 else 'are'} open (neither resolved nor within ±{Q.MARGIN:g}): "
            + ", ".join(f"{r['to']} ({r['delta']:+.2f}, {_need_seeds(r)})" for _, r in rest.iterrows())
            + "."
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


def _looks_text(trans) -> str:
    at = [a for a in trans["decided_at"] if a is not None and not (isinstance(a, float) and math.isnan(a))]
    return ", sequential over the design's looks" if at else ""


def _need_seeds(r) -> str:
    """What an open change would take: seeds per step from its measured noise and Δ."""
    n = r["seeds_to_decide"]
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "not decidable by seeds alone: the test set's own noise is too large"
    return f"needs about {int(n)} seeds per step"


def _need(d: Dict) -> str:
    return " / ".join(str(d.get(k) or ">10000") for k in ("0.3", "0.5", "1.0"))


def _cost_sentences(done, trans) -> List[str]:
    if len(done) < 2 or _independent(trans):
        return []
    first, last = done.iloc[0], done.iloc[-1]
    return [
        f"Parameters went from {_f(first['params_m'])} M to {_f(last['params_m'])} M, "
        f"GFLOPs at 224 px from {_f(first['gflops_224'])} to {_f(last['gflops_224'])}, "
        f"measured training throughput (median of clean runs) from {speed.cell(first)} to "
        f"{speed.cell(last)} img/s."
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
        + f", {len(v['equivalent here (paper: resolved)'])} of the paper's resolved changes equivalent to 0 here"
        + f", {len(v['open here (paper: resolved)'])} open here"
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
