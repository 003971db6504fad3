"""Planar flows (Rezende & Mohamed 2015), with a numerical inverse."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn import FlowParameters
from ._args import _check_hidden_dims
from ._base import FlowModule
from ._root import RootFinder

__all__ = ["Planar"]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


class Planar(FlowModule):
    r"""Planar flow: a single-unit residual layer that bends space along one hyperplane.

    .. math::
        y = x + \hat u \tanh(w^T x + b), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = \log\left(1 + (1 - \tanh^2(w^T x + b))\, w^T \hat u\right),

    where :math:`\hat u = u + \left(m(w^T u) - w^T u\right) \frac{w}{\lVert w \rVert^2}`,
    :math:`m(a) = -1 + \log(1 + e^a)`, guarantees :math:`w^T \hat u > -1`, which makes the map
    invertible (appendix A.1 of the paper).

    **Inverse** (Pyro has none): writing :math:`\alpha = w^T x`, the forward map gives the
    scalar equation :math:`\alpha + w^T \hat u \tanh(\alpha + b) = w^T y`, strictly increasing
    in :math:`\alpha` and bracketed by :math:`w^T y \pm |w^T \hat u|`. It is solved per sample
    by the shared :class:`~pyroflows.transforms.RootFinder` (tolerance ``eps**0.75`` relative,
    100 iterations at most, an error if that is not enough), then
    :math:`x = y - \hat u \tanh(\alpha + b)`.

    Domain and codomain ``real_vector``, ``event_dim = 1``. Forward and log-det
    :math:`O(D)` per sample (the log-det is cached from the forward pass, so scoring a sample
    is free); the inverse costs :math:`O(D)` per Newton iteration (typically 3-8). With
    ``context_dim > 0``, :math:`u, w, b` are outputs of an MLP of the context.

    Args:
        input_dim: event size :math:`D`.
        hidden_dims: hidden sizes of the context network (conditional only).
        root_finder: settings of the numerical inverse (tolerance, iteration cap, raise/warn).
        context_dim: context size (``0``: unconditional); keyword-only.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
        arXiv:1505.05770.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> flow = Planar(2)
        >>> model = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1),
        ...                                      [flow])
        >>> x = model.rsample((3,))
        >>> model.log_prob(x).shape
        torch.Size([3])
        >>> bool(torch.allclose(flow.inv(x), flow.inv(x.clone()), atol=1e-6))
        True
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        root_finder: RootFinder | None = None,
        *,
        context_dim: int = 0,
    ) -> None:
        super().__init__(input_dim, context_dim)
        bound = input_dim**-0.5
        init = {
            "u": torch.empty(input_dim).uniform_(-bound, bound),
            "w": torch.empty(input_dim).uniform_(-bound, bound),
            "bias": torch.empty(()).uniform_(-bound, bound),
        }
        self.params = FlowParameters(init, context_dim, _check_hidden_dims(hidden_dims))
        self.root_finder = root_finder if root_finder is not None else RootFinder()

    def _vectors(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""Return :math:`\hat u`, :math:`w`, :math:`b` and :math:`w^T \hat u`."""
        p = self.params(context)
        u, w, bias = p["u"], p["w"], p["bias"]
        wu = _dot(w, u)
        u_hat = u + ((F.softplus(wu) - 1 - wu) / _dot(w, w)).unsqueeze(-1) * w
        return u_hat, w, bias, _dot(w, u_hat)

    @staticmethod
    def _log_det_at(tanh: Tensor, w_dot_u_hat: Tensor) -> Tensor:
        return torch.log1p((1 - tanh**2) * w_dot_u_hat)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u_hat, w, bias, w_dot_u_hat = self._vectors(context)
        tanh = torch.tanh(_dot(w, x) + bias)
        y = x + tanh.unsqueeze(-1) * u_hat
        return y, self._log_det_at(tanh, w_dot_u_hat)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u_hat, w, bias, w_dot_u_hat = self._vectors(context)
        target = _dot(w, y)
        reach = w_dot_u_hat.abs()

        def along_w(alpha: Tensor) -> tuple[Tensor, Tensor]:
            tanh = torch.tanh(alpha + bias)
            return alpha + w_dot_u_hat * tanh, 1 + w_dot_u_hat * (1 - tanh**2)

        alpha = self.root_finder(along_w, target, target - reach, target + reach)
        tanh = torch.tanh(alpha + bias)
        x = y - tanh.unsqueeze(-1) * u_hat
        return x, self._log_det_at(tanh, w_dot_u_hat)
