"""roadmap.tables, the one table writer: cells kept as given, columns aligned by it."""

import math

import pandas as pd

from roadmap import tables

ROWS = [
    dict(step="resnet50", delta="", top1="88.24 ± 0.20"),
    dict(step="separate_downsampling", delta="+0.60", top1="87.00"),
]


def test_markdown_keeps_cells_as_text_and_aligns_the_number_columns():
    text = tables.markdown(ROWS, right=("delta", "top1"))
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 4
    assert lines[1].startswith("|:--") and lines[1].endswith("--:|")  # step left, top1 right
    assert "+0.60" in lines[3] and "88.24 ± 0.20" in lines[2]  # not re-parsed as numbers
    assert len({len(line) for line in lines}) == 1  # every row padded to one width


def test_terminal_has_no_rules_and_no_trailing_spaces():
    lines = tables.terminal(pd.DataFrame(ROWS), right=("top1",)).splitlines()
    assert [line.split()[0] for line in lines] == ["step", "resnet50", "separate_downsampling"]
    assert all(line == line.rstrip() for line in lines)
    # a right-aligned column ends at the same place on every line
    assert {line.rindex("top1") + 4 if i == 0 else len(line) for i, line in enumerate(lines)} == {len(lines[0])}


def test_missing_cells_are_blank_and_columns_can_be_picked():
    text = tables.markdown([dict(a=1, b=None), dict(a=math.nan, c="x")], columns=("c", "a"))
    head, _, first, second = text.splitlines()
    assert head.split("|")[1].strip() == "c" and "None" not in text and "nan" not in text
    assert first.split("|")[2].strip() == "1" and second.split("|")[1].strip() == "x"
