"""One conversion of a value to a dataclass field's type, for `--set key=value` and roadmap files.

A recipe override arrives as text (`--set hflip=False`); a roadmap file's toggle arrives
typed (TOML `depthwise = true`). `parse_text` reads text the way the field's type needs it
("False", "no" and "0" are false for a bool, not a non-empty string), then `convert` checks
the type. The callers add their ranges (`Recipe.check`, `custom.check_toggle`).
"""

import json
import math
from typing import Any, Tuple, Union, get_args, get_origin

TRUE, FALSE, NONE = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null")


class Invalid(ValueError):
    """The value does not have the field's type; the message says what the field takes."""


def split_optional(hint) -> Tuple[bool, Any]:
    """(whether None is allowed, the type without None) of a field's type hint."""
    args = get_args(hint)
    if get_origin(hint) is Union and type(None) in args:
        return True, next(a for a in args if a is not type(None))
    return False, hint


def _is_tuple(hint) -> bool:
    return hint is tuple or get_origin(hint) is tuple


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def parse_text(text: str, hint) -> Any:
    """Command-line text as the value it spells for a field typed `hint` (unreadable text is
    returned as is, for `convert` to refuse). Numbers are read as JSON reads them, so "2" is 2
    and "2e-3" is 0.002, as `--set` always read them: run keys of valid values do not change."""
    none_ok, hint = split_optional(hint)
    t = text.strip()
    if none_ok and t.lower() in NONE:
        return None
    if hint is bool:
        return True if t.lower() in TRUE else False if t.lower() in FALSE else text
    if hint in (int, float):
        try:
            return json.loads(t)
        except ValueError:
            return text
    if _is_tuple(hint):
        try:  # [0.9, 0.999] or 0.9,0.999
            return tuple(json.loads(t)) if t.startswith("[") else tuple(json.loads(p) for p in t.split(","))
        except (ValueError, TypeError):
            return text
    return text


def convert(value: Any, hint) -> Any:
    """`value` as a field typed `hint` holds it, or Invalid saying what the type takes.

    bool: true or false. int: an integer (not a bool). float: a finite number; an int stays an
    int (JSON and run keys tell 1 from 1.0). str: a string. Tuple[int, ...]: a list of
    integers; bare tuple: a list of numbers. Optional[X]: also None, or "none" (TOML has no null).
    """
    none_ok, hint = split_optional(hint)
    if none_ok and (value is None or value == "none"):
        return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise Invalid("true or false")
    if hint is int:
        if _is_int(value):
            return value
        raise Invalid("an integer")
    if hint is float:
        if _is_number(value):
            return value
        raise Invalid("a number")
    if _is_tuple(hint):
        item = (get_args(hint) or (float,))[0]
        ok = _is_int if item is int else _is_number
        if isinstance(value, (list, tuple)) and all(ok(v) for v in value):
            return tuple(value)
        raise Invalid("a list of integers" if item is int else "a list of numbers")
    if hint is str:
        if isinstance(value, str):
            return value
        raise Invalid("a string")
    raise Invalid(f"a {getattr(hint, '__name__', hint)}")
