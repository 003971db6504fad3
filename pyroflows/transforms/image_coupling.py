"""Coupling layers on images (RealNVP, Glow): checkerboard and channel masks, ResNet conditioner."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ..nn import ConvResNet
from ._base import FlowModule
from .convolution import _image_shape
from .transformers import Affine, ElementwiseTransformer
from .transformers.base import _start_at_identity

__all__ = ["ConvCoupling"]

_MASKS = ("checkerboard", "channel")


class ConvCoupling(FlowModule):
    r"""Image coupling layer: some pixels or channels pass through, the rest are transformed.

    With :math:`a` the pass-through elements of the image and :math:`b` the others,

    .. math::
        y_a = x_a, \qquad y_b = \tau\big(x_b; \theta(x_a, c)\big), \qquad
        x_b = \tau^{-1}\big(y_b; \theta(y_a, c)\big), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| =
        \sum_{i \in b} \log \frac{\partial \tau}{\partial x_i}(x_i; \theta_i) ,

    :math:`\tau` the element-wise ``transformer`` (default :class:`~pyroflows.transforms.Affine`,
    log-scale clamped to ``[-5, 3]``; :class:`~pyroflows.transforms.Additive` gives a
    volume-preserving NICE layer; :class:`~pyroflows.transforms.RationalQuadraticSpline` works
    too) and :math:`\theta` a :class:`~pyroflows.nn.ConvResNet`:

    * ``mask="checkerboard"``: :math:`a` = the pixels with :math:`h + w` even, all channels
      (odd with ``flip=True``). The network reads the image with the :math:`b` pixels set to
      zero, plus the mask as one more channel (so that every output position knows which half
      it is in), and predicts parameters for every pixel; those of the :math:`b` pixels are
      used. Needs :math:`HW \ge 2`.
    * ``mask="channel"``: :math:`a` = the first :math:`\lfloor C/2 \rfloor` channels (the
      others with ``flip=True``); the network reads the :math:`a` channels and predicts the
      parameters of the :math:`b` channels. Needs :math:`C \ge 2`.

    The network's output convolution starts at zero weights with the transformer's identity
    parameters as bias, so the layer starts as the identity. With ``context_dim > 0`` a
    context vector :math:`c` (e.g. a one-hot class label) is broadcast over the pixels as
    ``context_dim`` extra input channels of the network; ``flow.condition(c)`` then gives the
    layer at :math:`c`. With ``image_context=True`` the context is an image instead (e.g. a
    low-resolution or masked version of :math:`x`), passed flattened: a vector of
    ``context_dim`` :math:`= C_c H W` values read as :math:`C_c` extra input channels
    (``c.reshape(..., C_c, H, W)``). Both directions cost one network pass,
    :math:`O(HW\,[(C + PC) 9 F + B (k_B^2 + 1) F^2])` per image for ``num_blocks`` :math:`B`,
    ``hidden_channels`` :math:`F` and ``block_kernel_size`` :math:`k_B` (see
    :class:`~pyroflows.nn.ConvResNet`), plus :math:`O(P)` per element for the transformer (the
    checkerboard evaluates it on every pixel and keeps the :math:`b` half).

    Args:
        event_shape: the image shape ``(C, H, W)``.
        hidden_channels: feature maps :math:`F` of the conditioner.
        transformer: the element-wise map :math:`\tau` (default ``Affine()``).
        mask: ``"checkerboard"`` or ``"channel"``.
        flip: swap the two parts (alternate it along a stack so every element is transformed).
        num_blocks: residual blocks of the conditioner; keyword-only.
        context_dim: size of the context vector (``0``: unconditional); keyword-only.
        image_context: read the context as :math:`C_c` = ``context_dim / (H W)`` image planes
            instead of broadcasting it over the pixels; keyword-only.
        block_kernel_size: kernel of the first convolution of each residual block (``1``:
            per-pixel blocks, as the middle layer of Glow's conditioner, much cheaper);
            keyword-only.
        norm: normalisation in the conditioner, ``None`` (default), ``"group"`` or
            ``"batch"`` (see :class:`~pyroflows.nn.ConvResNet`; with ``"batch"`` the map
            depends on the batch in training mode, so evaluate densities in ``eval()`` mode);
            keyword-only.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803, section 3.4 (checkerboard and channel-wise masking).

    Example:
        >>> import torch
        >>> flow = ConvCoupling((2, 4, 4), hidden_channels=8)
        >>> x = torch.randn(3, 2, 4, 4)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> bool(torch.equal(y, x)), log_det.tolist()  # the identity at the start
        (True, [0.0, 0.0, 0.0])
        >>> labels = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 10).float()
        >>> conditional = ConvCoupling((2, 4, 4), hidden_channels=8, mask="channel",
        ...                            context_dim=10)
        >>> conditional.condition(labels)(x).shape
        torch.Size([3, 2, 4, 4])
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        hidden_channels: int = 64,
        transformer: ElementwiseTransformer | None = None,
        mask: Literal["checkerboard", "channel"] = "checkerboard",
        flip: bool = False,
        *,
        num_blocks: int = 2,
        context_dim: int = 0,
        image_context: bool = False,
        block_kernel_size: int = 3,
        norm: Literal["group", "batch"] | None = None,
    ) -> None:
        channels, height, width = _image_shape(event_shape, "ConvCoupling")
        if mask not in _MASKS:
            raise ValueError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        if mask == "checkerboard" and height * width < 2:
            raise ValueError(
                "a checkerboard mask needs at least two pixels (H * W >= 2); got the event "
                f"shape {tuple(event_shape)}"
            )
        if mask == "channel" and channels < 2:
            raise ValueError(
                "a channel mask needs at least two channels (C >= 2); got the event shape "
                f"{tuple(event_shape)}"
            )
        if image_context and (context_dim < 1 or context_dim % (height * width)):
            raise ValueError(
                "image_context=True reads the context as C_c planes of H x W pixels: "
                f"context_dim must be a positive multiple of H * W = {height * width}, got "
                f"{context_dim}"
            )
        super().__init__((channels, height, width), context_dim)
        self.image_context = bool(image_context)
        context_channels = context_dim // (height * width) if image_context else context_dim
        self.transformer = transformer if transformer is not None else Affine()
        self.mask_kind, self.flip = mask, bool(flip)
        count = self.transformer.params_per_dim
        if mask == "checkerboard":
            index = torch.arange(height)[:, None] + torch.arange(width)
            passed = (index % 2 == 0) != self.flip
            self.register_buffer("mask", passed.expand(channels, height, width).clone())
            self._transformed_channels = channels
            in_channels = channels + 1  # the masked image and the mask
        else:
            half = channels // 2
            passed = (torch.arange(channels) < half) != self.flip
            self.register_buffer("mask", passed[:, None, None].expand(-1, height, width).clone())
            self._passed_channels = slice(half, None) if self.flip else slice(0, half)
            self._changed_channels = slice(0, half) if self.flip else slice(half, None)
            self._transformed_channels = channels - half if not self.flip else half
            in_channels = half if not self.flip else channels - half
        self.conditioner = ConvResNet(
            in_channels + context_channels,
            count * self._transformed_channels,
            hidden_channels,
            num_blocks,
            block_kernel_size=block_kernel_size,
            norm=norm,
        )
        _start_at_identity(
            self.conditioner.output_layer, self.transformer, self._transformed_channels
        )

    def _params(self, passed: Tensor, context: Tensor | None) -> Tensor:
        """Transformer parameters ``(..., P, C_b, H, W)`` from the network's input channels."""
        if context is not None:
            batch = torch.broadcast_shapes(passed.shape[:-3], context.shape[:-1])
            pixels = self.event_shape[1:]
            if self.image_context:
                planes = context.unflatten(-1, (-1, *pixels)).expand(*batch, -1, *pixels)
            else:
                planes = context[..., None, None].expand(*batch, -1, *pixels)
            passed = torch.cat([passed.expand(*batch, -1, -1, -1), planes], dim=-3)
        out = self.conditioner(passed)
        return out.unflatten(-3, (self.transformer.params_per_dim, self._transformed_channels))

    def _map(self, value: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        """The coupling (or its inverse) and the forward log-det, written once for both."""
        apply = self.transformer.inverse if inverse else self.transformer.forward
        if self.mask_kind == "checkerboard":
            mask = self.mask
            plane = mask[:1].to(value.dtype).expand(*value.shape[:-3], 1, *mask.shape[1:])
            passed = torch.cat([torch.where(mask, value, torch.zeros_like(value)), plane], -3)
            theta = self._params(passed, context)
            mapped, log_slope = apply(value.flatten(-3), theta.flatten(-3))
            out = torch.where(mask, value, mapped.unflatten(-1, self.event_shape))
            log_slope = torch.where(mask.flatten(), torch.zeros_like(log_slope), log_slope)
            return out, log_slope.sum(-1)
        passed = value[..., self._passed_channels, :, :]
        theta = self._params(passed, context)
        changed = value[..., self._changed_channels, :, :]
        mapped, log_slope = apply(changed.flatten(-3), theta.flatten(-3))
        mapped = mapped.unflatten(-1, changed.shape[-3:])
        batch = mapped.shape[:-3]
        passed = passed.expand(*batch, -1, -1, -1)
        parts = (mapped, passed) if self.flip else (passed, mapped)
        return torch.cat(parts, dim=-3), log_slope.sum(-1)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(x, context, inverse=False)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(y, context, inverse=True)

    def extra_repr(self) -> str:
        """Show the sizes, the mask and the transformer in ``repr``."""
        flip = ", flip=True" if self.flip else ""
        return f"{super().extra_repr()}, mask={self.mask_kind!r}{flip}, {self.transformer!r}"
