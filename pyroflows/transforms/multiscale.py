r"""Multi-scale image flows (RealNVP, Glow): squeeze (space-to-depth) and factor-out levels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._base import FlowModule, InverseFlow, _log_det_over_event
from .convolution import _image_shape

__all__ = ["MultiScale", "Squeeze"]


def _squeezed_shape(shape: Sequence[int], name: str) -> tuple[int, int, int]:
    """``(4C, H/2, W/2)`` for an image shape ``(C, H, W)``, or a ValueError naming the shape."""
    channels, height, width = _image_shape(shape, name)
    if height % 2 or width % 2:
        raise ValueError(
            f"{name} halves the height and width: they must be even; got the event shape "
            f"{(channels, height, width)}"
        )
    return 4 * channels, height // 2, width // 2


def _permute_last(value: Tensor, order: tuple[int, ...]) -> Tensor:
    """``value`` with its last ``len(order)`` dimensions permuted by ``order``."""
    lead = value.dim() - len(order)
    return value.permute(*range(lead), *(lead + axis for axis in order))


def _squeeze(x: Tensor) -> Tensor:
    """Space-to-depth on the last three dimensions: ``(..., C, H, W) -> (..., 4C, H/2, W/2)``."""
    *batch, channels, height, width = x.shape
    x = x.reshape(*batch, channels, height // 2, 2, width // 2, 2)
    x = _permute_last(x, (0, 2, 4, 1, 3))  # (..., C, 2 (row), 2 (column), H/2, W/2)
    return x.reshape(*batch, 4 * channels, height // 2, width // 2)


def _unsqueeze(y: Tensor) -> Tensor:
    """Depth-to-space, the inverse of :func:`_squeeze`."""
    *batch, channels, height, width = y.shape
    y = y.reshape(*batch, channels // 4, 2, 2, height, width)
    y = _permute_last(y, (0, 3, 1, 4, 2))  # (..., C, H/2, 2 (row), W/2, 2 (column))
    return y.reshape(*batch, channels // 4, 2 * height, 2 * width)


class Squeeze(FlowModule):
    r"""Squeeze (space-to-depth, factor 2): ``(C, H, W)`` images to ``(4C, H/2, W/2)``.

    Each :math:`2 \times 2` block of pixels of a channel becomes four channels at one pixel, in
    the ordering of the PyTorch ports of Glow and RealNVP (channel-major):

    .. math::
        y_{4c + 2i + j,\,h,\,w} = x_{c,\,2h + i,\,2w + j}, \qquad i, j \in \{0, 1\}, \qquad
        x = \text{the same equation read backwards (depth-to-space)}, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = 0 .

    A permutation of the elements, so the log-det is zero (returned with the batch shape).
    The event shape changes: ``event_shape`` is the input's ``(C, H, W)``, ``output_shape``
    the output's; ``forward_shape``/``inverse_shape`` map full shapes, as torch's
    ``TransformedDistribution`` needs, and the inverse checks its input against
    ``output_shape`` (``squeeze.inv`` keeps ``event_shape``, its *output* shape, and maps
    shapes with ``forward_shape``/``inverse_shape`` swapped). Domain and codomain are real
    images (``event_dim`` 3). Cost: one copy of
    the :math:`CHW` elements in either direction. Since its output has another shape, it is not
    a registry entry (the conformance suite compares inputs and outputs of one shape); inside a
    model it is part of :class:`MultiScale`, whose input and output shapes agree.

    Args:
        event_shape: the image shape ``(C, H, W)``; ``H`` and ``W`` must be even.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803, section 3.6 (the squeezing operation).

    Example:
        >>> import torch
        >>> squeeze = Squeeze((1, 2, 4))
        >>> x = torch.arange(8.0).reshape(1, 2, 4)
        >>> y = squeeze(x)
        >>> y.shape, y[:, 0, 1].tolist()  # the 2x2 block at columns 2-3: 2, 3, 6, 7
        (torch.Size([4, 1, 2]), [2.0, 3.0, 6.0, 7.0])
        >>> bool(torch.equal(squeeze.inv(y.clone()), x)), squeeze.log_abs_det_jacobian(x, y)
        (True, tensor(0.))
        >>> squeeze.forward_shape(torch.Size([5, 1, 2, 4]))
        torch.Size([5, 4, 1, 2])
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        output_shape = _squeezed_shape(event_shape, "Squeeze")
        super().__init__(tuple(event_shape))
        self.output_shape = output_shape

    def _zeros(self, value: Tensor) -> Tensor:
        return value.new_zeros(value.shape[:-3])

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _squeeze(x), self._zeros(x)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _unsqueeze(y), self._zeros(y)

    def _log_det(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self._zeros(x)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x` (depth-to-space of ``y``, shape ``(..., *output_shape)``) and 0."""
        self._context_for(context)
        if y.dim() < 3 or tuple(y.shape[-3:]) != self.output_shape:
            raise ValueError(
                f"Squeeze expects input y of the inverse of event shape {self.output_shape}; "
                f"got shape {tuple(y.shape)}"
            )
        return self._inverse_pass(y, None)

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        """The output shape for an input of shape ``(..., C, H, W)``."""
        return torch.Size((*shape[:-3], *self.output_shape))

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        """The input shape for an output of shape ``(..., 4C, H/2, W/2)``."""
        return torch.Size((*shape[:-3], *self.event_shape))


Part = FlowModule | InverseFlow


def _checked_part(part: Part | None, shape: tuple[int, ...], role: str) -> Part | None:
    if part is not None and tuple(part.event_shape) != shape:
        raise ValueError(
            f"MultiScale: {role} must have the event shape {shape}; got {tuple(part.event_shape)}"
        )
    return part


class MultiScale(FlowModule):
    r"""One level of a multi-scale flow (RealNVP, Glow), on ``(C, H, W)`` images to themselves.

    Read from the data :math:`x` to the latent :math:`z` (the inverse, as data enter a density
    model ``TransformedDistribution(base, [flow])``), a level applies ``outer_steps``
    :math:`g` at full resolution, squeezes (:class:`Squeeze`), applies ``steps`` :math:`s` at
    half resolution, keeps the first ``keep`` channels :math:`k` for ``inner`` :math:`f` (the
    next level, itself a :class:`MultiScale`, or any flow on ``(keep, H/2, W/2)``) and factors
    the other channels out: they are latent already and pass through later levels unchanged.
    Finally it un-squeezes, so input and output are ``(C, H, W)`` and the whole model works
    with a standard normal base over the image. The forward map (latent to data, sampling) is

    .. math::
        u = \operatorname{squeeze}(z), \qquad
        x = g\Big(\operatorname{squeeze}^{-1}\big(s\big([\,f(u_{1:k}),\ u_{k+1:4C}\,]\big)\big)
        \Big), \qquad
        \log\left|\det \frac{\partial x}{\partial z}\right| =
        \log|\det J_f| + \log|\det J_s| + \log|\det J_g| ,

    each term at its own input; the inverse runs the parts' inverses in the reverse order.

    **Layout of the latent** (the output of the inverse): :math:`u = \operatorname{squeeze}(z)`
    (``u[..., 4c + 2i + j, h, w] = z[..., c, 2h + i, 2w + j]``); ``u[..., :keep, :, :]`` is
    the inner flow's latent (recursively laid out the same way at the next level), and
    ``u[..., keep:, :, :]`` are the latents factored out at this level. So with Glow's
    ``keep = 2C`` and ``C = 1``, the latent pixels ``z[0, 2h + 1, :]`` (odd rows) are factored
    out at the first level, and the even rows go deeper.

    Any part may be ``None`` (skipped); ``inner=None`` makes a final level (its ``keep``
    channels stay as they are). Parts may be conditional: the context goes to every part with a
    ``context_dim`` (all must share one; the others ignore it). Cost: the parts' costs plus
    two copies of the image (squeeze and un-squeeze) in either direction.

    Args:
        event_shape: the image shape ``(C, H, W)``, ``H`` and ``W`` even.
        steps: flow on the squeezed image ``(4C, H/2, W/2)`` (Glow's steps, RealNVP's channel
            couplings), or ``None``.
        inner: flow on the kept channels ``(keep, H/2, W/2)``, or ``None`` (final level).
        keep: channels of the squeezed image that go to ``inner`` (default ``2C``, half);
            keyword-only.
        outer_steps: flow on the full-resolution image ``(C, H, W)``, at the data side of the
            squeeze (RealNVP's checkerboard couplings), or ``None``; keyword-only.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803, section 3.6 (multi-scale architecture).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import ElementwiseAffine, Spline
        >>> final = MultiScale((2, 2, 2), steps=Spline((8, 1, 1)))  # 2 of the 4 channels
        >>> flow = MultiScale((1, 4, 4), steps=ElementwiseAffine((4, 2, 2)), inner=final)
        >>> z = torch.randn(3, 1, 4, 4)
        >>> x, log_det = flow.forward_and_log_det(z)
        >>> x.shape, log_det.shape
        (torch.Size([3, 1, 4, 4]), torch.Size([3]))
        >>> bool(torch.allclose(flow.inv(x.clone()), z, atol=1e-5))
        True
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        steps: Part | None = None,
        inner: Part | None = None,
        *,
        keep: int | None = None,
        outer_steps: Part | None = None,
    ) -> None:
        channels, height, width = _image_shape(event_shape, "MultiScale")
        squeezed = _squeezed_shape(event_shape, "MultiScale")
        keep = 2 * channels if keep is None else int(keep)
        if not 0 < keep < squeezed[0]:
            raise ValueError(
                f"MultiScale: keep must be between 1 and {squeezed[0] - 1} (the squeezed image "
                f"has {squeezed[0]} channels); got {keep}"
            )
        parts = {
            "outer_steps": _checked_part(outer_steps, (channels, height, width), "outer_steps"),
            "steps": _checked_part(steps, squeezed, "steps"),
            "inner": _checked_part(inner, (keep, *squeezed[1:]), "inner"),
        }
        contexts = {part.context_dim for part in parts.values() if part and part.context_dim}
        if len(contexts) > 1:
            raise ValueError(f"conditional parts must share one context_dim, got {contexts}")
        super().__init__((channels, height, width), contexts.pop() if contexts else 0)
        self.keep = keep
        self.outer_steps = parts["outer_steps"]
        self.steps = parts["steps"]
        self.inner = parts["inner"]

    def _parts(self) -> list[nn.Module]:
        """The parts present, from the latent side to the data side."""
        return [part for part in (self.inner, self.steps, self.outer_steps) if part is not None]

    @staticmethod
    def _part_pass(part: Part | None, value: Tensor, context: Tensor | None, inverse: bool):
        """One part's pass in either direction, its log-det summed to the batch shape."""
        if part is None:
            return value, 0
        context = context if part.context_dim else None
        passes = part.inverse_and_log_det if inverse else part.forward_and_log_det
        value, log_det = passes(value, context)
        return value, _log_det_over_event(part, log_det)

    def _forward_pass(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        u = _squeeze(z)
        kept, log_det = self._part_pass(self.inner, u[..., : self.keep, :, :], context, False)
        u = torch.cat([kept, u[..., self.keep :, :, :]], dim=-3)
        u, step = self._part_pass(self.steps, u, context, False)
        x, outer = self._part_pass(self.outer_steps, _unsqueeze(u), context, False)
        return x, self._total(z, log_det + step + outer)

    def _inverse_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        v, outer = self._part_pass(self.outer_steps, x, context, True)
        u, step = self._part_pass(self.steps, _squeeze(v), context, True)
        kept, log_det = self._part_pass(self.inner, u[..., : self.keep, :, :], context, True)
        z = _unsqueeze(torch.cat([kept, u[..., self.keep :, :, :]], dim=-3))
        return z, -self._total(x, log_det + step + outer)

    @staticmethod
    def _total(value: Tensor, log_det: Tensor | int) -> Tensor:
        """The summed log-det with the batch shape (zeros when no part is present)."""
        return value.new_zeros(value.shape[:-3]) + log_det  # broadcast with a context batch

    def extra_repr(self) -> str:
        """Show the sizes and ``keep`` in ``repr``."""
        return f"{super().extra_repr()}, keep={self.keep}"
