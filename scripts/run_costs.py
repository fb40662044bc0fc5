"""What the runs of a results folder cost, from their own records.

    python scripts/run_costs.py results/demo-fashion-mnist [more folders]

Per folder: the finished runs' recorded `wall_s` (every process a run took, resumes
included) in minutes per run (median, range), in CPU-minutes (wall time x the threads it
was given), and per seed (all of a seed's steps), with when the runs finished. A record's
time is that of whatever else its machine ran: read it next to how the folder was made
(results/README.md). Writes nothing; prints a Markdown table.
"""

import sys

from roadmap import tables
from roadmap.analysis import finished, run_minutes
from roadmap.errors import RoadmapError
from roadmap.results import read_results


def costs(folder: str) -> dict:
    ok = finished(read_results(folder))
    if not len(ok):
        raise RoadmapError(f"{folder}: no finished runs; nothing to cost")
    cost = run_minutes(ok)
    minutes, cpu = cost["minutes"], cost["cpu_minutes"]
    per_seed = minutes.groupby(cost["seed"]).sum()
    return dict(
        folder=folder,
        runs=len(ok),
        run_min=minutes.median(),
        run_lo=minutes.min(),
        run_hi=minutes.max(),
        cpu_min=cpu.median(),
        seed_min=" / ".join(f"{m:.1f}" for m in per_seed),
        total_min=minutes.sum(),
        finished=f"{ok['finished_at'].min()[:16]} .. {ok['finished_at'].max()[:16]}",
    )


def main(folders):
    rows = [costs(f) for f in folders]  # every folder read before a line is printed
    print(
        tables.markdown(
            [
                {
                    "folder": c["folder"],
                    "runs": c["runs"],
                    "min per run (median, range)": f"{c['run_min']:.1f} ({c['run_lo']:.1f}-{c['run_hi']:.1f})",
                    "CPU-min per run": f"{c['cpu_min']:.1f}",
                    "min per seed": c["seed_min"],
                    "total min": f"{c['total_min']:.0f}",
                    "finished": c["finished"],
                }
                for c in rows
            ],
            right=("runs", "CPU-min per run", "total min"),
        ),
        end="",
    )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1:])
    except RoadmapError as e:
        print(f"run_costs: {e}", file=sys.stderr)
        sys.exit(2)
