r"""Pyro's class-level API on pyroflows' structures, Pyro's fixed maps, and what is missing.

* Classes with Pyro's names and signatures that take **your network**, as Pyro's do:
  :class:`AffineAutoregressive` ``(autoregressive_nn, ...)``, :class:`AffineCoupling`
  ``(split_dim, hypernet, ...)``, :class:`SplineAutoregressive`, their ``Conditional*``
  versions (which require a network with a ``context_dim``). Each is a thin subclass of
  :class:`~pyroflows.transforms.Autoregressive` or :class:`~pyroflows.transforms.Coupling`
  with ``conditioner=`` the network, so they are full pyroflows flows (caches, ``.inv``
  module, ``condition``) and the maths is documented there.
* ``elu()``, ``leaky_relu()``, ``tanh()``: Pyro's fixed maps, returned as Pyro builds them.
* :data:`PYRO_MISSING`: Pyro helpers of families pyroflows does not have; calling one raises
  ``NotImplementedError`` naming the family and the Pyro function to use instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.distributions.transforms import ELUTransform, LeakyReLUTransform
from torch import nn
from torch.distributions import TanhTransform, Transform

from ._args import _check_spline_order
from .autoregressive import Autoregressive
from .coupling import Coupling
from .transformers import Affine, RationalQuadraticSpline

__all__ = [
    "PYRO_MISSING",
    "AffineAutoregressive",
    "AffineCoupling",
    "ConditionalAffineAutoregressive",
    "ConditionalAffineCoupling",
    "ConditionalSplineAutoregressive",
    "SplineAutoregressive",
    "elu",
    "leaky_relu",
    "tanh",
]


def _require_context(network: nn.Module, cls: str) -> None:
    if not int(getattr(network, "context_dim", 0) or 0):
        raise ValueError(
            f"{cls} needs a conditional network with a context_dim (e.g. Pyro's "
            f"ConditionalAutoRegressiveNN or ConditionalDenseNN), got {type(network).__name__}"
        )


def _input_dim(network: nn.Module, cls: str) -> int:
    size = getattr(network, "input_dim", None)
    if not isinstance(size, int):
        raise ValueError(
            f"{cls} reads the event size from the network's input_dim attribute, which "
            f"{type(network).__name__} does not have"
        )
    return size


class AffineAutoregressive(Autoregressive):
    r"""Pyro's ``AffineAutoregressive(autoregressive_nn, ...)``: your network, our layer.

    :math:`y_i = \mu_i + e^{s_i} x_i` with :math:`(\mu, s) = \mathrm{arn}(x)` (Pyro's
    ``(mean, log_scale)`` outputs are :class:`~pyroflows.transforms.Affine`'s parameters
    as they are), :math:`s` clamped to ``[log_scale_min_clip, log_scale_max_clip]``;
    ``stable=True`` is the gated update :math:`y = \sigma x + (1 - \sigma)\mu`,
    :math:`\sigma = \mathrm{sigmoid}(s + b)`. An :class:`~pyroflows.transforms.Autoregressive`
    layer with ``conditioner=autoregressive_nn``; the event size is the network's
    ``input_dim``, the inverse runs :math:`D` passes in its ``permutation`` order.

    Example:
        >>> import torch
        >>> from pyro.nn import AutoRegressiveNN
        >>> flow = AffineAutoregressive(AutoRegressiveNN(3, [16]))
        >>> x = torch.randn(4, 3)
        >>> bool(torch.allclose(flow.inv(flow(x).clone()), x, atol=1e-5))
        True
    """

    def __init__(
        self,
        autoregressive_nn: nn.Module,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
        sigmoid_bias: float = 2.0,
        stable: bool = False,
    ) -> None:
        transformer = Affine(stable, log_scale_min_clip, log_scale_max_clip, sigmoid_bias)
        size = _input_dim(autoregressive_nn, type(self).__name__)
        super().__init__(size, transformer=transformer, conditioner=autoregressive_nn)


class ConditionalAffineAutoregressive(AffineAutoregressive):
    r"""Pyro's ``ConditionalAffineAutoregressive(autoregressive_nn, **kwargs)``.

    :class:`AffineAutoregressive` with a conditional network (Pyro's
    ``ConditionalAutoRegressiveNN``): :math:`(\mu, s) = \mathrm{arn}(x, c)`;
    ``flow.condition(c)`` gives the layer at a context.

    Example:
        >>> import torch
        >>> from pyro.nn import ConditionalAutoRegressiveNN
        >>> flow = ConditionalAffineAutoregressive(ConditionalAutoRegressiveNN(3, 2, [16]))
        >>> flow.condition(torch.zeros(2))(torch.ones(5, 3)).shape
        torch.Size([5, 3])
    """

    def __init__(self, autoregressive_nn: nn.Module, **kwargs: Any) -> None:
        _require_context(autoregressive_nn, type(self).__name__)
        super().__init__(autoregressive_nn, **kwargs)


class SplineAutoregressive(Autoregressive):
    r"""Pyro's ``SplineAutoregressive(input_dim, autoregressive_nn, count_bins, bound, order)``.

    :math:`y_i = \mathrm{RQS}(x_i; \theta_i(x_{<i}))` with :math:`\theta` from your network,
    whose ``param_dims`` are ``[count_bins, count_bins, count_bins - 1]`` (widths, heights,
    derivatives: :class:`~pyroflows.transforms.RationalQuadraticSpline`'s rows, unconstrained;
    Pyro's ``order="quadratic"``). An :class:`~pyroflows.transforms.Autoregressive` layer with
    ``conditioner=autoregressive_nn``.

    Example:
        >>> import torch
        >>> from pyro.nn import AutoRegressiveNN
        >>> arn = AutoRegressiveNN(2, [16], param_dims=[4, 4, 3])
        >>> flow = SplineAutoregressive(2, arn, count_bins=4, order="quadratic")
        >>> flow(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        input_dim: int,
        autoregressive_nn: nn.Module,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "quadratic",
    ) -> None:
        _check_spline_order(order)
        transformer = RationalQuadraticSpline(count_bins, bound)
        super().__init__(input_dim, transformer=transformer, conditioner=autoregressive_nn)


class ConditionalSplineAutoregressive(SplineAutoregressive):
    r"""Pyro's ``ConditionalSplineAutoregressive(input_dim, autoregressive_nn, **kwargs)``.

    :class:`SplineAutoregressive` with a conditional network:
    :math:`\theta_i(x_{<i}, c)`.

    Example:
        >>> import torch
        >>> from pyro.nn import ConditionalAutoRegressiveNN
        >>> arn = ConditionalAutoRegressiveNN(2, 3, [16], param_dims=[4, 4, 3])
        >>> flow = ConditionalSplineAutoregressive(2, arn, count_bins=4, order="quadratic")
        >>> flow.condition(torch.zeros(3))(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """

    def __init__(self, input_dim: int, autoregressive_nn: nn.Module, **kwargs: Any) -> None:
        _require_context(autoregressive_nn, type(self).__name__)
        super().__init__(input_dim, autoregressive_nn, **kwargs)


class AffineCoupling(Coupling):
    r"""Pyro's ``AffineCoupling(split_dim, hypernet, *, dim=-1, ...)``: your network, our layer.

    :math:`y_a = x_a` for the first ``split_dim`` coordinates,
    :math:`y_b = \mu + e^{s} x_b` with :math:`(\mu, s) = \mathrm{hypernet}(x_a)` (Pyro's
    ``DenseNN(split_dim, hidden, [D - split_dim] * 2)``). A
    :class:`~pyroflows.transforms.Coupling` layer with ``conditioner=hypernet``; the event size
    is ``split_dim`` plus the size of one output group.

    Example:
        >>> import torch
        >>> from pyro.nn import DenseNN
        >>> flow = AffineCoupling(2, DenseNN(2, [16], [3, 3]))
        >>> x = torch.randn(4, 5)
        >>> bool(torch.allclose(flow.inv(flow(x).clone()), x, atol=1e-5))
        True
    """

    def __init__(
        self,
        split_dim: int,
        hypernet: nn.Module,
        *,
        dim: int = -1,
        log_scale_min_clip: float = -5.0,
        log_scale_max_clip: float = 3.0,
    ) -> None:
        if dim != -1:
            raise NotImplementedError(
                f"coupling over dim={dim} is not in pyroflows yet (only dim=-1 on vectors)"
            )
        param_dims = getattr(hypernet, "param_dims", None)
        if not param_dims:
            raise ValueError(
                f"{type(self).__name__} reads the event size from the network's param_dims "
                f"(Pyro's DenseNN), which {type(hypernet).__name__} does not have"
            )
        input_dim = split_dim + int(param_dims[0])
        transformer = Affine(log_scale_min=log_scale_min_clip, log_scale_max=log_scale_max_clip)
        mask = torch.arange(input_dim) < split_dim
        super().__init__(input_dim, transformer=transformer, mask=mask, conditioner=hypernet)


class ConditionalAffineCoupling(AffineCoupling):
    r"""Pyro's ``ConditionalAffineCoupling(split_dim, hypernet, **kwargs)``.

    :class:`AffineCoupling` with a conditional network (Pyro's ``ConditionalDenseNN``):
    :math:`(\mu, s) = \mathrm{hypernet}(x_a, c)`.

    Example:
        >>> import torch
        >>> from pyro.nn import ConditionalDenseNN
        >>> flow = ConditionalAffineCoupling(2, ConditionalDenseNN(2, 3, [16], [2, 2]))
        >>> flow.condition(torch.zeros(3))(torch.ones(4)).shape
        torch.Size([4])
    """

    def __init__(self, split_dim: int, hypernet: nn.Module, **kwargs: Any) -> None:
        _require_context(hypernet, type(self).__name__)
        super().__init__(split_dim, hypernet, **kwargs)


def elu() -> Transform:
    r"""Pyro's fixed ELU map :math:`y = x` for :math:`x \ge 0`, :math:`e^x - 1` below.

    Returns Pyro's :class:`~pyro.distributions.transforms.ELUTransform` (no parameters).

    Example:
        >>> import torch
        >>> elu()(torch.tensor([-1.0, 1.0]))
        tensor([-0.6321,  1.0000])
    """
    return ELUTransform()


def leaky_relu() -> Transform:
    r"""Pyro's fixed leaky ReLU :math:`y = x` for :math:`x \ge 0`, :math:`0.01 x` below.

    Returns Pyro's :class:`~pyro.distributions.transforms.LeakyReLUTransform`. (Before 0.2
    ``pyroflows.transforms.leaky_relu`` was a deprecated alias of the *learnable*
    :class:`~pyroflows.transforms.LeakyReLU`; Pyro's meaning wins.)

    Example:
        >>> import torch
        >>> leaky_relu()(torch.tensor([-1.0, 1.0]))
        tensor([-0.0100,  1.0000])
    """
    return LeakyReLUTransform()


def tanh() -> Transform:
    r"""Pyro's fixed map :math:`y = \tanh x` (torch's :class:`~torch.distributions.TanhTransform`).

    Example:
        >>> import torch
        >>> tanh()(torch.tensor([0.0]))
        tensor([0.])
    """
    return TanhTransform()


# Pyro helper -> (the family in words, with its paper). Calling one raises.
PYRO_MISSING: dict[str, str] = {
    "batchnorm": "batch-normalisation flows (Dinh et al. 2017)",
    "block_autoregressive": "block neural autoregressive flows (De Cao et al. 2019)",
    "conditional_generalized_channel_permute": (
        "conditional generalized channel permutations (Glow's 1x1 convolutions, Kingma & "
        "Dhariwal 2018)"
    ),
    "conditional_householder": "conditional Householder flows (Tomczak & Welling 2016)",
    "conditional_matrix_exponential": (
        "conditional matrix-exponential flows (Hoogeboom et al. 2020)"
    ),
    "generalized_channel_permute": (
        "generalized channel permutations (Glow's 1x1 convolutions, Kingma & Dhariwal 2018)"
    ),
    "matrix_exponential": "matrix-exponential flows (Hoogeboom et al. 2020)",
    "polynomial": "polynomial (sum-of-squares) flows (Jaini et al. 2019)",
    "sylvester": "Sylvester flows (van den Berg et al. 2018)",
}


def _missing(name: str) -> Callable[..., Transform]:
    family = PYRO_MISSING[name]

    def helper(*args: Any, **kwargs: Any) -> Transform:
        raise NotImplementedError(
            f"{family} are not in pyroflows yet; use Pyro's pyro.distributions.transforms.{name}"
        )

    helper.__name__ = helper.__qualname__ = name
    helper.__doc__ = f"Not in pyroflows yet: {family}; raises ``NotImplementedError``."
    return helper


MISSING_HELPERS: dict[str, Callable[..., Transform]] = {
    name: _missing(name) for name in PYRO_MISSING
}
