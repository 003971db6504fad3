"""The flow options the guides use where the caller gives none, each with its reason.

One table for :class:`~pyroflows.infer.AutoFlow` and :class:`~pyroflows.infer.AmortizedFlow`;
the caller's options always win. The measurements behind each choice are in
``benchmarks/bench_posteriors.py`` and the benchmarks page of the docs.
"""

from __future__ import annotations

from typing import Any

from ..transforms import REGISTRY

__all__ = [
    "AUTOFLOW_INIT_SCALE",
    "GUIDE_SPLINE_BOUND",
    "autoflow_flow_options",
    "autoflow_linear",
    "guide_flow_options",
]

# AutoFlow's default flow starts as N(init, 1) in unconstrained space, as Pyro's flow guides
# start as N(0, 1): with 0.1 (AutoNormal's default) the plain IAF's draws reached 1e14 on the
# banana (KL 1e58) and went NaN on the funnel at d = 10; with 1.0 the KL was 0.011 and 0.08.
AUTOFLOW_INIT_SCALE = 1.0

# Registry flows after which AutoFlow puts a lower-triangular linear layer by default, so
# that the guide's family contains AutoMultivariateNormal's. Measured on the posterior suite
# (3 seeds): the 100-D correlated Gaussian's KL fell from 9.2 to 2.1 (AutoMultivariateNormal
# 2.3) at unchanged funnel, banana and U1 scores. Other flows are unmeasured: pass linear=True.
_AUTOFLOW_LINEAR = frozenset({"iaf"})

# Splines are the identity outside [-bound, bound]. A guide's flow acts on standard normal
# noise (the location and scale come after it), so bound 5 covers all but 6e-7 of its input
# where the registry's 3 leaves 0.27% and, once trained, often far more (an amortized
# client's guide reached -ELBO +1,096 with bound 3 against -126 with bound 5).
GUIDE_SPLINE_BOUND = 5.0


def _one_hidden_layer(dim: int) -> list[int]:
    return [min(max(32, 4 * dim), 64)]


# Registry defaults that AutoFlow overrides, by flow name; a callable gets the latent size.
# "iaf": three layers of the plain affine update, each MADE with one hidden layer of
# max(32, 4 D) units. On the posterior suite this fitted as well as five layers with two
# hidden layers each, at less than half the time per step: with Pyro's optimizer a step costs
# about as much per parameter tensor as per flop at these sizes. The gated update
# (stable=True) fitted the funnels worse (KL 0.10 against 0.03 at d = 2).
_AUTOFLOW_DEFAULTS: dict[str, dict[str, Any]] = {
    "iaf": {"stable": False, "num_layers": 3, "hidden_dims": _one_hidden_layer},
}


def autoflow_linear(flow: str | object, linear: bool | None = None) -> bool:
    """Whether :class:`~pyroflows.infer.AutoFlow` ends ``flow`` with a triangular linear layer.

    ``linear`` (the caller's choice) wins; by default only the registry flows measured on the
    posterior suite get one (``"iaf"``); a callable flow is used as given.

    Example:
        >>> autoflow_linear("iaf"), autoflow_linear("nsf"), autoflow_linear("nsf", True)
        (True, False, True)
    """
    if linear is not None:
        return bool(linear)
    return isinstance(flow, str) and flow in _AUTOFLOW_LINEAR


def guide_flow_options(flow: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options any guide builds registry flow ``flow`` with: the spline bound, then ``options``.

    Example:
        >>> guide_flow_options("spline_autoregressive", {"count_bins": 4})
        {'bound': 5.0, 'count_bins': 4}
        >>> guide_flow_options("planar", {})
        {}
    """
    defaults = {"bound": GUIDE_SPLINE_BOUND} if "bound" in (REGISTRY[flow].options() or ()) else {}
    return {**defaults, **options}


def autoflow_flow_options(
    flow: str, options: dict[str, Any], dim: int | None = None
) -> dict[str, Any]:
    """The options :class:`~pyroflows.infer.AutoFlow` builds ``flow`` with, latent size ``dim``.

    :func:`guide_flow_options` plus AutoFlow's own defaults, chosen on the posterior suite;
    the caller's ``options`` win. Defaults that depend on the latent size are resolved when
    ``dim`` is given (left as callables otherwise: only their names matter for checking).

    Example:
        >>> autoflow_flow_options("iaf", {"num_layers": 2}, dim=10)
        {'stable': False, 'num_layers': 2, 'hidden_dims': [40]}
    """
    defaults = _AUTOFLOW_DEFAULTS.get(flow, {})
    merged = guide_flow_options(flow, {**defaults, **options})
    if dim is None:
        return merged
    return {
        key: value(dim) if callable(value) and value is defaults.get(key) else value
        for key, value in merged.items()
    }
