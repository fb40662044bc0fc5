"""Copy each results folder's `answer.md` (written by `roadmap report`) into README.md.

README.md holds the answer between `<!-- answer: results/<folder>/answer.md -->` and
`<!-- /answer -->`; this fills that block from the file, so the answer on the first screen is
what the report says, never a hand copy. `--check` only says whether they agree (the tests
run it), exit 1 when they do not.

    python scripts/readme_answer.py [--check]
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(^<!-- answer: (\S+) -->\n)(.*?)(^<!-- /answer -->$)", re.S | re.M)


def filled(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + (ROOT / m.group(2)).read_text() + m.group(4), text)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    readme = ROOT / "README.md"
    text = readme.read_text()
    if not BLOCK.search(text):
        print("README.md has no <!-- answer: ... --> block", file=sys.stderr)
        return 1
    new = filled(text)
    if "--check" in argv:
        if new != text:
            print("README.md's answer differs from its answer.md: run python scripts/readme_answer.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
