"""Autoregressive flows: MAF and IAF from one layer, with any element-wise transformer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..nn.made import MADE, Ordering
from ._args import _conditioner_hidden_dims
from ._base import FlowModule
from ._conditioner import NetworkConditioner, _network_context_dim
from .transformers import Affine, ElementwiseTransformer
from .transformers.base import _start_at_identity

__all__ = ["Autoregressive"]


class Autoregressive(FlowModule):
    r"""Autoregressive flow layer: each coordinate is transformed given the ones before it.

    .. math::
        y_i = \tau\big(x_i; \theta_i(x_{<i}, c)\big), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = \sum_{i=1}^{D} \log \left|\frac{\partial \tau}{\partial x_i}\right| ,

    where :math:`\theta = \mathrm{MADE}(x, c)` (:class:`~pyroflows.nn.MADE`, so the Jacobian is
    triangular in the autoregressive order) and :math:`\tau` is the element-wise
    ``transformer`` (default :class:`~pyroflows.transforms.Affine`:
    :math:`y_i = \mu_i + e^{s_i} x_i`).

    **Directions.** The forward map is *parallel*: one MADE pass, :math:`O(D \cdot H)` per
    sample for hidden width :math:`H`, with the log-det found on the way (cached, so scoring
    a sample is free). The inverse is *sequential*: :math:`D` MADE passes, each exact for one
    more coordinate in the autoregressive order (whole batch at once, no per-sample Python).
    Pass :math:`k` evaluates only the MADE units that can reach coordinate :math:`k` and
    inverts that one coordinate, so the :math:`D` passes cost about :math:`D/3` full MADE
    passes (:meth:`~pyroflows.nn.MADE.sequential`).
    Used as-is in a ``TransformedDistribution`` this is an **IAF** (fast sampling, cheap
    scoring of own samples: a variational posterior); its ``.inv`` is a **MAF** (fast density
    evaluation: a density model). :func:`~pyroflows.transforms.maf` and
    :func:`~pyroflows.transforms.iaf` build stacks of either.

    The conditioner's output layer starts at zero with its bias at the transformer's
    identity parameters, so the layer starts as the identity (the stable affine variant as a
    near-identity gate). Conditional with ``context_dim > 0`` (the context enters MADE's first
    layer unmasked).

    **A network of your own** (``conditioner=``, e.g. Pyro's ``AutoRegressiveNN`` or
    ``ConditionalAutoRegressiveNN``) replaces MADE: it must be autoregressive, return the
    transformer's parameters in Pyro's layout (one tensor or a tuple, groups of shape
    ``(..., p, D)`` or ``(..., D)``, in the transformer's row order: ``(mean, log_scale)`` for
    :class:`~pyroflows.transforms.Affine`, as Pyro's affine flows) and expose its order as
    ``.permutation`` (or ``get_permutation()``). It is checked once at construction (zeros in,
    the output shapes compared with what the transformer needs) and left as it is (no
    identity start); the context size is read from its ``context_dim``. The inverse then
    runs :math:`D` full network passes, one coordinate each in the network's order.

    Args:
        input_dim: event size :math:`D`.
        hidden_dims: MADE hidden sizes (default ``[max(32, 4 D)] * 2``).
        transformer: the element-wise map :math:`\tau` and its parameterisation.
        ordering: MADE input ordering (``"natural"``, ``"reverse"``, ``"random"`` or a
            permutation).
        seed: seed of a ``"random"`` ordering: an int for a fixed order, ``None`` (default)
            to draw it from torch's global RNG (so ``torch.manual_seed`` reproduces it).
        context_dim: context size (``0``: unconditional); keyword-only.
        conditioner: a user network instead of MADE (see above); keyword-only.
        activation: MADE's hidden activation (``"relu"``, ``"tanh"``, ``"elu"`` or a module
            class); keyword-only.

    References:
        Kingma et al., "Improving Variational Inference with Inverse Autoregressive Flow",
        2016, arXiv:1606.04934; Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow
        for Density Estimation", 2017, arXiv:1705.07057.

    Example:
        >>> import torch
        >>> flow = Autoregressive(3, hidden_dims=[16])
        >>> x = torch.randn(5, 3)
        >>> y = flow(x)
        >>> bool(torch.allclose(flow.inv(y.clone()), x, atol=1e-5))
        True
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        transformer: ElementwiseTransformer | None = None,
        ordering: Ordering = "natural",
        seed: int | None = None,
        *,
        context_dim: int = 0,
        conditioner: nn.Module | None = None,
        activation: type[nn.Module] | str = "relu",
    ) -> None:
        if conditioner is not None:
            if hidden_dims is not None or ordering != "natural" or seed is not None:
                raise ValueError(
                    "hidden_dims, ordering and seed describe pyroflows' own MADE; a user "
                    "conditioner brings its own sizes and order: leave them unset"
                )
            context_dim = _network_context_dim(conditioner, context_dim)
        super().__init__(input_dim, context_dim)
        self.transformer = transformer if transformer is not None else Affine()
        if conditioner is not None:
            self.made = None
            self.conditioner = NetworkConditioner(
                conditioner,
                "autoregressive",
                input_dim,
                input_dim,
                self.transformer.params_per_dim,
                self.context_dim,
                repr(self.transformer),
            )
            self.conditioner.order()  # checked now: the inverse needs it
            return
        self.conditioner = None
        self.made = MADE(
            input_dim,
            _conditioner_hidden_dims(hidden_dims, input_dim),
            params_per_dim=self.transformer.params_per_dim,
            context_dim=self.context_dim,
            ordering=ordering,
            seed=seed,
            activation=activation,
        )
        _start_at_identity(self.made.output_layer, self.transformer, input_dim)

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.made is None:
            return self.conditioner(x, context)
        return self.made(x, context)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, log_det = self.transformer.forward(x, self._params(x, context))
        return y, log_det.sum(-1)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.made is None:
            return self._inverse_with_network(y, context)
        # Pass k finds the k-th coordinate in the autoregressive order from the k before it,
        # through only the MADE units that can reach it (see MADE.sequential).
        passes = self.made.sequential(context)
        order = self.made.order
        y_ordered = y[..., order]
        known: list[Tensor] = []
        log_dets: list[Tensor] = []
        for k in range(self.input_dim):
            prefix = torch.cat(known, -1) if known else y_ordered[..., :0]
            params = passes(prefix, k).unsqueeze(-1)  # (..., P, 1)
            x_k, log_det_k = self.transformer.inverse(y_ordered[..., k : k + 1], params)
            known.append(x_k)
            log_dets.append(log_det_k)
        x = torch.cat(known, -1)[..., self.made.inverse_order]
        return x, torch.cat(log_dets, -1).sum(-1)

    def _inverse_with_network(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """D full passes of a user network, one coordinate each, in the network's order."""
        batch = (
            y.shape[:-1]
            if context is None
            else torch.broadcast_shapes(y.shape[:-1], context.shape[:-1])
        )
        columns = [y.new_zeros(batch)] * self.input_dim
        log_dets: list[Tensor] = []
        for index in self.conditioner.order():
            params = self.conditioner(torch.stack(columns, -1), context)
            x_i, log_det_i = self.transformer.inverse(
                y[..., index : index + 1], params[..., index : index + 1]
            )
            columns[index] = x_i[..., 0]
            log_dets.append(log_det_i)
        return torch.stack(columns, -1), torch.cat(log_dets, -1).sum(-1)
