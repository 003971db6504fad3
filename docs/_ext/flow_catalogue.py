"""The ``flow-catalogue`` directive: one table of every registered flow, read from the registry.

Generated at build time from :data:`pyroflows.transforms.REGISTRY`, so the catalogue cannot
drift from the code.
"""

from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from pyroflows.transforms import REGISTRY

COLUMNS = (
    "name",
    "class",
    "family",
    "forward cost",
    "inverse",
    "inverse cost",
    "log-det",
    "conditional",
    "fast direction",
    "event dim",
    "reference",
)


def _inverse_text(spec) -> str:
    if spec.inverse == "numerical":
        return "numerical (:class:`~pyroflows.transforms.RootFinder`, tol ``eps**0.75``)"
    return spec.inverse


def _row(spec) -> list[str]:
    classes = ", ".join(f":class:`~{cls.__module__}.{cls.__qualname__}`" for cls in spec.classes)
    return [
        f"``{spec.name}``",
        classes,
        spec.family,
        spec.forward_cost,
        _inverse_text(spec),
        spec.inverse_cost,
        spec.log_det,
        "yes" if spec.conditional else "no",
        spec.fast_direction,
        str(spec.event_dim),
        spec.reference,
    ]


class FlowCatalogue(SphinxDirective):
    """Render the registry as a list-table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        lines = [".. list-table::", "   :header-rows: 1", "   :class: flow-catalogue", ""]
        for cells in [list(COLUMNS)] + [_row(spec) for spec in REGISTRY.values()]:
            for j, cell in enumerate(cells):
                lines.append(f"   {'* -' if j == 0 else '  -'} {cell}")
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="flow-catalogue"), 0, container)
        return container.children


def setup(app):
    """Register the directive."""
    app.add_directive("flow-catalogue", FlowCatalogue)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
