"""The tutorials: one source per notebook, and each runs in smoke mode (``PYROFLOWS_SMOKE=1``).

Each tutorial is a pair: ``tutorials/<name>.py``, a jupytext percent-format file that holds the
cells (the source one edits and ruff lints), and ``tutorials/<name>.ipynb``, the same cells with
the outputs of a full run (what the docs render). ``make tutorials`` syncs the one into the other
and executes the notebooks. Here every notebook must have its source and the other way round,
and the cells of the two (types and sources) must agree.

The smoke run executes the ``.py`` source, converted to a notebook in memory, with nbclient in a
temporary folder (the committed notebook is left alone), on a kernel started from this
interpreter, with matplotlib's non-interactive backend and one thread. A cell that raises fails
the test. The notebook runs the same cells, as the agreement test checks.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

TUTORIAL_DIR = Path(__file__).parents[1] / "tutorials"
TUTORIALS = sorted(TUTORIAL_DIR.glob("*.ipynb"))
SOURCES = sorted(TUTORIAL_DIR.glob("*.py"))
PAIRING = "ipynb,py:percent"  # the notebooks' jupytext metadata, for `jupytext --sync`


def _jupytext():
    """Jupytext, or a skip that says how to install it."""
    return pytest.importorskip(
        "jupytext", reason='the tutorials\' sources need jupytext (pip install -e ".[dev]")'
    )


def _normalised(source: str) -> str:
    """A cell's source without trailing spaces or leading and trailing blank lines.

    Jupytext drops both when it writes a cell to the ``.py`` file and reads it back.
    """
    return "\n".join(line.rstrip() for line in source.splitlines()).strip("\n")


def _cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, _normalised(cell.source)) for cell in notebook.cells]


def cell_differences(notebook, source) -> list[str]:
    """How the cells of ``notebook`` differ from those of ``source`` (empty: they agree).

    Cell types and sources are compared; outputs, execution counts and metadata are not.
    """
    ours, theirs = _cells(notebook), _cells(source)
    problems = []
    if len(ours) != len(theirs):
        problems.append(f"{len(ours)} cells in the notebook, {len(theirs)} in the .py source")
    for index, ((kind, text), (source_kind, source_text)) in enumerate(
        zip(ours, theirs, strict=False)
    ):
        if kind != source_kind:
            problems.append(f"cell {index}: {kind} in the notebook, {source_kind} in the source")
        elif text != source_text:
            diff = difflib.unified_diff(
                text.splitlines(), source_text.splitlines(), "notebook", "source", lineterm=""
            )
            problems.append(f"cell {index} ({kind}):\n" + "\n".join(diff))
        else:
            continue
        if len(ours) != len(theirs):
            break  # a cell inserted or removed: the first difference says where, the rest follow
    return problems


def _notebook_tools():
    """nbclient and jupytext, or a skip that names what is missing and how to install it."""
    missing = []
    for module in ("nbclient", "nbformat", "ipykernel", "jupytext", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        pytest.skip(
            f"executing the tutorials needs {', '.join(missing)} "
            '(pip install -e ".[dev]" installs them)'
        )
    import jupytext
    import nbclient

    return nbclient, jupytext


def test_there_are_tutorials():
    assert TUTORIALS, "no notebook in tutorials/"


def test_every_notebook_has_its_source_and_every_source_its_notebook():
    notebooks = {path.stem for path in TUTORIALS}
    sources = {path.stem for path in SOURCES}
    assert notebooks == sources, (
        f"notebooks without a .py source: {sorted(notebooks - sources)}; "
        f".py sources without a notebook: {sorted(sources - notebooks)} "
        "(jupytext --set-formats ipynb,py:percent tutorials/<name>.ipynb pairs a notebook)"
    )
    jupytext = _jupytext()
    for path in TUTORIALS:
        formats = jupytext.read(path).metadata.get("jupytext", {}).get("formats")
        assert formats == PAIRING, f"{path.name}: jupytext formats {formats!r}, not {PAIRING!r}"
    for path in SOURCES:
        text = jupytext.read(path).metadata.get("jupytext", {}).get("text_representation", {})
        assert text.get("format_name") == "percent", f"{path.name} is not in percent format"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_notebook_cells_equal_their_source(path):
    jupytext = _jupytext()
    source = path.with_suffix(".py")
    if not source.exists():
        pytest.fail(f"{path.name} has no source {source.name}")
    problems = cell_differences(jupytext.read(path), jupytext.read(source))
    assert not problems, (
        f"{path.name} and {source.name} disagree (after editing the .py source, "
        f"`jupytext --sync tutorials/{source.name}` updates the notebook and keeps its "
        "outputs; `make tutorials` also re-runs it):\n" + "\n\n".join(problems)
    )


def test_the_agreement_check_sees_an_edited_cell():
    jupytext = _jupytext()
    notebook = jupytext.reads(
        "# %% [markdown]\n# Title\n\n# %%\nx = 1  \n\n\n# %%\nprint(x)\n", "py:percent"
    )
    same = jupytext.reads(jupytext.writes(notebook, "py:percent"), "py:percent")
    assert not cell_differences(notebook, same)
    edited = jupytext.reads(jupytext.writes(notebook, "py:percent"), "py:percent")
    edited.cells[2].source = "print(x + 1)"
    assert "cell 2 (code)" in cell_differences(notebook, edited)[0]
    edited.cells[2].cell_type = "markdown"
    assert "cell 2: code in the notebook, markdown" in cell_differences(notebook, edited)[0]
    del edited.cells[2]
    assert "3 cells in the notebook, 2 in the .py source" in cell_differences(notebook, edited)


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
@pytest.mark.integration
def test_tutorial_runs_in_smoke_mode(path, tmp_path, monkeypatch):
    nbclient, jupytext = _notebook_tools()
    # the kernel is a child process: it inherits these
    monkeypatch.setenv("PYROFLOWS_SMOKE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = jupytext.read(path.with_suffix(".py"))  # the source, as a notebook
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
