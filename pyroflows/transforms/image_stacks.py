r"""Ready multi-scale image flows: Glow and RealNVP on ``(C, H, W)`` images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ._base import FlowModule
from .compose import FlowSequence
from .convolution import InvertibleConv1x1, _image_shape
from .image_coupling import ConvCoupling
from .linear import ActNorm
from .multiscale import MultiScale
from .transformers import Additive, Affine, ElementwiseTransformer, RationalQuadraticSpline

__all__ = ["glow", "realnvp_image"]

Couplings = Literal["affine", "additive", "spline"]


def _transformer(coupling: str, count_bins: int = 8) -> ElementwiseTransformer:
    if coupling == "affine":
        return Affine()
    if coupling == "additive":
        return Additive()
    if coupling == "spline":
        return RationalQuadraticSpline(count_bins)
    raise ValueError(f"coupling must be 'affine', 'additive' or 'spline', got {coupling!r}")


def _checked_levels(
    event_shape: Sequence[int], levels: int, halvings: int, name: str
) -> tuple[int, int, int]:
    """The image shape, checked to be halved ``halvings`` times; ``levels >= 1``."""
    channels, height, width = _image_shape(event_shape, name)
    if int(levels) < 1:
        raise ValueError(f"{name}: levels must be at least 1, got {levels!r}")
    factor = 2**halvings
    if height % factor or width % factor:
        raise ValueError(
            f"{name} with levels={levels} squeezes {halvings} times: H and W must be multiples "
            f"of {factor}; got the event shape {(channels, height, width)}"
        )
    return channels, height, width


def _from_the_data_side(layers: list[FlowModule]) -> FlowSequence:
    """A FlowSequence of ``layers`` listed in the data-to-latent order of the papers."""
    return FlowSequence(layers[::-1])  # a FlowSequence lists them from the latent side


def glow(
    event_shape: Sequence[int],
    levels: int = 2,
    steps_per_level: int = 8,
    hidden_channels: int = 64,
    coupling: Couplings = "affine",
    *,
    num_blocks: int = 1,
    block_kernel_size: int = 1,
    count_bins: int = 8,
    context_dim: int = 0,
) -> MultiScale:
    r"""Glow: ``levels`` levels of squeeze, ``steps_per_level`` flow steps and a split.

    From the data to the latent (the inverse map, through which data enter a density model),
    level :math:`\ell = 1, \dots, L` squeezes the image (:class:`~pyroflows.transforms.Squeeze`)
    to :math:`(4C_\ell, H_\ell / 2, W_\ell / 2)`, applies :math:`K` steps

    .. math::
        x \mapsto \mathrm{ActNorm} \;\to\; W_{1\times1} \;\to\;
        \big(y_a = x_a,\; y_b = e^{s(x_a, c)} \odot x_b + t(x_a, c)\big), \qquad
        \log|\det J| = \sum_{\text{steps}} \Big( HW \textstyle\sum_c s^{\mathrm{an}}_c
        + HW \log|\det W| + \sum_{i \in b} s_i \Big),

    (:class:`~pyroflows.transforms.ActNorm` per channel,
    :class:`~pyroflows.transforms.InvertibleConv1x1`, and an affine
    :class:`~pyroflows.transforms.ConvCoupling` with a channel mask, always the same half:
    the learned 1x1 convolution before it replaces RealNVP's alternating masks, as in the
    paper; ``coupling="additive"`` gives :math:`s = 0`; ``coupling="spline"`` replaces the
    affine map by a monotone rational-quadratic spline of ``count_bins`` bins per pixel, as in
    the Glow-like RQ-NSF of Durkan et al. 2019, arXiv:1906.04032, which the image defaults
    use), then factors out half of the channels (:math:`2C_\ell`); the last
    level does not split. The result is one :class:`~pyroflows.transforms.MultiScale` per level,
    nested, on the image shape itself, so that a standard normal base over ``(C, H, W)`` gives
    the density; the forward map (latent to data) runs each step backwards. The conditioner is
    a :class:`~pyroflows.nn.ConvResNet`; the defaults ``num_blocks=1``,
    ``block_kernel_size=1`` give Glow's :math:`3\times3 \to 1\times1 \to 3\times3` shape
    (the middle is one per-pixel residual block of two :math:`1\times1` convolutions, so
    :math:`F^2` more weights per coupling than the paper's single one; ``num_blocks=0``
    drops it), output zero-initialised, so every coupling starts as the identity. With
    ``context_dim > 0`` the couplings read the context (e.g. a one-hot label) as extra input
    channels. Cost per image, either direction:
    :math:`O(\sum_\ell K\, H_\ell W_\ell\, [C_\ell^2 + (C_\ell + F) 9 F + 2 F^2])` for
    :math:`F` = ``hidden_channels``. ``H`` and ``W`` must be multiples of :math:`2^L`.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        levels: number :math:`L` of levels (squeezes).
        steps_per_level: steps :math:`K` per level.
        hidden_channels: feature maps :math:`F` of each coupling's network.
        coupling: ``"affine"`` (Glow), ``"additive"`` (NICE-like, volume preserving) or
            ``"spline"`` (rational-quadratic splines).
        num_blocks: residual blocks of each coupling's network; keyword-only.
        block_kernel_size: kernel of the blocks' first convolution; keyword-only.
        count_bins: spline bins of ``coupling="spline"``; keyword-only.
        context_dim: size of the context vector (``0``: unconditional); keyword-only.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018,
        arXiv:1807.03039.

    Example:
        >>> import torch
        >>> flow = glow((1, 8, 8), levels=2, steps_per_level=2, hidden_channels=8)
        >>> x = torch.rand(5, 1, 8, 8)
        >>> z, log_det = flow.inverse_and_log_det(x)  # data -> latent
        >>> z.shape, log_det.shape
        (torch.Size([5, 1, 8, 8]), torch.Size([5]))
        >>> bool(torch.allclose(flow(z), x, atol=1e-5))
        True
    """
    channels, height, width = _checked_levels(event_shape, levels, int(levels), "glow")
    transformer = _transformer(coupling, count_bins)
    inner = None
    for level in reversed(range(int(levels))):  # the innermost level first
        shape = (channels * 2**level, height // 2**level, width // 2**level)
        squeezed = (4 * shape[0], shape[1] // 2, shape[2] // 2)
        layers: list[FlowModule] = []
        for _ in range(int(steps_per_level)):
            layers += [
                ActNorm(squeezed),
                InvertibleConv1x1(squeezed),
                ConvCoupling(
                    squeezed,
                    hidden_channels,
                    transformer,
                    mask="channel",
                    num_blocks=num_blocks,
                    block_kernel_size=block_kernel_size,
                    context_dim=context_dim,
                ),
            ]
        steps = _from_the_data_side(layers) if layers else None
        inner = MultiScale(shape, steps, inner)
    return inner


def realnvp_image(
    event_shape: Sequence[int],
    levels: int = 2,
    hidden_channels: int = 64,
    coupling: Couplings = "affine",
    *,
    num_blocks: int = 2,
    block_kernel_size: int = 3,
    actnorm: bool = True,
    count_bins: int = 8,
    context_dim: int = 0,
) -> MultiScale | FlowSequence:
    r"""RealNVP's multi-scale architecture: checkerboard couplings, squeeze, channel couplings.

    From the data to the latent, each level but the last applies three affine
    :class:`~pyroflows.transforms.ConvCoupling` layers with alternating checkerboard masks at
    full resolution, squeezes, applies three with alternating channel masks, and factors out
    half of the channels; the last level is four checkerboard couplings. With
    ``actnorm=True`` an :class:`~pyroflows.transforms.ActNorm` (per channel,
    data-initialised) follows each coupling, in place of the paper's batch normalisation (it
    keeps samples independent and the map the same in training and evaluation). Each
    coupling is

    .. math::
        y_a = x_a, \qquad y_b = e^{s(x_a, c)} \odot x_b + t(x_a, c), \qquad
        \log|\det J| = \textstyle\sum_{i \in b} s_i ,

    and the levels are nested :class:`~pyroflows.transforms.MultiScale` flows on the image
    shape itself (a plain :class:`~pyroflows.transforms.FlowSequence` when ``levels=1``).
    Cost per image, either direction: one :class:`~pyroflows.nn.ConvResNet` pass per coupling,
    :math:`O(\sum_\ell 7\, H_\ell W_\ell [(C_\ell + F) 9 F + B (k_B^2 + 1) F^2])`. ``H`` and
    ``W`` must be multiples of :math:`2^{L-1}`.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        levels: number :math:`L` of levels (``L - 1`` squeezes).
        hidden_channels: feature maps :math:`F` of each coupling's network.
        coupling: ``"affine"`` (RealNVP), ``"additive"`` (NICE) or ``"spline"``
            (rational-quadratic splines of ``count_bins`` bins).
        num_blocks: residual blocks :math:`B` of each coupling's network; keyword-only.
        block_kernel_size: kernel :math:`k_B` of the blocks' first convolution; keyword-only.
        actnorm: an ActNorm after each coupling; keyword-only.
        count_bins: spline bins of ``coupling="spline"``; keyword-only.
        context_dim: size of the context vector (``0``: unconditional); keyword-only.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803, section 4.1.

    Example:
        >>> import torch
        >>> flow = realnvp_image((1, 8, 8), levels=2, hidden_channels=8, num_blocks=1)
        >>> x = torch.rand(5, 1, 8, 8)
        >>> z, log_det = flow.inverse_and_log_det(x)  # data -> latent
        >>> z.shape, log_det.shape
        (torch.Size([5, 1, 8, 8]), torch.Size([5]))
        >>> bool(torch.allclose(flow(z), x, atol=1e-5))
        True
    """
    channels, height, width = _checked_levels(event_shape, levels, int(levels) - 1, "realnvp_image")
    transformer = _transformer(coupling, count_bins)

    def couplings(shape: tuple[int, int, int], mask: str, count: int) -> list[FlowModule]:
        layers: list[FlowModule] = []
        for k in range(count):
            layers.append(
                ConvCoupling(
                    shape,
                    hidden_channels,
                    transformer,
                    mask=mask,
                    flip=k % 2 == 1,
                    num_blocks=num_blocks,
                    block_kernel_size=block_kernel_size,
                    context_dim=context_dim,
                )
            )
            if actnorm:
                layers.append(ActNorm(shape))
        return layers

    last = int(levels) - 1
    final = (channels * 2**last, height // 2**last, width // 2**last)
    flow: MultiScale | FlowSequence = _from_the_data_side(couplings(final, "checkerboard", 4))
    for level in reversed(range(last)):
        shape = (channels * 2**level, height // 2**level, width // 2**level)
        squeezed = (4 * shape[0], shape[1] // 2, shape[2] // 2)
        flow = MultiScale(
            shape,
            _from_the_data_side(couplings(squeezed, "channel", 3)),
            flow,
            outer_steps=_from_the_data_side(couplings(shape, "checkerboard", 3)),
        )
    return flow
