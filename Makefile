# Fresh-machine entry points. Both targets are idempotent: the venv and the
# installs are only redone when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: run test check data install clean

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

# The README's headline: 13 steps x 3 seeds with the reference preset. On a fresh clone
# every run is found in the committed results/reference-fashion-mnist and skipped.
run: install data
	$(VENV)/bin/roadmap run --preset reference --seeds 3

test: install data
	$(VENV)/bin/python -m pytest -q

# Lint, formatting and the package's import layers (pyproject.toml: [tool.ruff], [tool.importlinter]).
# Not part of `test` yet. Fix with: $(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
