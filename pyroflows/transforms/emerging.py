r"""Emerging convolutions: a :math:`k \times k` invertible convolution made of two triangular ones.

A masked convolution whose output at pixel :math:`(h, w)` and channel :math:`c` reads only
inputs that come at or after it in the raster order over (pixel, channel) is, written as a
matrix on the flattened image, triangular: its log-det is the sum of the logs of its diagonal,
and its inverse is a triangular solve. Composing such a convolution with its mirror image (one
reading the pixels at and below-right of the centre, the other at and above-left) gives a map
whose every output reads the full :math:`k \times k` neighbourhood of its pixel, in every
channel: the :math:`k \times k` convolution "emerges" (Hoogeboom, van den Berg & Welling 2019).

The same paper's periodic convolution, :class:`PeriodicConv`, wraps around the image edges
instead: in the Fourier domain it is one :math:`C \times C` matrix per frequency, which gives
its log-det and its inverse.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._base import FlowModule
from .linear import _solve_triangular

__all__ = ["EmergingConv", "PeriodicConv"]


def _checked_image_shape(
    event_shape: Sequence[int], kernel_size: int, name: str
) -> tuple[int, ...]:
    """``event_shape`` as a tuple, after checking it is ``(C, H, W)`` and ``kernel_size`` odd."""
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if len(shape) != 3:
        raise ValueError(f"{name} takes images: an event shape (C, H, W), got {event_shape!r}")
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    return shape


def _triangular_kernel(weight: Tensor, mask: Tensor, log_diag: Tensor) -> Tensor:
    r"""The kernel of one triangular convolution: ``weight * mask`` plus :math:`e^d` at the centre.

    :math:`e^d` goes on the centre tap's diagonal (``weight``: ``(C, C, m, m)``, the centre tap
    at ``[..., 0, 0]``).
    """
    size = weight.shape[-1]
    diagonal = torch.diag_embed(log_diag.exp())[..., None, None]
    return weight * mask + F.pad(diagonal, (0, size - 1, 0, size - 1))


def _conv_after(x: Tensor, kernel: Tensor) -> Tensor:
    r"""The convolution that reads the pixel and those after it in raster order.

    ``y[c, h, w] = sum K[c, c', i, j] x[c', h + i, w + j]`` over ``i, j`` in ``[0, m)`` (zero
    outside the image).
    """
    size = kernel.shape[-1]
    return F.conv2d(F.pad(x, (0, size - 1, 0, size - 1)), kernel)


def _conv_before(x: Tensor, kernel: Tensor) -> Tensor:
    r"""The mirror image of :func:`_conv_after` (channels, rows and columns reversed).

    ``y[c, h, w] = sum K[C-1-c, C-1-c', i, j] x[c', h - i, w - j]``.
    """
    size = kernel.shape[-1]
    return F.conv2d(F.pad(x, (size - 1, 0, size - 1, 0)), kernel.flip(0, 1, 2, 3))


def _row_blocks(kernel: Tensor, width: int) -> Tensor:
    r"""The ``(m, W C, W C)`` blocks of :func:`_conv_after` between image rows.

    Row ``h`` of the output, flattened pixel-major as ``(w, c)``, is
    :math:`\sum_i B_i\, x_{h + i}`; :math:`B_0` is upper triangular with the centre tap's
    diagonal. :math:`B_i[(w, c), (w', c')] = K[c, c', i, w' - w]` for :math:`0 \le w' - w < m`.
    """
    size = kernel.shape[-1]
    shifts = torch.eye(width + size - 1, dtype=kernel.dtype, device=kernel.device)
    shifts = torch.stack([shifts[j : j + width, :width] for j in range(size)])  # (m, W, W)
    blocks = torch.einsum("jvu,cdij->ivcud", shifts, kernel)
    channels = kernel.shape[0]
    return blocks.reshape(size, width * channels, width * channels)


def _solve_after(y: Tensor, kernel: Tensor) -> Tensor:
    r"""Invert :func:`_conv_after` on ``y`` of shape ``(B, C, H, W)`` by back substitution.

    Over the image rows, last first: each row is one batched triangular solve against
    :math:`B_0` after the rows below it are subtracted (``H`` steps, no loop over pixels or
    samples).
    """
    batch, channels, height, width = y.shape
    blocks = _row_blocks(kernel, width)
    rows = y.permute(0, 2, 3, 1).reshape(batch, height, width * channels)
    solved: list[Tensor] = [rows[:, 0]] * height
    for h in range(height - 1, -1, -1):
        rhs = rows[:, h]
        for i in range(1, min(blocks.shape[0], height - h)):
            rhs = rhs - F.linear(solved[h + i], blocks[i])
        solved[h] = _solve_triangular(blocks[0], rhs, upper=True)
    x = torch.stack(solved, dim=1).reshape(batch, height, width, channels)
    return x.permute(0, 3, 1, 2)


class EmergingConv(FlowModule):
    r"""Emerging :math:`k \times k` convolution on ``(C, H, W)`` images: two triangular ones.

    With :math:`m = (k + 1) / 2` and kernels :math:`K_1, K_2` of shape :math:`(C, C, m, m)`,

    .. math::
        z_{c,h,w} = \sum_{c',\,0 \le i, j < m} K_1[c, c', i, j]\, x_{c', h+i, w+j}, \qquad
        y_{c,h,w} = b_c + \sum_{c',\,0 \le i, j < m} K_2[\bar c, \bar c', i, j]\,
        z_{c', h-i, w-j}, \qquad \bar c = C - 1 - c,

    zero outside the image. :math:`K_1` reads the pixel and those after it in raster order,
    the second convolution (the mirror image of one like it) the pixel and those before it.
    At the centre tap :math:`K_r[\cdot, \cdot, 0, 0]` is upper triangular over channels with
    the positive diagonal :math:`e^{d_{r,c}}` (a fixed mask zeroes the rest), so channel
    :math:`c` of :math:`z` reads channels :math:`c' \ge c` of its pixel, and channel :math:`c`
    of :math:`y` channels :math:`c' \le c`. Flattened over (pixel, channel), :math:`z = A_1 x`
    with :math:`A_1` upper triangular and :math:`y = A_2 z + b` with :math:`A_2` lower
    triangular, so

    .. math::
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = H W \sum_{c=1}^{C} \left(d_{1,c} + d_{2,c}\right), \qquad
        x = A_1^{-1} A_2^{-1} (y - b),

    each inverse by back substitution. For generic weights every output reads exactly the
    :math:`k \times k` neighbourhood of its pixel, in every channel (the receptive field of a
    :math:`k \times k` convolution). It starts as the identity (off-centre weights and
    :math:`d` zero).

    **Cost** per sample (:math:`N = C H W`): forward, two convolutions with :math:`m^2` taps,
    :math:`O(m^2 C^2 H W)`; log-det :math:`O(C)`, independent of :math:`x`; inverse, for each
    convolution :math:`H` sequential steps (a Python loop over image rows, vectorised over the
    batch and the row), each a triangular solve against the :math:`(W C) \times (W C)` block
    of the row and :math:`m - 1` products with the blocks to the rows after it:
    :math:`O(m H (W C)^2)` time, :math:`O(m (W C)^2)` memory for the blocks (formed per call
    from the kernel), never the dense :math:`N \times N` matrix. So the inverse does about
    :math:`W / m` times the forward's arithmetic, in :math:`2 H` sequential steps: fine up to
    a few thousand entries per row (:math:`W C = 96` for a 3 x 32 x 32 image, 768 for
    48 x 16 x 16). A density model's data pass through its flows' inverses: there,
    ``EmergingConv(...).inv`` puts the convolutions on the data side and the solves on the
    sampling side.

    **Conditioning.** The inverse of a triangular convolution is a recursive filter over the
    image, as ill-conditioned as the matrix :math:`A_r` itself. Near the identity (centre taps
    dominating, as at the start) rounding errors stay at the dtype's resolution; a kernel far
    from it can make :math:`\|A_r^{-1}\|` grow geometrically with the image size, which no
    solver avoids. Measured in float32 (batch of 8, every parameter perturbed by
    :math:`\sigma` times a standard normal, :math:`k = 3`): round-trip error
    :math:`\le 2 \cdot 10^{-6}` for :math:`\sigma \le 0.2` on 1 x 28 x 28, 4 x 14 x 14 and
    3 x 32 x 32 images; :math:`10^{-3}` to :math:`10^{1}` at :math:`\sigma = 0.3` on the last
    two, and useless at :math:`\sigma = 0.5`.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        kernel_size: the odd size :math:`k` of the emerging receptive field (default 3; 1 gives
            a 1x1 convolution in LU form with positive diagonals).

    References:
        Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative Normalizing
        Flows", ICML 2019, arXiv:1901.11137.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = EmergingConv((2, 5, 6))
        >>> with torch.no_grad():
        ...     for param in flow.parameters():
        ...         _ = param.add_(0.1 * torch.randn_like(param))
        >>> x = torch.randn(4, 2, 5, 6)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> y.shape, log_det.shape
        (torch.Size([4, 2, 5, 6]), torch.Size([4]))
        >>> x_back, _ = flow.inverse_and_log_det(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-5))
        True
    """

    def __init__(self, event_shape: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__(_checked_image_shape(event_shape, kernel_size, "EmergingConv"))
        channels = self.event_shape[0]
        size = (int(kernel_size) + 1) // 2
        self.kernel_size = int(kernel_size)
        # off the centre tap every connection; at it, channel c reads channels c' > c only
        # (c' == c is the diagonal e^d)
        mask = torch.ones(channels, channels, size, size)
        mask[:, :, 0, 0] = torch.triu(torch.ones(channels, channels), 1)
        self.register_buffer("mask", mask)
        self.weight1 = nn.Parameter(torch.zeros(channels, channels, size, size))
        self.weight2 = nn.Parameter(torch.zeros(channels, channels, size, size))
        self.log_diag1 = nn.Parameter(torch.zeros(channels))
        self.log_diag2 = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def kernels(self) -> tuple[Tensor, Tensor]:
        r"""The two masked kernels :math:`(K_1, K_2)`, each of shape :math:`(C, C, m, m)`.

        :math:`K_2` is stored like :math:`K_1` (reading after the pixel) and applied mirrored:
        channels, rows and columns reversed.
        """
        return (
            _triangular_kernel(self.weight1, self.mask, self.log_diag1),
            _triangular_kernel(self.weight2, self.mask, self.log_diag2),
        )

    def _constant_log_det(self, like: Tensor) -> Tensor:
        _, height, width = self.event_shape
        total = (self.log_diag1.sum() + self.log_diag2.sum()) * (height * width)
        return total.expand(like.shape[:-3])

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        first, second = self.kernels()
        images = x.reshape(-1, *self.event_shape)
        z = _conv_before(_conv_after(images, first), second) + self.bias[:, None, None]
        return z.reshape(x.shape), self._constant_log_det(x)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        first, second = self.kernels()
        images = y.reshape(-1, *self.event_shape) - self.bias[:, None, None]
        # the mirrored convolution is solved as the plain one on the mirrored image
        z = _solve_after(images.flip(-3, -2, -1), second).flip(-3, -2, -1)
        return _solve_after(z, first).reshape(y.shape), self._constant_log_det(y)

    def _log_det(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self._constant_log_det(x)


def _kernel_spectrum(kernel: Tensor, height: int, width: int) -> Tensor:
    r"""The ``(H, W, C, C)`` transfer matrices :math:`\hat K(u, v)` of a centred periodic kernel.

    :math:`\hat K(u, v) = \sum_{i,j} K[\cdot, \cdot, i, j]\, e^{2 \pi \mathrm{i} (u (i - r) / H
    + v (j - r) / W)}` with :math:`r = (k - 1) / 2`: tap :math:`(i, j)` sits at position
    :math:`(r - i, r - j)` (mod :math:`H, W`; taps that wrap onto one position add up), whose
    FFT this is.
    """
    channels, _, size, _ = kernel.shape
    radius = (size - 1) // 2
    rows = (radius - torch.arange(size, device=kernel.device)) % height
    cols = (radius - torch.arange(size, device=kernel.device)) % width
    index = (rows[:, None] * width + cols[None, :]).reshape(-1)  # tap (i, j) -> position
    placed = kernel.new_zeros(channels, channels, height * width)
    placed = placed.index_add(-1, index, kernel.reshape(channels, channels, -1))
    spectrum = torch.fft.fft2(placed.reshape(channels, channels, height, width))
    return spectrum.permute(2, 3, 0, 1)


class PeriodicConv(FlowModule):
    r"""Periodic :math:`k \times k` convolution on ``(C, H, W)`` images, inverted by FFT.

    A convolution that wraps around the image edges (a circulant map in each spatial axis),

    .. math::
        y_{c,h,w} = b_c + \sum_{c',\,0 \le i, j < k} K[c, c', i, j]\,
        x_{c',\,(h + i - r) \bmod H,\,(w + j - r) \bmod W}, \qquad r = (k - 1) / 2,

    is diagonalised by the 2-D discrete Fourier transform: frequency :math:`(u, v)` of
    :math:`y - b` is :math:`\hat K(u, v)` times that of :math:`x`, with the :math:`C \times C`
    complex matrix :math:`\hat K(u, v) = \sum_{i,j} K[\cdot, \cdot, i, j]\,
    e^{2 \pi \mathrm{i} (u (i - r) / H + v (j - r) / W)}`. Hence

    .. math::
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = \sum_{u < H,\, v < W} \log\left|\det \hat K(u, v)\right|, \qquad
        \hat x(u, v) = \hat K(u, v)^{-1}\, \widehat{(y - b)}(u, v).

    Any kernel whose transfer matrices are all invertible is a bijection (a kernel larger than
    the image wraps onto itself). It starts as the identity (centre tap :math:`I`, the rest 0).

    **Cost** per sample: forward and inverse, one real FFT of the image and one back,
    :math:`O(C H W \log(H W))`, and :math:`C \times C` products per frequency,
    :math:`O(C^2 H W)`; per call (independent of the batch), the spectrum of the kernel,
    :math:`O(C^2 H W \log(H W))`, and for the log-det (or the inverse) one
    :math:`C \times C` LU factorisation per frequency, :math:`O(C^3 H W)`. Unconditional.

    Args:
        event_shape: the image shape ``(C, H, W)``.
        kernel_size: the odd kernel size :math:`k` (default 3).

    References:
        Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative Normalizing
        Flows", ICML 2019, arXiv:1901.11137, section 3.3 (periodic convolutions).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = PeriodicConv((2, 4, 6))
        >>> with torch.no_grad():
        ...     _ = flow.weight.add_(0.1 * torch.randn_like(flow.weight))
        >>> x = torch.randn(3, 2, 4, 6)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> x_back, _ = flow.inverse_and_log_det(y)
        >>> log_det.shape, bool(torch.allclose(x_back, x, atol=1e-5))
        (torch.Size([3]), True)
    """

    def __init__(self, event_shape: Sequence[int], kernel_size: int = 3) -> None:
        super().__init__(_checked_image_shape(event_shape, kernel_size, "PeriodicConv"))
        channels, size = self.event_shape[0], int(kernel_size)
        self.kernel_size = size
        weight = torch.zeros(channels, channels, size, size)
        weight[:, :, size // 2, size // 2] = torch.eye(channels)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(channels))

    def spectrum(self) -> Tensor:
        r"""The transfer matrices :math:`\hat K(u, v)`, complex, of shape ``(H, W, C, C)``."""
        _, height, width = self.event_shape
        return _kernel_spectrum(self.weight, height, width)

    def _log_det_of(self, spectrum: Tensor, like: Tensor) -> Tensor:
        total = torch.linalg.slogdet(spectrum).logabsdet.sum()
        return total.expand(like.shape[:-3])

    def _mix_frequencies(self, images: Tensor, matrices: Tensor) -> Tensor:
        """Multiply each frequency of ``images`` ``(B, C, H, W)`` by its ``(C, C)`` matrix."""
        _, height, width = self.event_shape
        half = matrices[:, : width // 2 + 1]  # the frequencies a real FFT keeps
        coefficients = torch.fft.rfft2(images)  # (B, C, H, W // 2 + 1)
        mixed = torch.einsum("hwcd,bdhw->bchw", half, coefficients)
        return torch.fft.irfft2(mixed, s=(height, width))

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        spectrum = self.spectrum()
        images = x.reshape(-1, *self.event_shape)
        y = self._mix_frequencies(images, spectrum) + self.bias[:, None, None]
        return y.reshape(x.shape), self._log_det_of(spectrum, x)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        spectrum = self.spectrum()
        images = y.reshape(-1, *self.event_shape) - self.bias[:, None, None]
        x = self._mix_frequencies(images, torch.linalg.inv(spectrum))
        return x.reshape(y.shape), self._log_det_of(spectrum, y)

    def _log_det(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self._log_det_of(self.spectrum(), x)
