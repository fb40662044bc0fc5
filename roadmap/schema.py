"""The declared shape of every file the tool reads or writes: run records, report.json, the
results tables and custom roadmap files, as pydantic models in strict mode.

Strict: a field typed int takes 4, never 4.0 or "4"; records are validated as JSON text and
written as the text validated, so a value is never coerced (4 stays 4, and keys hold).
Every problem is one line naming the file, the field, what was expected and how to fix it
(`problems`, `validate_record_text`). docs/formats.md lists these fields; tests/test_hardening_records.py
keeps the two in step (`python -m roadmap.schema` prints the tables).
"""

import base64
import json
import math
import os
import secrets
from dataclasses import fields as dc_fields
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, create_model, model_validator

from .config import ArchConfig
from .errors import RoadmapError
from .plan import run_key
from .recipe import _DEFAULTS, KEY_FIELDS, KEY_FIELDS_LATER, Execution, Recipe

# ---- temporary files: only the tool's own are ever cleaned --------------------------------

TEMP_PREFIX = ".roadmap-tmp-"


def temp_path(path) -> Path:
    """Where `path` is written before it is renamed into place: beside it, hidden, named with
    the tool's prefix, this process's id and a random part (`.roadmap-tmp-<pid>-<hex>-<name>.part`),
    so a sweep of stale ones (results.stale_temp_files) can never take a user's `x.tmp`, and
    `runs/*.json` never matches a record still being written."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{path.name[:180]}.part")


# ---- value kinds: the type and range once, with the words an error uses ----------------


def _num(expected: str, **range_) -> Any:
    return Annotated[float, Field(allow_inf_nan=False, description=expected, **range_)]


Percent = _num("a percentage in [0, 100]", ge=0, le=100)
Positive = _num("a number > 0", gt=0)
NonNegative = _num("a number >= 0", ge=0)
Finite = _num("a finite number")
Probability = _num("a probability in [0, 1]", ge=0, le=1)
Count = Annotated[int, Field(ge=0, description="an integer >= 0")]
PositiveInt = Annotated[int, Field(ge=1, description="an integer >= 1")]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="an integer in [0, 2^31 - 1]")]
Key = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="16 hexadecimal digits (a run key)")]
Name = Annotated[str, Field(min_length=1, description="a non-empty string")]
Text = Annotated[str, Field(description="a string")]

STRICT = ConfigDict(strict=True, extra="forbid")
OPEN = ConfigDict(strict=True, extra="allow")  # fields added later by newer versions are kept


def _dataclass_model(name: str, cls, required=()) -> type:
    """A strict model of a dataclass's fields (their own type hints): those in `required`
    must be present, the others may be (records of older versions lack fields added since)."""
    hints = get_type_hints(cls)
    spec = {f.name: (hints[f.name], ... if f.name in required else None) for f in dc_fields(cls)}
    return create_model(name, __config__=OPEN, **spec)


# Fields added after the first records (tests/data/demo-v0.1): those records lack them.
ADDED_LATER = ("small_input_stem", "threads")
# The recipe a record holds: every keyed field (they make the key), the rest where present.
RecipeRecord = _dataclass_model("RecipeRecord", Recipe, required=set(KEY_FIELDS) - set(ADDED_LATER))
ConfigRecord = _dataclass_model(
    "ConfigRecord", ArchConfig, required={f.name for f in dc_fields(ArchConfig)} - set(ADDED_LATER)
)
ExecutionRecord = _dataclass_model("ExecutionRecord", Execution)


class DataId(BaseModel):
    """The data a run trained on, by content (plan.data_identity)."""

    model_config = OPEN
    name: Name
    train: PositiveInt
    val: PositiveInt
    classes: PositiveInt
    content: Name


class CurvePoint(BaseModel):
    model_config = STRICT
    epoch: Positive
    top1: Percent
    top1_ema: Optional[Percent]


# Measurements every finished run records (train.train_run); a failed run has none of them.
FINISHED = (
    "top1",
    "top5",
    "train_loss",
    "params_m",
    "gflops",
    "gflops_224",
    "infer_img_s",
    "updates",
    "epochs",
    "lr",
    "global_batch",
    "resumed",
    "wall_s",
)


class RunRecord(BaseModel):
    """`runs/<key>.json`: one run (step x seed), finished or failed. Older records lack
    model_key, data_id, execution, training, val_correct and val_n: they validate."""

    model_config = OPEN
    # labels: which row of which roadmap
    order: Annotated[int, Field(description="an integer (the row's position on the chart)")]
    run: Name
    step: Name
    variant: Text
    phase: Text
    roadmap: Name
    seed: Seed
    paper_top1: Optional[Percent]
    paper_top1_sd: Optional[NonNegative]
    paper_gflops: Optional[Positive]
    preset: Name
    # what ran, and where
    data: Name
    device: Name
    world_size: PositiveInt
    threads: Optional[PositiveInt] = None
    key: Key
    model_key: Optional[Key] = None
    recipe: RecipeRecord = Field(description="the Recipe's fields, each of its type; every keyed one present")
    config: ConfigRecord = Field(description="the final ArchConfig: every toggle, each of its type")
    execution: Optional[ExecutionRecord] = Field(None, description="the Execution's fields (not keyed)")
    data_id: Optional[DataId] = Field(None, description="the data by content (see data_id below)")
    training: Optional[Dict[str, Any]] = Field(
        None, description="what the key hashed besides config, data and seed: the keyed recipe fields and more"
    )
    versions: Dict[str, str] = Field(description="python, torch, timm versions as text")
    status: Literal["ok", "failed"] = Field(description='"ok" (finished) or "failed" (error says why)')
    error: Text
    finished_at: datetime = Field(description="ISO date and time, e.g. 2026-11-25T09:38:59")
    reused_from: Optional[Text] = None
    # measurements (status "ok")
    top1: Optional[Percent] = None
    top5: Optional[Percent] = None
    top1_ema: Optional[Percent] = None
    train_loss: Optional[NonNegative] = None
    params_m: Optional[Positive] = None
    gflops: Optional[Positive] = None
    gflops_224: Optional[Positive] = None
    train_img_s: Optional[Positive] = None
    compute_img_s: Optional[Positive] = None
    infer_img_s: Optional[Positive] = None
    data_wait_s: Optional[NonNegative] = None
    peak_mem_mb: Optional[NonNegative] = None
    peak_mem_method: Optional[Text] = None
    updates: Optional[PositiveInt] = None
    epochs: Optional[Positive] = None
    lr: Optional[Positive] = None
    global_batch: Optional[PositiveInt] = None
    resumed: Optional[Count] = None
    wall_s: Optional[Positive] = None
    val_n: Optional[PositiveInt] = None
    val_correct: Optional[Annotated[str, Field(description="base64 text, one bit per validation image")]] = None
    curve: Optional[List[CurvePoint]] = Field(None, description="the learning curve: one point per epoch")
    # whether the run had the machine to itself (roadmap.speed; newer records)
    cpu_share: Optional[NonNegative] = Field(None, description="CPU seconds / (wall seconds x threads); ~1 alone")
    load_start: Optional[NonNegative] = Field(None, description="1-minute load average when the run started")
    load_end: Optional[NonNegative] = Field(None, description="1-minute load average when it ended")
    cores: Optional[PositiveInt] = Field(None, description="the machine's CPU count")
    # the loop (roadmap.train; newer records)
    micro_batches: Optional[PositiveInt] = Field(None, description="micro-batches accumulated per update")
    mfu: Optional[NonNegative] = Field(None, description="model FLOP utilisation: 3 x FLOPs x img/s / matmul peak")
    matmul_gflops: Optional[Positive] = Field(None, description="the matmul ceiling measured in the same process")
    matmul_dtype: Optional[Text] = None
    weights: Optional[Text] = Field(None, description="the kept final weights (safetensors), relative to the folder")
    weights_ema: Optional[Text] = Field(None, description="the kept EMA weights (safetensors)")

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo):
        if self.status == "ok":
            missing = [f for f in FINISHED if getattr(self, f) is None]
            if missing:
                raise _Wrong(missing[0], "the field (every finished run, status ok, has it)", "nothing")
        if self.val_correct is not None:
            _check_hits(self)
        if self.data_id is not None and self.val_n is not None and self.val_n != self.data_id.val:
            raise _Wrong("val_n", f"{self.data_id.val} (data_id.val: the images scored)", self.val_n)
        raw = (info.context or {}).get("raw")
        if raw is not None:  # the key hashes the JSON as written (an int 0 is not 0.0)
            _check_key(self, raw)
        return self


class _Wrong(ValueError):
    """A field whose value disagrees with the rest of the record."""

    def __init__(self, field: str, expected: str, got: Any):
        super().__init__(f"{field}|{expected}|{got}")


def _check_hits(r: RunRecord):
    """val_correct holds one bit per scored image, and top-1 is their mean (exactly: both are
    written from the same hits)."""
    try:
        raw = base64.b64decode(r.val_correct, validate=True)
    except ValueError:
        raise _Wrong("val_correct", "base64 text", "other text") from None
    if r.val_n is None or len(raw) != math.ceil(r.val_n / 8):
        raise _Wrong("val_correct", f"{math.ceil((r.val_n or 0) / 8)} bytes (one bit per image of val_n)", len(raw))
    hits = sum(bin(b).count("1") for b in raw)  # padding bits are zero
    if r.top1 is not None and r.world_size == 1 and not math.isclose(r.top1, 100.0 * hits / r.val_n, abs_tol=1e-9):
        raise _Wrong("top1", f"{100.0 * hits / r.val_n:g} (the share of val_correct's hits)", r.top1)


AUTOCASTS = (None, "bfloat16", "float16")  # CUDA runs before records kept `training`


def training_identity(recipe: Dict[str, Any], world_size: int, requested_widths=None, autocast=None) -> Dict[str, Any]:
    """What the run key hashed besides the configuration, data and seed, rebuilt from a record
    that lacks its `training` field (see plan.training_identity)."""
    training = {k: recipe.get(k) for k in KEY_FIELDS}
    training.update({k: recipe[k] for k in KEY_FIELDS_LATER if k in recipe and recipe[k] != _DEFAULTS[k]})
    if world_size > 1:
        training["world_size"] = world_size
    if autocast:
        training["autocast"] = autocast
    if requested_widths is not None:
        training["requested_widths"] = list(requested_widths)
    return training


def _check_key(r: RunRecord, raw: Dict[str, Any]):
    """The key is the hash of the record's configuration, keyed recipe, data and seed; checked
    wherever the record holds all it hashed (records before data_id cannot be checked)."""
    if r.data_id is None:
        return
    config, data, recipe = raw["config"], raw["data_id"], raw["recipe"]
    if r.training is not None:
        edited = [k for k in KEY_FIELDS if json.dumps(r.training.get(k)) != json.dumps(recipe.get(k))]
        if edited:
            k = edited[0]
            raise _Wrong(
                f"recipe.{k}", f"{json.dumps(r.training.get(k))} (the value the run was keyed with)", recipe.get(k)
            )
        candidates = [r.training]
    else:
        candidates = [training_identity(recipe, r.world_size, w, a) for w in _requested_widths(r) for a in AUTOCASTS]
    for training in candidates:
        if run_key(config, training, data, r.seed) == r.key:
            if r.model_key is not None and run_key(config, training, data, None) != r.model_key:
                raise _Wrong("model_key", "the hash of the record's model (its key without the seed)", r.model_key)
            return
    if r.training is None and r.roadmap not in ("paper", "kernel sweep"):
        return  # an older custom roadmap's record: its requested widths were not recorded
    raise _Wrong("key", "the hash of the record's config, recipe, data and seed (the values were edited)", r.key)


def _requested_widths(r: RunRecord) -> List[Optional[Tuple[int, ...]]]:
    """None, and the widths a paper step asks for (where rounding made them part of the key)."""
    from .registry import config_for, step_names

    out: List[Optional[Tuple[int, ...]]] = [None]
    if r.step in step_names():
        out.append(config_for(r.step).widths)
    return out


# ---- one line per problem ---------------------------------------------------------------


def _field_expected(model: type, loc: Tuple) -> Optional[str]:
    """The description declared for the field at `loc` (e.g. 'a percentage in [0, 100]')."""
    for part in loc[:1]:
        info = model.model_fields.get(part) if isinstance(part, str) else None
        if info is None:
            return None
        for meta in [info] + list(info.metadata):
            if getattr(meta, "description", None):
                return meta.description
        args = [a for a in getattr(info.annotation, "__args__", ()) if a is not type(None)]
        for a in args:
            for meta in getattr(a, "__metadata__", ()):
                if getattr(meta, "description", None):
                    return meta.description
    return None


def problems(model: type, e: ValidationError) -> List[Tuple[str, str, str]]:
    """(field, expected, got) for each error pydantic found."""
    out = []
    for err in e.errors(include_url=False):
        if err["type"] == "value_error" and isinstance(err.get("ctx", {}).get("error"), _Wrong):
            field, expected, got = str(err["ctx"]["error"]).split("|", 2)
            out.append((field, expected, got))
            continue
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "lax-"))))
        field = ".".join(map(str, loc)) or "(the file)"
        if err["type"] == "missing":
            out.append((field, "the field (it is required)", "nothing"))
        elif err["type"] == "extra_forbidden":
            out.append((field, "no such field", "present"))
        else:
            declared = _field_expected(model, loc) if len(loc) == 1 else None
            expected = declared or err["msg"].removeprefix("Input should be ").removeprefix("Value error, ")
            got = err.get("input")
            out.append((field, expected, "missing" if got is None and "None" in err["msg"] else json.dumps(got)[:60]))
    return out


def _lines(path, model: type, e: ValidationError, fix: str) -> List[str]:
    issues = problems(model, e)
    field, expected, got = issues[0]
    more = f" (and {len(issues) - 1} more problem(s))" if len(issues) > 1 else ""
    return [f"{path}: field {field}: expected {expected}, got {got}{more}; {fix}"]


def _strict_json(text: str, data: Any = None) -> str:
    """`text` for the validator: a name in bytes that are not UTF-8 (a folder named b"\\xff")
    reaches JSON as a lone surrogate escape, which Python reads back but strict JSON refuses;
    only for validating, such characters are written as their escapes."""
    if "\\ud" not in text.lower():
        return text

    def clean(v):
        if isinstance(v, str):
            return v.encode("utf-8", "backslashreplace").decode("utf-8")
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        return v

    return json.dumps(clean(json.loads(text) if data is None else data))


class InvalidFiles(RoadmapError):
    """Files that do not have their declared shape: one line each in `lines`."""

    def __init__(self, lines: List[str]):
        super().__init__("; ".join(lines))
        self.lines = lines


RECORD_FIX = "correct it, or delete it to train that run again"


def validate_record_text(path, text: str) -> Dict[str, Any]:
    """The record in `text` (the JSON of runs/<key>.json) as a dict, or InvalidFiles."""
    try:
        row = json.loads(text)
    except ValueError:
        raise InvalidFiles([f"{path} is not valid JSON; {RECORD_FIX}"]) from None
    if not isinstance(row, dict):
        raise InvalidFiles(
            [f"{path} is not a run record (a JSON object), it holds a {type(row).__name__}; {RECORD_FIX}"]
        )
    try:
        RunRecord.model_validate_json(_strict_json(text, row), context={"raw": row})
    except ValidationError as e:
        raise InvalidFiles(_lines(path, RunRecord, e, RECORD_FIX)) from None
    return row


def record_text(row: Dict[str, Any], path="a run record") -> str:
    """The JSON a record is written as, validated first: a tool that would write a bad record
    stops here instead (a bug, but not one that leaves a file `report` must refuse)."""
    text = json.dumps(row, indent=1, default=str)
    validate_record_text(path, text)
    return text


# ---- report.json ------------------------------------------------------------------------


class StepSummary(BaseModel):
    model_config = OPEN
    run: Name
    step: Name
    seeds: Count
    failed: Count
    top1_mean: Optional[Percent] = None
    top1_std: Optional[NonNegative] = None


class Transition(BaseModel):
    model_config = OPEN
    from_: Name = Field(alias="from")
    to: Name
    delta: Optional[Finite] = None
    p: Optional[Probability] = None
    p_holm: Optional[Probability] = None
    resolved: Optional[bool] = Field(None, description="true where the Holm-adjusted p is below 1 - level")


class Report(BaseModel):
    """report.json (report.build_report, written by report.write_report)."""

    model_config = OPEN
    data: Text
    preset: Text
    method: Text
    level: Annotated[float, Field(gt=0, lt=1, description="a confidence level in (0, 1)")]
    warnings: List[str]
    findings: Text
    steps: List[StepSummary] = Field(description="one per row (see steps[] below)")
    transitions: List[Transition] = Field(description="one per change between rows (see transitions[] below)")


def check_report_text(text: str, path="report.json") -> str:
    """`text`, the JSON of a report, once validated against `Report` (written only if valid)."""
    try:
        Report.model_validate_json(_strict_json(text))
    except ValidationError as e:
        raise InvalidFiles(_lines(path, Report, e, "this is a bug in roadmap; please report it")) from None
    return text


# ---- the results tables -----------------------------------------------------------------


class ResultRow(BaseModel):
    """A row of results.csv (text: numbers arrive as numbers or empty, not strictly typed)."""

    model_config = ConfigDict(extra="allow")
    order: Optional[int] = None
    run: Name
    step: Name
    seed: Seed
    status: Literal["ok", "failed"] = Field(description='"ok" or "failed"')
    top1: Optional[Percent] = None
    top5: Optional[Percent] = None
    top1_ema: Optional[Percent] = None
    wall_s: Optional[Positive] = None
    key: Optional[Text] = None


class SummaryRow(BaseModel):
    """A row of summary.csv."""

    model_config = ConfigDict(extra="allow")
    run: Name
    seeds: Count
    failed: Count
    top1_mean: Optional[Percent] = None
    top1_std: Optional[NonNegative] = None


def check_table_rows(path, rows: List[Dict[str, Any]], model: type = ResultRow) -> None:
    """InvalidFiles naming the first bad row of a table read from `path` (empty cells: None)."""
    for i, row in enumerate(rows):
        clean = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for k in ("order", "seed", "seeds", "failed"):  # pandas reads an int column with gaps as floats
            v = clean.get(k)
            if isinstance(v, float) and v.is_integer():
                clean[k] = int(v)
        if isinstance(clean.get("key"), str) is False and clean.get("key") is not None:
            clean["key"] = str(clean["key"])
        try:
            model.model_validate(clean)
        except ValidationError as e:
            fix = f"row {i + 2}: correct it, or delete {Path(path).name} and rebuild it with `roadmap run`"
            raise InvalidFiles(_lines(path, model, e, fix)) from None


# ---- custom roadmap files ---------------------------------------------------------------


class RoadmapStepFile(BaseModel):
    """One [[step]] table of a custom roadmap file (custom.py checks the values further)."""

    model_config = STRICT
    name: Text = ""
    paper_step: Union[str, List[str]] = Field([], description="paper step name(s) whose changes to apply")
    revert: Union[str, List[str]] = Field([], description="paper step name(s) whose changes to undo")
    changes: Dict[str, Any] = Field({}, description="ArchConfig toggles to set (roadmap.custom.toggles())")
    phase: Text = ""
    why: Text = ""


class RoadmapFile(BaseModel):
    """A custom roadmap file (TOML, or YAML with the same keys)."""

    model_config = STRICT
    name: Optional[Name] = None
    description: Text = ""
    start: Text = "resnet50"
    mode: Literal["cumulative", "independent"] = Field(
        "cumulative", description="cumulative: each step applies to the row before; independent: to start"
    )
    step: List[RoadmapStepFile] = Field(description="one [[step]] table per row, at least one")


def record_keys(row: Dict[str, Any]) -> Tuple[str, str]:
    """(key, model_key) the record `row` should carry for its content: from its `training`
    field, else rebuilt as a CPU run of one process without width rounding would have it."""
    training = row.get("training") or training_identity(row["recipe"], row.get("world_size", 1))
    return (
        run_key(row["config"], training, row["data_id"], row["seed"]),
        run_key(row["config"], training, row["data_id"], None),
    )


# ---- the documentation's tables (docs/formats.md; tests/test_hardening_records.py checks them) --

DOCUMENTED = {
    "run record (runs/<key>.json)": RunRecord,
    "data_id": DataId,
    "curve point": CurvePoint,
    "report.json": Report,
    "report.json steps[]": StepSummary,
    "report.json transitions[]": Transition,
    "results.csv row": ResultRow,
    "summary.csv row": SummaryRow,
    "roadmap file": RoadmapFile,
    "roadmap file [[step]]": RoadmapStepFile,
}


def _type_name(annotation) -> str:
    origin, args = getattr(annotation, "__origin__", None), getattr(annotation, "__args__", ())
    if getattr(annotation, "__metadata__", None):  # Annotated[X, ...]
        return _type_name(args[0]) if args else _type_name(origin)
    if origin is Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(names)) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (list, List, tuple, Tuple):
        return "list"
    if origin in (dict, Dict) or annotation is dict:
        return "object"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return {int: "integer", float: "number", str: "string", bool: "boolean", datetime: "date-time text"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _range(info) -> str:
    for meta in list(info.metadata) + [info]:
        if getattr(meta, "description", None):
            return meta.description
    for a in getattr(info.annotation, "__args__", ()):
        for meta in getattr(a, "__metadata__", ()):
            if getattr(meta, "description", None):
                return meta.description
    return ""


def doc_rows(model: type) -> List[Tuple[str, str, str, str]]:
    """(field, type, required, expected) of each field of `model`, as docs/formats.md lists them."""
    rows = []
    for name, info in model.model_fields.items():
        required = "yes" if info.is_required() else "if ok" if model is RunRecord and name in FINISHED else "no"
        rows.append((info.alias or name, _type_name(info.annotation), required, _range(info)))
    return rows


def doc_table(model: type) -> str:
    """The markdown table of `model`'s fields (the generated part of docs/formats.md)."""
    lines = ["| field | type | required | expected |", "|---|---|---|---|"]
    lines += [f"| `{f}` | {t} | {r} | {e} |" for f, t, r, e in doc_rows(model)]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m roadmap.schema: the tables of docs/formats.md
    for title, model in DOCUMENTED.items():
        print(f"### {title}\n\n{doc_table(model)}\n")
