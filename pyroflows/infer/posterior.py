r"""The variational family of the flow guides: an affine-standardised flow of a standard normal.

.. math::
    z = \mu + \sigma \odot f_c(\varepsilon), \qquad \varepsilon \sim \mathcal{N}(0, I_D),

    \log q(z \mid c) = \log \mathcal{N}(\varepsilon; 0, I)
    - \log\left|\det \frac{\partial f_c}{\partial \varepsilon}\right|
    - \sum_{i=1}^{D} \log \sigma_i .

:class:`FlowPosterior` is a Pyro distribution whose :meth:`~FlowPosterior.rsample_and_log_prob`
returns a draw and its log-density from **one** forward pass of the flow: every pyroflows
transform computes its log-determinant on the way (``_forward``), so an IAF-type guide costs
one network pass per sample and per step. Scoring any other value runs the inverse pass
exactly; no cache is involved in either.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import Transform, constraints

from ..transforms import FlowModule, InverseFlow

__all__ = ["FlowPosterior"]

_LOG_2PI = 1.8378770664093453  # log(2 pi)


def _standard_normal_log_prob(eps: Tensor) -> Tensor:
    return -0.5 * (eps.square().sum(-1) + eps.shape[-1] * _LOG_2PI)


def _pyroflows_context(flow: FlowModule | InverseFlow, context: Tensor | None) -> Tensor | None:
    """A pyroflows flow takes a context exactly when it is conditional."""
    return context if flow.context_dim else None


def flow_forward(
    flow: Transform | None, x: Tensor, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    r"""``(f_c(x), log|det df_c/dx|)`` in one pass, without touching any cache.

    pyroflows flows return the log-det from their forward pass; any other torch/Pyro
    transform (e.g. Pyro's own flows) is called and then asked for its log-det; ``None`` is
    the identity.
    """
    if flow is None:
        return x, x.new_zeros(x.shape[:-1])
    if isinstance(flow, FlowModule | InverseFlow):
        return flow.forward_and_log_det(x, _pyroflows_context(flow, context))
    transform = flow.condition(context) if context is not None else flow
    y = transform(x)
    return y, transform.log_abs_det_jacobian(x, y)


def flow_backward(
    flow: Transform | None, y: Tensor, context: Tensor | None
) -> tuple[Tensor, Tensor]:
    r"""``(f_c^{-1}(y), log|det df_c/dx|)`` at the inverse (the *forward* log-det), exactly."""
    if flow is None:
        return y, y.new_zeros(y.shape[:-1])
    if isinstance(flow, FlowModule | InverseFlow):
        x, inverse_log_det = flow.inverse_and_log_det(y, _pyroflows_context(flow, context))
        return x, -inverse_log_det
    transform = flow.condition(context) if context is not None else flow
    x = transform.inv(y)
    return x, transform.log_abs_det_jacobian(x, y)


class FlowPosterior(TorchDistribution):
    r"""Distribution of :math:`z = \mu + \sigma \odot f_c(\varepsilon)` with standard normal noise.

    The variational family of :class:`~pyroflows.infer.AutoFlow` (global latents, no
    context) and :class:`~pyroflows.infer.AmortizedFlow` (local latents: :math:`\mu`,
    :math:`\sigma` and the context :math:`c` come from an encoder of each data point):

    .. math::
        \log q(z \mid c) = \log \mathcal{N}(\varepsilon; 0, I)
        - \log\left|\det \frac{\partial f_c}{\partial \varepsilon}\right|
        - \sum_i \log \sigma_i .

    Event shape ``(D,)``; the batch shape is the broadcast of the batch shapes of ``loc``,
    ``scale`` and ``context`` (or what :meth:`expand` sets, e.g. a Pyro plate of particles).

    Cost: :meth:`rsample_and_log_prob` is one forward pass of the flow (its log-det comes
    with it). ``rsample`` followed by ``log_prob`` of that very sample, which is what Pyro's
    ELBOs do, reuses that pass's log-density: the pair lives on the distribution object that
    drew it (one object per guide call), so it can never be stale. Any other value is scored
    by an exact inverse pass (for IAF-type flows :math:`D` sequential network passes; for
    numerically inverted flows a convergence-checked root-find).

    Args:
        flow: a pyroflows flow (or any ``torch.distributions.Transform`` on vectors), mapping
            base noise to the standardised latent; conditional when ``context`` is given;
            ``None`` for the identity (a diagonal Gaussian).
        loc: :math:`\mu`, shape ``(..., D)``.
        scale: :math:`\sigma > 0`, shape ``(..., D)``.
        context: :math:`c`, shape ``(..., C)`` for conditional flows.
        batch_shape: explicit batch shape (default: broadcast of the inputs' batch shapes).

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
        arXiv:1505.05770; Kingma et al., "Improving Variational Inference with Inverse
        Autoregressive Flow", 2016, arXiv:1606.04934.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import build
        >>> _ = torch.manual_seed(0)
        >>> q = FlowPosterior(build("iaf", 3, num_layers=2), torch.zeros(3), torch.ones(3))
        >>> z, log_q = q.rsample_and_log_prob((4,))
        >>> z.shape, log_q.shape
        (torch.Size([4, 3]), torch.Size([4]))
        >>> bool(torch.allclose(q.log_prob(z.clone()), log_q, atol=1e-4))  # exact inverse
        True
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        flow: Transform | None,
        loc: Tensor,
        scale: Tensor,
        context: Tensor | None = None,
        batch_shape: Sequence[int] | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.flow, self.loc, self.scale, self.context = flow, loc, scale, context
        dim = loc.shape[-1]
        if batch_shape is None:
            shapes = [loc.shape[:-1], scale.shape[:-1]]
            if context is not None:
                shapes.append(context.shape[:-1])
            batch_shape = torch.broadcast_shapes(*shapes)
        self._drawn: tuple[Tensor, Tensor] | None = None
        super().__init__(torch.Size(batch_shape), torch.Size((dim,)), validate_args=False)

    def expand(self, batch_shape: Sequence[int], _instance=None) -> FlowPosterior:
        """The same distribution with a larger batch shape (e.g. inside a Pyro plate)."""
        batch_shape = torch.Size(batch_shape)
        try:
            torch.broadcast_shapes(batch_shape, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"cannot expand a FlowPosterior of batch shape {tuple(self.batch_shape)} to "
                f"{tuple(batch_shape)}"
            ) from None
        return FlowPosterior(self.flow, self.loc, self.scale, self.context, batch_shape)

    def _shaped(self, sample_shape: torch.Size) -> tuple[Tensor, Tensor, Tensor | None]:
        shape = sample_shape + self.batch_shape
        loc = self.loc.expand(shape + self.event_shape)
        scale = self.scale.expand(shape + self.event_shape)
        context = self.context
        if context is not None:
            context = context.expand(shape + context.shape[-1:])
        return loc, scale, context

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """Reparameterised draws and their log-density from one forward pass of the flow."""
        sample_shape = torch.Size(sample_shape)
        loc, scale, context = self._shaped(sample_shape)
        eps = torch.randn_like(loc)
        u, log_det = flow_forward(self.flow, eps, context)
        z = loc + scale * u
        log_q = _standard_normal_log_prob(eps) - log_det - scale.log().sum(-1)
        return z, log_q

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Reparameterised draws, shape ``sample_shape + batch_shape + (D,)``."""
        z, log_q = self.rsample_and_log_prob(sample_shape)
        self._drawn = (z, log_q)
        return z

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density; the draw just made by :meth:`rsample` is scored from its own pass."""
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        if value.shape[-1:] != self.event_shape:
            raise ValueError(
                f"expected values with event size {self.event_shape[0]}, "
                f"got shape {tuple(value.shape)}"
            )
        batch = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        value = value.expand(batch + self.event_shape)
        loc, scale, context = self._shaped(torch.Size(batch[: len(batch) - len(self.batch_shape)]))
        u = (value - loc) / scale
        eps, log_det = flow_backward(self.flow, u, context)
        return _standard_normal_log_prob(eps) - log_det - scale.log().sum(-1)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_drawn"] = None
        return state
