"""The trajectory figure, in the spirit of the paper's Figure 2.

One row per step (roadmap order, top to bottom), coloured by phase; our top-1 as
bars with error bars over seeds (bottom axis), the paper's ImageNet top-1 as markers
on a twin axis (top), GFLOPs written beside each row.
"""
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .errors import RoadmapError  # noqa: E402
from .results import read_results, sort_runs, summarize  # noqa: E402

PHASE_COLORS = {
    "start": "#7f7f7f", "macro design": "#4c72b0", "ResNeXt-ify": "#dd8452",
    "inverted bottleneck": "#55a868", "large kernel": "#c44e52", "micro design": "#8172b3",
}


def _label(row) -> str:
    if isinstance(row["variant"], str) and row["variant"]:
        return f"{row['step']} ({row['variant'].replace('k', 'k=')})" if row["variant"].startswith("k") \
            else f"{row['step']} ({row['variant']})"
    return str(row["run"])


def plot_trajectory(folder, out_stem: Optional[str] = None, deltas: Optional[pd.DataFrame] = None,
                    title: Optional[str] = None):
    """Draw `trajectory.png` and `trajectory.svg` in `folder` from its results; return the paths.

    `deltas` (from `roadmap.report.transitions`) adds each transition's change, marked
    hollow where it is inside seed noise.
    """
    folder = Path(folder)
    table = read_results(folder)
    if not len(table):
        raise RoadmapError(f"{folder}: no finished runs to plot yet")
    summary = sort_runs(summarize(table)).sort_values(["order", "_variant_num"], kind="stable")
    summary = summary.drop(columns="_variant_num").reset_index(drop=True)
    n = len(summary)
    y = np.arange(n)
    fig, ax = plt.subplots(figsize=(9.5, 0.42 * n + 1.8))
    means = pd.to_numeric(summary["top1_mean"], errors="coerce")
    stds = pd.to_numeric(summary["top1_std"], errors="coerce").fillna(0)
    colors = [PHASE_COLORS.get(p, "#999999") for p in summary["phase"]]
    finite = means.dropna()
    lo = (finite - stds[finite.index]).min() if len(finite) else 0
    hi = (finite + stds[finite.index]).max() if len(finite) else 100
    pad = max(0.5, 0.15 * (hi - lo))
    left = max(0.0, lo - pad)
    ax.barh(y, (means - left).fillna(0), left=left, color=colors, height=0.62,
            xerr=stds.where(summary["seeds"] > 1), error_kw=dict(ecolor="black", capsize=3, lw=1),
            label="ours (mean ± sd over seeds)")
    ax.set_xlim(left, hi + pad * 2.2)
    ax.set_yticks(y, [_label(r) for _, r in summary.iterrows()])
    ax.invert_yaxis()
    data_name = str(table["data"].dropna().iloc[0]) if table["data"].notna().any() else "data"
    preset = str(table["preset"].dropna().iloc[0]) if table["preset"].notna().any() else ""
    ax.set_xlabel(f"our top-1 on {data_name} (%), preset {preset}")
    for i, r in summary.iterrows():
        if pd.isna(means[i]):
            ax.text(left, i, "  failed" if r["failed"] else "  pending", va="center", color="crimson")
            continue
        ax.text(means[i] + stds[i] + pad * 0.05, i, f"{means[i]:.2f}", va="center", fontsize=8)

    # The paper's ImageNet numbers on their own axis: the datasets differ, the shape compares.
    paper = pd.to_numeric(summary["paper_top1"], errors="coerce")
    if paper.notna().any():
        top = ax.twiny()
        top.plot(paper, y, "D", color="black", ms=5, label="paper, ImageNet-1K (Table 10)")
        plo, phi = paper.min(), paper.max()
        top.set_xlim(plo - 0.25 * (phi - plo + 0.5), phi + 1.1 * (phi - plo + 0.5))
        top.set_xlabel("paper top-1 on ImageNet-1K (%)  ◆")
        top.set_ylim(ax.get_ylim())

    # GFLOPs beside each row: the paper's at 224 and ours at 224 for the trained width.
    xmax = ax.get_xlim()[1]
    for i, r in summary.iterrows():
        ours = r["gflops_224"]
        txt = f"{ours:.2f}" if pd.notna(ours) else "-"
        if pd.notna(r["paper_gflops"]):
            txt = f"{r['paper_gflops']:.2f} | {txt}"
        ax.text(xmax, i, f" {txt} GF", va="center", fontsize=8, color="#333333", clip_on=False)
    ax.text(xmax, -0.9, " GFLOPs@224\n paper | ours", fontsize=7, color="#333333", va="bottom")

    if deltas is not None and len(deltas):
        _mark_deltas(ax, summary, deltas, means)

    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for p, c in PHASE_COLORS.items()
               if p in set(summary["phase"])]
    names = [p for p in PHASE_COLORS if p in set(summary["phase"])]
    if paper.notna().any():
        handles.append(plt.Line2D([], [], marker="D", color="black", ls=""))
        names.append("paper (ImageNet)")
    ax.legend(handles, names, loc="lower right", fontsize=7, framealpha=0.9)
    seeds = int(summary["seeds"].max()) if len(summary) else 0
    names = sorted(set(table["roadmap"].dropna().astype(str)) - {"paper"})
    what = f"{' + '.join(names)} roadmap" if names else "ResNet-50 -> ConvNeXt-T roadmap"
    ax.set_title(title or f"{what}: {data_name}, {seeds} seed(s)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    stem = folder / (out_stem or "trajectory")
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for p in paths:
        tmp = p.with_name(f".{p.name}.tmp{p.suffix}")
        fig.savefig(tmp, dpi=130)
        tmp.replace(p)
    plt.close(fig)
    return paths


def _mark_deltas(ax, summary, deltas, means):
    """Write each transition's change at its row: filled if the CI excludes 0, hollow if not."""
    by_run = {r["to"]: r for _, r in deltas.iterrows()}
    for i, r in summary.iterrows():
        d = by_run.get(r["run"])
        if d is None or pd.isna(d.get("delta_mean")) or pd.isna(means[i]):
            continue
        significant = bool(d.get("significant"))
        ax.plot([means[i]], [i], marker="o", ms=6, mfc="black" if significant else "white",
                mec="black", zorder=5)
        ax.annotate(f"{d['delta_mean']:+.2f}" + ("" if significant else " (noise)"),
                    (means[i], i), xytext=(0, -9), textcoords="offset points", fontsize=6.5,
                    ha="center", va="top", color="black" if significant else "#666666")
