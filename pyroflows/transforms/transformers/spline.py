"""The rational-quadratic spline transformer of neural spline flows (Durkan et al. 2019)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ...nn.functional import inverse_softplus
from .base import ElementwiseTransformer

__all__ = ["RationalQuadraticSpline", "SplineTails", "spline_tails"]

# softplus(_UNIT_DERIVATIVE) + min_derivative == 1 at the knots of an untrained spline.
_MIN_BIN, _MIN_DERIVATIVE = 1e-3, 1e-3


def _knots(raw: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Knot positions ``(..., d, K + 1)`` from -bound to bound and bin sizes ``(..., d, K)``.

    ``raw``: unconstrained bin sizes, shape ``(..., K, d)`` (the conditioner's layout).
    """
    count = raw.shape[-2]
    # The softmax runs over dimension -2, where the conditioner's layout puts the bins: on
    # CPU, torch.softmax over a short, strided last dimension is about 4x slower (measured).
    softmax = torch.softmax(raw, dim=-2).movedim(-2, -1)
    fractions = _MIN_BIN + (1 - _MIN_BIN * count) * softmax
    inner = torch.cumsum(fractions[..., :-1], dim=-1) * (2 * bound) - bound
    ends = torch.full_like(fractions[..., :1], bound)
    knots = torch.cat([-ends, inner, ends], dim=-1)  # exact end points, whatever the rounding
    return knots, knots[..., 1:] - knots[..., :-1]


class SplineTails:
    r"""The share of spline inputs that fell outside the splines' intervals, while monitored.

    Outside :math:`[-B, B]` a spline is the identity: draws that land there are not shaped
    by the flow at all. The share is :math:`\frac{1}{N}\sum_{n} [\,|x_n| \ge B_n]` over the
    :math:`N` spline inputs :math:`x_n` seen (each with its spline's :math:`B_n`) of the
    :class:`RationalQuadraticSpline` layers. Filled by :func:`spline_tails`; reading
    :meth:`share` is one host sync, recording is none.

    Example:
        >>> import torch
        >>> spline = RationalQuadraticSpline(count_bins=4, bound=1.0)
        >>> params = spline.identity_params(1)
        >>> with spline_tails() as tails:
        ...     _ = spline.forward(torch.tensor([[-2.0], [0.0], [0.5], [3.0]]), params)
        >>> tails.share(), tails.bounds
        (0.5, [1.0])
    """

    def __init__(self) -> None:
        self._outside: list[Tensor] = []
        self._total = 0
        self.bounds: list[float] = []

    def record(self, outside: Tensor, bound: float) -> None:
        """Count the ``True`` entries of ``outside`` (no sync); ``bound``: the spline's B."""
        self._outside.append(outside.sum())
        self._total += outside.numel()
        if bound not in self.bounds:
            self.bounds.append(bound)

    @property
    def count(self) -> int:
        """Number of spline inputs seen."""
        return self._total

    def share(self) -> float:
        """Share of the inputs seen that lay outside their spline's interval (0 if none seen)."""
        if not self._total:
            return 0.0
        outside = torch.stack([value.to(self._outside[0].device) for value in self._outside])
        return float(outside.sum()) / self._total


_MONITORS: list[SplineTails] = []


@contextlib.contextmanager
def spline_tails() -> Iterator[SplineTails]:
    """Record, during the block, how many inputs of every spline fall in its identity tails.

    Every :class:`RationalQuadraticSpline` evaluated in the block (either direction, any
    structure) adds its inputs to the returned :class:`SplineTails`; outside the block
    nothing is recorded and nothing is spent. Guides use it to warn when a posterior lives
    where the spline is the identity (see :class:`~pyroflows.infer.AutoFlow`).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import nsf
        >>> flow = nsf(2, num_layers=2)  # splines on [-3, 3]
        >>> with spline_tails() as tails:
        ...     _ = flow(4 * torch.randn(1000, 2))
        >>> tails.share() > 0.3, tails.bounds
        (True, [3.0])
    """
    tails = SplineTails()
    _MONITORS.append(tails)
    try:
        yield tails
    finally:
        _MONITORS.remove(tails)


def _monitor(inside: Tensor, bound: float) -> None:
    if _MONITORS and not torch.compiler.is_compiling():
        outside = ~inside.detach()
        for tails in _MONITORS:
            tails.record(outside, bound)


class RationalQuadraticSpline(ElementwiseTransformer):
    r"""Monotone rational-quadratic spline on :math:`[-B, B]` with identity (linear) tails.

    :math:`K` bins with knots :math:`(x_k, y_k)` and positive knot derivatives
    :math:`\delta_k` (:math:`\delta_0 = \delta_K = 1`, so the tails join smoothly). In bin
    :math:`k`, with :math:`\xi = (x - x_k)/w_k`, :math:`s_k = h_k / w_k`,

    .. math::
        y = y_k + \frac{h_k\,[s_k \xi^2 + \delta_k \xi(1 - \xi)]}
                      {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1 - \xi)},

    .. math::
        \frac{\partial y}{\partial x} = \frac{s_k^2\,[\delta_{k+1}\xi^2 + 2 s_k \xi(1-\xi)
        + \delta_k (1 - \xi)^2]}{[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\,\xi(1 - \xi)]^2} .

    Outside :math:`[-B, B]` the map is the identity. The inverse is analytic: :math:`\xi`
    solves a quadratic, taken in the cancellation-free form
    :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`. Parameters per dimension: :math:`3K - 1`
    unconstrained values (``K`` widths and ``K`` heights through a softmax with a minimum bin
    size, ``K - 1`` interior derivatives through a softplus with a minimum slope); zeros give
    the identity. Cost :math:`O(K)` per element in both directions.

    Args:
        count_bins: number of bins :math:`K`.
        bound: half-width :math:`B` of the spline's interval.

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", 2019,
        arXiv:1906.04032; Gregory & Delbourgo, "Piecewise rational quadratic interpolation to
        monotonic data", 1982.

    Example:
        >>> import torch
        >>> spline = RationalQuadraticSpline(count_bins=4, bound=2.0)
        >>> params = torch.randn(3, spline.params_per_dim, 1)
        >>> x = torch.tensor([[-3.0], [0.5], [1.9]])
        >>> y, log_det = spline.forward(x, params)
        >>> bool(torch.allclose(spline.inverse(y, params)[0], x, atol=1e-5)), float(y[0, 0])
        (True, -3.0)
    """

    def __init__(self, count_bins: int = 8, bound: float = 3.0) -> None:
        if count_bins < 1:
            raise ValueError(f"count_bins must be positive, got {count_bins}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.count_bins, self.bound = int(count_bins), float(bound)
        self.params_per_dim = 3 * self.count_bins - 1
        # in float32, as it always was: untrained splines stay bit for bit the same
        self._unit_derivative = float(inverse_softplus(torch.tensor(1 - _MIN_DERIVATIVE)))

    def __repr__(self) -> str:
        return f"RationalQuadraticSpline(count_bins={self.count_bins}, bound={self.bound})"

    def identity_params(self, dim: int) -> Tensor:
        """Equal bins and unit knot slopes: the identity on :math:`[-B, B]`."""
        params = torch.zeros(self.params_per_dim, dim)
        params[2 * self.count_bins :] = self._unit_derivative
        return params

    def _spline(self, params: Tensor) -> tuple[Tensor, ...]:
        """Knots ``(..., d, K+1)``, bin sizes ``(..., d, K)``, knot slopes ``(..., d, K+1)``."""
        bins = self.count_bins
        x_knots, widths = _knots(params[..., :bins, :], self.bound)
        y_knots, heights = _knots(params[..., bins : 2 * bins, :], self.bound)
        # softplus runs ~4x faster on a contiguous tensor than on a strided view (CPU)
        interior = _MIN_DERIVATIVE + F.softplus(params[..., 2 * bins :, :].contiguous())
        interior = interior.movedim(-2, -1)  # (..., d, K - 1)
        slopes = F.pad(interior, (1, 1), value=1.0)
        return x_knots, widths, y_knots, heights, slopes

    @staticmethod
    def _gather(values: Tensor, index: Tensor) -> Tensor:
        """``values[..., index]`` per element: the bin quantity of each input's bin."""
        values = values.expand(*index.shape, values.shape[-1])
        return values.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def _bin_quantities(self, knots: Tensor, value: Tensor, spline: tuple[Tensor, ...]):
        """Locate ``value`` in ``knots`` and gather its bin's quantities."""
        x_knots, widths, y_knots, heights, slopes = spline
        batch = torch.broadcast_shapes(value.shape, knots.shape[:-1])
        knots = knots.expand(*batch, -1)
        inner = knots[..., 1:-1].contiguous()
        index = torch.searchsorted(inner, value.expand(batch).unsqueeze(-1).contiguous())
        index = index.squeeze(-1)
        width, height = self._gather(widths, index), self._gather(heights, index)
        return (
            self._gather(x_knots, index),
            width,
            self._gather(y_knots, index),
            height,
            height / width,
            self._gather(slopes[..., :-1], index),
            self._gather(slopes[..., 1:], index),
        )

    def _log_slope(self, xi, slope, d_left, d_right, denominator):
        numerator = slope**2 * (
            d_right * xi**2 + 2 * slope * xi * (1 - xi) + d_left * (1 - xi) ** 2
        )
        return numerator.log() - 2 * denominator.log()

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return the spline of ``x`` and :math:`\log|\partial y / \partial x|`."""
        spline = self._spline(params)
        inside = (x > -self.bound) & (x < self.bound)
        _monitor(inside, self.bound)
        x_in = x.clamp(-self.bound, self.bound)
        x_k, width, y_k, height, slope, d_left, d_right = self._bin_quantities(
            spline[0], x_in, spline
        )
        xi = ((x_in - x_k) / width).clamp(0, 1)
        mix = xi * (1 - xi)
        denominator = slope + (d_right + d_left - 2 * slope) * mix
        y_in = y_k + height * (slope * xi**2 + d_left * mix) / denominator
        log_det = self._log_slope(xi, slope, d_left, d_right, denominator)
        y = torch.where(inside, y_in, x)
        return y, torch.where(inside, log_det, torch.zeros_like(log_det))

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return the inverse spline of ``y`` and the forward log-slope at the result."""
        spline = self._spline(params)
        inside = (y > -self.bound) & (y < self.bound)
        _monitor(inside, self.bound)
        y_in = y.clamp(-self.bound, self.bound)
        x_k, width, y_k, height, slope, d_left, d_right = self._bin_quantities(
            spline[2], y_in, spline
        )
        offset = y_in - y_k
        curvature = d_right + d_left - 2 * slope
        a = height * (slope - d_left) + offset * curvature
        b = height * d_left - offset * curvature
        c = -slope * offset
        discriminant = (b**2 - 4 * a * c).clamp_min(0)
        xi = ((2 * c) / (-b - discriminant.sqrt())).clamp(0, 1)
        x_in = x_k + xi * width
        mix = xi * (1 - xi)
        denominator = slope + curvature * mix
        log_det = self._log_slope(xi, slope, d_left, d_right, denominator)
        x = torch.where(inside, x_in, y)
        return x, torch.where(inside, log_det, torch.zeros_like(log_det))
