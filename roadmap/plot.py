"""The trajectory figure, in the spirit of the paper's Figure 2.

One row per step (roadmap order, top to bottom), coloured by phase; our top-1 as
bars with error bars over seeds (bottom axis), the paper's ImageNet top-1 as markers
on a twin axis (top), GFLOPs written beside each row.
"""

from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .errors import RoadmapError
from .results import atomic_write, summarize
from .stats import range_half
from .steps import PHASE_COLORS


def _label(row) -> str:
    if isinstance(row["variant"], str) and row["variant"]:
        return (
            f"{row['step']} ({row['variant'].replace('k', 'k=')})"
            if row["variant"].startswith("k")
            else f"{row['step']} ({row['variant']})"
        )
    return str(row["run"])


def plot_trajectory(
    table: pd.DataFrame,
    folder,
    out_stem: Optional[str] = None,
    deltas: Optional[pd.DataFrame] = None,
    title: Optional[str] = None,
    reference: Optional[pd.DataFrame] = None,
) -> List[Path]:
    """Draw `trajectory.png` and `trajectory.svg` of a results table into `folder`; return the paths.

    `deltas` (from `roadmap.report.transitions`) adds each transition's change, marked
    hollow where it is inside seed noise. `reference` (from `roadmap.report.reference_band`:
    model_key, mean, half) draws the committed reference's mean and 95% interval on each row
    of the same model, so a new run shows whether it falls inside the reference's noise.
    """
    folder = Path(folder)
    if not len(table):
        raise RoadmapError(f"{folder}: no finished runs to plot yet")
    summary = summarize(table).reset_index(drop=True)
    n = len(summary)
    fig = Figure(figsize=(9.5, max(3.2, 0.42 * n + 1.8)))
    ax = fig.subplots()
    means = pd.to_numeric(summary["top1_mean"], errors="coerce")
    data_name, preset = _first(table, "data") or "data", _first(table, "preset")
    marks = _reference_rows(summary, reference) if reference is not None and len(reference) else []
    # the axis spans the reference's ranges too, so no bar is cut at the edge
    reach = [m - h for _, m, h in marks] + [m + h for _, m, h in marks]
    _bars(ax, summary, means, f"our top-1 on {data_name} (%), preset {preset}", reach)
    paper = pd.to_numeric(summary["paper_top1"], errors="coerce")
    if paper.notna().any():
        _paper_axis(ax, paper)
    _gflops_labels(ax, summary)
    if deltas is not None and len(deltas):
        _mark_deltas(ax, summary, deltas, means)
    has_reference = bool(marks)
    if has_reference:
        _reference_marks(ax, marks)
    _legend(ax, summary, paper.notna().any(), has_reference)
    seeds = int(summary["seeds"].max()) if len(summary) else 0
    names = sorted(set(table["roadmap"].dropna().astype(str)) - {"paper"})
    what = f"{' + '.join(names)} roadmap" if names else "ResNet-50 -> ConvNeXt-T roadmap"
    ax.set_title(title or f"{what}: {data_name}, {seeds} seed(s)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _plain_text(fig)
    fig.tight_layout()
    return save_figure(fig, folder / (out_stem or "trajectory"))


def _first(table: pd.DataFrame, col: str) -> str:
    values = table[col].dropna() if col in table.columns else []
    return str(values.iloc[0]) if len(values) else ""


def _bars(ax, summary: pd.DataFrame, means: pd.Series, xlabel: str, reach=()):
    """Our mean top-1 per row as a bar (± sd over seeds), the value written beside it; the
    axis also spans the values in `reach`."""
    y = np.arange(len(summary))
    stds = pd.to_numeric(summary["top1_std"], errors="coerce").fillna(0)
    colors = [PHASE_COLORS.get(p, "#999999") for p in summary["phase"]]
    finite = means.dropna()
    lo = min([(finite - stds[finite.index]).min()] + list(reach)) if len(finite) else 0
    hi = max([(finite + stds[finite.index]).max()] + list(reach)) if len(finite) else 100
    pad = max(0.5, 0.15 * (hi - lo))
    left = max(0.0, lo - pad)
    ax.barh(
        y,
        (means - left).fillna(0),
        left=left,
        color=colors,
        height=0.62,
        xerr=stds.where(summary["seeds"] > 1),
        error_kw=dict(ecolor="black", capsize=3, lw=1),
        label="ours (mean ± sd over seeds)",
    )
    ax.set_xlim(left, hi + pad * 2.2)
    ax.set_yticks(y, [_label(r) for _, r in summary.iterrows()])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    for i, r in summary.iterrows():
        if pd.isna(means[i]):
            ax.text(left, i, "  failed" if r["failed"] else "  pending", va="center", color="crimson")
        else:
            ax.text(means[i] + stds[i] + pad * 0.05, i, f"{means[i]:.2f}", va="center", fontsize=8)


def _paper_axis(ax, paper: pd.Series):
    """The paper's ImageNet numbers on their own axis: the datasets differ, the shape compares."""
    top = ax.twiny()
    top.plot(paper, np.arange(len(paper)), "D", color="black", ms=5, label="paper, ImageNet-1K (Table 10)")
    plo, phi = paper.min(), paper.max()
    top.set_xlim(plo - 0.25 * (phi - plo + 0.5), phi + 1.1 * (phi - plo + 0.5))
    top.set_xlabel("paper top-1 on ImageNet-1K (%)  ◆")
    top.set_ylim(ax.get_ylim())


def _gflops_labels(ax, summary: pd.DataFrame):
    """GFLOPs beside each row: the paper's at 224 and ours at 224 for the trained width."""
    xmax = ax.get_xlim()[1]
    for i, r in summary.iterrows():
        ours = r["gflops_224"]
        txt = f"{ours:.2f}" if pd.notna(ours) else "-"
        if pd.notna(r["paper_gflops"]):
            txt = f"{r['paper_gflops']:.2f} | {txt}"
        ax.text(xmax, i, f" {txt} GF", va="center", fontsize=8, color="#333333", clip_on=False)
    ax.text(xmax, -0.9, " GFLOPs@224\n paper | ours", fontsize=7, color="#333333", va="bottom")


def _reference_rows(summary: pd.DataFrame, reference: pd.DataFrame):
    """(row, the committed reference's mean, half-width of the 95% range of a mean of this
    row's seeds) for each row of the same model: matched by model (configuration, recipe,
    data), never by name, so a custom row called gelu that is k=5 is not drawn against the
    paper's gelu."""
    ref = reference.set_index("model_key")
    return [
        (i, float(ref.loc[k, "mean"]), range_half(ref.loc[k], int(summary["seeds"][i])))
        for i, k in enumerate(summary["model_key"])
        if k in ref.index
    ]


def _reference_marks(ax, marks):
    """The reference's mean and range on each matched row (a bar outside it: this machine
    does not train like the reference's)."""
    ax.errorbar(
        [m for _, m, _ in marks],
        [i + 0.36 for i, _, _ in marks],
        xerr=[h for _, _, h in marks],
        fmt="|",
        color="#d62728",
        ms=8,
        capsize=2,
        lw=1.2,
        zorder=6,
    )


def _legend(ax, summary: pd.DataFrame, paper: bool, reference: bool):
    phases = [p for p in PHASE_COLORS if p in set(summary["phase"])]
    handles = [Rectangle((0, 0), 1, 1, color=PHASE_COLORS[p]) for p in phases]
    names = list(phases)
    if paper:
        handles.append(Line2D([], [], marker="D", color="black", ls=""))
        names.append("paper (ImageNet)")
    if reference:
        handles.append(Line2D([], [], marker="|", color="#d62728", ls="-"))
        names.append("committed reference (mean; 95% range for this many runs)")
    ax.legend(handles, names, loc="lower right", fontsize=7, framealpha=0.9)


def _mark_deltas(ax, summary, deltas, means):
    """Write each transition's change at its row: filled if resolved (Holm), hollow if not."""
    by_run = {r["to"]: r for _, r in deltas.iterrows()}
    for i, r in summary.iterrows():
        d = by_run.get(r["run"])
        if d is None or pd.isna(d.get("delta")) or pd.isna(means[i]):
            continue
        significant = bool(d.get("resolved"))
        ax.plot([means[i]], [i], marker="o", ms=6, mfc="black" if significant else "white", mec="black", zorder=5)
        ax.annotate(
            f"{d['delta']:+.2f}" + ("" if significant else " (noise)"),
            (means[i], i),
            xytext=(0, -9),
            textcoords="offset points",
            fontsize=6.5,
            ha="center",
            va="top",
            color="black" if significant else "#666666",
        )


def plot_forest(trans: pd.DataFrame, folder, out_stem: str = "changes", subtitle: str = ""):
    """The per-change chart the report tests: one row per change, our Δ top-1 with its 95%
    interval (filled where resolved by Holm), the paper's Δ as a diamond on the same axis.

    Writes `changes.png` / `.svg` in `folder`; returns the paths.
    """
    folder = Path(folder)
    rows = trans[~trans["same_model"].astype(bool) & trans["delta"].notna()].reset_index(drop=True)
    if not len(rows):
        raise RoadmapError(f"{folder}: no change with a measured Δ to draw")
    n = len(rows)
    y = np.arange(n)
    fig = Figure(figsize=(8.5, max(3.0, 0.38 * n + 1.9)))
    ax = fig.subplots()
    ax.axvline(0, color="#444444", lw=0.8)
    margin = 0.5  # sequential.MARGIN: the band a change is shown equivalent within
    ax.axvspan(-margin, margin, color="#dddddd", alpha=0.5, lw=0, zorder=0)
    # the three states: resolved (filled circle), equivalent to 0 (grey square), open (hollow circle)
    style = {
        "resolved": dict(marker="o", filled=True),
        "equivalent": dict(marker="s", filled=False),
        "open": dict(marker="o", filled=False),
    }
    for i, r in rows.iterrows():
        color = PHASE_COLORS.get(r["phase"], "#999999")
        if pd.notna(r["ci_low"]):
            ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=color, lw=2.2, solid_capstyle="butt")
        st = style.get(str(r.get("state", "")), dict(marker="o", filled=False))
        face = color if st["filled"] else ("#bbbbbb" if st["marker"] == "s" else "white")
        ax.plot([r["delta"]], [i], st["marker"], ms=7, mec=color, mfc=face, mew=1.8, zorder=4)
        if pd.notna(r["paper_delta"]):
            ax.plot([r["paper_delta"]], [i], "D", ms=5, color="black", zorder=5)
    labels = [f"{r['from']} → {r['to']}" for _, r in rows.iterrows()]
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(
        "Δ top-1 (points), ours with its 95% interval (unadjusted)\n"
        "grey band: ±0.5 (equivalence); ◆ the paper's (ImageNet-1K, Table 10)",
        fontsize=8,
    )
    handles = [
        Line2D([], [], marker="o", color="#555555", mfc="#555555", ls="-"),
        Line2D([], [], marker="s", color="#555555", mfc="#bbbbbb", ls="-"),
        Line2D([], [], marker="o", color="#555555", mfc="white", ls="-"),
        Line2D([], [], marker="D", color="black", ls=""),
    ]
    ax.legend(
        handles,
        ["resolved (Holm)", "equivalent to 0 (within ±0.5)", "open (neither yet)", "paper"],
        fontsize=7,
        loc="best",
        framealpha=0.9,
    )
    ax.set_title("What each change was worth" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    _plain_text(fig)
    fig.tight_layout()
    return save_figure(fig, folder / out_stem)


def _plain_text(fig: Figure):
    """Every text of `fig` drawn as written: a step named `$x_1$` is a label, not mathtext
    (which would typeset it, or fail on an unbalanced `$`)."""
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        t.set_parse_math(False)


def save_figure(fig: Figure, stem: Path) -> List[Path]:
    """`stem`.png and `stem`.svg, written atomically and byte-for-byte the same for the same
    figure (fixed SVG ids, no date), so a committed figure changes only when its content does."""
    import matplotlib

    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    with matplotlib.rc_context({"svg.hashsalt": "roadmap", "text.usetex": False}):
        for p in paths:
            meta = {"Date": None} if p.suffix == ".svg" else {}
            atomic_write(p, lambda f, fmt=p.suffix[1:], m=meta: fig.savefig(f, format=fmt, dpi=130, metadata=m))
    return paths
