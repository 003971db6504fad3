"""Affine-type transformers: affine (RealNVP, MAF, IAF), additive (NICE), leaky ReLU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ElementwiseTransformer

__all__ = ["Additive", "Affine", "PReLU"]


class Affine(ElementwiseTransformer):
    r"""Affine transformer :math:`y = \mu + e^{s} x` with parameters :math:`(\mu, s)`.

    The log-scale is clamped to ``[log_scale_min, log_scale_max]`` (as in Pyro);
    :math:`\log|\partial y/\partial x| = s`. Outside the bounds its gradient is zero, unlike
    Pyro's ``clamp_preserve_gradients``: with the gradient passed through, the network's raw
    log-scale can drift without limit while the value sits at the bound, and IAF guides went
    NaN on Neal's funnel (see ``benchmarks/bench_posteriors.py``); values are the same.
    Bounds of ``None`` leave it free (element-wise affine layers and ActNorm, whose scales are
    set from data).
    With ``stable=True`` it is the gated update of IAF,

    .. math::
        \sigma = \mathrm{sigmoid}(s + b_\sigma), \qquad y = \sigma x + (1 - \sigma)\mu,
        \qquad \log|\partial y / \partial x| = \log \sigma ,

    whose scale is bounded by 1, which keeps deep IAF stacks well conditioned
    (:math:`b_\sigma = 2`, so an untrained layer passes most of its input through).
    :math:`\log \sigma` is also bounded below by ``log_scale_min``,
    unlike Pyro's, so that the layer stays invertible in floating point far from the data.

    Args:
        stable: use the gated (sigmoid) parameterisation.
        log_scale_min: lower clamp of :math:`s` (of :math:`\log\sigma` when stable);
            ``None``: none.
        log_scale_max: upper clamp of :math:`s` (plain affine only); ``None``: none.
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
        log_scale_min: float | None = -5.0,
        log_scale_max: float | None = 3.0,
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
            if self.log_scale_min is not None:
                log_gate = log_gate.clamp(min=self.log_scale_min)
            return (1 - log_gate.exp()) * mean, log_gate
        if self.log_scale_min is None and self.log_scale_max is None:
            return mean, raw
        return mean, raw.clamp(self.log_scale_min, self.log_scale_max)

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`\mu + e^{s} x` and :math:`s`."""
        shift, log_scale = self._shift_and_log_scale(params)
        return shift + x * log_scale.exp(), log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`(y - \mu) e^{-s}` and :math:`s`."""
        shift, log_scale = self._shift_and_log_scale(params)
        return (y - shift) * (-log_scale).exp(), log_scale

    def __repr__(self) -> str:
        bounds = (self.log_scale_min, self.log_scale_max)
        text = (
            ""
            if bounds == (-5.0, 3.0)
            else f", log_scale_min={bounds[0]}, log_scale_max={bounds[1]}"
        )
        return f"Affine(stable={self.stable}{text})"


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


class PReLU(ElementwiseTransformer):
    r"""Leaky ReLU with a learnable positive slope :math:`a = e^{\ell}` below zero.

    .. math::
        y = \begin{cases} x & x \ge 0 \\ e^{\ell} x & x < 0 \end{cases}, \qquad
        \log\left|\frac{\partial y}{\partial x}\right| = \ell\,[x < 0] ;

    the inverse is the same map with slope :math:`e^{-\ell}` (signs are preserved). One
    parameter :math:`\ell` per dimension; ``identity_params`` is :math:`\ell = 0`.

    References:
        He et al., "Delving Deep into Rectifiers" (PReLU), 2015, arXiv:1502.01852.

    Example:
        >>> import torch
        >>> PReLU().forward(torch.tensor([2.0, -2.0]), torch.tensor([[-0.6931, -0.6931]]))[0]
        tensor([ 2.0000, -1.0000])
    """

    params_per_dim = 1

    @staticmethod
    def _leaky(x: Tensor, log_slope: Tensor) -> tuple[Tensor, Tensor]:
        negative = x < 0
        y = torch.where(negative, x * log_slope.exp(), x)
        return y, torch.where(negative, log_slope, torch.zeros_like(log_slope))

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return the leaky ReLU of ``x`` and :math:`\ell [x < 0]`."""
        return self._leaky(x, params[..., 0, :])

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return the inverse map of ``y`` and the forward log-slope at the result."""
        x, log_slope_inverse = self._leaky(y, -params[..., 0, :])
        return x, -log_slope_inverse
