"""The flow options the guides use where the caller gives none, each with its reason.

One table for :class:`~pyroflows.infer.AutoFlow` and :class:`~pyroflows.infer.AmortizedFlow`;
the caller's options always win. The measurements behind each choice are in
``benchmarks/bench_posteriors.py`` and the benchmarks page of the docs.
"""

from __future__ import annotations

from typing import Any

from ..transforms import REGISTRY

__all__ = ["GUIDE_SPLINE_BOUND", "guide_flow_options"]

# Splines are the identity outside [-bound, bound]. A guide's flow acts on standard normal
# noise (the location and scale come after it), so bound 5 covers all but 6e-7 of its input
# where the registry's 3 leaves 0.27% and, once trained, often far more (an amortized
# client's guide reached -ELBO +1,096 with bound 3 against -126 with bound 5).
GUIDE_SPLINE_BOUND = 5.0

# Registry defaults that the guides override, by flow name.
_FLOW_DEFAULTS: dict[str, dict[str, Any]] = {
    # the gated update (stable=True) contracts by sigmoid(2) per layer; AutoFlow's
    # standardised start undoes that, so it is kept (see the posterior suite)
    "iaf": {"stable": False},
}


def guide_flow_options(flow: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options a guide builds registry flow ``flow`` with: its defaults, then ``options``.

    Example:
        >>> guide_flow_options("spline_autoregressive", {"count_bins": 4})
        {'bound': 5.0, 'count_bins': 4}
        >>> guide_flow_options("planar", {})
        {}
    """
    defaults = dict(_FLOW_DEFAULTS.get(flow, {}))
    if "bound" in (REGISTRY[flow].options() or ()):
        defaults["bound"] = GUIDE_SPLINE_BOUND
    return {**defaults, **options}
