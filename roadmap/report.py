"""`roadmap report`: what each change did on your data, with confidence, next to the paper.

The numbers come from `roadmap.analysis` (DataFrames); this module turns them into the
report: findings in plain words, markdown tables, report.json, the figure subtitle.
"""

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from . import sequential as Q
from . import speed, tables
from . import stats as S
from .analysis import (
    _complete,
    _model_of,
    _num,
    _real,
    _text,
    agreement,
    analyse,
    bad_top1,
    duplicate_runs,
    finished,
    noise,
)
from .results import atomic_write_text
from .schema import check_report_text

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


def _ci(r, suffix="") -> str:
    lo, hi = _num(r[f"ci_low{suffix}"]), _num(r[f"ci_high{suffix}"])
    return "–" if math.isnan(lo) else f"[{lo:+.2f}, {hi:+.2f}]"


def _resolved_cell(r) -> str:
    if r["same_model"]:
        return "same model"
    if math.isnan(_num(r["p"])) or not r["state"]:
        return "–"
    if r["state"] == "resolved":
        return f"**resolved {r['ours_sign']}**"
    if r["state"] == "equivalent":
        return "**equivalent**"
    n = r["seeds_to_decide"]
    return "open" + (f" (~{int(n)} seeds)" if n is not None and not (isinstance(n, float) and math.isnan(n)) else "")


def _reading(r) -> str:
    # not resolved after Holm, yet its own 95% interval excludes 0: say so beside the verdict
    hint = not r["resolved"] and (_num(r["ci_low"]) > 0 or _num(r["ci_high"]) < 0)
    return (r["verdict"] or "–") + (" (unadjusted CI excludes 0)" if hint and r["verdict"] else "")


def transitions_markdown(trans: pd.DataFrame) -> str:
    rows = [
        {
            "change": f"{r['from']} → {r['to']}",
            "Δ top-1": _f(r["delta"], "{:+.2f}"),
            "95% CI": _ci(r),
            "95% CI (seeds only)": _ci(r, "_seed"),
            "p": _f(r["p"], "{:.2g}"),
            "p (Holm)": _f(r["p_holm"], "{:.2g}"),
            "state": _resolved_cell(r),
            "within ±": _f(r["equivalence_bound"]),
            "paper Δ": _f(r["paper_delta"], "{:+.2f}"),
            "ours / paper": f"{r['ours_sign'] or '–'} / {r['paper_sign'] or '–'}",
            "reading": _reading(r),
            "Δ params (M)": _f(r["d_params_m"], "{:+.2f}"),
            "Δ GFLOPs@224": _f(r["d_gflops_224"], "{:+.3f}"),
            "Δ train img/s": _f(r["d_train_img_s"], "{:+.0f}"),
            "Δ infer img/s": _f(r["d_infer_img_s"], "{:+.0f}"),
        }
        for _, r in trans.iterrows()
    ]
    numbers = ("Δ top-1", "p", "p (Holm)", "within ±", "paper Δ", "Δ params (M)", "Δ GFLOPs@224", "Δ train img/s",
               "Δ infer img/s")  # fmt: skip
    return tables.markdown(rows, right=numbers)


def steps_markdown(steps: pd.DataFrame) -> str:
    rows = []
    for _, r in steps.iterrows():
        ours = _f(r["top1_mean"]) + (f" ± {_f(r['top1_std'])}" if pd.notna(r["top1_std"]) else "")
        paper = _f(r["paper_top1"]) + (f" ± {_f(r['paper_top1_sd'])}" if pd.notna(r["paper_top1_sd"]) else "")
        rows.append(
            {
                "#": _f(r["order"], "{:.0f}"),
                "run": r["run"],
                "phase": _text(r["phase"]) or "–",
                "seeds": str(r["seeds"]),
                "top-1 (mean ± sd)": ours,
                "paper top-1": paper,
                "params (M)": _f(r["params_m"]),
                "GFLOPs@224 (ours / paper)": f"{_f(r['gflops_224'])} / {_f(r['paper_gflops'])}",
                # speed: the median over the runs that had the machine to themselves (speed.py)
                "train img/s": speed.cell(r, "train_img_s"),
                "infer img/s": speed.cell(r, "infer_img_s"),
            }
        )
    right = ("#", "seeds", "top-1 (mean ± sd)", "paper top-1", "params (M)", "GFLOPs@224 (ours / paper)", "train img/s",
             "infer img/s")  # fmt: skip
    out = tables.markdown(rows, right=right)
    flagged = speed.flagged_lines(steps)
    if flagged:
        out += (
            "\nSpeed columns: the median over clean runs (a run that shared the machine or was paused "
            "is left out; docs/speed.md). Left out:\n\n" + "\n".join(f"- {line}" for line in flagged) + "\n"
        )
    return out


def _agreement_markdown(agree: Dict) -> str:
    t = agree["sign_table"]
    head = ("ours \\ paper", "−", "0", "+")
    grid = [dict(zip(head, [sign, *map(str, counts)])) for sign, counts in zip(("−", "0", "+"), t["counts"])]
    rows = [tables.markdown(grid, right=("−", "0", "+")).rstrip("\n")]
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


def build(table: pd.DataFrame, design: Optional[Q.Design] = None) -> Dict:
    """Everything in the report, as plain data (`design`: the folder's sequential design)."""
    steps, trans, f = analyse(table, design)
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
        design=_design_summary(design, trans),
    )


def _design_summary(design: Optional[Q.Design], trans: pd.DataFrame) -> Dict:
    """How the states were decided, and how many of each, for report.json and the text."""
    real = _real(trans)
    states = real["state"] if len(real) else pd.Series(dtype=str)
    counts = {k: int((states == k).sum()) for k in Q.STATES}
    if design is None:
        return dict(kind="fixed: one look at every finished run, full alpha", margin=Q.MARGIN, alpha=S.ALPHA, **counts)
    return dict(
        kind="group-sequential (roadmap run --until-decided): alpha spent per look, Holm over the changes",
        planned=design.planned,
        max_seeds=design.max_seeds,
        looks=list(design.looks),
        weights=list(design.weights),
        margin=design.margin,
        alpha=design.alpha,
        looks_made=list(trans.attrs.get("looks_made", [])),
        waiting_for=dict(trans.attrs.get("next", {})),
        pending_runs=int(trans.attrs.get("pending_runs", 0)),
        **counts,
    )


def _design_markdown(d: Dict) -> str:
    """How the states were decided and, for a sequential design, where it stands."""
    counts = f"**{d['resolved']} resolved, {d['equivalent']} equivalent to 0 (±{d['margin']:g}), {d['open']} open.**"
    if "looks" not in d:
        return (
            f"{counts} A fixed design: one look at every finished run, 5% family-wise (Holm over the "
            "changes) for both resolution and equivalence. `roadmap run --until-decided` adds seeds "
            "only where a change is open (docs/statistics.md)."
        )
    made = d["looks_made"]
    text = (
        f"{counts} A group-sequential design (`design.json`, `roadmap run --until-decided`): looks at "
        f"{', '.join(map(str, d['looks']))} seeds per step, 5% spent "
        f"{' / '.join(f'{w:.2f}' for w in d['weights'])} over them, Holm over the changes; "
        f"looks made: {', '.join(map(str, made)) or 'none'}."
    )
    if d["waiting_for"]:
        asked = ", ".join(f"{k} to {n}" for k, n in d["waiting_for"].items())
        text += (
            f" Look {len(made) + 1} waits for its seeds ({asked} seeds): rerun the same command to "
            "continue. Everything in this report is what the last look saw"
            + (
                f"; {d['pending_runs']} finished run(s) of the next round count from its look."
                if d["pending_runs"]
                else "."
            )
        )
    elif d["open"]:
        text += f" The design is finished: the open changes reached the cap of {d['max_seeds']} seeds."
    return text


def markdown(report: Dict, figures: Sequence[str]) -> str:
    title = f"# Roadmap report: {report['data']}" + (f", preset {report['preset']}" if report["preset"] else "")
    parts = [title, ""]
    parts += [f"> **Warning:** {w}\n" for w in report["warnings"]]
    for fig in figures:
        parts += [f"![{Path(fig).stem}]({fig})", ""]
    parts += [
        "## Decision",
        "",
        _design_markdown(report["design"]),
        "",
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
        "this test set. p is per change, unadjusted, and belongs to the full 95% CI. *state*: "
        "*resolved* (Holm-adjusted p < 0.05, sign given), *equivalent* (shown within ±0.5 points "
        "of 0 by TOST, Holm-adjusted over the changes), or *open* (neither; with the seeds per "
        "step it would take, from the measured noise). With a sequential design (design.json) "
        "both Holm p-values are over the design's looks (docs/statistics.md). *within ±* is the "
        "smallest bound the change is shown within at its Holm level. Signs: + / − for a "
        "resolved change, 0 for one that is not. The "
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


def _state_text(r) -> str:
    if r["state"] == "resolved":
        return f"**{'helped' if r['delta'] > 0 else 'hurt'}**"
    if r["state"] == "equivalent":
        return f"no difference (within ±{r['equivalence_bound']:.2f})"
    if r["state"] == "open":
        return "open: " + _need_seeds(r).replace("needs about ", "needs ~")
    return "–"


def answer(report: Dict, folder: str) -> str:
    """The answer in a few lines a non-statistician reads (README includes it verbatim)."""
    trans = _real(report["transitions"])
    trans = trans[trans["p"].notna()]
    d = report["design"]
    steps = report["steps"]
    done = steps[pd.to_numeric(steps["top1_mean"], errors="coerce").notna()]
    seeds = _seed_counts(steps)
    seed_text = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    rows = [
        {
            "change": f"`{r['to']}`",
            "Δ top-1 here [95% CI]": f"{r['delta']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]",
            "verdict here": _state_text(r),
            "paper Δ (ImageNet)": _f(r["paper_delta"], "{:+.2f}"),
        }
        for _, r in trans.iterrows()
    ]
    pick = lambda st, sign=0: trans[(trans["state"] == st) & (np.sign(trans["delta"]) * sign >= 0)]  # noqa: E731
    helped, hurt, same, open_ = pick("resolved", 1), pick("resolved", -1), pick("equivalent"), pick("open")
    names = lambda rows, more=lambda r: "": (
        ", ".join(  # noqa: E731
            f"`{r['to']}` {r['delta']:+.2f}{more(r)}" for _, r in rows.iterrows()
        )
        or "none"
    )
    res = trans[trans["state"] == "resolved"]
    agree = int((res["ours_sign"] == res["paper_sign"]).sum())
    flips = int(res["paper_sign"].isin(["+", "-"]).sum()) - agree
    lines = [
        f"On {report['data']} (preset {report['preset']}, {seed_text} seeds per step; `roadmap report {folder}`),",
        "in top-1 points, each call at a 5% family-wise error rate over the changes:",
        "",
        f"- **Helped ({len(helped)}):** {names(helped)}",
        f"- **Hurt ({len(hurt)}):** {names(hurt)}",
        f"- **No difference, within ±{d['margin']:g} ({len(same)}):** {names(same)}",
        f"- **Still open ({len(open_)}):** {names(open_, lambda r: f' ({_need_seeds(r)})')}",
    ]
    if len(done) >= 2:
        first, last = done.iloc[0], done.iloc[-1]
        lines.append(
            f"- **End to end:** {first['run']} {first['top1_mean']:.2f}% → {last['run']} {last['top1_mean']:.2f}% "
            f"({last['top1_mean'] - first['top1_mean']:+.2f}); of the {len(res)} resolved changes, {agree} have the "
            f"paper's sign, {flips} the opposite, the rest are within the paper's noise (ImageNet, Table 10)."
        )
    lines += [
        "",
        tables.markdown(rows, right=("Δ top-1 here [95% CI]", "paper Δ (ImageNet)")).rstrip("\n"),
    ]
    if d.get("waiting_for"):
        lines += [
            "",
            f"The sequential design is at look {len(d['looks_made'])} of {len(d['looks'])}: the next look waits "
            f"for more seeds at {', '.join(d['waiting_for'])} (rerun `roadmap run --until-decided` to continue).",
        ]
    return "\n".join(lines) + "\n"


def write_files(report: Dict, out: Path, figures: Sequence[str], sources: Sequence) -> List[Path]:
    """Write report.md, report.json and answer.md of a built report into `out`; return their paths."""
    paths = [Path(out) / "report.md", Path(out) / "report.json", Path(out) / "answer.md"]
    atomic_write_text(paths[0], markdown(report, figures))
    atomic_write_text(paths[1], check_report_text(to_json(report, figures, sources), paths[1]))
    # a folder named in bytes that are not UTF-8 is shown escaped, not refused
    shown = Path(out).as_posix().encode("utf-8", "backslashreplace").decode("utf-8")
    atomic_write_text(paths[2], answer(report, shown))
    return paths


def _subtitle(report: Dict) -> str:
    n = report["noise"]
    real = report["transitions"][~report["transitions"]["same_model"].astype(bool)]
    d = report["design"]
    return (
        f"{report['data']}, preset {report['preset']}: of {int(real['p'].notna().sum())} changes, "
        f"{d['resolved']} resolved, {d['equivalent']} equivalent to 0 (±{d['margin']:g}), {d['open']} open\n"
        f"pooled seed sd {n['seed_sd']:.2f} ({n['df']} df)"
    )
