"""How noisy is a roadmap step, and what quiets it per CPU-minute?

    python benchmarks/noise_study.py [--steps resnet50,separate_downsampling] [--seeds 3]
                                     [--threads 1] [--out results/noise-study]

Trains the given steps x seeds under several variants of the `reference` preset (epochs,
learning rate, warmup, batch size, width) on the embedded Fashion-MNIST, through the
runner (resumable: rerun to continue; the reference setting itself reuses the committed
reference runs). For every setting it writes one row: per-step seed sd (raw weights and
EMA), the pooled sd of the one-model fit, the 95% half-width of a transition with 3 seeds
under that model, CPU-seconds per run, and `half_width x sqrt(CPU-min)`: the half-width a
fixed CPU budget buys (lower is better; seeds scale the width by 1/sqrt(n) and the cost by n).

Writes OUT/noise.csv and OUT/noise.png.
"""

import argparse
import math
from pathlib import Path

import pandas as pd
import torch
from scipy import stats

from roadmap import stats as S
from roadmap.analysis import finished
from roadmap.plan import paper_plan
from roadmap.recipe import get_preset
from roadmap.results import atomic_write_text, read_results
from roadmap.runner import run_plan

# setting -> --set overrides of the reference preset (4 epochs, batch 256, lr 4e-3, warmup 0.5)
SETTINGS = {
    "1 epoch": ["epochs=1", "warmup_epochs=0.1"],
    "2 epochs": ["epochs=2", "warmup_epochs=0.25"],
    "2 epochs, lr 2e-3": ["epochs=2", "warmup_epochs=0.25", "lr=2e-3"],
    "2 epochs, lr 8e-3": ["epochs=2", "warmup_epochs=0.25", "lr=8e-3"],
    "2 epochs, batch 128": ["epochs=2", "warmup_epochs=0.25", "batch_size=128", "lr=2e-3", "lr_batch=128"],
    "2 epochs, width x0.125": ["epochs=2", "warmup_epochs=0.25", "width_scale=0.125"],
    "4 epochs (reference)": [],  # last: it reuses the committed reference runs
}


def summarize_setting(label, table):
    ok = finished(table)
    ok["model"] = ok["run"]
    f = S.fit(ok)
    row = dict(setting=label, runs=len(ok))
    for run, g in ok.groupby("run"):
        row[f"{run}_mean"] = g["top1"].mean()
        row[f"{run}_sd"] = g["top1"].std(ddof=1)
        ema = pd.to_numeric(g["top1_ema"], errors="coerce").dropna()
        row[f"{run}_ema_sd"] = ema.std(ddof=1) if len(ema) > 1 else math.nan
    row["pooled_sd"] = f.sigma
    row["df"] = f.df
    # 95% interval of the pooled sd (chi-square): with few seeds an sd is itself very uncertain
    row["pooled_sd_low"] = f.sigma * math.sqrt(f.df / stats.chi2.ppf(0.975, f.df))
    row["pooled_sd_high"] = f.sigma * math.sqrt(f.df / stats.chi2.ppf(0.025, f.df))
    # the half-width of one transition with 3 seeds per step, under the 13-step design
    row["half_width_3_seeds"] = stats.t.ppf(0.975, 12 * 2) * f.sigma * math.sqrt(2 / 3)
    row["cpu_s_per_run"] = pd.to_numeric(ok["wall_s"], errors="coerce").mean() * ok["threads"].fillna(1).mean()
    row["half_x_sqrt_cpu_min"] = row["half_width_3_seeds"] * math.sqrt(row["cpu_s_per_run"] / 60)
    return row


def plot(table: pd.DataFrame, path: Path, steps):
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "roadmap"
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    by_epochs = table[table["setting"].str.match(r"^\d epochs?( \(reference\))?$")].copy()
    by_epochs["epochs"] = by_epochs["setting"].str.extract(r"^(\d)").astype(int)
    by_epochs = by_epochs.sort_values("epochs")
    for s in steps:
        ax1.plot(by_epochs["epochs"], by_epochs[f"{s}_sd"], "o-", label=f"{s} (raw)")
        ax1.plot(by_epochs["epochs"], by_epochs[f"{s}_ema_sd"], "x--", label=f"{s} (EMA)")
    ax1.errorbar(
        by_epochs["epochs"],
        by_epochs["pooled_sd"],
        yerr=[
            by_epochs["pooled_sd"] - by_epochs["pooled_sd_low"],
            by_epochs["pooled_sd_high"] - by_epochs["pooled_sd"],
        ],
        fmt="k-",
        lw=2,
        capsize=3,
        label="pooled (95% CI)",
    )
    ax1.set_ylim(0, 1.2)  # EMA of a BatchNorm net can collapse (sd of several points): off the chart
    ax1.set_xlabel("epochs")
    ax1.set_ylabel("seed sd of top-1 (points)")
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    y = range(len(table))
    merit = table["half_x_sqrt_cpu_min"]
    err = [
        merit * (1 - table["pooled_sd_low"] / table["pooled_sd"]),
        merit * (table["pooled_sd_high"] / table["pooled_sd"] - 1),
    ]  # from the sd's 95% CI
    ax2.barh(list(y), merit, color="#4c72b0", xerr=err, error_kw=dict(lw=1, capsize=3))
    ax2.set_yticks(list(y), table["setting"], fontsize=8)
    ax2.invert_yaxis()
    ax2.set_xlabel("95% half-width x sqrt(CPU-min per run)  (lower is better)")
    ax2.grid(axis="x", alpha=0.3)
    fig.suptitle("Noise study on Fashion-MNIST, 32 px (benchmarks/noise_study.py)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", default="resnet50,separate_downsampling")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--settings", default=None, help="semicolon-separated subset of the settings")
    ap.add_argument("--out", default="results/noise-study")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps.split(",")
    specs = paper_plan(only=steps)
    chosen = args.settings.split(";") if args.settings else list(SETTINGS)
    out = Path(args.out)
    folder = {
        label: out / label.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "") for label in SETTINGS
    }
    for label in chosen:
        overrides = SETTINGS[label]
        recipe = get_preset("reference").with_overrides(overrides)
        print(f"== {label}: {' '.join(overrides) or 'the reference preset'}", flush=True)
        run_plan(
            specs, recipe, "reference", seeds=range(args.seeds), out=str(folder[label]), progress=False, plot=False
        )
        # every setting measured so far (also by earlier calls), in the order of SETTINGS
        rows = [summarize_setting(lb, read_results(folder[lb])) for lb in SETTINGS if (folder[lb] / "runs").is_dir()]
        table = pd.DataFrame(rows)
        atomic_write_text(out / "noise.csv", table.to_csv(index=False, float_format="%.4f"))
        plot(table, out / "noise.png", steps)
        print(
            table[
                [
                    "setting",
                    "pooled_sd",
                    "pooled_sd_low",
                    "pooled_sd_high",
                    "half_width_3_seeds",
                    "cpu_s_per_run",
                    "half_x_sqrt_cpu_min",
                ]
            ].to_string(index=False),
            flush=True,
        )


if __name__ == "__main__":
    main()
