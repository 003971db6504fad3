"""Radial flows (Rezende & Mohamed 2015), with their closed-form inverse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn import FlowParameters
from ._args import _check_hidden_dims
from ._base import FlowModule

__all__ = ["Radial"]


class Radial(FlowModule):
    r"""Radial flow: contracts or expands space around a learnable centre.

    .. math::
        y = x + \beta h(\alpha, r) (x - x_0), \quad r = \lVert x - x_0 \rVert, \quad
        h(\alpha, r) = \frac{1}{\alpha + r},

    .. math::
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = (D - 1) \log(1 + \beta h) + \log\left(1 + \beta h - \beta r h^2\right),

    with :math:`\alpha = \log(1 + e^{a}) > 0` and :math:`\beta = -\alpha + \log(1 + e^{b})`,
    so :math:`\beta > -\alpha`, the paper's invertibility condition.

    **Inverse** (closed form; Pyro has none): the radius obeys
    :math:`r_y = r (1 + \beta / (\alpha + r))`, i.e. the quadratic
    :math:`r^2 + (\alpha + \beta - r_y) r - \alpha r_y = 0`, which has exactly one
    non-negative root (computed in a cancellation-free form); then
    :math:`x = x_0 + (y - x_0) (\alpha + r) / (\alpha + r + \beta)`.

    Domain and codomain ``real_vector``, ``event_dim = 1``. Forward, inverse and log-det all
    cost :math:`O(D)` per sample. With ``context_dim > 0``, :math:`x_0, a, b` come from an MLP
    of the context.

    Args:
        input_dim: event size :math:`D`.
        hidden_dims: hidden sizes of the context network (conditional only).
        context_dim: context size (``0``: unconditional); keyword-only.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
        arXiv:1505.05770; Tabak & Turner, "A Family of Nonparametric Density Estimation
        Algorithms", 2013.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = Radial(3)
        >>> x = torch.randn(5, 3)
        >>> y = flow(x)
        >>> bool(torch.allclose(flow.inv(y.clone()), x, atol=1e-5))
        True
    """

    def __init__(
        self, input_dim: int, hidden_dims: Sequence[int] | None = None, *, context_dim: int = 0
    ) -> None:
        super().__init__(input_dim, context_dim)
        bound = input_dim**-0.5
        init = {
            "center": torch.empty(input_dim).uniform_(-bound, bound),
            "alpha_raw": torch.empty(()).uniform_(-bound, bound),
            "beta_raw": torch.empty(()).uniform_(-bound, bound),
        }
        self.params = FlowParameters(init, context_dim, _check_hidden_dims(hidden_dims))

    def _coefficients(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        r"""Return the centre :math:`x_0`, :math:`\alpha` and :math:`\beta`."""
        p = self.params(context)
        alpha = F.softplus(p["alpha_raw"])
        beta = -alpha + F.softplus(p["beta_raw"])
        return p["center"], alpha, beta

    def _log_det_at(self, radius: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        # 1 + beta h - beta r h^2 = 1 + beta h (alpha h): no r h^2 to overflow or underflow
        h = 1 / (alpha + radius)
        beta_h = beta * h
        return (self.input_dim - 1) * torch.log1p(beta_h) + torch.log1p(beta_h * alpha * h)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        center, alpha, beta = self._coefficients(context)
        offset = x - center
        radius = offset.norm(dim=-1)
        y = x + (beta / (alpha + radius)).unsqueeze(-1) * offset
        return y, self._log_det_at(radius, alpha, beta)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        center, alpha, beta = self._coefficients(context)
        offset_y = y - center
        radius_y = offset_y.norm(dim=-1)
        # Non-negative root of r^2 + b r - alpha r_y = 0 with b = alpha + beta - r_y, written
        # without cancellation: 2 alpha r_y / (b + disc) for b >= 0, (disc - b) / 2 otherwise;
        # disc = sqrt(b^2 + 4 alpha r_y) as a hypot, which does not overflow for huge r_y.
        b = alpha + beta - radius_y
        disc = torch.hypot(b, 2 * torch.sqrt(alpha * radius_y))
        positive = b >= 0
        safe_denominator = torch.where(positive, b + disc, torch.ones_like(disc))
        radius = torch.where(positive, 2 * alpha * radius_y / safe_denominator, (disc - b) / 2)
        ratio = 1 / (1 + beta / (alpha + radius))  # (alpha + r) / (alpha + r + beta), r = inf too
        x = center + ratio.unsqueeze(-1) * offset_y
        return x, self._log_det_at(radius, alpha, beta)
