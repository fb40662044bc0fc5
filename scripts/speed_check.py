"""Is a folder's speed table honest? Per step, train img/s over its clean runs.

    python scripts/speed_check.py results/reference-fashion-mnist [more folders]

Per step: the finished runs, the clean ones the speed columns use (roadmap.speed: a
measured CPU share and load average, or, for records without them, train img/s under 3/4
of the step's fastest run), their median, sd and sd / median, then the flagged runs with
why. The goal (issue 33): sd at most half the median on every step. Writes nothing; prints
Markdown.
"""

import sys

import pandas as pd

from roadmap import speed, tables
from roadmap.errors import RoadmapError
from roadmap.results import read_results, summarize


def check(folder: str) -> str:
    table = read_results(folder)
    summary = summarize(table)
    if not len(summary):
        raise RoadmapError(f"{folder}: no runs")
    rows, worst = [], 0.0
    for _, s in summary.iterrows():
        med, sd = s["train_img_s_median"], s["train_img_s_std"]
        ratio = sd / med if pd.notna(sd) and pd.notna(med) and med > 0 else None
        worst = max(worst, ratio or 0.0)
        rows.append(
            {
                "step": s["run"],
                "runs": s["seeds"],
                "clean": s["speed_runs"],
                "train img/s (median)": "no clean run" if pd.isna(med) else f"{med:.0f}",
                "sd": "–" if pd.isna(sd) else f"{sd:.0f}",
                "sd / median": "–" if ratio is None else f"{ratio:.2f}",
            }
        )
    numbers = ("runs", "clean", "train img/s (median)", "sd", "sd / median")
    out = [f"## {folder}", "", tables.markdown(rows, right=numbers)]
    out.append(f"Largest sd / median: {worst:.2f} (goal: at most 0.50: {'met' if worst <= 0.5 else 'NOT met'}).\n")
    flagged = speed.flagged_runs(table[table["status"] == "ok"])
    if len(flagged):
        flagged["train_img_s"] = flagged["train_img_s"].map(lambda v: f"{v:.0f}")
        out += ["Flagged (left out of the speed columns):", "", tables.markdown(flagged, right=("seed", "train_img_s"))]
    else:
        out.append("No run flagged.\n")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        print("\n".join(check(f) for f in sys.argv[1:]), end="")
    except RoadmapError as e:
        print(f"speed_check: {e}", file=sys.stderr)
        sys.exit(2)
