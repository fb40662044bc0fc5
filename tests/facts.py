"""Numbers in README.md and docs/ that are read from a report.json, checked against it.

The convention: a region of a markdown page between

    <!-- numbers: results/reference-fashion-mnist/report.json -->
    ...
    <!-- /numbers -->

quotes that report. Inside it, a step name in backticks followed by a number is a claim
about the change *into* that step (`transitions[i]` with `to` == the step):

- `` `fewer_norms` −1.16 `` : its `delta`, to the digits written;
- `` `fewer_norms` −1.16 [−1.49, −0.84] `` : and its full 95% interval (`ci_low`, `ci_high`);
- `` `stage_ratio` ±0.85 `` : its `equivalence_bound`.

A table or text copied from a file a command writes (not a report.json) sits between

    <!-- intervals: results/budget-study/budget.md -->
    ...
    <!-- /intervals -->

and every "estimate [low, high]" inside it must appear, written the same way (− or -), in
that file: a rerun that moves an interval makes the copy fail instead of going stale.

`check(text, root)` returns (claims checked, mismatches): a page passes when the second is
empty. The markers are HTML comments, so they do not show on GitHub.
"""

import json
import re
from pathlib import Path
from typing import List, Tuple

# a marker is a line of its own (one quoted inside a sentence, as in docs/development.md, is not)
REGION = re.compile(r"^<!-- numbers: (\S+) -->$(.*?)^<!-- /numbers -->$", re.S | re.M)
COPIED = re.compile(r"^<!-- intervals: (\S+) -->$(.*?)^<!-- /intervals -->$", re.S | re.M)
NUM = r"[−+-]?\d+(?:\.\d+)?"
CLAIM = re.compile(rf"`(\w+)` (±)?({NUM})(?: \[({NUM}), ({NUM})\])?")
INTERVAL = re.compile(rf"{NUM} \[{NUM}, {NUM}\]")


def _float(text: str) -> float:
    return float(text.replace("−", "-"))


def _same(written: str, value) -> bool:
    digits = len(written.split(".")[1]) if "." in written else 0
    return value is not None and round(float(value), digits) == round(_float(written), digits)


def check(text: str, root: Path) -> Tuple[int, List[str]]:
    checked, wrong = 0, []
    for source, region in REGION.findall(text):
        report = json.loads((Path(root) / source).read_text())
        into = {t["to"]: t for t in report["transitions"]}
        for step, pm, value, lo, hi in CLAIM.findall(region):
            t = into.get(step)
            if t is None:
                wrong.append(f"`{step}`: no change into it in {source}")
                continue
            claims = [("equivalence_bound" if pm else "delta", value)]
            if lo:
                claims += [("ci_low", lo), ("ci_high", hi)]
            for field, written in claims:
                checked += 1
                if not _same(written, t.get(field)):
                    wrong.append(f"`{step}` {field}: written {written}, {source} has {t.get(field)}")
    for source, region in COPIED.findall(text):
        have = (Path(root) / source).read_text().replace("−", "-")
        for interval in INTERVAL.findall(region):
            checked += 1
            if interval.replace("−", "-") not in have:
                wrong.append(f"{interval}: not in {source}")
    return checked, wrong
