"""Stacks: the two generic ones (any transformer) and those named after their papers.

:func:`autoregressive_stack` and :func:`coupling_stack` take any element-wise ``transformer``;
``maf``, ``iaf``, ``realnvp``, ``nice``, ``nsf`` and ``naf`` are those stacks with their
paper's transformer (each also takes ``transformer=`` to swap it). Every stack takes
``(input_dim, hidden_dims, num_layers, ...)`` positionally and ``context_dim`` by keyword only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from torch import nn

from ._base import FlowModule
from ._root import RootFinder
from .autoregressive import Autoregressive
from .compose import FlowSequence
from .coupling import Coupling, coupling_mask
from .elementwise import ElementwiseAffine
from .linear import LULinear
from .transformers import (
    Additive,
    Affine,
    DeepSigmoid,
    ElementwiseTransformer,
    RationalQuadraticSpline,
)

__all__ = [
    "autoregressive_stack",
    "coupling_stack",
    "iaf",
    "maf",
    "naf",
    "nice",
    "nsf",
    "realnvp",
]


Orders = Literal["alternate", "random"]


def _orderings(num_layers: int, orders: Orders = "alternate") -> list[str]:
    """Each layer's MADE ordering: natural and reversed in turn, or a random one per layer."""
    if orders == "random":
        return ["random"] * num_layers
    if orders != "alternate":
        raise ValueError(f"orders must be 'alternate' or 'random', got {orders!r}")
    return ["natural" if k % 2 == 0 else "reverse" for k in range(num_layers)]


def autoregressive_stack(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 5,
    transformer: ElementwiseTransformer | None = None,
    invert: bool = True,
    *,
    context_dim: int = 0,
    activation: str | type[nn.Module] = "relu",
    orders: Orders = "alternate",
) -> FlowSequence:
    r"""``num_layers`` :class:`~pyroflows.transforms.Autoregressive` layers with any transformer.

    .. math::
        f = f_L \circ \cdots \circ f_1, \qquad
        (f_k(x))_i = \tau\big(x_i; \theta_i(x_{<i}, c)\big) \text{ (or its inverse)},

    MADE orderings alternating natural and reversed from layer to layer (``orders="alternate"``)
    or a random ordering per layer drawn from torch's global RNG (``orders="random"``; the
    orders are buffers, so a saved ``state_dict`` restores them). ``invert=True`` takes
    each layer's ``.inv`` (the MAF direction: parallel density, sequential sampling);
    ``invert=False`` keeps the layers (the IAF direction: parallel sampling). Default
    transformer :class:`~pyroflows.transforms.Affine`.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import RationalQuadraticSpline
        >>> flow = autoregressive_stack(3, num_layers=2, hidden_dims=[16],
        ...                             transformer=RationalQuadraticSpline(count_bins=4))
        >>> flow.inverse_and_log_det(torch.randn(5, 3))[1].shape
        torch.Size([5])
    """
    transformer = Affine() if transformer is None else transformer
    layers = [
        Autoregressive(
            input_dim,
            hidden_dims,
            transformer,
            order,
            context_dim=context_dim,
            activation=activation,
        )
        for order in _orderings(num_layers, orders)
    ]
    return FlowSequence([layer.inv for layer in layers] if invert else layers)


def coupling_stack(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 8,
    transformer: ElementwiseTransformer | None = None,
    mixing: Callable[[int], FlowModule] | None = None,
    *,
    context_dim: int = 0,
) -> FlowSequence:
    r"""``num_layers`` :class:`~pyroflows.transforms.Coupling` layers with any transformer.

    .. math::
        y_b = \tau\big(x_b; \theta(x_a, c)\big), \qquad y_a = x_a,

    the halves :math:`a, b` swapped from one layer to the next, each layer optionally followed by
    ``mixing(input_dim)`` (e.g. :class:`~pyroflows.transforms.LULinear`, as in NSF). Both
    directions cost one conditioner pass per layer. Default transformer
    :class:`~pyroflows.transforms.Affine` (RealNVP).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import Additive, LULinear
        >>> flow = coupling_stack(4, num_layers=2, hidden_dims=[16], transformer=Additive(),
        ...                       mixing=LULinear)
        >>> len(flow), flow.forward_and_log_det(torch.randn(5, 4))[1].shape
        (4, torch.Size([5]))
    """
    transformer = Affine() if transformer is None else transformer
    layers: list[FlowModule] = []
    for k in range(num_layers):  # in this order: a mixing layer may draw a random start
        mask = coupling_mask(input_dim, "half", flip=k % 2 == 1)
        layers.append(Coupling(input_dim, hidden_dims, transformer, mask, context_dim=context_dim))
        if mixing is not None:
            layers.append(mixing(input_dim))
    return FlowSequence(layers)


def maf(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 5,
    transformer: ElementwiseTransformer | None = None,
    *,
    context_dim: int = 0,
    activation: str | type[nn.Module] = "relu",
    orders: Orders = "alternate",
) -> FlowSequence:
    r"""Masked autoregressive flow: ``num_layers`` affine autoregressive layers, inverted.

    Each layer is an affine :class:`~pyroflows.transforms.Autoregressive` layer's ``.inv``, so
    the density direction (data to noise,
    :math:`u_i = (x_i - \mu_i(x_{<i})) e^{-s_i(x_{<i})}`) is one parallel MADE pass per layer
    and sampling is sequential (:math:`D` passes per layer). Layers alternate natural
    and reversed MADE orderings instead of permutation layers (``orders="random"``: a random
    ordering per layer, as :func:`autoregressive_stack`). For density estimation.

    ``transformer`` swaps the affine map for another (a spline: the autoregressive NSF).

    References:
        Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density
        Estimation", 2017, arXiv:1705.07057.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> flow = maf(3, num_layers=2, hidden_dims=[16])
        >>> model = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1),
        ...                                      [flow])
        >>> model.log_prob(torch.randn(8, 3)).shape
        torch.Size([8])
    """
    transformer = Affine() if transformer is None else transformer
    return autoregressive_stack(
        input_dim,
        hidden_dims,
        num_layers,
        transformer,
        context_dim=context_dim,
        activation=activation,
        orders=orders,
    )


def iaf(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 5,
    stable: bool = True,
    transformer: ElementwiseTransformer | None = None,
    *,
    context_dim: int = 0,
    activation: str | type[nn.Module] = "relu",
) -> FlowSequence:
    r"""Inverse autoregressive flow: ``num_layers`` affine autoregressive layers.

    Sampling :math:`z_i = \mu_i(u_{<i}) + e^{s_i(u_{<i})} u_i` is one parallel MADE pass per
    layer and scoring the sample reuses the log-det computed on the way: the flow for
    variational posteriors. Default ``stable=True`` uses IAF's gated update. Orderings
    alternate between layers.

    ``transformer`` swaps the (gated) affine map for another; ``activation`` sets MADE's
    hidden activation (``"relu"``, ``"tanh"``, ``"elu"``).

    References:
        Kingma et al., "Improving Variational Inference with Inverse Autoregressive Flow",
        2016, arXiv:1606.04934.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> flow = iaf(3, num_layers=2, hidden_dims=[16])
        >>> guide = dist.TransformedDistribution(dist.Normal(torch.zeros(3), 1.0).to_event(1),
        ...                                      [flow])
        >>> z = guide.rsample((8,))
        >>> guide.log_prob(z).shape
        torch.Size([8])
    """
    transformer = Affine(stable=stable) if transformer is None else transformer
    return autoregressive_stack(
        input_dim,
        hidden_dims,
        num_layers,
        transformer,
        invert=False,
        context_dim=context_dim,
        activation=activation,
    )


def realnvp(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 8,
    transformer: ElementwiseTransformer | None = None,
    *,
    context_dim: int = 0,
) -> FlowSequence:
    r"""RealNVP: ``num_layers`` affine couplings, halves swapped from one layer to the next.

    :math:`y_b = \mu(x_a) + e^{s(x_a)} x_b`; both directions cost one conditioner pass per
    layer, so RealNVP serves density estimation and sampling alike.

    ``transformer`` swaps the affine map for another.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803.

    Example:
        >>> import torch
        >>> flow = realnvp(4, num_layers=2, hidden_dims=[16])
        >>> x = torch.randn(3, 4)
        >>> bool(torch.allclose(flow.inv(flow(x).clone()), x, atol=1e-5))
        True
    """
    return coupling_stack(input_dim, hidden_dims, num_layers, transformer, context_dim=context_dim)


def nice(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 4,
    *,
    context_dim: int = 0,
) -> FlowSequence:
    r"""NICE: ``num_layers`` additive couplings, then a learnable diagonal scaling.

    :math:`y_b = x_b + \mu(x_a)` is volume preserving; the final
    :class:`~pyroflows.transforms.ElementwiseAffine` (the paper's diagonal scaling layer)
    carries the whole log-det :math:`\sum_i s_i`.

    References:
        Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", 2015,
        arXiv:1410.8516.

    Example:
        >>> import torch
        >>> flow = nice(4, num_layers=2, hidden_dims=[16])
        >>> x = torch.randn(3, 4)
        >>> flow.log_abs_det_jacobian(x, flow(x)).tolist()  # scaling starts at 1
        [0.0, 0.0, 0.0]
    """
    couplings = coupling_stack(
        input_dim, hidden_dims, num_layers, Additive(), context_dim=context_dim
    )
    return FlowSequence([*couplings.layers, ElementwiseAffine(input_dim, context_dim=context_dim)])


def nsf(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 4,
    count_bins: int = 8,
    bound: float = 3.0,
    autoregressive: bool = False,
    transformer: ElementwiseTransformer | None = None,
    *,
    context_dim: int = 0,
    orders: Orders = "alternate",
) -> FlowSequence:
    r"""Neural spline flow: ``num_layers`` rational-quadratic spline layers.

    Each layer maps :math:`y_b = \mathrm{RQS}(x_b; \theta(x_a))` (coupling) or
    :math:`y_i = \mathrm{RQS}(x_i; \theta_i(x_{<i}))` (autoregressive), with
    :math:`\mathrm{RQS}` the monotone rational-quadratic spline of
    :class:`~pyroflows.transforms.RationalQuadraticSpline`.

    Coupling form (default): spline couplings with swapped halves, each followed by an
    :class:`~pyroflows.transforms.LULinear` layer that mixes the coordinates (as in the
    paper); both directions are one conditioner pass per layer. Autoregressive form
    (``autoregressive=True``): spline autoregressive layers with alternating orderings
    (``orders="random"``: a random ordering per layer), inverted as in :func:`maf` so that
    density evaluation is parallel.

    ``transformer`` replaces the spline built from ``count_bins`` and ``bound``.

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", 2019,
        arXiv:1906.04032.

    Example:
        >>> import torch
        >>> flow = nsf(4, num_layers=2, hidden_dims=[16], count_bins=4)
        >>> x = torch.randn(3, 4)
        >>> bool(torch.allclose(flow.inv(flow(x).clone()), x, atol=1e-4))
        True
    """
    if transformer is None:
        transformer = RationalQuadraticSpline(count_bins, bound)
    if autoregressive:
        return autoregressive_stack(
            input_dim, hidden_dims, num_layers, transformer, context_dim=context_dim, orders=orders
        )
    if orders != "alternate":
        raise ValueError(
            f"orders={orders!r} is for the autoregressive form (autoregressive=True); the "
            "coupling form mixes coordinates with its LULinear layers"
        )
    return coupling_stack(
        input_dim, hidden_dims, num_layers, transformer, mixing=LULinear, context_dim=context_dim
    )


def naf(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 5,
    hidden_units: int = 16,
    depth: int = 1,
    root_finder: RootFinder | None = None,
    *,
    context_dim: int = 0,
) -> FlowSequence:
    r"""Neural autoregressive flow: ``num_layers`` deep-sigmoidal autoregressive layers, inverted.

    Each layer is :func:`~pyroflows.transforms.neural_autoregressive`'s ``.inv``, so the
    density direction (data to noise)
    maps every coordinate through a monotone sigmoid network whose weights come from a MADE
    pass over the coordinates before it,

    .. math::
        u_i = \sigma^{-1}\Big(\sum_{k=1}^{K} w_{ik}\, \sigma(a_{ik} x_i + b_{ik})\Big),
        \qquad (a_i, b_i, w_i) = \mathrm{MADE}(x_{<i}, c),

    (``depth`` such sublayers chained per coordinate; see
    :class:`~pyroflows.transforms.DeepSigmoid`), with
    :math:`\log|\det J| = \sum_i \log \partial u_i / \partial x_i`. Density evaluation is one
    parallel MADE pass per layer; sampling is sequential (:math:`D` MADE passes per layer, each
    with a root-find, as the deep sigmoidal map has no closed-form inverse). Layers alternate
    natural and reversed MADE orderings. Defaults: 5 layers, MADE hidden sizes
    ``[max(32, 4 D)] * 2``, :math:`K = 16` hidden units and one sublayer per coordinate. For
    density estimation. ``root_finder`` sets the tolerance and iteration cap of sampling's
    root-finds (default :class:`~pyroflows.transforms.RootFinder`).

    References:
        Huang, Krueger, Lacoste & Courville, "Neural Autoregressive Flows", 2018,
        arXiv:1804.00779.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> flow = naf(2, num_layers=2, hidden_dims=[16], hidden_units=8)
        >>> model = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1),
        ...                                      [flow])
        >>> model.log_prob(torch.randn(8, 2)).shape
        torch.Size([8])
        >>> model.sample((3,)).shape
        torch.Size([3, 2])
    """
    transformer = DeepSigmoid(hidden_units, depth, root_finder)
    return autoregressive_stack(
        input_dim, hidden_dims, num_layers, transformer, context_dim=context_dim
    )
