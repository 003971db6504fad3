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
    event = "" if spec.event_dim == 1 else f" (event dim {spec.event_dim})"
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


def setup(app):
    """Register the directive."""
    app.add_directive("flow-catalogue", FlowCatalogue)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
