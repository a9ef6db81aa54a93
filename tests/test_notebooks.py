"""Every lesson and every solution also runs as a notebook, as a student opens it in Jupyter.

Each percent-format script is converted with jupytext (as JupyterLab's "Open With → Jupytext
Notebook" does) and executed cell by cell in a fresh IPython kernel by nbclient, in fast mode
(``MINILORA_FAST=1``), from the script's own folder (the notebook's working directory, so a
lesson finds ``exercises/`` and a solution its ``exNN.py``). A cell that raises fails the test.
The kernel uses the inline plotting backend, so the plots are drawn into the notebook.

Needs the optional ``lessons`` extra (``pip install -e ".[lessons]"``); without it the test is
skipped with that reason. CI installs the extra, so there it always runs.
"""
import pathlib

import pytest

jupytext = pytest.importorskip(
    "jupytext", reason="notebook tests need the lessons extra: pip install -e '.[lessons]'")
nbclient = pytest.importorskip(
    "nbclient", reason="notebook tests need the lessons extra: pip install -e '.[lessons]'")
pytest.importorskip(
    "ipykernel", reason="notebook tests need the lessons extra: pip install -e '.[lessons]'")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py")) \
    + sorted((ROOT / "lessons" / "solutions").glob("[0-9][0-9]_*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(ROOT / "lessons")) for p in SCRIPTS])
def test_runs_as_a_notebook(script, monkeypatch):
    # the kernel inherits this environment: fast mode, one BLAS thread as the lessons pin
    monkeypatch.setenv("MINILORA_FAST", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebook's own (inline) backend
    notebook = jupytext.read(script)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    markdown_cells = [c for c in notebook.cells if c.cell_type == "markdown"]
    assert code_cells and markdown_cells, f"{script.name} did not convert into code and text cells"
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(script.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if one fails
    errors = [out for cell in code_cells for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors, f"{script.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
