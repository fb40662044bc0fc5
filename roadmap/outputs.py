"""Everything a results folder shows, written by one function from its runs.

`roadmap run`, `plot`, `report` and submitit's `--wait` all end in `write_outputs`, so one
folder gives the same tables and figures whichever command wrote them last.
"""

from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from . import analysis as A
from . import report as R
from .errors import RoadmapError
from .plot import plot_forest, plot_trajectory
from .results import ResultsDir, check_labels, read_results, summarize
from .sequential import read_design

# Committed references live in the repository's results/ (a checkout; a wheel has none).
_CHECKOUT = Path(__file__).resolve().parent.parent
REFERENCE_ROOT = _CHECKOUT / "results"


def reference_folder(preset: str, data: str, exclude=None) -> Optional[Path]:
    """The committed reference of this preset and data (not `exclude`), or None."""
    ref = REFERENCE_ROOT / f"{preset}-{data}"
    if not (ref / "runs").is_dir():
        return None
    if exclude is not None and ref.resolve() == Path(exclude).resolve():
        return None
    return ref


def reference_band(folder: Optional[Path]) -> Optional[pd.DataFrame]:
    """The reference's per-model mean, 95% half-width and noise (`report.reference_band`),
    with each row's model_key, or None."""
    if folder is None:
        return None
    table = read_results(folder)
    band = A.reference_band(table)
    if band is None or "model_key" not in table.columns:
        return None
    keys = table.dropna(subset=["model_key"]).drop_duplicates("run").set_index("run")["model_key"]
    band = band.assign(model_key=band["run"].map(keys))
    return band.dropna(subset=["model_key"])


def _first(table: pd.DataFrame, col: str) -> str:
    values = table[col].dropna() if col in table.columns else []
    return str(values.iloc[0]) if len(values) else ""


def write_outputs(
    folder,
    report: bool = False,
    reference: Optional[Path] = None,
    use_reference: bool = True,
    figures: bool = True,
    sources=None,
) -> Dict:
    """Rebuild results.csv and summary.csv from `folder`'s runs, compute the changes once,
    draw trajectory.png (against the committed reference of the same preset and data) and,
    where changes have intervals, changes.png; with `report`, also report.md and report.json.
    Returns what was written: table, summary, transitions, figures, report."""
    folder = Path(folder)
    results = ResultsDir(folder)
    table = read_results(folder)
    check_labels(table, folder)
    table = results.write_tables(table)
    out: Dict = dict(table=table, summary=summarize(table), figures=[], files=[], report=None)
    if not (table["status"] == "ok").any():
        return out
    if reference is None and use_reference:
        reference = reference_folder(_first(table, "preset"), _first(table, "data"), exclude=folder)
    built = R.build(table, read_design(folder))
    deltas = built["transitions"]
    deltas = deltas[deltas["ci_low"].notna()] if len(deltas) else deltas
    files: List[Path] = []  # each figure as .png and .svg
    band = reference_band(reference)
    if figures:
        files = plot_trajectory(table, folder, deltas=deltas if len(deltas) else None, reference=band)
        if len(deltas):
            files += plot_forest(built["transitions"], folder, subtitle=R._subtitle(built))
    drawn = [p for p in files if p.suffix == ".png"]
    out.update(built=built, transitions=built["transitions"], figures=drawn, files=files)
    out.update(reference=reference, band=band)
    if report:
        out["report"] = R.write_files(built, folder, [f.name for f in drawn], sources or [folder])
    return out


def write_report(dirs, out=None, plot: bool = True) -> Dict:
    """`roadmap report`: the results of `dirs` (merged into `out` when several) reported into
    `out`; returns the report (`report.build`) with the paths written. Every check runs
    before anything is written, so a refused merge changes nothing."""
    dirs = [Path(d) for d in dirs]
    if out is None and len(dirs) > 1:
        raise RoadmapError("several results folders: name the merged folder with --out DIR")
    out = Path(out) if out is not None else dirs[0]
    table = A.gather(dirs + ([out] if out not in dirs and (out / "runs").is_dir() else []))
    check_labels(table, ", ".join(map(str, dirs)))
    if out not in dirs or len(dirs) > 1:
        merge_into(out, [d for d in dirs if (d / "runs").is_dir()], table)
    written = write_outputs(out, report=True, figures=plot, sources=dirs)
    figures = [p.name for p in written["figures"]]
    return dict(written["built"], paths=written["report"], figures=figures, figure=figures[0] if figures else None)


def merge_into(out: Path, dirs, table: pd.DataFrame):
    """Copy every run's record into `out/runs/` so the merged folder is itself a results folder."""
    if table["key"].isna().any():
        r = table[table["key"].isna()].iloc[0]
        raise RoadmapError(
            f"run {r['run']} seed {r['seed']} has no key; only folders written by `roadmap run` can be merged"
        )
    results, sources = ResultsDir(out), [ResultsDir(d) for d in dirs]
    for key in table["key"]:
        if not results.is_done(key):
            src = next(s for s in sources if s.is_done(key))
            results.record(src.load(key))
