"""Add `model_key` and `data_id` to run records made before they were recorded.

    python scripts/backfill_keys.py results/reference-fashion-mnist [--data fashion-mnist]

Each record's key is recomputed from what it records (its final configuration, its recipe's
keyed fields, the data's identity, its seed); only records whose recomputed key equals
their own are touched, so a record of other data or another key scheme is left as it is.
Keys and numbers do not change.
"""

import argparse
import json
from pathlib import Path

from roadmap import data as D
from roadmap.plan import data_identity, run_key
from roadmap.recipe import KEY_FIELDS
from roadmap.results import ResultsDir


def backfill(folder: Path, data_id: dict) -> tuple:
    results, done, skipped = ResultsDir(folder), 0, 0
    for f in sorted(results.runs.glob("*.json")):
        row = json.loads(f.read_text())
        if any(k not in row.get("recipe", {}) for k in KEY_FIELDS):
            skipped += 1  # an older recipe: its key was made another way
            continue
        training = {k: row["recipe"][k] for k in KEY_FIELDS}
        if int(row.get("world_size") or 1) > 1:
            training["world_size"] = int(row["world_size"])
        if run_key(row["config"], training, data_id, row["seed"]) != row["key"]:
            skipped += 1
            continue
        if row.get("model_key") is None:
            row.update(model_key=run_key(row["config"], training, data_id, None), data_id=data_id)
            results.record(row)
            done += 1
    return done, skipped


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--data", default="fashion-mnist")
    args = ap.parse_args()
    data_id = data_identity(D.load_dataset(args.data))
    for folder in args.folders:
        done, skipped = backfill(folder, data_id)
        print(f"{folder}: {done} record(s) given model_key/data_id, {skipped} left (key not reproduced)")
