"""TEMPORARY (branch cli): what launch.gather did, so that launch.py runs; the integrator's
roadmap/outputs.py replaces this file."""
from pathlib import Path


def write_outputs(folder, reference=None, report=False):
    from .results import ResultsDir

    folder = Path(folder)
    table = ResultsDir(folder).write_tables()
    print(f"results: {folder / 'results.csv'} ({len(table)} run(s))")
    if len(table):
        from .plot import plot_trajectory
        print(f"figure: {plot_trajectory(folder)[0]}")
