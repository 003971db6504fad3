"""Lowercase constructors with Pyro's names: one line each from a structure and a transformer.

These are the helpers a Pyro user already calls (``pyro.distributions.transforms`` has the
same names); each builds the class it names, so its maths, reference and costs are documented
there (e.g. ``ordering`` and ``seed`` of the autoregressive ones: ``seed=None`` draws a
``"random"`` order from torch's global RNG, an int fixes it). Flows with no Pyro
counterpart are built from their classes directly, e.g. ``LULinear(D)`` or
``Coupling(D, transformer=Additive())``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ..nn.made import Ordering
from ._root import RootFinder
from .autoregressive import Autoregressive
from .coupling import Coupling
from .elementwise import Spline
from .linear import Householder
from .planar import Planar
from .radial import Radial
from .transformers import Affine, DeepSigmoid, RationalQuadraticSpline

__all__ = [
    "affine_autoregressive",
    "affine_coupling",
    "householder",
    "neural_autoregressive",
    "planar",
    "radial",
    "spline",
    "spline_autoregressive",
    "spline_coupling",
]


def affine_autoregressive(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    stable: bool = False,
    ordering: Ordering = "natural",
    seed: int | None = None,
) -> Autoregressive:
    r"""An :class:`~pyroflows.transforms.Autoregressive` layer with the affine transformer.

    :math:`y_i = \mu_i + e^{s_i} x_i`; ``stable=True`` uses IAF's gated update.

    Example:
        >>> import torch
        >>> affine_autoregressive(4, stable=True)(torch.zeros(2, 4)).shape
        torch.Size([2, 4])
    """
    transformer = Affine(stable=stable)
    return Autoregressive(input_dim, context_dim, hidden_dims, transformer, ordering, seed)


def affine_coupling(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    mask: Tensor | None = None,
) -> Coupling:
    r"""A RealNVP :class:`~pyroflows.transforms.Coupling` layer, :math:`y_b = \mu + e^{s} x_b`.

    Example:
        >>> import torch
        >>> affine_coupling(4, context_dim=2).condition(torch.zeros(2))(torch.ones(4)).shape
        torch.Size([4])
    """
    return Coupling(input_dim, context_dim, hidden_dims, Affine(), mask)


def spline(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
) -> Spline:
    r"""An element-wise :class:`~pyroflows.transforms.Spline` flow, :math:`y_i = \mathrm{RQS}(x_i)`.

    Example:
        >>> spline(3, count_bins=5, bound=4.0).params.knots.shape
        torch.Size([14, 3])
    """
    return Spline(input_dim, context_dim, hidden_dims, count_bins, bound)


def spline_coupling(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    mask: Tensor | None = None,
) -> Coupling:
    r"""A :class:`~pyroflows.transforms.Coupling` layer with the spline transformer (NSF).

    :math:`y_b = \mathrm{RQS}(x_b; \theta(x_a))`.

    Example:
        >>> import torch
        >>> x = torch.randn(2, 4)
        >>> bool(torch.allclose(spline_coupling(4, count_bins=4)(x), x, atol=1e-6))
        True
    """
    transformer = RationalQuadraticSpline(count_bins, bound)
    return Coupling(input_dim, context_dim, hidden_dims, transformer, mask)


def spline_autoregressive(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    ordering: Ordering = "natural",
    seed: int | None = None,
) -> Autoregressive:
    r"""An :class:`~pyroflows.transforms.Autoregressive` layer with the spline transformer.

    :math:`y_i = \mathrm{RQS}(x_i; \theta_i(x_{<i}))`.

    Example:
        >>> import torch
        >>> spline_autoregressive(3, count_bins=4, hidden_dims=[16])(torch.zeros(5, 3)).shape
        torch.Size([5, 3])
    """
    transformer = RationalQuadraticSpline(count_bins, bound)
    return Autoregressive(input_dim, context_dim, hidden_dims, transformer, ordering, seed)


def neural_autoregressive(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    hidden_units: int = 16,
    depth: int = 1,
    ordering: Ordering = "natural",
    root_finder: RootFinder | None = None,
    seed: int | None = None,
) -> Autoregressive:
    r"""An :class:`~pyroflows.transforms.Autoregressive` layer, deep sigmoidal transformer.

    :math:`y_i = \mathrm{DSF}(x_i; \theta_i(x_{<i}, c))` with
    :class:`~pyroflows.transforms.DeepSigmoid` (``hidden_units`` :math:`K`, ``depth``
    :math:`L`); the inverse is numerical (``root_finder``).
    Use ``.inv`` for a density model, as :func:`~pyroflows.transforms.naf` does.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = neural_autoregressive(3, hidden_dims=[16], hidden_units=8)
        >>> x = torch.randn(4, 3)
        >>> bool(torch.allclose(flow.inv(flow(x).clone()), x, atol=1e-4))
        True
    """
    transformer = DeepSigmoid(hidden_units, depth, root_finder)
    return Autoregressive(input_dim, context_dim, hidden_dims, transformer, ordering, seed)


def planar(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    root_finder: RootFinder | None = None,
) -> Planar:
    r"""A :class:`~pyroflows.transforms.Planar` flow :math:`y = x + \hat u \tanh(w^T x + b)`.

    Example:
        >>> import torch
        >>> flow = planar(2, root_finder=RootFinder(max_iter=50, on_failure="warn"))
        >>> flow.inv(flow(torch.tensor([0.5, -1.0])).clone()).detach()
        tensor([ 0.5000, -1.0000])
    """
    return Planar(input_dim, context_dim, hidden_dims, root_finder)


def radial(
    input_dim: int, context_dim: int = 0, hidden_dims: Sequence[int] | None = None
) -> Radial:
    r"""A :class:`~pyroflows.transforms.Radial` flow :math:`y = x + \beta (x - x_0) / (\alpha + r)`.

    Example:
        >>> import torch
        >>> flow = radial(3, context_dim=1).condition(torch.tensor([[0.0], [1.0]]))
        >>> flow(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    return Radial(input_dim, context_dim, hidden_dims)


def householder(input_dim: int, num_reflections: int | None = None) -> Householder:
    r"""A :class:`~pyroflows.transforms.Householder` flow :math:`y = Q x`, reflections' product.

    Example:
        >>> import torch
        >>> flow = householder(3, num_reflections=2)
        >>> float(flow.log_abs_det_jacobian(torch.ones(3), flow(torch.ones(3))))
        0.0
    """
    return Householder(input_dim, num_reflections)
