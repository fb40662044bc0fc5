"""The notebooks: each runs top to bottom without error, and is committed without outputs.

Execution uses nbclient with the `python3` kernel, which jupyter_client starts with this
interpreter (the venv's), in the notebooks folder. Each notebook trains a few tiny runs on
the embedded Fashion-MNIST, about a minute or two on 2 CPU cores.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["00_roadmap_overview", "01_macro_design", "02_resnextify", "03_inverted_bottleneck",
            "04_large_kernel", "05_micro_design"]
CELL_TIMEOUT_S = 1800  # per cell, generous: only a hang should hit it (a loaded machine is slow)


def ids(path):
    return path.stem


def test_one_notebook_per_phase_and_an_overview():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} carry outputs; clear them, or regenerate with "
                       "`python notebooks/build_notebooks.py`")


def test_notebooks_match_their_generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    build = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(NOTEBOOK_DIR))
    try:
        spec.loader.exec_module(build)
    finally:
        sys.path.remove(str(NOTEBOOK_DIR))
    assert sorted(build.NOTEBOOKS) == EXPECTED
    for name, cells in build.NOTEBOOKS.items():
        committed = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4).cells
        assert [(c.cell_type, c.source) for c in committed] == \
            [(c.cell_type, c.source) for c in cells], \
            f"{name}.ipynb differs from notebooks/build_notebooks.py; regenerate it"


@pytest.mark.timeout(2 * CELL_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs(path, tmp_path, monkeypatch):
    # The notebooks train into tempfile folders: inside pytest's tmp_path, which it prunes.
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    # First, which interpreter the kernel is: the notebooks must test this environment.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError (cell source + traceback) on any error
    kernel_prefix = nb.cells[0].outputs[0]["text"].strip()
    assert Path(kernel_prefix).resolve() == Path(sys.prefix).resolve(), \
        f"the python3 kernel runs {kernel_prefix}, not this environment ({sys.prefix})"
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if o.get("output_type") == "error"]
    assert not errors
