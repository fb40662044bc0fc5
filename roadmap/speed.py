"""Whether a run's speed can be trusted: did it have the machine to itself?

A run that shared its cores with another job, or was paused (a suspended laptop, SIGSTOP,
a preempted VM), records a low img/s that says nothing about the model. Such runs are
*flagged*, and the speed columns of summary.csv (and the report) use only the clean ones.

A run measures its own share of the machine (`Occupancy`, around `train_run`):

- `cpu_share`: this process's CPU seconds over (its wall seconds x its torch threads). Near 1
  when the run had its cores; about 1/2 when another job took half of them, lower when it
  was paused. Of the last process only, when the run was resumed.
- `load_start`, `load_end`: the 1-minute load average (`os.getloadavg`) when it started and
  ended, and `cores`, the machine's CPU count, to read them against.

A run is clean when (CPU runs) `cpu_share >= CPU_SHARE_MIN` and (every run) neither load
average exceeds `cores + LOAD_MARGIN` (more runnable threads than cores: something else ran).

Records written before these fields (the committed results) are judged from their speed:
sharing and pausing only ever slow a run, so the fastest run of a step (same label, same
thread count) is the closest to an undisturbed one, and a run whose train img/s is under
`SLOW_FRACTION` of it is flagged. This cannot flag a step all of whose runs were slowed
alike; the measured fields can.
"""

import math
import os
import time
from typing import Dict, Optional

import pandas as pd

CPU_SHARE_MIN = 0.75
LOAD_MARGIN = 1.0
SLOW_FRACTION = 0.75
# The summary columns that are speeds (or times): averaged over clean runs only.
SPEED_METRICS = ("train_img_s", "infer_img_s", "wall_s")
# The record fields `Occupancy.fields` writes (absent from older records).
FIELDS = ("cpu_share", "load_start", "load_end", "cores")


def _load() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on this platform (Windows)
        return None


class Occupancy:
    """Measures, around a block, how much of the machine this process had.

    with Occupancy() as machine:
        metrics = train_run(...)
    record.update(machine.fields(threads))
    """

    def __enter__(self) -> "Occupancy":
        self.load_start = _load()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.load_end = _load()
        return False

    def fields(self, threads: int) -> Dict:
        share = self.cpu / (self.wall * max(int(threads), 1)) if self.wall > 0 else None
        return dict(
            cpu_share=round(share, 3) if share is not None else None,
            load_start=self.load_start,
            load_end=self.load_end,
            cores=os.cpu_count(),
        )


def _num(row, key) -> float:
    v = pd.to_numeric(row.get(key), errors="coerce")
    return math.nan if v is None or pd.isna(v) else float(v)


def measured_flag(row) -> Optional[str]:
    """Why a run that measured its share of the machine is not clean ('' if clean); None
    when the record has no such measurement."""
    share, cores = _num(row, "cpu_share"), _num(row, "cores")
    loads = [v for v in (_num(row, "load_start"), _num(row, "load_end")) if not math.isnan(v)]
    if math.isnan(share) and not loads:
        return None
    reasons = []
    if str(row.get("device", "cpu")).startswith("cpu") and share < CPU_SHARE_MIN:
        reasons.append(f"had {share:.0%} of its threads' CPU time (shared or paused)")
    if loads and not math.isnan(cores) and max(loads) > cores + LOAD_MARGIN:
        reasons.append(f"load {max(loads):.1f} on {cores:.0f} cores (the machine was busy)")
    return "; ".join(reasons)


def flags(table: pd.DataFrame) -> pd.Series:
    """Per finished run of `table`, why its speed is not to be trusted ('' when clean),
    by the rules in this module's docstring. Rows that did not finish get ''."""
    out = pd.Series("", index=table.index, dtype=object)
    if not len(table):
        return out
    rows = table.to_dict("index")
    img_s = (
        pd.to_numeric(table["train_img_s"], errors="coerce")
        if "train_img_s" in table
        else pd.Series(math.nan, table.index)
    )
    threads = pd.to_numeric(table["threads"], errors="coerce") if "threads" in table else pd.Series(0, table.index)
    ok = table["status"].eq("ok") if "status" in table else pd.Series(True, index=table.index)
    group = pd.Series([f"{r}/{t}" for r, t in zip(table["run"].astype(str), threads.fillna(0))], index=table.index)
    fastest = img_s[ok].groupby(group[ok]).max()
    for i, row in rows.items():
        if not ok[i]:
            continue
        measured = measured_flag(row)
        if measured is not None:
            out[i] = measured
            continue
        top = fastest.get(group[i], math.nan)
        if not math.isnan(img_s[i]) and img_s[i] < SLOW_FRACTION * top:
            out[i] = f"train {img_s[i]:.0f} img/s, under {SLOW_FRACTION:.0%} of the step's fastest run ({top:.0f})"
    return out


def flagged_runs(table: pd.DataFrame, reasons: Optional[pd.Series] = None) -> pd.DataFrame:
    """The flagged runs as a table (run, seed, train_img_s, reason), for a report to name."""
    reasons = flags(table) if reasons is None else reasons
    hit = table[reasons != ""]
    return pd.DataFrame(
        dict(run=hit["run"], seed=hit["seed"], train_img_s=hit.get("train_img_s"), reason=reasons[hit.index])
    ).reset_index(drop=True)


def cell(row, metric: str = "train_img_s", spec: str = "{:.0f}") -> str:
    """A summary row's speed as a table cell: the median over its clean runs, with how many
    were used when some were left out ("1896 (1 of 3)"), or "no clean run"."""
    median = pd.to_numeric(row.get(f"{metric}_median"), errors="coerce")
    used, seeds = row.get("speed_runs"), row.get("seeds")
    if median is None or pd.isna(median):
        return "no clean run" if seeds else "–"
    count = f" ({int(used)} of {int(seeds)})" if pd.notna(used) and pd.notna(seeds) and used < seeds else ""
    return spec.format(median) + count


def flagged_lines(summary: pd.DataFrame) -> list:
    """One line per step with runs left out of its speed columns: `run: seed N: why; ...`."""
    if "speed_flagged" not in summary:
        return []
    # read back from summary.csv, an empty cell is NaN, not ""
    return [f"{r['run']}: {v}" for _, r in summary.iterrows() if isinstance(v := r["speed_flagged"], str) and v]
