r"""Monotone element-wise transformers: the maps every structure applies coordinate by coordinate.

An element-wise, coupling or autoregressive layer computes parameters :math:`\theta` for the
coordinates it transforms (free, or from other coordinates and a context), then applies an
increasing scalar map :math:`\tau(\cdot; \theta)` to each of them. The transformer is that map,
given explicit parameter tensors: it owns no learnable state, so one layer class per structure
(:class:`~pyroflows.transforms.Elementwise`, :class:`~pyroflows.transforms.Coupling`,
:class:`~pyroflows.transforms.Autoregressive`) serves every transformer.

Every transformer has ``params_per_dim`` (:math:`P`), ``forward(x, params)`` and
``inverse(y, params)`` with ``x, y`` of shape ``(..., d)`` and ``params`` of shape
``(..., P, d)``, both returning the transformed tensor and the element-wise
:math:`\log|\partial y / \partial x|` of shape ``(..., d)`` (of the forward map, in both
directions), and ``identity_params(d)``: parameters at which the map is (close to) the identity,
used to initialise the conditioner's output bias.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ElementwiseTransformer"]


@torch.no_grad()
def _start_at_identity(output_layer: nn.Linear, transformer: ElementwiseTransformer, dim: int):
    """Zero a conditioner's output weights and set its bias to the identity parameters."""
    output_layer.weight.zero_()
    output_layer.bias.copy_(transformer.identity_params(dim).flatten())


class ElementwiseTransformer:
    r"""Interface of a monotone element-wise map :math:`y_i = \tau(x_i; \theta_i)`.

    Subclasses give ``params_per_dim`` and ``forward``/``inverse`` returning the map and
    :math:`\log|\partial \tau / \partial x_i|` element-wise (see the module documentation
    for shapes); ``identity_params`` are parameters of the identity map.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762, section 3.1 (transformers and conditioners).

    Example:
        >>> import torch
        >>> class Shift(ElementwiseTransformer):
        ...     params_per_dim = 1
        ...     def forward(self, x, params):
        ...         return x + params[..., 0, :], torch.zeros_like(x)
        ...     def inverse(self, y, params):
        ...         return y - params[..., 0, :], torch.zeros_like(y)
        >>> Shift().forward(torch.ones(2), Shift().identity_params(2))[0]
        tensor([1., 1.])
    """

    params_per_dim: int = 0

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``y = tau(x; params)`` and ``log|dy/dx|`` element-wise."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``x = tau^{-1}(y; params)`` and the forward ``log|dy/dx|`` at ``x``."""
        raise NotImplementedError

    def identity_params(self, dim: int) -> Tensor:
        """Parameters ``(P, dim)`` at which the map is the identity (or close to it)."""
        return torch.zeros(self.params_per_dim, dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
