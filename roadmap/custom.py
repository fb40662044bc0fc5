"""Your own roadmaps: any start step, any subset and order of the toggles, in a file or in Python.

A roadmap file (TOML; YAML with the same keys works when pyyaml is installed):

    name = "micro design first"   # optional; default: the file's name
    description = "..."           # optional
    start = "resnet50"            # a paper step (`roadmap list`); the first row. Default resnet50
    mode = "cumulative"           # or "independent"; default cumulative

    [[step]]                      # one row each, in this order
    name = "gelu"                 # the row's label; optional with one paper_step or revert
    paper_step = "gelu"           # apply the changes that paper step makes (a name or a list)
    revert = "large_kernel"       # set the toggles that paper step changed back to their
                                  #   values before it (a name or a list)
    changes = { act = "gelu" }    # toggles of roadmap.config.ArchConfig, applied last
    phase = "micro design"        # optional; default: the phase of the paper step named,
                                  #   else of the paper steps that change these toggles
    why = "..."                   # optional

The rows are `start` itself, then one per [[step]]. In "cumulative" mode a step applies to
the row before it, like the paper's roadmap; in "independent" mode every step applies to
`start` alone (leave-one-out, sweeps). TOML has no null: `layer_scale_init = "none"` turns
layer scale off. A row whose configuration is exactly a paper step's carries that step's
numbers, so the chart shows them.

In Python the same thing is `Roadmap("name", start=..., steps=[CustomStep(...) or dict])`.
Every mistake is one RoadmapError naming the file (line, [[step]], key) and what is allowed;
a step, or a part of one, that changes nothing in the model is a mistake too.

Three steps over plain data: `parse` (types and keys) -> `validate` (the rows) ->
`plan_rows` (RunSpecs); `Roadmap` holds their results. roadmap_file.py reads the text.
"""

import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union, get_origin, get_type_hints

from pydantic import ValidationError

from . import steps as _steps_pkg
from .config import CHOICES, ArchConfig, field_names
from .errors import RoadmapError
from .plan import RunSpec
from .registry import config_for, configs, get_step, previous_step, step_names
from .roadmap_file import Path_, parse_toml, parse_yaml, toml_locator
from .schema import RoadmapFile, problems
from .steps import ROADMAP, Step
from .values import Invalid, convert, split_optional

EXAMPLES_DIR = Path(_steps_pkg.__file__).parent
FILE_KEYS = ("name", "description", "start", "mode", "step")
STEP_KEYS = ("name", "paper_step", "revert", "changes", "phase", "why")
MODES = ("cumulative", "independent")
# Toggles the run sets from the data and the recipe; a roadmap setting them would be overridden.
RUNTIME_FIELDS = {
    "num_classes": "the data",
    "in_chans": "the data",
    "drop_path_rate": "the recipe (--set drop_path=...)",
    "small_input_stem": "the recipe (--set small_input_stem=true), for every row alike",
}
_HINTS = get_type_hints(ArchConfig)
# Which phase a toggle belongs to: the phase of the paper step that changes it.
_TOGGLE_PHASE = {k: s.phase for s in ROADMAP for k in s.changes}


def toggles() -> Tuple[str, ...]:
    """The ArchConfig fields a roadmap may set."""
    return tuple(n for n in field_names() if n not in RUNTIME_FIELDS)


def examples() -> Tuple[str, ...]:
    """Names of the roadmaps shipped in steps/ (usable as `--roadmap NAME`)."""
    return tuple(sorted(p.stem for p in EXAMPLES_DIR.glob("*.toml")))


@dataclass(frozen=True)
class CustomStep:
    """One row of a custom roadmap; the fields are the keys of a [[step]] table."""

    name: str = ""
    paper_step: Union[str, Sequence[str]] = ()
    revert: Union[str, Sequence[str]] = ()
    changes: Mapping[str, Any] = field(default_factory=dict)
    phase: str = ""
    why: str = ""


@dataclass(frozen=True)
class Row:
    """A resolved row: its configuration, what it changed, and the paper step it equals (if any)."""

    name: str
    phase: str
    cfg: ArchConfig
    changes: Mapping[str, Any]  # toggles that differ from the row it was applied to
    why: str
    paper: Optional[Step]


class _Invalid(Exception):
    """A problem with one value; the caller adds where it is."""


class _Origin:
    """Where a roadmap came from, so that errors can say the file, the line and the key."""

    def __init__(
        self, label: str, locate: Optional[Callable[[Path_], Optional[int]]] = None, step_label: str = "steps[{i}]"
    ):
        self.label, self.locate, self.step_label = label, locate, step_label

    def error(self, path: Path_, message: str) -> RoadmapError:
        line = self.locate(path) if self.locate else None
        where = self.label + (f", line {line}" if line else "")
        return RoadmapError(f"{where}: {self._describe(path)}: {message}")

    def _describe(self, path: Path_) -> str:
        if not path:
            return "roadmap"
        if path[0] == "step" and len(path) > 1:
            step = self.step_label.format(i=path[1], n=path[1] + 1)
            return step + (f", key {'.'.join(map(str, path[2:]))}" if len(path) > 2 else "")
        return f"key {'.'.join(map(str, path))}"


# ---- values -------------------------------------------------------------------------


def _show(value) -> str:
    """A value as the file would spell it (JSON is close to TOML for scalars and lists)."""
    return '"none"' if value is None else json.dumps(value, default=str)


def _did_you_mean(word, options) -> str:
    close = difflib.get_close_matches(str(word), options, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_toggle(key: str, value: Any) -> Any:
    """The value as ArchConfig takes it, or _Invalid saying what `key` allows.

    The type check is `values.convert`, the one `--set key=value` uses for recipe fields."""
    if key in RUNTIME_FIELDS:
        raise _Invalid(f"{key} is set at run time by {RUNTIME_FIELDS[key]}, not by a roadmap")
    if key not in _HINTS:
        raise _Invalid(f"unknown toggle {key!r}.{_did_you_mean(key, toggles())} Valid toggles: {', '.join(toggles())}")
    hint, example = _HINTS[key], getattr(ArchConfig(), key)  # the defaults are resnet50's
    none_ok, base = split_optional(hint)
    bad = f"{key} = {_show(value)} is not allowed; {key} takes "
    if get_origin(base) is tuple:
        takes = f"a list of positive integers, one per stage, e.g. {_show(list(example))}"
        fits = lambda v: len(v) > 0 and all(x > 0 for x in v)  # noqa: E731
    elif base is int:
        takes, fits = f"a positive integer, e.g. {example}", lambda v: v > 0
    elif base is float:
        takes = "a number, e.g. 1.0e-6" + (', or "none"' if none_ok else "")
        fits = lambda v: True  # noqa: E731
    elif base is bool:
        takes, fits = "true or false", lambda v: True
    else:
        allowed = ", ".join(_show(c) for c in CHOICES.get(key, ()))
        takes = f"one of {allowed}" if allowed else "a string"
        fits = lambda v: v in CHOICES.get(key, (v,))  # noqa: E731
    try:
        value = convert(value, hint)
    except Invalid:
        raise _Invalid(bad + takes) from None
    if value is None:
        return None
    if not fits(value):
        raise _Invalid(bad + takes)
    return float(value) if base is float else value


def _names(value) -> Tuple[str, ...]:
    """paper_step / revert: one step name or a list of them."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _Invalid(
        f"{_show(value)} is not allowed; give a paper step name or a list of them: {', '.join(step_names())}"
    )


def _paper_changes(name: str) -> Dict[str, Any]:
    return dict(get_step(name).changes)


def _reverted(name: str) -> Dict[str, Any]:
    """The toggles paper step `name` changed, at their values before it."""
    before = previous_step(name)
    if before is None:
        raise _Invalid(
            f"{name!r} is the paper's start and changes nothing, so there is nothing to "
            f"revert; revert one of {', '.join(step_names()[1:])}"
        )
    return {k: getattr(config_for(before), k) for k in get_step(name).changes}


# ---- parse: types and shapes ---------------------------------------------------------


@dataclass(frozen=True)
class RoadmapSpec:
    """A parsed roadmap: its top-level values and steps, each of its type (not yet resolved)."""

    name: str
    description: str
    start: str
    mode: str
    steps: Tuple[CustomStep, ...]


def parse(origin: _Origin, name, start, steps, mode, description) -> RoadmapSpec:
    """Every value of its type, every key known, `start` a paper step and `mode` a mode."""
    name = _text(origin, ("name",), name, required=True)
    description = _text(origin, ("description",), description)
    if not isinstance(start, str) or start not in step_names():
        raise origin.error(
            ("start",),
            f"{_show(start)} is not a paper step.{_did_you_mean(start, step_names())} "
            f"Valid steps, in order: {', '.join(step_names())}",
        )
    if mode not in MODES:
        raise origin.error(("mode",), f"{_show(mode)} is not allowed; mode is one of {', '.join(map(_show, MODES))}")
    if isinstance(steps, (str, Mapping)) or not isinstance(steps, Sequence) or not steps:
        raise origin.error(
            ("step",), "a roadmap needs a list of steps, at least one (in TOML, one [[step]] table per row)"
        )
    return RoadmapSpec(
        name, description, start, mode, tuple(_parse_step(origin, i, raw) for i, raw in enumerate(steps))
    )


def _text(origin: _Origin, path: Path_, value, required=False) -> str:
    if not isinstance(value, str) or (required and not value.strip()):
        raise origin.error(path, f"{_show(value)} is not allowed; give a {'non-empty ' if required else ''}string")
    return value


def _parse_step(origin: _Origin, i: int, raw) -> CustomStep:
    """A [[step]] table (or CustomStep) with every key and value type checked."""
    if isinstance(raw, CustomStep):
        raw = {f.name: getattr(raw, f.name) for f in fields(raw)}
    if not isinstance(raw, Mapping):
        raise origin.error(
            ("step", i), f"{_show(raw)} is not a step; a step is a table with the keys {', '.join(STEP_KEYS)}"
        )
    for key in raw:
        if key not in STEP_KEYS:
            raise origin.error(
                ("step", i, key), f"unknown key.{_did_you_mean(key, STEP_KEYS)} A step's keys: {', '.join(STEP_KEYS)}"
            )
    for key in ("name", "phase", "why"):
        _text(origin, ("step", i, key), raw.get(key, ""))
    if not isinstance(raw.get("changes", {}), Mapping):
        raise origin.error(("step", i, "changes"), "give a table of toggles, e.g. changes = { kernel_size = 7 }")
    named = {}
    for key in ("paper_step", "revert"):
        try:
            named[key] = _names(raw.get(key, ()))
        except _Invalid as e:
            raise origin.error(("step", i, key), str(e)) from None
    return CustomStep(
        raw.get("name", ""),
        named["paper_step"],
        named["revert"],
        dict(raw.get("changes", {})),
        raw.get("phase", ""),
        raw.get("why", ""),
    )


# ---- validate: each step applied, each change a real change ----------------------------

# Toggles the builder reads only in some configurations: set elsewhere, they change nothing.
UNUSED_WHEN = {
    "patch_size": (lambda cfg: cfg.stem != "patchify", "patch_size is used only by the patchify stem"),
}


def model_of(cfg: ArchConfig) -> ArchConfig:
    """`cfg` with the toggles its model does not use at their defaults: two configurations
    that differ only there build the same network."""
    unused = {k: getattr(ArchConfig(), k) for k, (test, _) in UNUSED_WHEN.items() if test(cfg)}
    return cfg.replace(**unused) if unused else cfg


def validate(spec: RoadmapSpec, origin: _Origin) -> List[Row]:
    """The rows: `start`, then each step applied to the row before it (cumulative) or to
    `start` (independent). Refused: a value a toggle does not take, a step or a part of one
    that changes nothing in the model, a row that repeats a model or a name."""
    rows = [Row(spec.start, "start", config_for(spec.start), {}, get_step(spec.start).why, get_step(spec.start))]
    for i, step in enumerate(spec.steps):
        prev = rows[-1] if spec.mode == "cumulative" else rows[0]
        rows.append(_row(origin, spec.mode, i, step, prev, rows))
    return rows


def _sources(origin: _Origin, i: int, step: CustomStep) -> List[Tuple[Path_, str, Dict[str, Any]]]:
    """Each part of a step with the toggles it sets: its paper steps, reverts, own toggles."""
    out = []
    for key, expand in (("paper_step", _paper_changes), ("revert", _reverted)):
        for name in getattr(step, key):
            try:
                out.append((("step", i, key), f"{key} = {_show(name)}", expand(name)))
            except (RoadmapError, _Invalid) as e:
                raise origin.error(("step", i, key), str(e)) from None
    for key, value in step.changes.items():
        try:
            out.append((("step", i, "changes", key), f"{key} = {_show(value)}", {key: check_toggle(key, value)}))
        except _Invalid as e:
            raise origin.error(("step", i, "changes", key), str(e)) from None
    if not out:
        raise origin.error(("step", i), "this step changes nothing; give changes, paper_step or revert")
    return out


def _row(origin: _Origin, mode: str, i: int, step: CustomStep, prev: Row, rows: List[Row]) -> Row:
    sources = _sources(origin, i, step)
    changes = {k: v for _, _, part in sources for k, v in part.items()}  # later parts win
    try:
        cfg = prev.cfg.replace(**changes)
    except RoadmapError as e:  # e.g. depths and widths of different lengths
        named = [k for k in step.changes if k in str(e)]  # point at the toggle it blames
        raise origin.error(("step", i, "changes", *named[:1]), str(e)) from None
    name = _row_name(origin, i, step)
    if model_of(cfg) == model_of(prev.cfg):
        told = ", ".join(f"{k} = {_show(v)}" for k, v in changes.items())
        unused = [why for k, (test, why) in UNUSED_WHEN.items() if k in changes and test(cfg)]
        raise origin.error(
            ("step", i),
            f"step {name!r} changes nothing: {told} is already so in row {prev.name!r}, which it applies to "
            f"({mode} mode)" + (f", or unused ({unused[0]})" if unused else "") + "; a step must change a toggle",
        )
    for path, label, part in sources:  # each part on its own: one that changes nothing is a mistake
        if model_of(prev.cfg.replace(**part)) == model_of(prev.cfg):
            raise origin.error(
                path,
                f"{label} changes nothing in step {name!r}: row {prev.name!r}, which it applies to, is already so"
                + "".join(f" (or {why})" for k, (test, why) in UNUSED_WHEN.items() if k in part and test(cfg))
                + "; drop it",
            )
    twin = next((r for r in rows if model_of(r.cfg) == model_of(cfg)), None)
    if twin is not None:
        raise origin.error(
            ("step", i),
            f"step {name!r} builds the same model as row {twin.name!r}; every row must be a different model",
        )
    if name in [r.name for r in rows]:
        raise origin.error(("step", i, "name"), f"{name!r} names an earlier row too; row names must be unique")
    phase = step.phase or _phase(step, changes)
    return Row(name, phase, cfg, {k: new for k, (_, new) in prev.cfg.diff(cfg).items()}, step.why, _paper_twin(cfg))


def _row_name(origin: _Origin, i: int, step: CustomStep) -> str:
    if step.name:
        return step.name
    if len(step.paper_step) + len(step.revert) == 1:
        return step.paper_step[0] if step.paper_step else f"no_{step.revert[0]}"
    raise origin.error(
        ("step", i), "give this step a name (key name); only a step with one paper_step or revert is named for it"
    )


def _phase(step: CustomStep, changes: Mapping[str, Any]) -> str:
    named = step.paper_step + step.revert
    if named:
        return get_step(named[0]).phase
    phases = {_TOGGLE_PHASE.get(k, "custom") for k in changes}
    return phases.pop() if len(phases) == 1 else "custom"


def _paper_twin(cfg: ArchConfig) -> Optional[Step]:
    """The paper step with exactly this configuration, if any."""
    return next((get_step(n) for n, c in configs().items() if c == cfg), None)


# ---- plan: rows to RunSpecs ----------------------------------------------------------


def plan_rows(
    roadmap: str, rows: Sequence[Row], upto: Optional[str] = None, start: Optional[str] = None, where: str = ""
) -> List[RunSpec]:
    """RunSpecs of the rows from `start` to `upto` inclusive (names of the rows)."""
    names = [r.name for r in rows]

    def index(name: str, flag: str) -> int:
        if name not in names:
            raise RoadmapError(
                f"{flag} {name!r} is not a step of roadmap {roadmap!r} ({where}).{_did_you_mean(name, names)} "
                f"Its steps, in order: {', '.join(names)}"
            )
        return names.index(name)

    i = index(start, "--from") if start else 0
    j = index(upto, "--upto") if upto else len(rows) - 1
    if i > j:
        raise RoadmapError(f"--from {start} comes after --upto {upto} in roadmap {roadmap!r}")
    return [_spec(roadmap, k, rows[k]) for k in range(i, j + 1)]


def _spec(roadmap: str, order: int, row: Row) -> RunSpec:
    p = row.paper
    return RunSpec(
        row.name,
        row.name,
        row.phase,
        order,
        row.cfg,
        p.paper_top1 if p else None,
        p.paper_top1_sd if p else None,
        p.paper_gflops if p else None,
        roadmap=roadmap,
    )


# ---- the roadmap --------------------------------------------------------------------


class Roadmap:
    """A start step and a list of steps; `rows` is the resolved, validated table (`parse`,
    then `validate`; `plan` is `plan_rows`).

    E.g. `Roadmap("gelu early", start="widen", steps=[dict(paper_step="gelu")]).plan()`;
    a step is a CustomStep or a dict with the keys of a [[step]] table.
    """

    def __init__(
        self,
        name: str,
        start: str = "resnet50",
        steps: Sequence[Union[CustomStep, Mapping[str, Any]]] = (),
        mode: str = "cumulative",
        description: str = "",
        origin: Optional[_Origin] = None,
    ):
        self.origin = origin or _Origin(f"roadmap {name!r}")
        spec = parse(self.origin, name, start, steps, mode, description)
        self.name, self.description, self.start, self.mode = spec.name, spec.description, spec.start, spec.mode
        self.rows = validate(spec, self.origin)

    def __repr__(self):
        return f"Roadmap({self.name!r}, start={self.start!r}, mode={self.mode!r}, rows={self.names()})"

    def names(self) -> List[str]:
        return [r.name for r in self.rows]

    def configs(self) -> Dict[str, ArchConfig]:
        return {r.name: r.cfg for r in self.rows}

    def plan(self, upto: Optional[str] = None, start: Optional[str] = None) -> List[RunSpec]:
        """RunSpecs of the rows from `start` to `upto` inclusive (names of this roadmap's rows)."""
        return plan_rows(self.name, self.rows, upto, start, self.origin.label)

    def register(self) -> List[str]:
        """Every row as a timm model `roadmap_<name>_<row>` (lower case, `_` for other
        characters); returns the model names. E.g. `load_roadmap("micro_first").register()`,
        then `timm.create_model("roadmap_micro_design_first_gelu", num_classes=10)`."""
        from .timm_models import register_rows

        return register_rows([(r.name, r.cfg, r.why or self.description) for r in self.rows], prefix=self.name)

    def default_out(self, preset: str, data_name: str) -> Path:
        """runs/<preset>-<data>-<roadmap>: next to the paper roadmap's runs/<preset>-<data>."""
        from .plan import default_out_dir

        return default_out_dir(preset, data_name, self.name)


# ---- files --------------------------------------------------------------------------


def find_roadmap_file(name: str) -> Path:
    """A path, or the bare name of a roadmap shipped in steps/ (e.g. micro_first)."""
    path = Path(name)
    if path.is_file():
        return path
    if not path.suffix and len(path.parts) == 1:
        for suffix in (".toml", ".yaml", ".yml"):
            if (EXAMPLES_DIR / f"{name}{suffix}").is_file():
                return EXAMPLES_DIR / f"{name}{suffix}"
    raise RoadmapError(
        f"--roadmap {name}: no such file. Give the path of a .toml (or .yaml) "
        f"roadmap, or the name of a shipped one: {', '.join(examples())}"
    )


def load_roadmap(source: Union[str, Path, Roadmap]) -> Roadmap:
    """A Roadmap from a file path, a shipped example's name, or a Roadmap (returned as is)."""
    if isinstance(source, Roadmap):
        return source
    path = find_roadmap_file(str(source))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RoadmapError(
            f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the roadmap file as UTF-8"
        ) from None
    except OSError as e:
        raise RoadmapError(f"--roadmap {path}: cannot read it ({e.strerror})") from None
    text = text.removeprefix("\ufeff")  # a BOM (Windows editors write one) is not TOML: drop it
    suffix = path.suffix.lower()
    if suffix == ".toml":
        data, origin = parse_toml(path, text), _Origin(str(path), toml_locator(text), "[[step]] #{n}")
    elif suffix in (".yaml", ".yml"):
        data, locate = parse_yaml(path, text)
        origin = _Origin(str(path), locate, "step #{n}")
    else:
        raise RoadmapError(
            f"{path}: unknown roadmap format {suffix!r}; write it as .toml (or .yaml with pyyaml installed)"
        )
    return from_dict(data, origin, default_name=path.stem)


def from_dict(data: Mapping[str, Any], origin: Optional[_Origin] = None, default_name: str = "custom") -> Roadmap:
    """A Roadmap from a parsed file: top-level keys checked, then `Roadmap` checks the rest."""
    origin = origin or _Origin(f"roadmap {default_name!r}")
    if not isinstance(data, Mapping):
        raise origin.error((), f"expected a table of keys ({', '.join(FILE_KEYS)})")
    for key in data:
        if key not in FILE_KEYS:
            raise origin.error(
                (key,), f"unknown key.{_did_you_mean(key, FILE_KEYS)} A roadmap's keys: {', '.join(FILE_KEYS)}"
            )
    roadmap = Roadmap(
        data.get("name", default_name),
        start=data.get("start", "resnet50"),
        steps=data.get("step", ()),
        mode=data.get("mode", "cumulative"),
        description=data.get("description", ""),
        origin=origin,
    )
    try:  # the declared shape (schema.RoadmapFile): the checks above say more, this misses nothing
        RoadmapFile.model_validate(dict(data))
    except ValidationError as e:
        field, expected, got = problems(RoadmapFile, e)[0]
        path = tuple(int(p) if p.isdigit() else p for p in field.split("."))
        raise origin.error(path, f"expected {expected}, got {got}") from None
    return roadmap
