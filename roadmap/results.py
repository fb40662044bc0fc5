"""Results on disk: one JSON file per finished run, gathered into results.csv and summary.csv.

Each run (step x seed) writes `runs/<key>.json` atomically when it ends; the CSVs are
rebuilt from those files, also atomically. A run killed at any moment therefore
leaves either no row or one whole row, never a duplicate, and several processes (or
cluster jobs) can fill one folder.
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List

import pandas as pd

from .errors import RoadmapError

RESULT_COLUMNS = [
    "order", "run", "step", "variant", "phase", "roadmap", "seed", "status", "error",
    "top1", "top5", "top1_ema", "train_loss", "paper_top1", "paper_top1_sd",
    "params_m", "gflops", "gflops_224", "paper_gflops",
    "train_img_s", "infer_img_s", "peak_mem_mb", "wall_s", "updates", "epochs", "lr",
    "global_batch", "resumed", "preset", "data", "device", "world_size", "threads", "key", "finished_at",
    "config", "recipe", "versions",
]
SUMMARY_METRICS = ["top1", "top5", "top1_ema", "train_img_s", "infer_img_s", "peak_mem_mb", "wall_s"]


def run_key(config: Dict, recipe: Dict, data: Dict, seed: int) -> str:
    """A hash of everything that determines a run's result."""
    blob = json.dumps(dict(config=config, recipe=recipe, data=data, seed=seed), sort_keys=True,
                      default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class ResultsDir:
    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.checkpoints = self.root / "checkpoints"

    def run_file(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def checkpoint(self, key: str) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self.checkpoints / f"{key}.pt"

    def is_done(self, key: str) -> bool:
        return self.run_file(key).is_file()

    def load(self, key: str) -> Dict:
        return json.loads(self.run_file(key).read_text())

    def record(self, row: Dict):
        atomic_write_text(self.run_file(row["key"]), json.dumps(row, indent=1, default=str))

    def rows(self) -> List[Dict]:
        rows = []
        for f in sorted(self.runs.glob("*.json")) if self.runs.is_dir() else []:
            try:
                rows.append(json.loads(f.read_text()))
            except json.JSONDecodeError:
                raise RoadmapError(f"{f} is not valid JSON; delete it to rerun that run") from None
        return rows

    def write_tables(self) -> pd.DataFrame:
        """Rebuild results.csv and summary.csv from runs/*.json; return the results table."""
        table = results_frame(self.rows())
        atomic_write_text(self.root / "results.csv", table.to_csv(index=False))
        atomic_write_text(self.root / "summary.csv", summarize(table).to_csv(index=False))
        return table


def results_frame(rows: Iterable[Dict]) -> pd.DataFrame:
    table = pd.DataFrame(list(rows))
    for col in ("config", "recipe", "versions"):
        # nested fields as JSON text, so `json.loads(table.config[i])` gives them back
        if col in table.columns:
            table[col] = [v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in table[col]]
    for col in RESULT_COLUMNS:
        if col not in table.columns:
            table[col] = None
    if len(table):
        table = sort_runs(table).sort_values(["order", "_variant_num", "variant", "run", "seed"],
                                             na_position="last", kind="stable").drop(columns="_variant_num")
    return table[RESULT_COLUMNS + [c for c in table.columns if c not in RESULT_COLUMNS]]


def sort_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Add `_variant_num` so variants sort by number (k3, k5, ..., k11), not as text."""
    nums = table["variant"].astype(str).str.extract(r"(\d+)$")[0]
    return table.assign(_variant_num=pd.to_numeric(nums, errors="coerce").fillna(-1))


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation per run (step or variant) over finished seeds."""
    out = []
    for run, group in table.groupby("run", sort=False):
        ok = group[group["status"] == "ok"]
        first = group.iloc[0]
        row = dict(order=first["order"], run=run, step=first["step"], variant=first["variant"],
                   phase=first["phase"], roadmap=first["roadmap"], seeds=len(ok),
                   failed=int((group["status"] != "ok").sum()),
                   paper_top1=first["paper_top1"], paper_top1_sd=first["paper_top1_sd"],
                   params_m=first["params_m"], gflops=first["gflops"],
                   gflops_224=first["gflops_224"], paper_gflops=first["paper_gflops"])
        for m in SUMMARY_METRICS:
            values = pd.to_numeric(ok[m], errors="coerce").dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else None
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else None
        out.append(row)
    return pd.DataFrame(out)


def read_results(folder) -> pd.DataFrame:
    """results.csv of a results folder (or rebuilt from its runs/), with a clear error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RoadmapError(f"{folder}: no such results folder; run `roadmap run --out {folder}` first")
    runs = ResultsDir(folder)
    if runs.runs.is_dir() and any(runs.runs.glob("*.json")):
        return results_frame(runs.rows())
    csv = folder / "results.csv"
    if not csv.is_file():
        raise RoadmapError(f"{folder} holds no results.csv and no runs/*.json; is it the --out "
                           "folder of a `roadmap run`?")
    table = pd.read_csv(csv)
    missing = [c for c in ("run", "step", "seed", "status", "top1") if c not in table.columns]
    if missing:
        raise RoadmapError(f"{csv} lacks the columns {missing}; it was not written by roadmap")
    return table
