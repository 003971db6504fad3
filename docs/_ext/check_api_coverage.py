"""Fail when a public class or function of pyroflows is missing from the built API reference.

Reads the ``objects.inv`` Sphinx wrote into the HTML output and looks up every object in the
``__all__`` of the public modules, under its public path or its defining module.
Usage: python docs/_ext/check_api_coverage.py docs/_build/html
"""

from __future__ import annotations

import inspect
import sys
import zlib
from importlib import import_module
from pathlib import Path

PUBLIC_MODULES = (
    "pyroflows",
    "pyroflows.transforms",
    "pyroflows.nn",
    "pyroflows.data",
    "pyroflows.demo",
    "pyroflows.cli",
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


if __name__ == "__main__":
    html = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_build/html")
    absent = missing_objects(documented_names(html / "objects.inv"))
    if absent:
        print("not in the API reference:", *absent, sep="\n  ")
        sys.exit(1)
    print("API reference covers every public class and function")
