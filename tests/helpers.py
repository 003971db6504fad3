"""Small helpers shared by test modules in several folders."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


def perturbed(module: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    """``module`` with every parameter moved, in place, by ``scale`` standard normal noise.

    Moves a flow off its identity start so that its checks see a generic map; the noise comes
    from a local generator seeded with ``seed`` (CPU parameters).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise)
    return module


def jacobian_matrix(function: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The Jacobian of ``function`` at one event ``x`` (any shape) as an ``(N, N)`` matrix."""
    jac = torch.autograd.functional.jacobian(lambda v: function(v).reshape(-1), x)
    return jac.reshape(x.numel(), x.numel())


def jacobian_log_det(function: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """log|det| of the Jacobian of ``function`` at one event ``x``, by autograd."""
    return torch.linalg.slogdet(jacobian_matrix(function, x)).logabsdet
