"""Directives generated from the code, so the docs cannot drift from it.

* ``flow-catalogue``: one table of every registered flow, read from
  :data:`pyroflows.transforms.REGISTRY`;
* ``flow-modules``: one API section per public module of :mod:`pyroflows.transforms` (a new
  family module is documented without touching the docs).
"""

from __future__ import annotations

import importlib
import pkgutil

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

import pyroflows.transforms
from pyroflows.transforms import REGISTRY

# Documented by hand on the page (the registry and the base machinery come first).
_HAND_WRITTEN = {"registry"}

COLUMNS = (
    "flow",
    "family",
    "cost: forward / inverse",
    "inverse",
    "log-det",
    "conditional",
    "fast direction",
    "reference",
)


def _inverse_text(spec) -> str:
    if spec.inverse == "numerical":
        return "numerical (:class:`~pyroflows.transforms.RootFinder`)"
    return spec.inverse


def _row(spec) -> list[str]:
    classes = ", ".join(f":class:`~{cls.__module__}.{cls.__qualname__}`" for cls in spec.classes)
    ranks = ", ".join(str(rank) for rank in spec.event_dims)
    event = "" if spec.event_dims == (1,) else f" (events of rank {ranks})"
    return [
        f"``{spec.name}`` {classes}{event}",
        spec.family,
        f"{spec.forward_cost} / {spec.inverse_cost}",
        _inverse_text(spec),
        spec.log_det,
        "yes" if spec.conditional else "no",
        spec.fast_direction,
        spec.reference,
    ]


class FlowCatalogue(SphinxDirective):
    """Render the registry as a list-table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :class: flow-catalogue",
            "   :widths: 18 9 20 10 7 8 8 20",
            "",
        ]
        for cells in [list(COLUMNS)] + [_row(spec) for spec in REGISTRY.values()]:
            for j, cell in enumerate(cells):
                lines.append(f"   {'* -' if j == 0 else '  -'} {cell}")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="flow-catalogue"), 0, container)
        return container.children


def _public_modules(package) -> list[tuple[str, bool]]:
    """Public submodules of ``package``, subpackages before their own submodules."""
    names = []
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        short = info.name.rsplit(".", 1)[1]
        if short.startswith("_") or short in _HAND_WRITTEN:
            continue
        names.append((info.name, info.ispkg))
        if info.ispkg:
            names += _public_modules(importlib.import_module(info.name))
    return names


class FlowModules(SphinxDirective):
    """One section per public module of ``pyroflows.transforms``, titled by its docstring."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = []
        for name, is_package in _public_modules(pyroflows.transforms):
            module = importlib.import_module(name)
            title = (module.__doc__ or name).strip().splitlines()[0].rstrip(".")
            title = f"{title} (``{name.removeprefix('pyroflows.transforms.')}``)"
            lines += [title, "-" * len(title), "", f".. automodule:: {name}"]
            # a package re-exports its modules' objects, which are documented there
            lines += ["   :no-members:", ""] if is_package else [""]
        container = nodes.section()  # titles are allowed inside
        nested_parse_with_titles(self.state, StringList(lines, source="flow-modules"), container)
        return container.children


def setup(app):
    """Register the directives."""
    app.add_directive("flow-catalogue", FlowCatalogue)
    app.add_directive("flow-modules", FlowModules)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
