r"""Lowercase constructors with Pyro's names *and signatures*: port code by changing one import.

``import pyro.distributions.transforms as T`` becomes ``import pyroflows.transforms as T``:
each helper here takes the positional arguments and defaults of the Pyro helper of the same
name (``affine_autoregressive(input_dim, hidden_dims=None, **kwargs)``,
``spline_coupling(input_dim, split_dim=None, hidden_dims=None, count_bins=8, bound=3.0)``,
``conditional_spline(input_dim, context_dim, ...)``, ...) and builds the pyroflows class it
names, whose docstring holds the maths, reference and costs. pyroflows' own options come after
Pyro's, keyword-only (``context_dim``, ``ordering``, ``seed``, ``root_finder``, ...). Where
the two libraries differ on purpose (spline order, default hidden sizes, identity start) the
migration page of the documentation lists it. Pyro helpers of families pyroflows does not
have raise ``NotImplementedError`` (see :mod:`pyroflows.transforms.pyro_compat`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from pyro.distributions.torch_transform import ComposeTransformModule
from torch import Tensor
from torch.distributions import Transform

from ..nn.made import Ordering
from ._args import _check_spline_order
from ._base import FlowModule, InverseFlow
from ._root import RootFinder
from .autoregressive import Autoregressive
from .compose import FlowSequence
from .coupling import Coupling
from .elementwise import Spline
from .linear import Householder, Permutation
from .planar import Planar
from .radial import Radial
from .transformers import Affine, DeepSigmoid, RationalQuadraticSpline

__all__ = [
    "affine_autoregressive",
    "affine_coupling",
    "conditional_affine_autoregressive",
    "conditional_affine_coupling",
    "conditional_neural_autoregressive",
    "conditional_planar",
    "conditional_radial",
    "conditional_spline",
    "conditional_spline_autoregressive",
    "householder",
    "iterated",
    "neural_autoregressive",
    "permute",
    "planar",
    "radial",
    "spline",
    "spline_autoregressive",
    "spline_coupling",
]


def _positive_context(context_dim: int) -> int:
    if not isinstance(context_dim, int) or isinstance(context_dim, bool) or context_dim < 1:
        raise ValueError(f"a conditional flow needs context_dim >= 1, got {context_dim!r}")
    return context_dim


def _split_mask(input_dim: int, split_dim: int | None, dim: int, mask: Tensor | None):
    """Pyro's ``split_dim`` (the first ``split_dim`` coordinates pass through) as a mask."""
    if dim != -1 or not isinstance(input_dim, int):
        raise NotImplementedError(
            f"coupling over dim={dim} of a multi-dimensional event is not in pyroflows yet "
            "(only dim=-1 on vectors); use pyro.distributions.transforms.affine_coupling"
        )
    if split_dim is None:
        return mask
    if mask is not None:
        raise ValueError("give split_dim or mask, not both")
    if not 0 < split_dim < input_dim:
        raise ValueError(f"split_dim must be in 1..{input_dim - 1}, got {split_dim}")
    return torch.arange(input_dim) < split_dim


def affine_autoregressive(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    *,
    log_scale_min_clip: float = -5.0,
    log_scale_max_clip: float = 3.0,
    sigmoid_bias: float = 2.0,
    stable: bool = False,
    context_dim: int = 0,
    ordering: Ordering = "natural",
    seed: int | None = None,
) -> Autoregressive:
    r"""An :class:`~pyroflows.transforms.Autoregressive` layer with the affine transformer.

    :math:`y_i = \mu_i + e^{s_i} x_i`, :math:`s_i` clamped to
    ``[log_scale_min_clip, log_scale_max_clip]`` in value; ``stable=True`` uses IAF's gated
    update with ``sigmoid_bias`` (Pyro's keyword arguments, mapped to
    :class:`~pyroflows.transforms.Affine`).

    Example:
        >>> import torch
        >>> affine_autoregressive(4, [16], stable=True)(torch.zeros(2, 4)).shape
        torch.Size([2, 4])
    """
    transformer = Affine(stable, log_scale_min_clip, log_scale_max_clip, sigmoid_bias)
    return Autoregressive(
        input_dim, hidden_dims, transformer, ordering, seed, context_dim=context_dim
    )


def conditional_affine_autoregressive(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs: Any
) -> Autoregressive:
    r""":func:`affine_autoregressive` conditioned on a context: :math:`\theta_i(x_{<i}, c)`.

    Builds a conditional :class:`~pyroflows.transforms.Autoregressive` layer; ``kwargs`` as
    :func:`affine_autoregressive`.

    Example:
        >>> import torch
        >>> flow = conditional_affine_autoregressive(3, 2, [16])
        >>> flow.condition(torch.zeros(2))(torch.ones(5, 3)).shape
        torch.Size([5, 3])
    """
    context_dim = _positive_context(context_dim)
    return affine_autoregressive(input_dim, hidden_dims, context_dim=context_dim, **kwargs)


def affine_coupling(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    split_dim: int | None = None,
    dim: int = -1,
    *,
    log_scale_min_clip: float = -5.0,
    log_scale_max_clip: float = 3.0,
    context_dim: int = 0,
    mask: Tensor | None = None,
) -> Coupling:
    r"""A RealNVP :class:`~pyroflows.transforms.Coupling` layer, :math:`y_b = \mu + e^{s} x_b`.

    As Pyro's: the first ``split_dim`` coordinates (default :math:`\lfloor D/2 \rfloor`) pass
    through; ``mask`` (pyroflows) picks any other subset.

    Example:
        >>> import torch
        >>> flow = affine_coupling(4, [16], split_dim=1)
        >>> flow.identity_index.tolist(), flow(torch.ones(2, 4)).shape
        ([0], torch.Size([2, 4]))
    """
    mask = _split_mask(input_dim, split_dim, dim, mask)
    transformer = Affine(log_scale_min=log_scale_min_clip, log_scale_max=log_scale_max_clip)
    return Coupling(input_dim, hidden_dims, transformer, mask, context_dim=context_dim)


def conditional_affine_coupling(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    split_dim: int | None = None,
    dim: int = -1,
    **kwargs: Any,
) -> Coupling:
    r""":func:`affine_coupling` conditioned on a context: :math:`\theta(x_a, c)`.

    Builds a conditional :class:`~pyroflows.transforms.Coupling` layer.

    Example:
        >>> import torch
        >>> flow = conditional_affine_coupling(4, 2, [16])
        >>> flow.condition(torch.zeros(2))(torch.ones(4)).shape
        torch.Size([4])
    """
    context_dim = _positive_context(context_dim)
    return affine_coupling(
        input_dim, hidden_dims, split_dim, dim, context_dim=context_dim, **kwargs
    )


def spline(
    input_dim: int,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "quadratic",
    *,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    event_dim: int | None = 0,
) -> Spline:
    r"""An element-wise :class:`~pyroflows.transforms.Spline` flow, :math:`y_i = \mathrm{RQS}(x_i)`.

    Pyro's ``event_dim`` (0): the log-det has one entry per element.

    Example:
        >>> import torch
        >>> flow = spline(3, count_bins=5, bound=4.0)
        >>> x = torch.ones(3)
        >>> flow.params.knots.shape, flow.log_abs_det_jacobian(x, flow(x)).shape
        (torch.Size([14, 3]), torch.Size([3]))
    """
    return Spline(
        input_dim,
        count_bins,
        bound,
        order,
        context_dim=context_dim,
        hidden_dims=hidden_dims,
        event_dim=event_dim,
    )


def conditional_spline(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "quadratic",
) -> Spline:
    r"""A conditional element-wise :class:`~pyroflows.transforms.Spline`, :math:`\theta(c)`.

    Example:
        >>> import torch
        >>> flow = conditional_spline(2, 3, count_bins=4)
        >>> flow.condition(torch.zeros(5, 3))(torch.ones(5, 2)).shape
        torch.Size([5, 2])
    """
    context_dim = _positive_context(context_dim)
    return spline(
        input_dim, count_bins, bound, order, context_dim=context_dim, hidden_dims=hidden_dims
    )


def spline_coupling(
    input_dim: int,
    split_dim: int | None = None,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    *,
    context_dim: int = 0,
    mask: Tensor | None = None,
    identity: bool = False,
) -> Coupling:
    r"""A :class:`~pyroflows.transforms.Coupling` layer with the spline transformer (NSF).

    As Pyro's ``SplineCoupling``: :math:`y_b = \mathrm{RQS}(x_b; \theta(x_a))` and the first
    ``split_dim`` coordinates :math:`a` through an element-wise spline with free parameters,
    :math:`y_a = \mathrm{RQS}(x_a; \phi)` (the layer's ``passthrough_transformer``; it starts
    at the identity, Pyro's at random knots). ``identity=True`` (Pyro's ``SplineCoupling``
    argument) leaves :math:`x_a` unchanged, as the NSF paper does (and this helper did).

    Example:
        >>> import torch
        >>> x = torch.randn(2, 4)
        >>> flow = spline_coupling(4, 2, count_bins=4)
        >>> bool(torch.allclose(flow(x), x, atol=1e-6)), flow.passthrough.params.shape
        (True, torch.Size([11, 2]))
        >>> spline_coupling(4, 2, count_bins=4, identity=True).passthrough is None
        True
    """
    mask = _split_mask(input_dim, split_dim, -1, mask)
    transformer = RationalQuadraticSpline(count_bins, bound)
    return Coupling(
        input_dim,
        hidden_dims,
        transformer,
        mask,
        context_dim=context_dim,
        passthrough_transformer=None if identity else transformer,
    )


def spline_autoregressive(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "quadratic",
    *,
    context_dim: int = 0,
    ordering: Ordering = "natural",
    seed: int | None = None,
) -> Autoregressive:
    r"""An :class:`~pyroflows.transforms.Autoregressive` layer with the spline transformer.

    :math:`y_i = \mathrm{RQS}(x_i; \theta_i(x_{<i}))`.

    Example:
        >>> import torch
        >>> spline_autoregressive(3, [16], count_bins=4)(torch.zeros(5, 3)).shape
        torch.Size([5, 3])
    """
    _check_spline_order(order)
    transformer = RationalQuadraticSpline(count_bins, bound)
    return Autoregressive(
        input_dim, hidden_dims, transformer, ordering, seed, context_dim=context_dim
    )


def conditional_spline_autoregressive(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    count_bins: int = 8,
    bound: float = 3.0,
    order: str = "quadratic",
) -> Autoregressive:
    r""":func:`spline_autoregressive` conditioned on a context: :math:`\theta_i(x_{<i}, c)`.

    Builds a conditional :class:`~pyroflows.transforms.Autoregressive` layer.

    Example:
        >>> import torch
        >>> flow = conditional_spline_autoregressive(3, 2, [16], count_bins=4)
        >>> flow.condition(torch.zeros(2))(torch.zeros(5, 3)).shape
        torch.Size([5, 3])
    """
    context_dim = _positive_context(context_dim)
    return spline_autoregressive(
        input_dim, hidden_dims, count_bins, bound, order, context_dim=context_dim
    )


def neural_autoregressive(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    activation: str = "sigmoid",
    width: int = 16,
    *,
    context_dim: int = 0,
    depth: int = 1,
    ordering: Ordering = "natural",
    root_finder: RootFinder | None = None,
    seed: int | None = None,
) -> Autoregressive:
    r"""An :class:`~pyroflows.transforms.Autoregressive` layer, deep sigmoidal transformer.

    :math:`y_i = \mathrm{DSF}(x_i; \theta_i(x_{<i}, c))` with
    :class:`~pyroflows.transforms.DeepSigmoid` (``width`` hidden units :math:`K`, ``depth``
    :math:`L`; Pyro's ``activation`` must be ``"sigmoid"``); the inverse is numerical
    (``root_finder``), which Pyro's has not. Use ``.inv`` for a density model, as
    :func:`~pyroflows.transforms.naf` does.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = neural_autoregressive(3, [16], width=8)
        >>> x = torch.randn(4, 3)
        >>> bool(torch.allclose(flow.inv(flow(x).clone()), x, atol=1e-4))
        True
    """
    if activation != "sigmoid":
        raise NotImplementedError(
            f"activation={activation!r}: pyroflows' neural autoregressive flow is the deep "
            "sigmoidal flow (activation='sigmoid'); use pyro.distributions.transforms for "
            "the ELU, LeakyReLU and tanh variants"
        )
    transformer = DeepSigmoid(width, depth, root_finder)
    return Autoregressive(
        input_dim, hidden_dims, transformer, ordering, seed, context_dim=context_dim
    )


def conditional_neural_autoregressive(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    activation: str = "sigmoid",
    width: int = 16,
) -> Autoregressive:
    r""":func:`neural_autoregressive` conditioned on a context: :math:`\theta_i(x_{<i}, c)`.

    Builds a conditional :class:`~pyroflows.transforms.Autoregressive` layer.

    Example:
        >>> import torch
        >>> flow = conditional_neural_autoregressive(2, 3, [16], width=4)
        >>> flow.condition(torch.zeros(3))(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """
    context_dim = _positive_context(context_dim)
    return neural_autoregressive(input_dim, hidden_dims, activation, width, context_dim=context_dim)


def planar(
    input_dim: int,
    *,
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
    return Planar(input_dim, hidden_dims, root_finder, context_dim=context_dim)


def conditional_planar(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None
) -> Planar:
    r"""A conditional :class:`~pyroflows.transforms.Planar` flow, :math:`u, w, b` from :math:`c`.

    Example:
        >>> import torch
        >>> conditional_planar(2, 3).condition(torch.zeros(3))(torch.ones(2)).shape
        torch.Size([2])
    """
    return Planar(input_dim, hidden_dims, context_dim=_positive_context(context_dim))


def radial(
    input_dim: int, *, context_dim: int = 0, hidden_dims: Sequence[int] | None = None
) -> Radial:
    r"""A :class:`~pyroflows.transforms.Radial` flow :math:`y = x + \beta (x - x_0) / (\alpha + r)`.

    Example:
        >>> import torch
        >>> flow = radial(3, context_dim=1).condition(torch.tensor([[0.0], [1.0]]))
        >>> flow(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    return Radial(input_dim, hidden_dims, context_dim=context_dim)


def conditional_radial(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None
) -> Radial:
    r"""A conditional :class:`~pyroflows.transforms.Radial` flow: :math:`x_0, \alpha, \beta(c)`.

    Example:
        >>> import torch
        >>> conditional_radial(2, 3).condition(torch.zeros(3))(torch.ones(2)).shape
        torch.Size([2])
    """
    return Radial(input_dim, hidden_dims, context_dim=_positive_context(context_dim))


def householder(input_dim: int, count_transforms: int | None = None) -> Householder:
    r"""A :class:`~pyroflows.transforms.Householder` flow :math:`y = Q x`, reflections' product.

    ``count_transforms`` reflections, default :math:`\lfloor D/2 \rfloor + 1` as Pyro's.

    Example:
        >>> import torch
        >>> flow = householder(3, count_transforms=2)
        >>> float(flow.log_abs_det_jacobian(torch.ones(3), flow(torch.ones(3))))
        0.0
    """
    count = input_dim // 2 + 1 if count_transforms is None else count_transforms
    return Householder(input_dim, count)


def permute(
    input_dim: int, permutation: Sequence[int] | Tensor | None = None, dim: int = -1
) -> Permutation:
    r"""A :class:`~pyroflows.transforms.Permutation` :math:`y_i = x_{\pi(i)}` (Pyro's ``permute``).

    ``permutation`` defaults to a random one from torch's global RNG, as Pyro's.

    Example:
        >>> permute(3, [2, 0, 1]).permutation.tolist()
        [2, 0, 1]
    """
    if dim != -1:
        raise NotImplementedError(
            f"permute over dim={dim} is not in pyroflows yet (only dim=-1); use "
            "pyro.distributions.transforms.permute"
        )
    if permutation is None:
        permutation = torch.randperm(input_dim)
    flow = Permutation(permutation)
    if flow.input_dim != input_dim:
        raise ValueError(f"permutation has {flow.input_dim} entries, input_dim is {input_dim}")
    return flow


def iterated(
    repeats: int, base_fn: Callable[..., Transform], *args: Any, **kwargs: Any
) -> Transform:
    r"""``repeats`` fresh layers ``base_fn(*args, **kwargs)``, :math:`f_R \circ \cdots \circ f_1`.

    A :class:`~pyroflows.transforms.FlowSequence` when every layer is a pyroflows flow, else
    Pyro's ``ComposeTransformModule`` (as Pyro's ``iterated``).

    Example:
        >>> flow = iterated(2, spline_coupling, 4, count_bins=4)
        >>> type(flow).__name__, len(flow)
        ('FlowSequence', 2)
    """
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    layers = [base_fn(*args, **kwargs) for _ in range(repeats)]
    if all(isinstance(layer, (FlowModule, InverseFlow)) for layer in layers):
        return FlowSequence(layers)
    return ComposeTransformModule(layers)
