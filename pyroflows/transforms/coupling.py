"""Coupling flows (NICE, RealNVP): half the coordinates parameterise a map of the others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ..nn import MLP, FlowParameters
from ._args import _conditioner_hidden_dims
from ._base import FlowModule
from ._conditioner import NetworkConditioner, _network_context_dim
from .transformers import Affine, ElementwiseTransformer
from .transformers.base import _start_at_identity

__all__ = ["Coupling", "coupling_mask"]


def coupling_mask(
    input_dim: int, kind: Literal["half", "alternate"] = "half", flip: bool = False
) -> Tensor:
    r"""Boolean mask of the coordinates a coupling layer passes through unchanged.

    ``"half"``: :math:`m_i = [i < \lfloor D/2 \rfloor]`; ``"alternate"``:
    :math:`m_i = [i \bmod 2 = 0]`. ``flip=True`` swaps the two parts (use it on every other
    layer of a stack so that every coordinate gets transformed).

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803 (checkerboard and channel-wise masks).

    Example:
        >>> coupling_mask(5, "alternate").tolist()
        [True, False, True, False, True]
    """
    index = torch.arange(input_dim)
    if kind == "half":
        mask = index < input_dim // 2
    elif kind == "alternate":
        mask = index % 2 == 0
    else:
        raise ValueError(f"kind must be 'half' or 'alternate', got {kind!r}")
    return ~mask if flip else mask


class Coupling(FlowModule):
    r"""Coupling layer: pass some coordinates through, transform the rest given them.

    With :math:`a` the masked (identity) coordinates and :math:`b` the others,

    .. math::
        y_a = x_a, \qquad y_b = \tau\big(x_b; \theta(x_a, c)\big), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| =
        \sum_{i \in b} \log\left|\frac{\partial \tau}{\partial x_i}\right| ,

    and the inverse :math:`x_b = \tau^{-1}(y_b; \theta(y_a, c))` is just as cheap: one
    conditioner pass either way, :math:`O(D H)` per sample for hidden width :math:`H`.

    **The pass-through part through its own map** (``passthrough_transformer=``, e.g. a
    :class:`~pyroflows.transforms.RationalQuadraticSpline`, as Pyro's ``SplineCoupling``):
    :math:`y_a = \sigma(x_a; \phi)` with free parameters :math:`\phi` (no context, starting at
    the identity, saved as ``passthrough.params``), the conditioner still reading :math:`x_a`:

    .. math::
        y_a = \sigma(x_a; \phi), \qquad y_b = \tau\big(x_b; \theta(x_a, c)\big), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| =
        \sum_{i \in a} \log \sigma'(x_i; \phi_i)
        + \sum_{i \in b} \log\left|\frac{\partial \tau}{\partial x_i}\right| ,

    inverted by :math:`x_a = \sigma^{-1}(y_a; \phi)` first, then :math:`x_b` as above. The
    Jacobian is still block triangular; the extra cost is :math:`O(|a| P)`. With one layer on
    2-D data it is what lets the first coordinate's marginal move away from the base's.
    With the :class:`~pyroflows.transforms.Additive` transformer this is NICE
    (volume preserving); with :class:`~pyroflows.transforms.Affine` it is
    RealNVP (log-scale clamped to ``[-5, 3]`` in value). The conditioner is an
    :class:`~pyroflows.nn.MLP` whose output layer starts at zero with the transformer's
    identity parameters as bias, so the layer starts as the identity.

    **A network of your own** (``conditioner=``, e.g. Pyro's ``DenseNN`` or
    ``ConditionalDenseNN``) replaces the MLP: it takes :math:`x_a` (and the context, as a
    second argument, when conditional) and returns the transformer's parameters in Pyro's
    dense layout (one tensor or a tuple of groups of shape ``(..., n p)``, coordinate-major,
    in the transformer's row order: ``(mean, log_scale)`` for
    :class:`~pyroflows.transforms.Affine`). It is checked once at construction and left as
    it is (no identity start); the context size is read from its ``context_dim``.

    Args:
        input_dim: event size :math:`D`.
        hidden_dims: conditioner hidden sizes (default ``[max(32, 4 D)] * 2``).
        transformer: the element-wise map :math:`\tau` (default affine).
        mask: boolean tensor of shape ``(D,)``, ``True`` where coordinates pass through;
            default :func:`coupling_mask` ``(D, "half")``.
        context_dim: context size (``0``: unconditional), keyword-only; the context is
            concatenated to :math:`x_a` at the conditioner's input.
        conditioner: a user network instead of the MLP (see above); keyword-only.
        passthrough_transformer: an element-wise map of the pass-through coordinates with
            free parameters (see above); ``None`` (default) leaves them unchanged;
            keyword-only.

    References:
        Dinh, Krueger & Bengio, "NICE", 2015, arXiv:1410.8516; Dinh, Sohl-Dickstein & Bengio,
        "Density estimation using Real NVP", 2017, arXiv:1605.08803.

    Example:
        >>> import torch
        >>> flow = Coupling(4, hidden_dims=[16])
        >>> x = torch.randn(3, 4)
        >>> bool(torch.equal(flow(x)[:, :2], x[:, :2]))
        True
        >>> from pyroflows.transforms import RationalQuadraticSpline
        >>> flow = Coupling(4, [16], RationalQuadraticSpline(),
        ...                 passthrough_transformer=RationalQuadraticSpline())
        >>> flow.passthrough.params.shape  # 3 K - 1 knot parameters per pass-through coordinate
        torch.Size([23, 2])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        transformer: ElementwiseTransformer | None = None,
        mask: Tensor | None = None,
        *,
        context_dim: int = 0,
        conditioner: nn.Module | None = None,
        passthrough_transformer: ElementwiseTransformer | None = None,
    ) -> None:
        if input_dim < 2:
            raise ValueError(
                f"a coupling layer needs input_dim >= 2 (one part conditions the other), "
                f"got {input_dim}"
            )
        if conditioner is not None:
            if hidden_dims is not None:
                raise ValueError(
                    "hidden_dims sizes pyroflows' own MLP: a user conditioner has its own"
                )
            context_dim = _network_context_dim(conditioner, context_dim)
        super().__init__(input_dim, context_dim)
        self.transformer = transformer if transformer is not None else Affine()
        mask = coupling_mask(input_dim) if mask is None else torch.as_tensor(mask, dtype=bool)
        if mask.shape != (input_dim,):
            raise ValueError(f"mask must have shape ({input_dim},), got {tuple(mask.shape)}")
        if bool(mask.all()):
            raise ValueError("the mask leaves no coordinate to transform")
        identity_index = mask.nonzero().flatten()
        transformed_index = (~mask).nonzero().flatten()
        self.register_buffer("identity_index", identity_index)
        self.register_buffer("transformed_index", transformed_index)
        self.register_buffer(
            "merge_index", torch.argsort(torch.cat([identity_index, transformed_index]))
        )
        # A mask that is one contiguous block at either end splits by slicing and merges by
        # concatenation: no gathers, whose backward passes are scatters (~10% of a step).
        passed_first = bool(mask[: len(identity_index)].all())
        passed_last = bool(mask[input_dim - len(identity_index) :].all())
        self._contiguous = "first" if passed_first else "last" if passed_last else None
        count = len(transformed_index)
        self.passthrough_transformer = passthrough_transformer
        self.passthrough = None
        if passthrough_transformer is not None:
            init = passthrough_transformer.identity_params(len(identity_index))
            self.passthrough = FlowParameters({"params": init})
        if conditioner is not None:
            self.conditioner = NetworkConditioner(
                conditioner,
                "dense",
                len(identity_index),
                count,
                self.transformer.params_per_dim,
                self.context_dim,
                repr(self.transformer),
            )
            return
        self.conditioner = MLP(
            len(identity_index) + self.context_dim,
            _conditioner_hidden_dims(hidden_dims, input_dim),
            self.transformer.params_per_dim * count,
        )
        _start_at_identity(self.conditioner.output_layer, self.transformer, count)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "passthrough_transformer" not in self.__dict__:  # pickled before the option existed
            self.passthrough_transformer = None
            self.passthrough = None

    def _split(self, value: Tensor) -> tuple[Tensor, Tensor]:
        count = len(self.identity_index)
        if self._contiguous == "first":
            return value[..., :count], value[..., count:]
        if self._contiguous == "last":
            return value[..., self.input_dim - count :], value[..., : self.input_dim - count]
        return value[..., self.identity_index], value[..., self.transformed_index]

    def _params(self, passed: Tensor, context: Tensor | None) -> Tensor:
        """The transformer's parameters ``(..., P, |b|)`` from :math:`x_a` (and the context)."""
        inputs = passed.contiguous()  # a strided view would change the matmul's rounding
        if isinstance(self.conditioner, NetworkConditioner):
            return self.conditioner(inputs, context)
        if context is not None:
            batch = torch.broadcast_shapes(passed.shape[:-1], context.shape[:-1])
            inputs = torch.cat(
                [passed.expand(*batch, -1), context.expand(*batch, self.context_dim)], dim=-1
            )
        return self.conditioner(inputs).unflatten(
            -1, (self.transformer.params_per_dim, len(self.transformed_index))
        )

    def _map_passed(self, value: Tensor, inverse: bool) -> tuple[Tensor, Tensor | float]:
        r""":math:`\sigma` (or its inverse) on the pass-through part, and its forward log-det."""
        if self.passthrough_transformer is None:
            return value, 0.0
        phi = self.passthrough()["params"]
        transformer = self.passthrough_transformer
        mapped, log_slope = (transformer.inverse if inverse else transformer.forward)(value, phi)
        return mapped, log_slope.sum(-1)

    def _merge(self, passed: Tensor, transformed: Tensor) -> Tensor:
        batch = torch.broadcast_shapes(passed.shape[:-1], transformed.shape[:-1])
        passed = passed.expand(*batch, -1)
        if self._contiguous == "first":
            return torch.cat([passed, transformed], dim=-1)
        if self._contiguous == "last":
            return torch.cat([transformed, passed], dim=-1)
        return torch.cat([passed, transformed], dim=-1)[..., self.merge_index]

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        y_b, log_det = self.transformer.forward(x_b, self._params(x_a, context))
        y_a, log_det_a = self._map_passed(x_a, inverse=False)
        return self._merge(y_a, y_b), log_det.sum(-1) + log_det_a

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y_a, y_b = self._split(y)
        x_a, log_det_a = self._map_passed(y_a, inverse=True)
        x_b, log_det = self.transformer.inverse(y_b, self._params(x_a, context))
        return self._merge(x_a, x_b), log_det.sum(-1) + log_det_a
