r"""Monotone element-wise transformers: the maps that coupling and autoregressive layers apply.

A coupling or autoregressive layer computes, for the coordinates it transforms, parameters
:math:`\theta` from other coordinates (and a context), then applies an increasing scalar map
:math:`\tau(\cdot; \theta)` to each coordinate. The transformer is that map, given explicit
parameter tensors: it owns no learnable state, so one layer class serves every transformer.

Every transformer has ``params_per_dim`` (:math:`P`), ``forward(x, params)`` and
``inverse(y, params)`` with ``x, y`` of shape ``(..., d)`` and ``params`` of shape
``(..., P, d)``, both returning the transformed tensor and the element-wise
:math:`\log|\partial y / \partial x|` of shape ``(..., d)`` (of the forward map, in both
directions), and ``identity_params(d)``: parameters at which the map is (close to) the identity,
used to initialise the conditioner's output bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Additive", "Affine", "ElementwiseTransformer"]


def default_hidden_dims(input_dim: int) -> list[int]:
    """Conditioner hidden sizes used when none are given: two layers of ``max(32, 4 D)``."""
    return [max(32, 4 * input_dim)] * 2


@torch.no_grad()
def start_at_identity(output_layer: nn.Linear, transformer: ElementwiseTransformer, dim: int):
    """Zero a conditioner's output weights and set its bias to the identity parameters."""
    output_layer.weight.zero_()
    output_layer.bias.copy_(transformer.identity_params(dim).flatten())


def _clamp_keep_gradient(value: Tensor, low: float, high: float) -> Tensor:
    """Clamp the value but let the gradient through unchanged (as Pyro's flows do)."""
    return value + (value.clamp(low, high) - value).detach()


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


class Affine(ElementwiseTransformer):
    r"""Affine transformer :math:`y = \mu + e^{s} x` with parameters :math:`(\mu, s)`.

    The log-scale is clamped to ``[log_scale_min, log_scale_max]`` in value (gradients pass
    unchanged), as in Pyro and the MAF reference code; :math:`\log|\partial y/\partial x| = s`.
    With ``stable=True`` it is the gated update of IAF,

    .. math::
        \sigma = \mathrm{sigmoid}(s + b_\sigma), \qquad y = \sigma x + (1 - \sigma)\mu,
        \qquad \log|\partial y / \partial x| = \log \sigma ,

    whose scale is bounded by 1, which keeps deep IAF stacks well conditioned
    (:math:`b_\sigma = 2`, so an untrained layer passes most of its input through).
    :math:`\log \sigma` is also bounded below by ``log_scale_min`` (in value; gradients pass),
    unlike Pyro's, so that the layer stays invertible in floating point far from the data.

    Args:
        stable: use the gated (sigmoid) parameterisation.
        log_scale_min: lower clamp of :math:`s` (of :math:`\log\sigma` when stable).
        log_scale_max: upper clamp of :math:`s` (plain affine only).
        sigmoid_bias: :math:`b_\sigma` of the stable variant.

    References:
        Kingma et al., "Improving Variational Inference with Inverse Autoregressive Flow",
        2016, arXiv:1606.04934; Dinh et al., "Density estimation using Real NVP", 2017,
        arXiv:1605.08803.

    Example:
        >>> import torch
        >>> params = torch.tensor([[1.0], [0.0]])  # mu = 1, s = 0
        >>> Affine().forward(torch.tensor([2.0]), params)
        (tensor([3.]), tensor([0.]))
    """

    params_per_dim = 2

    def __init__(
        self,
        stable: bool = False,
        log_scale_min: float = -5.0,
        log_scale_max: float = 3.0,
        sigmoid_bias: float = 2.0,
    ) -> None:
        self.stable = stable
        self.log_scale_min, self.log_scale_max = log_scale_min, log_scale_max
        self.sigmoid_bias = sigmoid_bias

    def _shift_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = params.unbind(-2)
        if self.stable:
            # log(sigma), bounded below like the plain log-scale: far outside the training
            # range an unbounded gate can underflow to 0 and the layer stops being invertible.
            log_gate = F.logsigmoid(raw + self.sigmoid_bias)
            log_gate = _clamp_keep_gradient(log_gate, self.log_scale_min, 0.0)
            return (1 - log_gate.exp()) * mean, log_gate
        return mean, _clamp_keep_gradient(raw, self.log_scale_min, self.log_scale_max)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`\mu + e^{s} x` and :math:`s`."""
        shift, log_scale = self._shift_and_log_scale(params)
        return shift + x * log_scale.exp(), log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`(y - \mu) e^{-s}` and :math:`s`."""
        shift, log_scale = self._shift_and_log_scale(params)
        return (y - shift) * (-log_scale).exp(), log_scale

    def __repr__(self) -> str:
        return f"Affine(stable={self.stable})"


class Additive(ElementwiseTransformer):
    r"""Additive (volume-preserving) transformer :math:`y = x + \mu`, :math:`\log|J| = 0`.

    References:
        Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", 2015,
        arXiv:1410.8516.

    Example:
        >>> import torch
        >>> Additive().forward(torch.tensor([2.0]), torch.tensor([[1.0]]))
        (tensor([3.]), tensor([0.]))
    """

    params_per_dim = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x + \mu` and zeros."""
        shift = params[..., 0, :]
        y = x + shift
        return y, torch.zeros_like(y)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y - \mu` and zeros."""
        shift = params[..., 0, :]
        x = y - shift
        return x, torch.zeros_like(x)
