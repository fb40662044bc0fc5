"""The one table writer: markdown (report.md, budget.md, docs) and terminal tables.

Callers format each cell as text (they know how many decimals a number deserves); this
module only lays the cells out, with tabulate (what `DataFrame.to_markdown` calls), so no
caller pads columns by hand. Cells are never re-parsed as numbers (`disable_numparse`):
"+0.60" stays "+0.60", not 0.6. It imports no pandas, so `roadmap list` stays fast; a
DataFrame is taken as it is.
"""

import math
from typing import Any, Dict, Iterable, List, Sequence

from tabulate import tabulate


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _grid(rows, columns: Sequence[str]):
    if hasattr(rows, "to_dict"):  # a DataFrame: its columns, in order
        columns = list(columns) or [str(c) for c in rows.columns]
        rows = rows.to_dict("records")
    rows: List[Dict] = list(rows)
    if not columns:  # every key, in first-seen order
        columns = list(dict.fromkeys(k for r in rows for k in r))
    return list(columns), [[_cell(r.get(c)) for c in columns] for r in rows]


def _table(rows, right: Iterable[str], columns: Sequence[str], fmt: str) -> str:
    columns, cells = _grid(rows, columns)
    right = set(right)
    align = ["right" if c in right else "left" for c in columns] or None
    return tabulate(cells, headers=columns, tablefmt=fmt, colalign=align, disable_numparse=True)


def markdown(rows, right: Iterable[str] = (), columns: Sequence[str] = ()) -> str:
    """A GitHub markdown table of `rows` (a DataFrame, or dicts: one per row; `columns` picks
    and orders them), the `right` columns right-aligned (numbers), the others left; ends with
    a newline."""
    return _table(rows, right, columns, "pipe") + "\n"


def terminal(rows, right: Iterable[str] = (), columns: Sequence[str] = ()) -> str:
    """A plain-text table for the terminal: a header line, then one line per row, columns
    separated by two spaces, no rules (so `line.split()[0]` is a row's first cell, as
    scripts that read it expect); no trailing spaces."""
    return "\n".join(line.rstrip() for line in _table(rows, right, columns, "plain").splitlines())
