"""The notebooks: each is a Jupytext pair in sync, committed without outputs, and runs top to bottom.

Every notebook `notebooks/NN_name.ipynb` (what a reader opens) has its source beside it as
`notebooks/NN_name.py`, a Jupytext percent file (`# %%` cells) that reviews and diffs well;
`notebooks/jupytext.toml` pairs them, and `jupytext --sync notebooks/0*.ipynb` brings a pair
back in step after editing either side.

Execution uses nbclient with the `python3` kernel, which jupyter_client starts with this
interpreter (the venv's), in the notebooks folder. Each notebook trains a few tiny runs on
the embedded Fashion-MNIST, about a minute or two on 2 CPU cores.
"""

import ast
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "00_roadmap_overview",
    "01_macro_design",
    "02_resnextify",
    "03_inverted_bottleneck",
    "04_large_kernel",
    "05_micro_design",
]
NOT_NOTEBOOKS = {"nbtools"}  # plain modules in notebooks/ that the notebooks import
CELL_TIMEOUT_S = 1800  # per cell, generous: only a hang should hit it (a loaded machine is slow)
SYNC = "jupytext --sync notebooks/0*.ipynb"


def ids(path):
    return path.stem


def cells(nb):
    return [(c.cell_type, c.source) for c in nb.cells]


def test_one_notebook_per_phase_and_an_overview():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


def test_every_notebook_has_its_percent_source_and_nothing_else_does():
    sources = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.py") if p.stem not in NOT_NOTEBOOKS)
    assert sources == EXPECTED


def test_the_pairing_config_pairs_ipynb_with_percent_py():
    from jupytext.config import load_jupytext_config

    config = load_jupytext_config(str(NOTEBOOK_DIR))
    assert config is not None, "notebooks/jupytext.toml is missing"
    assert config.formats in ("ipynb,py:percent", ["ipynb,py:percent"]), config.formats


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_pair_is_in_sync(path):
    source = path.with_suffix(".py")
    text = source.read_text()
    assert text.lstrip().startswith("# %%"), f"{source.name} is not a percent-format source"
    ast.parse(text, filename=str(source))  # magics are commented out: the source is plain Python
    paired = jupytext.reads(text, fmt="py:percent")
    committed = nbformat.read(path, as_version=4)
    assert cells(paired) == cells(committed), f"{path.name} and {source.name} differ; edit one, then run `{SYNC}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} carry outputs; clear them (Jupyter: Edit > "
        "Clear Outputs of All Cells) and save before committing"
    )


def test_the_tiny_run_note_states_what_nbtools_trains():
    # The note was filled in from nbtools' constants by a generator; now it is text: keep them equal.
    sys.path.insert(0, str(NOTEBOOK_DIR))
    try:
        import nbtools
    finally:
        sys.path.remove(str(NOTEBOOK_DIR))
    said = f"{nbtools.UPDATES} updates of {nbtools.BATCH} images and scored on\n{nbtools.VAL} held-out images"
    for path in NOTEBOOKS:
        md = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
        assert sum("**How to read a tiny run.**" in m for m in md) == 1, path.name
        assert any(said in m for m in md), f"{path.name}: the tiny-run note no longer says {said!r}"


@pytest.mark.long
@pytest.mark.timeout(2 * CELL_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs(path, tmp_path, monkeypatch):
    # The notebooks train into tempfile folders: inside pytest's tmp_path, which it prunes.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # Every cell runs, each tiny run on 40 updates instead of 100 (nbtools.UPDATES): the test
    # is that the notebooks work, not what a tiny run scores.
    monkeypatch.setenv("ROADMAP_NOTEBOOK_UPDATES", "40")
    nb = nbformat.read(path, as_version=4)
    # First, which interpreter the kernel is: the notebooks must test this environment.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    # Raises CellExecutionError (the cell's source and traceback) on the first cell that fails,
    # so getting past it means every cell ran without error.
    client.execute()
    kernel_prefix = nb.cells[0].outputs[0]["text"].strip()
    assert Path(kernel_prefix).resolve() == Path(sys.prefix).resolve(), (
        f"the python3 kernel runs {kernel_prefix}, not this environment ({sys.prefix})"
    )
