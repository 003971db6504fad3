"""Where a flow layer's parameters come from: free tensors, or a network of the context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["FlowParameters"]


class FlowParameters(nn.Module):
    r"""The named parameters of one flow layer, unconditional or conditioned on a context.

    With ``context_dim == 0`` every entry of ``init`` becomes an ``nn.Parameter`` of that name
    (so ``state_dict`` keys read ``params.u``, ``params.w``, ...). With ``context_dim > 0`` an
    :class:`~pyroflows.nn.MLP` (a hypernetwork) maps the context :math:`c` to all entries at
    once, :math:`\theta(c) = W_{out} h(c) + b_{out}`; its output bias is set to ``init`` and its
    output weights are scaled by ``init_scale``, so every context starts near the
    unconditional initial flow.

    Calling the module returns a dict of tensors: the parameters themselves (shape as in
    ``init``) when unconditional, or tensors of shape ``(*B, *shape)`` for a context of shape
    ``(*B, context_dim)``.

    Args:
        init: initial value of each named parameter.
        context_dim: size of the context; ``0`` for free parameters.
        hidden_dims: hidden sizes of the hypernetwork (default ``[64, 64]``).
        init_scale: factor on the hypernetwork's initial output weights.

    References:
        Ha, Dai & Le, "HyperNetworks", 2016, arXiv:1609.09106; Rezende & Mohamed 2015,
        arXiv:1505.05770 (amortised flow parameters).

    Example:
        >>> import torch
        >>> params = FlowParameters({"shift": torch.zeros(3)}, context_dim=2)
        >>> params(torch.randn(5, 2))["shift"].shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        init: Mapping[str, Tensor],
        context_dim: int = 0,
        hidden_dims: Sequence[int] | None = None,
        init_scale: float = 1e-2,
    ) -> None:
        super().__init__()
        self.names = tuple(init)
        self.shapes = {name: tuple(value.shape) for name, value in init.items()}
        self.context_dim = int(context_dim)
        if self.context_dim == 0:
            if hidden_dims is not None:
                raise ValueError("hidden_dims is only used with context_dim > 0")
            for name, value in init.items():
                self.register_parameter(name, nn.Parameter(value.detach().clone()))
            return
        hidden = [64, 64] if hidden_dims is None else list(hidden_dims)
        sizes = [value.numel() for value in init.values()]
        self.sizes = sizes
        self.hypernet = MLP(self.context_dim, hidden, sum(sizes))
        with torch.no_grad():
            self.hypernet.output_layer.weight.mul_(init_scale)
            flat = torch.cat([value.detach().reshape(-1) for value in init.values()])
            self.hypernet.output_layer.bias.copy_(flat)

    def extra_repr(self) -> str:
        """List the parameters and their shapes."""
        return ", ".join(f"{name}: {tuple(shape)}" for name, shape in self.shapes.items())

    def forward(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """Return the parameters, for ``context`` when the layer is conditional."""
        if self.context_dim == 0:
            return {name: getattr(self, name) for name in self.names}
        if context is None:
            raise ValueError("these parameters are conditional: a context is required")
        flat = self.hypernet(context)
        batch = flat.shape[:-1]
        pieces = flat.split(self.sizes, dim=-1)
        return {
            name: piece.reshape((*batch, *self.shapes[name]))
            for name, piece in zip(self.names, pieces, strict=True)
        }
