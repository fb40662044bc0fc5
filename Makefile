# Fresh-machine entry points. Both targets are idempotent: the venv and the
# installs are only redone when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: run test check docs data install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The embedded default data (Fashion-MNIST from Debian). Installs it when
# missing and we are root with apt; otherwise says what to do.
data:
	@bash scripts/ensure_data.sh

# A newcomer's first run: all 13 steps trained here (1 epoch each, about 11 minutes on 2 idle
# cores), a per-step table in the terminal and runs/demo-fashion-mnist/trajectory.png.
# The README's headline is `roadmap run --preset reference --seeds 3` (reused from results/).
run: install data
	$(VENV)/bin/roadmap run --preset demo --no-reference

# Lint, formatting and the import layers first (seconds), then the tests.
# One pytest-xdist worker per core, handed 2 tests at a time, so that the long tests (marked
# `long`, collected first) spread over the workers (`make test TEST_WORKERS=0`: no workers).
TEST_WORKERS ?= auto
test: install data check
	$(VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --maxschedchunk 2

# Lint, formatting and the package's import layers (pyproject.toml: [tool.ruff], [tool.importlinter]).
# Fix with: $(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# docs/cli.md from the argparse parsers in roadmap/cli.py (tests/test_cli_docs.py checks it).
docs: install
	$(PY) scripts/gen_cli_docs.py

clean:
	rm -rf $(VENV) build *.egg-info
