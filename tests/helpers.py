import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A few updates on a slice of Fashion-MNIST: the real pipeline, seconds per step.
TINY = [
    "--set",
    "train_subset=640",
    "--set",
    "val_subset=200",
    "--set",
    "batch_size=32",
    "--set",
    "max_updates=6",
    "--set",
    "eval_batch_size=100",
    "--no-progress",
    "--threads",
    "1",
]


def roadmap_cmd(*args):
    return [sys.executable, "-m", "roadmap", *map(str, args)]


def run_roadmap(*args, timeout=600, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        roadmap_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=kw.pop("cwd", ROOT), env=env, **kw
    )


def randomize(model):
    """Non-trivial BN statistics, norm affines, biases and layer scales, so that equal outputs
    of two models mean equal wiring (not just equal default inits)."""
    import torch

    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.2)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5) if name.endswith(("weight", "gamma")) else p.normal_(0, 0.1)
    return model


# A finished run of the committed reference: the template of records built by tests.
REFERENCE_RECORD = ROOT / "results" / "reference-fashion-mnist" / "runs" / "23a5f218f660d8d4.json"


def rekey(row: dict, keep_bits: bool = False) -> dict:
    """`row` with the key and model key its content hashes to (schema.record_keys), so that an
    edited copy of a record is a valid record of another run; its per-image hits are dropped
    unless `keep_bits` (top-1 is checked against them)."""
    from roadmap.schema import record_keys

    row = dict(row)
    if not keep_bits:
        row.pop("val_correct", None), row.pop("val_n", None)
    row["key"], row["model_key"] = record_keys(row)
    return row


def as_record(fields: dict) -> dict:
    """A valid run record: `fields` over the reference template (the configuration of the
    paper step named by `step`, where it names one), re-keyed."""
    import json

    from roadmap.registry import config_for, step_names

    row = json.loads(REFERENCE_RECORD.read_text())
    row.pop("val_correct"), row.pop("val_n")  # the template's hits: `fields` brings its own
    if fields.get("step") in step_names() and "config" not in fields:
        row["config"] = config_for(fields["step"]).replace(num_classes=10, widths=(8, 16, 32, 64)).to_dict()
    row.update(fields)
    return rekey(row, keep_bits=True)
