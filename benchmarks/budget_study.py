"""Does the answer survive more training? The reference's changes at 4 and at 12 epochs.

    python benchmarks/budget_study.py [--epochs 12] [--seeds 3] [--threads 2]
        [--out results/budget-study] [--reference results/reference-fashion-mnist] [--analyse-only]

Trains, under the `reference` preset with only `epochs` changed (the cosine schedule then
spans all of them; warmup, lr and everything else as the preset's), the steps on both
sides of the changes where our 4-epoch answer differs most from the paper and both
endpoints, seed after seed (a stop leaves whole seeds), through the runner: resumable,
rerun to continue. Every run also records its learning curve (top-1 after each epoch;
scoring changes nothing the run draws, tests/test_train.py).

Then scores each studied change at both budgets with the report's statistics
(`roadmap.stats`: each step's own seed variance, seed as a block, the test set's sampling
error from the per-image record where the runs carry it; Holm over the studied changes
within each budget) and writes OUT/changes.csv, OUT/curve.csv (the endpoints' top-1 per
epoch over seeds), OUT/shift.csv (each change's Δ at the long budget minus its Δ at the
short one, with its interval), OUT/budget.md, OUT/budget.png / .svg (the changes at both
budgets) and OUT/curve.png / .svg (the endpoints' learning curves beside where the same
models end at the short budget).
"""

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from roadmap import stats as S
from roadmap import tables
from roadmap.analysis import finished, once, run_minutes
from roadmap.errors import RoadmapError
from roadmap.plan import paper_plan
from roadmap.plot import save_figure
from roadmap.recipe import settings
from roadmap.results import atomic_write_text, read_results
from roadmap.runner import run_plan

# change -> (the step before, the step after); the last row is the whole roadmap
CHANGES = {
    "patchify_stem": ("stage_ratio", "patchify_stem"),
    "large_kernel": ("move_up_dwconv", "large_kernel"),
    "gelu": ("large_kernel", "gelu"),
    "fewer_norms": ("fewer_activations", "fewer_norms"),
    "ResNet-50 → ConvNeXt-T": ("resnet50", "separate_downsampling"),
}
STEPS = list(dict.fromkeys(s for pair in CHANGES.values() for s in pair))
ENDPOINTS = ("resnet50", "separate_downsampling")
ENDPOINT_NAMES = {"resnet50": "ResNet-50", "separate_downsampling": "ConvNeXt-T (separate_downsampling)"}


def train(args):
    recipe, ex = settings("reference", [f"epochs={args.epochs:g}"])
    ex = replace(ex, curve=True)
    specs = paper_plan(only=STEPS)
    for seed in range(args.seeds):  # seed after seed: a stop leaves whole seeds
        run_plan(
            specs,
            recipe,
            "reference",
            ex=ex,
            seeds=[seed],
            out=args.out,
            progress=not args.no_progress,
            plot=False,
            use_reference=False,
        )


def score(table: pd.DataFrame, budget: str) -> pd.DataFrame:
    """Each studied change's Δ, seed-only and full intervals, and Holm over the changes."""
    ok = once(finished(table[table["run"].isin(STEPS)]))
    if not len(ok):
        return pd.DataFrame()
    f = S.fit(ok)
    model = dict(zip(ok["run"], ok["model"]))
    paper = pd.to_numeric(ok["paper_top1"], errors="coerce").groupby(ok["run"]).first()
    rows = []
    for change, (a, b) in CHANGES.items():
        if a not in model or b not in model:
            continue
        c = S.contrast(f, model[a], model[b])
        rows.append(
            dict(
                budget=budget,
                change=change,
                before=a,
                after=b,
                seeds=min(f.counts[model[a]], f.counts[model[b]]),
                test_set=f.has_test,
                paper_delta=paper[b] - paper[a],
                **c,
            )
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = S.holm(out["p"].to_numpy(dtype=float))
        out["resolved"] = (out["p_holm"] < S.ALPHA).fillna(False)
    return out


def shift(changes: pd.DataFrame, budgets) -> pd.DataFrame:
    """Δ(long) − Δ(short) per change, with its 95% interval and Holm over the changes.

    The two budgets are separate runs, so their variances add (Satterthwaite df). The test
    set is the same 10,000 images at both budgets: its errors are positively correlated
    between them, so adding them counts them twice and the interval is, if anything, wide.
    """
    short, long = (changes[changes["budget"] == b].set_index("change") for b in budgets)
    rows = []
    for name in CHANGES:
        if name not in short.index or name not in long.index:
            continue
        a, b = short.loc[name], long.loc[name]
        row = dict(change=name, shift=b["delta"] - a["delta"], ci_low=math.nan, ci_high=math.nan, p=math.nan)
        if pd.notna(a["se"]) and pd.notna(b["se"]):
            var, df = S.satterthwaite([(a["se"] ** 2, a["df"]), (b["se"] ** 2, b["df"])])
            _, lo, hi, p, _ = S.t_interval(row["shift"], var, df)
            row.update(ci_low=float(lo), ci_high=float(hi), p=float(p), df=float(df))
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["p_holm"] = S.holm(out["p"].to_numpy(dtype=float))
        out["resolved"] = (out["p_holm"] < S.ALPHA).fillna(False)
    return out


def reading(short: pd.Series, long: pd.Series, moved=None) -> str:
    """How the short budget's answer fares at the long one; `moved` (a `shift` row) says
    whether the change's size itself moved, so "shrinks" is not read from a lost resolution
    alone."""
    if pd.isna(long.get("p_holm")):
        return "not yet measured (needs 2 seeds of both steps)"
    if short["resolved"] and long["resolved"]:
        if np.sign(short["delta"]) != np.sign(long["delta"]):
            return "flips"
        text = "holds (same sign, resolved)"
    elif short["resolved"]:
        same_sign = np.sign(short["delta"]) == np.sign(long["delta"])
        # a lost resolution is not a smaller change: a noisier step or Holm's step-down lose it too
        if same_sign and abs(long["delta"]) >= abs(short["delta"]):
            text = "no longer resolved, though not smaller"
        else:
            text = "shrinks into the noise"
    elif long["resolved"]:
        text = "appears (resolved only with more training)"
    else:
        return "within the noise at both"
    if moved is None or pd.isna(moved.get("p_holm")):
        return text
    if moved["resolved"]:
        return text + f"; its size moved ({moved['shift']:+.2f}, resolved)"
    return text + "; the shift itself is not resolved"


def curve_table(table: pd.DataFrame) -> pd.DataFrame:
    """The endpoints' top-1 (raw and EMA) after each epoch: mean and sd over seeds."""
    rows = []
    for _, r in finished(table[table["run"].isin(ENDPOINTS)]).iterrows():
        curve = r.get("curve")
        if isinstance(curve, list):
            rows += [dict(step=r["run"], seed=r["seed"], **p) for p in curve]
    if not rows:
        return pd.DataFrame()
    points = pd.DataFrame(rows).astype({"top1_ema": float})
    g = points.groupby(["step", "epoch"])
    return g.agg(
        seeds=("seed", "nunique"),
        top1_mean=("top1", "mean"),
        top1_sd=("top1", "std"),
        top1_ema_mean=("top1_ema", "mean"),
    ).reset_index()


def plot(changes: pd.DataFrame, budgets, folder: Path):
    names = list(CHANGES)
    fig = Figure(figsize=(8.5, 0.75 * len(names) + 1.8))
    ax = fig.subplots()
    ax.axvline(0, color="#444444", lw=0.8)
    colors = dict(zip(budgets, ("#9aa5b1", "#1f5fa8")))
    for i, name in enumerate(names):
        for j, budget in enumerate(budgets):
            r = changes[(changes["change"] == name) & (changes["budget"] == budget)]
            if not len(r):
                continue
            r, y = r.iloc[0], i + (j - 0.5) * 0.3
            if pd.notna(r["ci_low"]):
                ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colors[budget], lw=2.4, solid_capstyle="butt")
            face = colors[budget] if r["resolved"] else "white"
            ax.plot([r["delta"]], [y], "o", ms=7, mec=colors[budget], mfc=face, mew=1.8, zorder=4)
            if j == 0 and pd.notna(r["paper_delta"]):
                ax.plot([r["paper_delta"]], [i], "D", ms=5, color="black", zorder=5)
    ax.set_yticks(range(len(names)), [f"{n}\n{CHANGES[n][0]} → {CHANGES[n][1]}" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Δ top-1 (points), 95% interval (seeds and test set); ◆ the paper's Δ (ImageNet-1K)")
    handles = [Line2D([], [], marker="o", color=colors[b], mfc=colors[b], ls="-") for b in budgets]
    handles += [Line2D([], [], marker="o", color="#555555", mfc="white", ls="-")]
    handles += [Line2D([], [], marker="D", color="black", ls="")]
    labels = [f"{b}, resolved (Holm)" for b in budgets] + ["not resolved (open)", "paper"]
    ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.9)
    ax.set_title("Does the 4-epoch answer survive more training? (Fashion-MNIST, 32 px, widths x0.25)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, folder / "budget")


def plot_curve(curve: pd.DataFrame, short_table: pd.DataFrame, short_epochs: float, budgets, folder: Path) -> Figure:
    """The endpoints' learning curves at the long budget (mean over seeds, ± 1 sd band),
    with where the same models end when trained the short budget: "learns faster" against
    "ends better" in one picture."""
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    ends = finished(short_table[short_table["run"].isin(ENDPOINTS)]).groupby("run")["top1"].agg(["mean", "std"])
    for step, color in zip(ENDPOINTS, ("#b5651d", "#1f5fa8")):
        c = curve[curve["step"] == step].sort_values("epoch")
        if not len(c):
            continue
        n = int(c["seeds"].max())
        ax.plot(
            c["epoch"],
            c["top1_mean"],
            "-o",
            ms=3,
            color=color,
            label=f"{ENDPOINT_NAMES[step]}, {budgets[1]} ({n} seeds)",
        )
        ax.fill_between(
            c["epoch"], c["top1_mean"] - c["top1_sd"], c["top1_mean"] + c["top1_sd"], color=color, alpha=0.15, lw=0
        )
        if step in ends.index:
            m, sd = ends.loc[step, "mean"], ends.loc[step, "std"]
            ax.errorbar(
                [short_epochs],
                [m],
                yerr=[sd],
                fmt="D",
                ms=6,
                mfc="white",
                mec=color,
                ecolor=color,
                capsize=3,
                zorder=5,
                label=f"{ENDPOINT_NAMES[step]} trained {budgets[0]} (reference's end)",
            )
    ax.set_xlabel("epoch (the cosine schedule spans all of them)")
    ax.set_ylabel("val top-1 % after each epoch (band: ± 1 sd)")
    ax.set_title("Learning curves of the endpoints (Fashion-MNIST, 32 px, widths x0.25)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, folder / "curve")
    return fig


def _ci(r) -> str:
    if pd.isna(r["ci_low"]):
        return f"{r['delta']:+.2f} (no interval yet)"
    holm = f", Holm p {r['p_holm']:.3f}" if pd.notna(r.get("p_holm")) else ""
    text = f"{r['delta']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]{holm}"
    return text + (" **resolved**" if r["resolved"] else "")


def markdown(changes, budgets, curve, cost, command, moved=None) -> str:
    short, long = budgets
    lines = [
        "# Budget study: the reference's changes at 4 and at more epochs",
        "",
        f"Made by `{command}` (see the script's docstring). Δ top-1 in points with its unadjusted",
        "95% interval from `roadmap.stats` (each step's own seed variance, seed as a block; plus the",
        "test set's sampling error where the runs carry their per-image record) and its Holm-adjusted p",
        f"over the {len(CHANGES)} studied changes within each budget; **resolved**: Holm p < 0.05, so an",
        "interval that excludes 0 is not yet a resolved change. The last column but one is the",
        f"change's own shift, Δ({long}) − Δ({short}), with its interval (Holm over the changes):",
        "whether more training *moved* the change, not only whether it still resolves.",
        "",
    ]
    head = ["change", short, long, f"Δ({long}) − Δ({short})", "paper Δ", f"the {short} answer at {long}"]
    rows = []
    moved = (moved if moved is not None and len(moved) else pd.DataFrame(columns=["change"])).set_index("change")
    for name in CHANGES:
        a = changes[(changes["change"] == name) & (changes["budget"] == short)]
        b = changes[(changes["change"] == name) & (changes["budget"] == long)]
        if not len(a):
            continue
        a = a.iloc[0]
        b = b.iloc[0] if len(b) else pd.Series(dict(p_holm=math.nan))
        cell = _ci(b) + f" ({int(b['seeds'])} seeds)" if "delta" in b else "–"
        s = moved.loc[name] if name in moved.index else None
        m = _ci(s.rename({"shift": "delta"})) if s is not None else "–"
        verdict = reading(a, b, s)
        if "seeds" in b and b["seeds"] < 3:  # 1-2 df per step: too few to read a loss of resolution
            verdict = f"provisional ({int(b['seeds'])} seeds): {verdict}"
        rows.append(dict(zip(head, [name, _ci(a), cell, m, f"{a['paper_delta']:+.2f}", verdict])))
    lines.append(tables.markdown(rows, right=["paper Δ"], columns=head).rstrip("\n"))
    for budget in budgets:
        covered = changes[changes["budget"] == budget]["test_set"]
        if len(covered) and not covered.all():
            lines.append(f"\n{budget}: the runs carry no per-image record; intervals are seed-only.")
    if len(curve):
        lines += ["", f"## Learning curve of the endpoints ({long}): top-1 after each epoch", ""]
        head = ["epoch"] + [f"{s} (mean ± sd, seeds)" for s in ENDPOINTS]
        rows = []
        for epoch, g in curve.groupby("epoch"):
            cells = [f"{epoch:g}"]
            for s in ENDPOINTS:
                r = g[g["step"] == s]
                cells.append(
                    f"{r['top1_mean'].iloc[0]:.2f} ± {r['top1_sd'].iloc[0]:.2f} ({int(r['seeds'].iloc[0])})"
                    if len(r) and r["seeds"].iloc[0] > 1
                    else (f"{r['top1_mean'].iloc[0]:.2f} (1)" if len(r) else "–")
                )
            rows.append(dict(zip(head, cells)))
        lines.append(tables.markdown(rows, right=head, columns=head).rstrip("\n"))
    if cost:
        lines += ["", f"Cost at {long}: {cost}."]
    return "\n".join(lines) + "\n"


def cost_text(table: pd.DataFrame) -> str:
    ok = finished(table)
    if not len(ok):
        return ""
    cpu_min = run_minutes(ok)["cpu_minutes"]
    return (
        f"median {cpu_min.median():.1f} CPU-minutes per run ({cpu_min.min():.1f}-{cpu_min.max():.1f};"
        f" wall time x threads, {len(ok)} runs; recorded `wall_s`, on whatever else the machine ran)"
    )


def at_budget(table: pd.DataFrame, epochs: float, where) -> pd.DataFrame:
    """The runs trained for `epochs`: a folder holding other budgets too is scored at this
    one only, and says so, never a mix of the two."""
    same = pd.to_numeric(table["epochs"], errors="coerce") == epochs
    if not same.all():
        others = sorted(set(table.loc[~same, "epochs"].astype(str)))
        print(f"budget_study: {where}: {int((~same).sum())} run(s) at {', '.join(others)} epochs left out")
    return table[same]


def analyse(args):
    out = Path(args.out)
    short_epochs = settings("reference", [])[0].epochs
    long_table = at_budget(read_results(out), args.epochs, out)
    short_table = at_budget(read_results(args.reference), short_epochs, args.reference)
    # the same seeds at both budgets (the reference has more, and more where a change was
    # open): a like-for-like comparison, whatever the reference holds later
    seeds = set(pd.to_numeric(long_table["seed"], errors="coerce").dropna())
    if len(long_table) and seeds:
        short_table = short_table[pd.to_numeric(short_table["seed"], errors="coerce").isin(seeds)]
    budgets = (f"{short_epochs:g} epochs", f"{args.epochs:g} epochs")
    changes = pd.concat([score(short_table, budgets[0]), score(long_table, budgets[1])], ignore_index=True)
    if not len(changes):
        raise RoadmapError(f"{out}: no finished runs of the studied steps yet; run without --analyse-only")
    curve = curve_table(long_table)
    moved = shift(changes, budgets)
    atomic_write_text(out / "changes.csv", changes.to_csv(index=False))
    atomic_write_text(out / "shift.csv", moved.to_csv(index=False))
    atomic_write_text(out / "curve.csv", curve.to_csv(index=False))
    plot(changes, budgets, out)
    if len(curve):
        plot_curve(curve, short_table, short_epochs, budgets, out)
    # the command that made these runs, from their records (--analyse-only's defaults need not be it)
    made = finished(long_table)
    seeds = int(made["seed"].max()) + 1 if len(made) else args.seeds
    threads = int(pd.to_numeric(made["threads"]).mode().iloc[0]) if len(made) else args.threads
    command = f"python benchmarks/budget_study.py --epochs {args.epochs:g} --seeds {seeds} --threads {threads}"
    atomic_write_text(out / "budget.md", markdown(changes, budgets, curve, cost_text(long_table), command, moved))
    print((out / "budget.md").read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, default=12)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/budget-study")
    p.add_argument("--reference", default="results/reference-fashion-mnist", help="the 4-epoch runs")
    p.add_argument("--analyse-only", action="store_true", help="score the runs there, train nothing")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        if not args.analyse_only:
            train(args)
        analyse(args)
    except RoadmapError as e:
        print(f"budget_study: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
