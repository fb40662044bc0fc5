"""`roadmap report`: what each change did on your data, with confidence, next to the paper.

The numbers come from `roadmap.analysis` (DataFrames) and the sentences from
`roadmap.findings`; this module lays them out: markdown tables, report.md, report.json,
answer.md and the figure subtitle.
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
from .analysis import _num, _real, _text, agreement, analyse, noise
from .findings import _f, _n, _need, _need_seeds, _seed_counts, findings, warnings_for
from .results import atomic_write_text
from .schema import check_report_text

# ---- the report ------------------------------------------------------------------------


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
    elif d.get("looks_made") and d["looks_made"][-1] == d["looks"][-1] and d.get("open"):
        lines += [
            "",
            f"The sequential design is finished (looks at {', '.join(map(str, d['looks']))} seeds per step): "
            f"its cap of {d['max_seeds']} seeds stopped the {_n(d['open'], 'open change')}; "
            "what each would take is beside it.",
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
