r"""Amortized flow posteriors for local latents: an encoder plus a conditional flow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MLP, inverse_softplus
from ..transforms import REGISTRY, spec_of
from ._checks import SplineTailCheck
from ._defaults import guide_flow_options
from .posterior import FlowPosterior

__all__ = ["AmortizedFlow"]

_MIN_SCALE = 1e-5


class AmortizedFlow(nn.Module):
    r"""Amortized posterior :math:`q(z \mid x)` for a local latent: encoder + conditional flow.

    An encoder maps each data point :math:`x` to a location, a scale and a context vector
    :math:`h(x)`, and a conditional flow of the registry, conditioned on :math:`h(x)`, shapes
    the noise (the encoder + IAF posterior of Kingma et al. 2016):

    .. math::
        (\mu, \sigma, h) = \mathrm{encoder}(x), \qquad
        z = \mu + \sigma \odot f_{h}(\varepsilon), \qquad
        \log q(z \mid x) = \log \mathcal{N}(\varepsilon; 0, I)
        - \log\left|\det \frac{\partial f_h}{\partial \varepsilon}\right|
        - \sum_i \log\sigma_i .

    ``module(x)`` returns a :class:`~pyroflows.infer.FlowPosterior` with batch shape
    ``x.shape[:-1]``, ready for ``pyro.sample`` inside the data plate, subsampled or not;
    a draw and its log-density cost one encoder pass and one flow pass. With
    ``flow=None`` it is the usual Gaussian encoder (the baseline to compare with).

    The default encoder is an MLP (ELU activations) with output
    :math:`[\mu, \sigma_{\text{raw}}, h]`, :math:`\sigma = \mathrm{softplus}(\sigma_{\text{raw}}
    + \mathrm{softplus}^{-1}(\text{init\_scale})) + 10^{-5}`; its last layer starts at zero
    so every data point starts at :math:`\mathcal{N}(0, \text{init\_scale}^2 I)`. A custom
    ``encoder`` is any module mapping ``(..., input_dim)`` to
    ``(..., 2 * latent_dim + context_dim)``.

    Args:
        input_dim: size of a data point :math:`x` (what the encoder reads).
        latent_dim: size of the local latent :math:`z`.
        flow: registry name of a conditional flow (``"iaf"``, ``"spline_autoregressive"``,
            ``"realnvp"``, ``"planar"``, ...), or ``None`` for a Gaussian posterior.
        context_dim: size of :math:`h(x)`; ``0`` makes the flow unconditional (shared by all
            data points; only :math:`\mu, \sigma` amortized). Ignored (0) when ``flow=None``.
        encoder_hidden_dims: hidden sizes of the default encoder (``hidden_dims`` among the
            ``flow_options`` sets the flow's own conditioner).
        encoder: a custom encoder (replaces the default MLP).
        init_scale: initial posterior standard deviation.
        **flow_options: keyword arguments of the registry builder (an unknown name raises a
            ``TypeError`` naming the accepted ones).

    References:
        Kingma & Welling, "Auto-Encoding Variational Bayes", 2014, arXiv:1312.6114;
        Kingma et al., "Improving Variational Inference with Inverse Autoregressive Flow",
        2016, arXiv:1606.04934.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> posterior = AmortizedFlow(5, 2, "iaf", context_dim=4, encoder_hidden_dims=[16],
        ...                           num_layers=2, hidden_dims=[16])
        >>> data = torch.randn(100, 5)
        >>> pyro.clear_param_store()
        >>> def guide(data):
        ...     pyro.module("posterior", posterior)
        ...     with pyro.plate("data", len(data), subsample_size=10) as idx:
        ...         pyro.sample("z", posterior(data[idx]))
        >>> trace = pyro.poutine.trace(guide).get_trace(data)
        >>> trace.nodes["z"]["value"].shape
        torch.Size([10, 2])
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        flow: str | None = "iaf",
        *,
        context_dim: int = 32,
        encoder_hidden_dims: Sequence[int] = (256, 256),
        encoder: nn.Module | None = None,
        init_scale: float = 1.0,
        **flow_options: Any,
    ) -> None:
        super().__init__()
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        if flow is None:
            if flow_options:
                raise TypeError(f"flow options {sorted(flow_options)} given without a flow")
            context_dim = 0
        elif context_dim and not spec_of(flow, learnable=True).conditional:
            raise ValueError(f"flow {flow!r} has no conditional form; use context_dim=0")
        else:
            spec_of(flow, learnable=True)  # a known, learnable flow
        self.input_dim, self.latent_dim, self.context_dim = input_dim, latent_dim, context_dim
        out_dim = 2 * latent_dim + context_dim
        if encoder is None:
            encoder = _mlp(input_dim, list(encoder_hidden_dims), out_dim)
        self.encoder = encoder
        self.flow = (
            None
            if flow is None
            else REGISTRY[flow].build(
                latent_dim, context_dim, **guide_flow_options(flow, flow_options)
            )
        )
        self._scale_shift = inverse_softplus(init_scale)
        self._tail_check = SplineTailCheck(self.flow)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        r"""``(mu, sigma, h)`` for data ``x`` of shape ``(..., input_dim)``."""
        if x.shape[-1:] != (self.input_dim,):
            raise ValueError(
                f"expected data of shape (..., {self.input_dim}), got {tuple(x.shape)}"
            )
        out = self.encoder(x)
        expected = 2 * self.latent_dim + self.context_dim
        if out.shape[-1] != expected:
            raise ValueError(
                f"the encoder must output (..., 2 * latent_dim + context_dim = {expected}), "
                f"got {tuple(out.shape)}"
            )
        d = self.latent_dim
        loc, raw_scale = out[..., :d], out[..., d : 2 * d]
        scale = F.softplus(raw_scale + self._scale_shift) + _MIN_SCALE
        context = out[..., 2 * d :] if self.context_dim else None
        return loc, scale, context

    def forward(self, x: Tensor) -> FlowPosterior:
        r"""The posterior :math:`q(z \mid x)`, batch shape ``x.shape[:-1]``."""
        loc, scale, context = self.encode(x)
        posterior = FlowPosterior(self.flow, loc, scale, context)
        if self.training:
            self._tail_check(lambda: posterior, "AmortizedFlow")
        return posterior


def _mlp(input_dim: int, hidden_dims: list[int], output_dim: int) -> MLP:
    """The default encoder: an ELU :class:`~pyroflows.nn.MLP` whose last layer starts at zero."""
    net = MLP(input_dim, hidden_dims, output_dim, activation=nn.ELU)
    nn.init.zeros_(net.output_layer.weight)
    nn.init.zeros_(net.output_layer.bias)
    return net
