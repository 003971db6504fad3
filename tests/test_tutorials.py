"""Every tutorial notebook runs top to bottom in smoke mode (``PYROFLOWS_SMOKE=1``).

Each notebook is executed with nbclient in a temporary folder (the committed notebook, with
the outputs of its full run, is left alone), on a kernel started from this interpreter, with
matplotlib's non-interactive backend and one thread. A cell that raises fails the test.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TUTORIALS = sorted((Path(__file__).parents[1] / "tutorials").glob("*.ipynb"))


def _notebook_tools():
    """nbclient and nbformat, or a skip that names what is missing and how to install it."""
    missing = []
    for module in ("nbclient", "nbformat", "ipykernel", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        pytest.skip(
            f"executing the tutorials needs {', '.join(missing)} "
            '(pip install -e ".[dev]" installs them)'
        )
    import nbclient
    import nbformat

    return nbclient, nbformat


def test_there_are_tutorials():
    assert TUTORIALS, "no notebook in tutorials/"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    nbclient, nbformat = _notebook_tools()
    # the kernel is a child process: it inherits these
    monkeypatch.setenv("PYROFLOWS_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    notebook = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",  # jupyter_client starts it with this test's interpreter
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on an error
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells and all(cell.execution_count for cell in code_cells)
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    printed = "".join(output.get("text", "") for output in outputs)
    assert not re.search(r"\bnan\b", printed, re.IGNORECASE), printed  # a NaN NLL, say
