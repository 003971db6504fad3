"""Element-wise flows: each coordinate goes through its own increasing scalar map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..nn import FlowParameters
from ._base import FlowModule

__all__ = ["ElementwiseAffine", "LeakyReLU", "elementwise_affine", "leaky_relu"]


def _affine(x: Tensor, shift: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``shift + exp(log_scale) * x`` and its log-det summed over the last dim."""
    y = shift + x * log_scale.exp()
    return y, log_scale.sum(-1).expand(y.shape[:-1])


class ElementwiseAffine(FlowModule):
    r"""Element-wise affine flow with a learnable shift and log-scale per dimension.

    .. math::
        y_i = \mu_i + e^{s_i} x_i, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_{i=1}^D s_i .

    Domain and codomain: ``real_vector``, ``event_dim = 1``, inputs ``(..., D)``. With
    ``context_dim > 0``, :math:`\mu(c)` and :math:`s(c)` come from an MLP of the context.
    Both directions and the log-det cost :math:`O(D)` per sample; the inverse
    :math:`x_i = (y_i - \mu_i) e^{-s_i}` is exact. Starts as the identity.

    Args:
        input_dim: event size :math:`D`.
        context_dim: context size (``0``: unconditional).
        hidden_dims: hidden sizes of the context network (conditional only).

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
        arXiv:1505.05770 (element-wise flows as the simplest family).

    Example:
        >>> import torch, pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> flow = ElementwiseAffine(2)
        >>> model = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1),
        ...                                      [flow])
        >>> x = model.rsample((4,))
        >>> model.log_prob(x).shape
        torch.Size([4])
    """

    def __init__(
        self, input_dim: int, context_dim: int = 0, hidden_dims: Sequence[int] | None = None
    ) -> None:
        super().__init__(input_dim, context_dim)
        zeros = torch.zeros(input_dim)
        self.params = FlowParameters({"shift": zeros, "log_scale": zeros}, context_dim, hidden_dims)

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.params(context)
        return _affine(x, p["shift"], p["log_scale"])

    def _backward(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        p = self.params(context)
        inverse_scale = (-p["log_scale"]).exp()
        x, log_det_inverse = _affine(y, -p["shift"] * inverse_scale, -p["log_scale"])
        return x, -log_det_inverse


class LeakyReLU(FlowModule):
    r"""Learnable leaky ReLU: identity for positive inputs, a learnable positive slope below.

    .. math::
        y_i = \begin{cases} x_i & x_i \ge 0 \\ a_i x_i & x_i < 0 \end{cases}, \quad
        a_i = e^{\ell_i} > 0, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_i \ell_i\,[x_i < 0] .

    Like PReLU with one slope per dimension, kept positive so that the map is a bijection of
    :math:`\mathbb{R}^D` (``event_dim = 1``). The inverse is the same map with slopes
    :math:`1/a_i` (the sign of each coordinate is preserved), so both directions and the
    log-det cost :math:`O(D)` per sample. Conditional with ``context_dim > 0`` (slopes from an
    MLP of the context). Starts with slope ``init_slope``.

    Args:
        input_dim: event size :math:`D`.
        context_dim: context size (``0``: unconditional).
        hidden_dims: hidden sizes of the context network (conditional only).
        init_slope: initial slope :math:`a` of every dimension.

    References:
        He et al., "Delving Deep into Rectifiers" (PReLU), 2015, arXiv:1502.01852; used as a
        flow layer e.g. by Oliva et al., "Transformation Autoregressive Networks", 2018,
        arXiv:1801.09819.

    Example:
        >>> import torch
        >>> flow = LeakyReLU(3, init_slope=0.5)
        >>> flow(torch.tensor([[1.0, -2.0, 0.0]])).detach()
        tensor([[ 1., -1.,  0.]])
    """

    def __init__(
        self,
        input_dim: int,
        context_dim: int = 0,
        hidden_dims: Sequence[int] | None = None,
        init_slope: float = 1.0,
    ) -> None:
        if not init_slope > 0:
            raise ValueError(f"init_slope must be positive, got {init_slope}")
        super().__init__(input_dim, context_dim)
        log_slope = torch.full((input_dim,), float(init_slope)).log()
        self.params = FlowParameters({"log_slope": log_slope}, context_dim, hidden_dims)

    @staticmethod
    def _leaky(x: Tensor, log_slope: Tensor) -> tuple[Tensor, Tensor]:
        negative = x < 0
        y = torch.where(negative, x * log_slope.exp(), x)
        log_det = torch.where(negative, log_slope, torch.zeros_like(log_slope)).sum(-1)
        return y, log_det

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._leaky(x, self.params(context)["log_slope"])

    def _backward(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, log_det_inverse = self._leaky(y, -self.params(context)["log_slope"])
        return x, -log_det_inverse


def elementwise_affine(
    input_dim: int, context_dim: int = 0, hidden_dims: Sequence[int] | None = None
) -> ElementwiseAffine:
    r"""Build an :class:`ElementwiseAffine` flow, :math:`y = \mu + e^{s} \odot x`.

    Starts as the identity; conditional when ``context_dim > 0``.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
        arXiv:1505.05770.

    Example:
        >>> import torch
        >>> flow = elementwise_affine(3, context_dim=2)
        >>> flow.condition(torch.zeros(2))(torch.ones(3)).shape
        torch.Size([3])
    """
    return ElementwiseAffine(input_dim, context_dim, hidden_dims)


def leaky_relu(
    input_dim: int,
    context_dim: int = 0,
    hidden_dims: Sequence[int] | None = None,
    init_slope: float = 1.0,
) -> LeakyReLU:
    r"""Build a :class:`LeakyReLU` flow: :math:`y_i = x_i` above 0, :math:`a_i x_i` below.

    Every slope :math:`a_i = e^{\ell_i}` starts at ``init_slope`` (default 1: the identity).

    References:
        He et al., "Delving Deep into Rectifiers", 2015, arXiv:1502.01852.

    Example:
        >>> import torch
        >>> flow = leaky_relu(2, init_slope=0.1)
        >>> flow(torch.tensor([-1.0, 2.0])).detach()
        tensor([-0.1000,  2.0000])
    """
    return LeakyReLU(input_dim, context_dim, hidden_dims, init_slope)
