r"""A user network as the conditioner of a coupling or autoregressive layer.

Pyro's flows take their network from the user (``AutoRegressiveNN``, ``DenseNN`` and their
conditional versions); :class:`NetworkConditioner` lets :class:`~pyroflows.transforms.Coupling`
and :class:`~pyroflows.transforms.Autoregressive` do the same. The network's output contract is
Pyro's: one tensor, or a tuple of tensors (one per parameter group, as ``param_dims``), which
together hold the transformer's :math:`P` parameters for each of the :math:`n` transformed
coordinates:

* ``"autoregressive"`` layout (``AutoRegressiveNN``): a group of :math:`p` parameters has shape
  ``(..., p, n)``, or ``(..., n)`` when :math:`p = 1`;
* ``"dense"`` layout (``DenseNN``): a group has shape ``(..., n p)``, coordinate-major (the
  :math:`p` values of coordinate 0 first), as Pyro's ``ConditionalSpline`` reads it.

The groups, in order, are the rows of the transformer's ``(..., P, n)`` parameters: for
:class:`~pyroflows.transforms.Affine`, ``(mean, log_scale)`` as Pyro's affine flows; for the
spline, ``(widths K, heights K, derivatives K - 1)`` (Pyro's ``order="quadratic"``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__: list[str] = []

Layout = Literal["autoregressive", "dense"]


def _network_context_dim(network: nn.Module, context_dim: int) -> int:
    """The context size: the network's ``context_dim`` attribute, or the one given."""
    own = int(getattr(network, "context_dim", 0) or 0)
    if context_dim and own and int(context_dim) != own:
        raise ValueError(
            f"context_dim={context_dim} disagrees with the conditioner's context_dim={own}"
        )
    return int(context_dim) or own


class NetworkConditioner(nn.Module):
    """Wraps a user network; returns the transformer parameters ``(..., P, n)`` it produces.

    Checked at construction: the network is run once on zeros of the input (and context)
    shape, and a wrong output raises a ``ValueError`` naming what was expected and what came.
    """

    def __init__(
        self,
        network: nn.Module,
        layout: Layout,
        in_features: int,
        count: int,
        params_per_dim: int,
        context_dim: int,
        transformer_name: str,
    ) -> None:
        super().__init__()
        if not callable(network):
            raise TypeError(f"conditioner must be a callable network, got {type(network).__name__}")
        self.network = network
        self.layout = layout
        self.count, self.params_per_dim, self.context_dim = count, params_per_dim, context_dim
        self._check(in_features, transformer_name)

    def _check(self, in_features: int, transformer_name: str) -> None:
        reference = (
            next(iter(self.network.parameters()), None)
            if isinstance(self.network, nn.Module)
            else None
        )
        like = {} if reference is None else {"dtype": reference.dtype, "device": reference.device}
        inputs = torch.zeros(1, in_features, **like)
        context = torch.zeros(1, self.context_dim, **like) if self.context_dim else None
        name = type(self.network).__name__
        called = f"inputs of shape (1, {in_features})" + (
            f" and a context of shape (1, {self.context_dim})" if context is not None else ""
        )
        try:
            with torch.no_grad():
                raw = self._call(inputs, context)
        except Exception as error:  # the network's own message says what went wrong
            raise ValueError(f"the conditioner {name} failed on {called}: {error}") from error
        parts = raw if isinstance(raw, (tuple, list)) else (raw,)
        shapes = [tuple(part.shape) if isinstance(part, Tensor) else type(part) for part in parts]
        expected = (
            f"{self.params_per_dim} parameters per coordinate for {transformer_name} on "
            f"{self.count} coordinates: "
            + (
                f"tensors of shape (1, p, {self.count}) or (1, {self.count}) whose p sum to "
                f"{self.params_per_dim}"
                if self.layout == "autoregressive"
                else f"tensors of shape (1, {self.count} * p) whose p sum to {self.params_per_dim}"
            )
        )
        try:
            params = self._params(raw, 1)
        except (TypeError, ValueError, RuntimeError):
            params = None
        if params is None or tuple(params.shape) != (1, self.params_per_dim, self.count):
            raise ValueError(
                f"the conditioner {name} must return {expected}; on {called} it returned {shapes}"
            )

    def _call(self, inputs: Tensor, context: Tensor | None):
        if context is None:
            return self.network(inputs)
        batch = torch.broadcast_shapes(inputs.shape[:-1], context.shape[:-1])
        return self.network(inputs.expand(*batch, -1), context.expand(*batch, -1))

    def _params(self, raw, batch_rank: int) -> Tensor:
        """The network's output groups as rows ``(..., P, n)`` (inputs of ``batch_rank`` dims)."""
        parts = raw if isinstance(raw, (tuple, list)) else (raw,)
        rows = []
        for part in parts:
            if not isinstance(part, Tensor):
                raise TypeError("not a tensor")
            if self.layout == "dense":
                if part.dim() != batch_rank + 1 or part.shape[-1] % self.count:
                    raise ValueError("not (..., n p)")
                rows.append(part.unflatten(-1, (self.count, -1)).transpose(-1, -2))
            elif part.dim() == batch_rank + 1:
                rows.append(part.unsqueeze(-2))
            elif part.dim() == batch_rank + 2:
                rows.append(part)
            else:
                raise ValueError("not (..., p, n) or (..., n)")
        return torch.cat(rows, dim=-2)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        """The transformer parameters ``(..., P, n)`` for ``inputs`` (and ``context``)."""
        rank = inputs.dim() - 1 if context is None else max(inputs.dim(), context.dim()) - 1
        return self._params(self._call(inputs, context), rank)

    def order(self) -> list[int]:
        """The network's autoregressive order (Pyro's ``permutation``), first input first."""
        permutation = getattr(self.network, "permutation", None)
        if permutation is None and hasattr(self.network, "get_permutation"):
            permutation = self.network.get_permutation()
        if permutation is None:
            raise ValueError(
                f"the autoregressive conditioner {type(self.network).__name__} must expose its "
                "order as .permutation or .get_permutation(), as Pyro's AutoRegressiveNN does"
            )
        return [int(index) for index in permutation]
