"""Small numerical functions shared by flows and guides (each written once here)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["clamp_in_value", "inverse_softplus"]


def inverse_softplus(value: float | Tensor) -> float | Tensor:
    r"""Return :math:`\log(e^v - 1)`, the :math:`x` with :math:`\mathrm{softplus}(x) = v > 0`.

    A float in double precision, or a tensor in its own dtype.

    Example:
        >>> import torch.nn.functional as F, torch
        >>> round(float(F.softplus(torch.tensor(inverse_softplus(0.3)))), 6)
        0.3
    """
    if isinstance(value, Tensor):
        return torch.log(torch.expm1(value))
    return math.log(math.expm1(value))


def clamp_in_value(value: Tensor, low: float | Tensor, high: float | Tensor) -> Tensor:
    r"""Clamp the value to ``[low, high]`` while the gradient passes unchanged (as Pyro's flows do).

    The value is :math:`\min(\max(v, l), h)`; the gradient is that of :math:`v` itself.

    Example:
        >>> import torch
        >>> x = torch.tensor([-9.0, 0.5, 9.0], requires_grad=True)
        >>> y = clamp_in_value(x, -5.0, 3.0)
        >>> y.sum().backward()
        >>> y.tolist(), x.grad.tolist()
        ([-5.0, 0.5, 3.0], [1.0, 1.0, 1.0])
    """
    clamped = value.clamp(low, high)
    if not value.requires_grad:  # no autograd: skip the two ops of the pass-through
        return clamped
    return value + (clamped - value).detach()
