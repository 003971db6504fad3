"""Sphinx configuration of the pyroflows documentation."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import pyroflows

project = "pyroflows"
author = "The pyroflows developers"
copyright = "2026, The pyroflows developers"
release = version = pyroflows.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "myst_nb",
    "flow_catalogue",
]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Offline inventories (this project is built where the web is out of reach): small object
# lists of torch and Pyro written by _ext/make_inventories.py, linking to their online docs.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(HERE / "_inventories" / "python.inv")),
    "torch": ("https://pytorch.org/docs/stable", str(HERE / "_inventories" / "torch.inv")),
    "pyro": ("https://docs.pyro.ai/en/stable", str(HERE / "_inventories" / "pyro.inv")),
}


def _collect_tutorials() -> None:
    """Copy ../tutorials/*.ipynb next to the docs and write the tutorials index."""
    target = HERE / "tutorials"
    target.mkdir(exist_ok=True)
    notebooks = sorted((HERE.parent / "tutorials").glob("*.ipynb"))
    for notebook in notebooks:
        (target / notebook.name).write_bytes(notebook.read_bytes())
    entries = "\n".join(f"   {notebook.stem}" for notebook in notebooks)
    toctree = (
        f".. toctree::\n   :maxdepth: 1\n\n{entries}\n"
        if notebooks
        else ("No tutorial has been published yet.\n")
    )
    (target / "index.rst").write_text(
        "Tutorials\n=========\n\n"
        "Notebooks from the repository's ``tutorials/`` folder, rendered with the outputs of "
        "their full run. Each also runs in CI in a fast smoke mode (``PYROFLOWS_SMOKE=1``).\n\n"
        + toctree
    )


_collect_tutorials()

nb_execution_mode = "off"  # tutorials are rendered with the outputs of their full run
myst_enable_extensions = ["dollarmath"]
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_sections"]  # included by pages

html_theme = "furo"
html_title = f"pyroflows {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
