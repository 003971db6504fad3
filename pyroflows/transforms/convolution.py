r"""Invertible convolutions of images: Glow's invertible :math:`1 \times 1` convolution."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._base import FlowModule
from .linear import _LUMatrix

__all__ = ["InvertibleConv1x1"]


def _image_shape(event_shape: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """``event_shape`` as ``(C, H, W)``, or a ValueError naming the layer."""
    shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
    if len(shape) != 3:
        raise ValueError(f"{name} takes images of event shape (C, H, W); got {event_shape!r}")
    return shape


class InvertibleConv1x1(_LUMatrix, FlowModule):
    r"""Invertible :math:`1 \times 1` convolution (Glow), LU-parameterised: a learned channel mix.

    Every pixel's channel vector is multiplied by the same invertible :math:`C \times C`
    matrix :math:`W = P L U`:

    .. math::
        y_{:,h,w} = W x_{:,h,w}, \qquad x_{:,h,w} = U^{-1} L^{-1} P^T y_{:,h,w}, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = H W \sum_{c} s_c ,

    with :math:`P` a fixed permutation (buffer), :math:`L` unit lower triangular and :math:`U`
    upper triangular with diagonal :math:`\sigma_c e^{s_c}`, the signs :math:`\sigma_c` fixed
    (buffer) and :math:`s` learned (``log_diag``). It starts as a random rotation drawn from
    torch's global RNG at construction (``torch.manual_seed`` reproduces it), decomposed once.
    Forward: :math:`O(C^3)` per call to form :math:`W`, then :math:`O(C^2)` per pixel (one
    ``einsum`` over any batch dimensions); inverse: :math:`W^{-1}` formed once per call by two
    triangular solves (:math:`O(C^3)`), then :math:`O(C^2)` per pixel; log-det :math:`O(C)`,
    with no determinant computed. No bias (ActNorm provides the shift). Unconditional.

    Args:
        event_shape: the image shape ``(C, H, W)``.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018,
        arXiv:1807.03039, section 3.2.

    Example:
        >>> import torch
        >>> flow = InvertibleConv1x1((3, 4, 4))
        >>> x = torch.randn(8, 3, 4, 4)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> bool(torch.allclose(flow.inv(y.clone()), x, atol=1e-5)), log_det.shape
        (True, torch.Size([8]))
        >>> expected = 16 * torch.linalg.slogdet(flow.matrix()).logabsdet  # H W log|det W|
        >>> bool(torch.allclose(log_det, expected.expand(8), atol=1e-5))
        True
    """

    def __init__(self, event_shape: Sequence[int]) -> None:
        channels, height, width = _image_shape(event_shape, "InvertibleConv1x1")
        super().__init__((channels, height, width))
        self._init_lu(channels)

    def inverse_matrix(self) -> Tensor:
        r""":math:`W^{-1} = U^{-1} L^{-1} P^T`, by two triangular solves."""
        lower, upper = self.factors()
        eye = torch.eye(len(self.permutation), dtype=lower.dtype, device=lower.device)
        unpermute = eye[self.inverse_permutation]  # P^T
        solved = torch.linalg.solve_triangular(lower, unpermute, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, solved, upper=True)

    def _log_det_like(self, value: Tensor) -> Tensor:
        pixels = self.event_shape[1] * self.event_shape[2]
        return (pixels * self.log_diag.sum()).expand(value.shape[:-3])

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = torch.einsum("ij,...jhw->...ihw", self.matrix(), x)
        return y, self._log_det_like(y)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = torch.einsum("ij,...jhw->...ihw", self.inverse_matrix(), y)
        return x, self._log_det_like(x)

    def _log_det(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self._log_det_like(x)
