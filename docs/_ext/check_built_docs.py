"""Check the built documentation: complete API reference and flow catalogue.

* Every class and function in the ``__all__`` of the public modules has an entry in the
  ``objects.inv`` Sphinx wrote (under its public path or its defining module).
* The catalogue page has a row for every entry of ``pyroflows.transforms.REGISTRY``.

Usage: python docs/_ext/check_built_docs.py docs/_build/html
"""

from __future__ import annotations

import inspect
import sys
import zlib
from importlib import import_module
from pathlib import Path

# The public modules: every class and function in their __all__ is documented (here) and has a
# docstring with an example (tests/test_docs.py reads this same list).
PUBLIC_MODULES = (
    "pyroflows",
    "pyroflows.transforms",
    "pyroflows.nn",
    "pyroflows.data",
    "pyroflows.demo",
    "pyroflows.cli",
    "pyroflows.distributions",
    "pyroflows.infer",
    "pyroflows.train",
    "pyroflows.checkpoint",
    "pyroflows.runs",
    "pyroflows.diagnostics",
    "pyroflows.experiments.linear_couplings",
    "pyroflows.experiments.padding",
    "pyroflows.experiments.depth",
)


def documented_names(inventory: Path) -> set[str]:
    """The object names listed in a Sphinx ``objects.inv``."""
    raw = inventory.read_bytes()
    body = raw.split(b"\n", 4)[4]
    lines = zlib.decompress(body).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if line.strip()}


def missing_objects(names: set[str]) -> list[str]:
    """Public classes and functions with no entry in ``names`` under any of their paths."""
    paths: dict[int, set[str]] = {}
    for module_name in PUBLIC_MODULES:
        module = import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                known = paths.setdefault(id(obj), {f"{obj.__module__}.{obj.__qualname__}"})
                known.add(f"{module_name}.{name}")
    return sorted(min(known) for known in paths.values() if not known & names)


def missing_catalogue_rows(catalogue_html: str) -> list[str]:
    """Registry entries whose name does not appear as a code literal in the catalogue."""
    from pyroflows.transforms import REGISTRY

    return [name for name in REGISTRY if f'<span class="pre">{name}</span>' not in catalogue_html]


if __name__ == "__main__":
    html = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    absent = missing_objects(documented_names(html / "objects.inv"))
    rows = missing_catalogue_rows((html / "catalogue.html").read_text())
    if absent:
        print("not in the API reference:", *absent, sep="\n  ")
    if rows:
        print("not in the flow catalogue:", *rows, sep="\n  ")
    if absent or rows:
        sys.exit(1)
    print("API reference and flow catalogue cover every public object and registered flow")
