"""Results on disk: one JSON file per finished run, gathered into results.csv and summary.csv.

Each run (step x seed) writes `runs/<key>.json` atomically when it ends; the CSVs are
rebuilt from those files, also atomically. A run killed at any moment therefore
leaves either no row or one whole row, never a duplicate, and several processes (or
cluster jobs) can fill one folder.
"""

import contextlib
import errno
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, List, Optional, Sequence

import pandas as pd

from . import speed
from .errors import RoadmapError
from .schema import (
    TEMP_PREFIX,
    InvalidFiles,
    SummaryRow,
    check_table_rows,
    record_text,
    temp_path,
    validate_record_text,
)

RESULT_COLUMNS = [
    "order",
    "run",
    "step",
    "variant",
    "phase",
    "roadmap",
    "seed",
    "status",
    "error",
    "top1",
    "top5",
    "top1_ema",
    "train_loss",
    "paper_top1",
    "paper_top1_sd",
    "params_m",
    "gflops",
    "gflops_224",
    "paper_gflops",
    "train_img_s",
    "infer_img_s",
    "peak_mem_mb",
    "wall_s",
    "updates",
    "epochs",
    "lr",
    "global_batch",
    "resumed",
    "preset",
    "data",
    "device",
    "world_size",
    "threads",
    "key",
    "model_key",
    "finished_at",
    "config",
    "recipe",
    "versions",
]
# Kept in runs/*.json (and tables read from them) only: a bit per validation image, or a
# learning curve, is no column for results.csv.
RECORD_ONLY = ("val_correct", "curve")
SUMMARY_METRICS = ["top1", "top5", "top1_ema", "train_img_s", "infer_img_s", "peak_mem_mb", "wall_s"]


def atomic_write(path, write: Callable[[BinaryIO], None]):
    """Write `path` whole or not at all: `write(f)` fills a temporary file beside it, which
    replaces `path` only when complete (0644 under the usual umask). The temporary file
    (`schema.temp_path`) goes on any failure; a full disk is one RoadmapError,
    "no space left on <folder>". The one writer of results, checkpoints and figures.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        # os.open with 0o666 lets the umask decide, as open() does (mkstemp would give 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RoadmapError(f"no space left on {path.parent} (writing {path.name})") from None
        raise


def atomic_write_text(path, text: str):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def stale_temp_files(folders: Iterable[Path], older_than_s: float = 600) -> List[Path]:
    """Temporary files of this tool (`schema.TEMP_PREFIX`) a killed process left in `folders`;
    a user's own `*.tmp` files are never among them.

    One is stale when nothing has written to it for `older_than_s`: a live write touches its
    file continuously and renames it the moment it is done, so several processes (or cluster
    jobs) can share a folder and never lose each other's files.
    """
    now, out = time.time(), []
    for folder in map(Path, folders):
        for p in sorted(folder.glob(f"{TEMP_PREFIX}*")) if folder.is_dir() else ():
            with contextlib.suppress(OSError):  # gone meanwhile: renamed by its writer
                if p.is_file() and now - p.stat().st_mtime > older_than_s:
                    out.append(p)
    return out


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
        """Whether the run has a record, finished or failed (see `status`)."""
        return self.run_file(key).is_file()

    def status(self, key: str) -> Optional[str]:
        """ "ok", "failed", or None where the run has no record yet."""
        return self.load(key).get("status", "ok") if self.is_done(key) else None

    def load(self, key: str) -> Dict:
        return _read_run(self.run_file(key))

    def record(self, row: Dict):
        path = self.run_file(row["key"])
        atomic_write_text(path, record_text(row, path))

    def holds_foreign_table(self) -> bool:
        """A results.csv with no runs/ beside it: rows this folder's records cannot rebuild."""
        return (self.root / "results.csv").is_file() and not (self.runs.is_dir() and any(self.runs.glob("*.json")))

    def rows(self) -> List[Dict]:
        """Every record, validated (InvalidFiles: one line per bad file), a copy of a record
        under another name counted once (see `_one_per_key`)."""
        found, bad = [], []
        for f in sorted(self.runs.glob("*.json")) if self.runs.is_dir() else []:
            if f.name.startswith("."):  # another process's write (TEMP_PREFIX), or macOS's ._<name>
                continue
            try:
                found.append((f, _read_run(f)))
            except InvalidFiles as e:
                bad += e.lines
        if bad:
            raise InvalidFiles(bad)
        return _one_per_key(found)

    def check_writable(self, flag: str = "--out"):
        """Create the folder (and its parents) and prove a file can be written there."""
        if self.root.exists() and not self.root.is_dir():
            raise RoadmapError(f"{flag} {self.root}: is a file, not a folder; give a folder for the results")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = temp_path(self.root / "write-test")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RoadmapError(
                f"{flag} {self.root}: cannot write results there "
                f"({e.strerror or e}{': ' + str(e.filename) if e.filename else ''})"
            ) from None

    def sweep_temp_files(self, older_than_s: float = 600) -> List[Path]:
        """Remove stale temporary files of killed processes; return them."""
        stale = stale_temp_files([self.root, self.runs, self.checkpoints], older_than_s)
        for p in stale:
            with contextlib.suppress(OSError):
                p.unlink()
        return stale

    def write_tables(self, table: Optional[pd.DataFrame] = None) -> pd.DataFrame:
        """Rebuild results.csv and summary.csv (from runs/*.json unless `table` is given);
        return the results table."""
        table = results_frame(self.rows()) if table is None else table
        summary = summarize(table)
        check_table_rows(self.root / "results.csv", table.to_dict("records"))  # written only if valid
        check_table_rows(self.root / "summary.csv", summary.to_dict("records"), SummaryRow)
        atomic_write_text(
            self.root / "results.csv", table.drop(columns=list(RECORD_ONLY), errors="ignore").to_csv(index=False)
        )
        atomic_write_text(self.root / "summary.csv", summary.to_csv(index=False))
        return table


def _read_run(f: Path) -> Dict:
    """The record in `f`, validated against schema.RunRecord (InvalidFiles names the problem)."""
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidFiles([f"{f}: not UTF-8 text, so not a run record; delete it to train that run again"]) from None
    except OSError as e:
        raise RoadmapError(f"{f}: cannot read it ({e.strerror})") from None
    return validate_record_text(f, text)


_told: set = set()  # copies already reported in this process


def _one_per_key(found: Sequence) -> List[Dict]:
    """One record per run key. A record under another file name than `<key>.json` is a copy:
    counted once (never as another seed) and reported; a copy whose numbers differ, or a record
    only under another name, is refused (the runner looks a run up by its key's file name)."""
    by_key: Dict[str, list] = {}
    for f, row in found:
        by_key.setdefault(row["key"], []).append((f, row))
    out = []
    for key, group in by_key.items():
        own = [(f, r) for f, r in group if f.stem == key]
        if not own:
            f = group[0][0]
            raise InvalidFiles(
                [f"{f}: holds the run {key} under another name; rename it to {key}.json (or delete it if it is a copy)"]
            )
        f0, row = own[0]
        out.append(row)
        for f, other in group:
            if f == f0:
                continue
            diff = [c for c in COMPARED + ("seed", "run") if not _same(row.get(c), other.get(c))]
            if diff:
                raise InvalidFiles(
                    [
                        f"{f}: has the key of {f0.name} but another {diff[0]} ({other.get(diff[0])} vs "
                        f"{row.get(diff[0])}); one of them was edited: delete the wrong one"
                    ]
                )
            if f not in _told:
                _told.add(f)
                print(
                    f"roadmap: warning: {f} is a copy of {f0} (the same run, key {key}): counted once, not as "
                    "another seed; delete the copy",
                    file=sys.stderr,
                    flush=True,
                )
    return out


def results_frame(rows: Iterable[Dict]) -> pd.DataFrame:
    """The one table shape: RESULT_COLUMNS first (missing ones empty), runs in roadmap order."""
    table = pd.DataFrame(list(rows))
    for col in ("config", "recipe", "versions", "execution", "data_id", "training"):
        # nested fields as JSON text, so `json.loads(table.config[i])` gives them back
        if col in table.columns:
            table[col] = [
                v if isinstance(v, str) or v is None or v != v else json.dumps(v, sort_keys=True) for v in table[col]
            ]
    for col in RESULT_COLUMNS:
        if col not in table.columns:
            table[col] = None
    table = in_order(table)
    return table[RESULT_COLUMNS + [c for c in table.columns if c not in RESULT_COLUMNS]]


def order_key(order, variant, run):
    """Where a run sits on the chart: roadmap order; the plain step first, then kernel
    variants by size (k3 < k5 < k11), then other variants and labels by name."""
    o = pd.to_numeric(order, errors="coerce")
    variant = "" if variant is None or (isinstance(variant, float) and math.isnan(variant)) else str(variant)
    kernel = re.fullmatch(r"k(\d+)", variant)
    kind = 0 if not variant else 1 if kernel else 2
    return (math.inf if pd.isna(o) else float(o), kind, int(kernel.group(1)) if kernel else 0, variant, str(run))


def in_order(table: pd.DataFrame) -> pd.DataFrame:
    """`table` sorted by `order_key` (then seed); the one run ordering of every table."""
    if not len(table):
        return table.reset_index(drop=True)
    keys = [
        order_key(o, v, r) + (_seed(s),)
        for o, v, r, s in zip(table["order"], table["variant"], table["run"], table["seed"])
    ]
    idx = sorted(range(len(table)), key=keys.__getitem__)
    return table.iloc[idx].reset_index(drop=True)


def _seed(s) -> float:
    s = pd.to_numeric(s, errors="coerce")
    return math.inf if pd.isna(s) else float(s)


def model_identity(table: pd.DataFrame) -> pd.Series:
    """Which model each run trained, as text: its final configuration, the keyed recipe
    fields, the data and the process count. Seeds of one model share it; a run label that
    holds two identities mixes models (see `check_labels`)."""
    from .recipe import keyed_fields

    def ident(row):
        recipe = _json(row.get("recipe")) or {}
        return json.dumps(
            [
                _json(row.get("config")),
                keyed_fields(recipe),
                str(row.get("data")),
                _num(row.get("world_size"), 1),
            ],
            sort_keys=True,
            default=str,
        )

    return table.apply(ident, axis=1) if len(table) else pd.Series(dtype=str)


def _json(v):
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return json.loads(v)
        return None
    return v if isinstance(v, dict) else None


def _num(v, default):
    v = pd.to_numeric(v, errors="coerce")
    return default if pd.isna(v) else int(v)


def check_labels(table: pd.DataFrame, where) -> None:
    """One RoadmapError when one run label in `table` holds runs of different models (another
    recipe, roadmap row or data under the same name): averaging them as seeds would be wrong.
    Failed runs are averaged with nothing: one on images since removed (its error's fix) does
    not block the rerun on the fixed data."""
    if "status" in table.columns:
        table = table[table["status"] != "failed"]
    if not len(table):
        return
    ident = model_identity(table)
    recipes = ident.map(lambda i: json.dumps(json.loads(i)[1:], sort_keys=True))
    if recipes.nunique() > 1:
        # Δs across a recipe change would mix it into the architecture's
        raise RoadmapError(
            f"{where}: the runs mix recipes or data ({_difference(table, recipes)}); "
            "a change between two steps must differ in the architecture only. "
            "Report each setting separately"
        )
    content = (
        table["data_id"].map(lambda v: (_json(v) or {}).get("content"))
        if "data_id" in table.columns
        else pd.Series(None, index=table.index)
    )
    if content.dropna().nunique() > 1:  # other images under one data name: no change between them is real
        raise RoadmapError(
            f"{where}: the runs are on different data under one name (data content "
            f"{' vs '.join(map(str, content.dropna().unique()[:2]))}); Report each dataset separately"
        )
    for run, idx in table.groupby("run", sort=False).groups.items():
        models = ident[idx].unique()
        known = content[idx]
        mixed_data = known.notna().all() and known.nunique() > 1
        if len(models) > 1 or mixed_data:
            what = "data (same name, other images)" if len(models) == 1 else _difference(table.loc[idx], ident[idx])
            raise RoadmapError(
                f"{where}: the runs labelled {run} are of different models ({what}); "
                "they are not seeds of one step. Keep each setting in its own --out folder"
            )


def _difference(rows: pd.DataFrame, ident: pd.Series) -> str:
    """The first field that differs between two of the models, as 'lr 0.004 vs 0.01'."""
    other = next(i for i in ident.index if ident[i] != ident.iloc[0])
    a, b = json.loads(ident.iloc[0]), json.loads(ident[other])
    if len(a) == 3:  # recipe, data, processes only (see check_labels)
        a, b = [None] + a, [None] + b
    for part in (1, 0):  # recipe, then configuration
        x, y = a[part] or {}, b[part] or {}
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                return f"{k} {x.get(k)} vs {y.get(k)}"
    return f"data {a[2]} vs {b[2]}" if a[2] != b[2] else f"processes {a[3]} vs {b[3]}"


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation per run (step or variant) over finished seeds.

    The speed columns (`speed.SPEED_METRICS`: mean, sd and median) use only the clean runs,
    `speed_runs` of them (none: empty, not a number); `speed_flagged` names the others, with
    why (roadmap.speed)."""
    out = []
    table = in_order(table)
    flags = speed.flags(table)
    for run, group in table.groupby("run", sort=False):
        ok = group[group["status"] == "ok"]
        first = group.iloc[0]
        row = dict(
            order=first["order"],
            run=run,
            step=first["step"],
            variant=first["variant"],
            phase=first["phase"],
            roadmap=first["roadmap"],
            seeds=len(ok),
            failed=int((group["status"] != "ok").sum()),
            paper_top1=first["paper_top1"],
            paper_top1_sd=first["paper_top1_sd"],
            params_m=first["params_m"],
            gflops=first["gflops"],
            gflops_224=first["gflops_224"],
            paper_gflops=first["paper_gflops"],
            model_key=first.get("model_key"),
        )
        clean = ok[flags[ok.index] == ""]
        for m in SUMMARY_METRICS:
            values = pd.to_numeric((clean if m in speed.SPEED_METRICS else ok)[m], errors="coerce").dropna()
            row[f"{m}_mean"] = values.mean() if len(values) else None
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else None
            if m in speed.SPEED_METRICS:
                row[f"{m}_median"] = values.median() if len(values) else None
        # the speed columns' runs: how many are clean, and which were left out and why
        row["speed_runs"] = len(clean)
        row["speed_flagged"] = "; ".join(f"seed {ok.loc[i, 'seed']}: {flags[i]}" for i in ok.index if flags[i])
        out.append(row)
    return pd.DataFrame(out)


def read_results(folder) -> pd.DataFrame:
    """The results table of a folder (its runs/*.json, else its results.csv), in the one
    table shape, with a clear error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RoadmapError(f"{folder}: no such results folder; run `roadmap run --out {folder}` first")
    runs = ResultsDir(folder)
    if runs.runs.is_dir() and any(runs.runs.glob("*.json")):
        return results_frame(runs.rows())
    csv = folder / "results.csv"
    if not csv.is_file():
        raise RoadmapError(
            f"{folder} holds no results.csv and no runs/*.json; is it the --out folder of a `roadmap run`?"
        )
    try:
        table = pd.read_csv(csv)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise RoadmapError(
            f"{csv} is not a readable table ({type(e).__name__}: {reason}); "
            f"delete it, and rerun `roadmap run --out {folder}` to rebuild it "
            "from runs/*.json"
        ) from None
    missing = [c for c in ("order", "run", "step", "seed", "status", "top1") if c not in table.columns]
    if missing:
        raise RoadmapError(f"{csv} lacks the columns {missing}; it was not written by roadmap")
    check_table_rows(csv, table.to_dict("records"))
    return results_frame(table.to_dict("records"))


# Numbers a run's key determines: two records of one key that differ here are not the same run.
COMPARED = ("status", "top1", "top5", "top1_ema", "train_loss", "updates")


def _same(a, b) -> bool:
    a_missing, b_missing = pd.isna(a), pd.isna(b)
    if a_missing or b_missing:
        return a_missing and b_missing
    if isinstance(a, str) or isinstance(b, str):
        return str(a) == str(b)
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)  # CSV round trips


def merge_warnings(tables: Sequence) -> List[str]:
    """Warnings about results from several places (`(source, table)` pairs) merged into one:
    a run key recorded with different numbers (the merge keeps one of them), and finished CPU
    runs made with different thread counts (threads are recorded, not part of the key)."""
    frames = [t.assign(_source=str(src)) for src, t in tables if len(t) and "key" in t.columns]
    if not frames:
        return []
    table = pd.concat(frames, ignore_index=True)
    table = table[table["key"].notna()]
    warnings, clashes = [], []
    for key, group in table.groupby("key", sort=False):
        first = group.iloc[0]
        for _, other in group.iloc[1:].iterrows():
            diff = [c for c in COMPARED if c in group.columns and not _same(first[c], other[c])]
            if diff:
                clashes.append(
                    f"{first.get('run')} seed {first.get('seed')} (key {key}): "
                    + ", ".join(
                        f"{c} {first[c]} in {first['_source']} vs {other[c]} in {other['_source']}" for c in diff[:2]
                    )
                )
                break
    if clashes:
        warnings.append(
            f"{len(clashes)} run key(s) recorded with different numbers (the merge "
            f"keeps one record of each): {'; '.join(clashes[:3])}"
            + (f"; and {len(clashes) - 3} more" if len(clashes) > 3 else "")
        )
    mix = thread_mix(table)
    if mix:
        warnings.append(mix)
    return warnings


def thread_mix(table: pd.DataFrame) -> Optional[str]:
    """A warning when finished CPU runs in `table` were made with different thread counts."""
    if not len(table) or "threads" not in table.columns:
        return None
    device = table["device"].astype(str) if "device" in table.columns else pd.Series("cpu", index=table.index)
    status = table["status"] if "status" in table.columns else pd.Series("ok", index=table.index)
    ok = table[(status == "ok") & device.str.startswith("cpu")]
    threads = sorted({int(t) for t in pd.to_numeric(ok["threads"], errors="coerce").dropna()})
    if len(threads) < 2:
        return None
    return (
        f"the results mix CPU runs made with {', '.join(map(str, threads))} threads; CPU "
        "numbers depend on the thread count (it is recorded per run in the threads column, "
        "and is not part of a run's key)"
    )
