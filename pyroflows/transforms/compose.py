"""Composition of flow layers into one flow, conditional when any layer is."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._base import FlowModule, InverseFlow, _log_det_over_event, _sign_of

__all__ = ["FlowSequence"]


class FlowSequence(FlowModule):
    r"""Layers applied one after the other, as one flow: :math:`f = f_K \circ \cdots \circ f_1`.

    .. math::
        \log\left|\det \frac{\partial f}{\partial x}\right|
        = \sum_{k=1}^{K} \log\left|\det \frac{\partial f_k}{\partial x_{k-1}}\right|,
        \qquad x_0 = x, \; x_k = f_k(x_{k-1}) .

    Unlike Pyro's ``ComposeTransformModule`` the result is a full pyroflows flow: one shape
    check, one cache entry for the whole pass, an ``.inv`` that is a module, and
    ``.condition(context)`` that hands the context to every conditional layer (all must share
    one ``context_dim``; unconditional layers ignore it). Costs add up over the layers; the
    inverse runs the layers' inverses in reverse order. Layers whose log-det is per element
    (``Spline(D)``, Pyro's ``event_dim=0``) are summed over the event, so the sequence's
    log-det always has the batch shape.

    Args:
        layers: :class:`~pyroflows.transforms.FlowModule` layers or their ``.inv``, all with
            the same event shape, listed from the base (latent) side to the data side.

    References:
        Rezende & Mohamed, "Variational Inference with Normalizing Flows", 2015,
        arXiv:1505.05770 (composition of flows).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import LULinear, planar, radial
        >>> flow = FlowSequence([LULinear(2), radial(2), planar(2)])
        >>> x = torch.randn(4, 2)
        >>> y = flow(x)
        >>> bool(torch.allclose(flow.inv(y.clone()), x, atol=1e-5))
        True
    """

    def __init__(self, layers: Sequence[FlowModule | InverseFlow]) -> None:
        if not layers:
            raise ValueError("a FlowSequence needs at least one layer")
        shapes = {tuple(layer.event_shape) for layer in layers}
        if len(shapes) != 1:
            raise ValueError(
                f"all layers must share one event shape (input_dim), got {sorted(shapes)}"
            )
        contexts = {layer.context_dim for layer in layers if layer.context_dim}
        if len(contexts) > 1:
            raise ValueError(f"conditional layers must share one context_dim, got {contexts}")
        super().__init__(shapes.pop(), contexts.pop() if contexts else 0)
        self.layers = nn.ModuleList(layers)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        total = 0
        for layer in self.layers:
            x, log_det = layer.forward_and_log_det(x, context if layer.context_dim else None)
            total = total + _log_det_over_event(layer, log_det)
        return x, total

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        total = 0
        for layer in reversed(self.layers):
            y, log_det = layer.inverse_and_log_det(y, context if layer.context_dim else None)
            total = total + _log_det_over_event(layer, log_det)
        return y, -total

    @property
    def sign(self) -> int:
        """The product of the layers' signs, defined when every layer is element-wise monotone."""
        sign = 1
        for layer in self.layers:
            sign *= _sign_of(layer)
        return sign

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> FlowModule | InverseFlow:
        return self.layers[index]
