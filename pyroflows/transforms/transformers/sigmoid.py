r"""The deep sigmoidal transformer of neural autoregressive flows (Huang et al. 2018).

A neural autoregressive flow (NAF) is an :class:`~pyroflows.transforms.Autoregressive` layer
whose element-wise map is a small monotone neural network, the *deep sigmoidal flow* (DSF)
:class:`DeepSigmoid`, with its weights produced per dimension by the MADE conditioner. It is a
universal approximator of monotone maps, at the price of a numerical inverse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ...nn.functional import clamp_in_value, inverse_softplus
from .._root import RootFinder
from .base import ElementwiseTransformer

__all__ = ["DeepSigmoid"]

# One DSF sublayer's tensors, each (..., K, d): a, log a, b, log w.
_Sublayer = tuple[Tensor, Tensor, Tensor, Tensor]

# Slopes a_k = softplus(raw) are kept in [e^-5, e^3] (Affine's log-scale range) by clamping raw.
_LOG_SLOPE_MIN, _LOG_SLOPE_MAX = -5.0, 3.0


_RAW_SLOPE_RANGE = (
    inverse_softplus(math.exp(_LOG_SLOPE_MIN)),
    inverse_softplus(math.exp(_LOG_SLOPE_MAX)),
)


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` to rounding in float32 and float64.

    torch's default threshold (linear above 20) drops ``e^-20 ~ 2e-9``; above 40 the dropped
    ``e^-x`` is below an ulp of ``x`` in float64. (``F.logsigmoid`` would do as well, but on
    CPU it goes parallel even for a few elements, which on a busy machine made each of the
    many small calls of a root-find cost milliseconds.)
    """
    return F.softplus(x, threshold=40.0)


def _sigmoid_mixture(x: Tensor, sublayer: _Sublayer) -> tuple[Tensor, Tensor]:
    r"""One DSF sublayer in log space: :math:`y = \mathrm{logit}(\sum_k w_k \sigma(a_k x + b_k))`.

    With :math:`S = \sum_k w_k \sigma(z_k)`, both :math:`\log S` and :math:`\log(1 - S)` are
    log-sum-exps of log-sigmoids, :math:`\log\sigma(\pm z) = -\mathrm{softplus}(\mp z)`, so
    :math:`y` never saturates (it grows linearly in :math:`x` far from the origin) and
    :math:`\log|\partial y/\partial x|` stays finite.
    """
    a, log_a, b, log_w = sublayer
    z = a * x.unsqueeze(-2) + b
    minus_log_sigmoid, minus_log_sigmoid_neg = _softplus(-z), _softplus(z)
    log_s = torch.logsumexp(log_w - minus_log_sigmoid, dim=-2)
    log_one_minus_s = torch.logsumexp(log_w - minus_log_sigmoid_neg, dim=-2)
    log_numerator = torch.logsumexp(
        log_w + log_a - (minus_log_sigmoid + minus_log_sigmoid_neg), dim=-2
    )
    return log_s - log_one_minus_s, log_numerator - log_s - log_one_minus_s


class DeepSigmoid(ElementwiseTransformer):
    r"""Deep sigmoidal flow: a monotone one-hidden-layer sigmoid network per dimension.

    Per dimension, one sublayer with :math:`K` hidden units maps

    .. math::
        y = \sigma^{-1}\Big(\sum_{k=1}^{K} w_k\, \sigma(a_k x + b_k)\Big), \qquad
        a_k = \mathrm{softplus}(\tilde a_k) > 0, \quad w = \mathrm{softmax}(\tilde w),

    computed in log space: with :math:`z_k = a_k x + b_k`, :math:`\log S =
    \operatorname{logsumexp}_k(\log w_k + \log\sigma(z_k))` and :math:`\log(1 - S) =
    \operatorname{logsumexp}_k(\log w_k + \log\sigma(-z_k))`,

    .. math::
        y = \log S - \log(1 - S), \qquad
        \log\frac{\partial y}{\partial x} = \operatorname{logsumexp}_k\big(\log w_k + \log a_k
        + \log\sigma(z_k) + \log\sigma(-z_k)\big) - \log S - \log(1 - S) .

    Unlike Pyro's ``NeuralAutoregressive`` (which clips :math:`\sigma` and :math:`S` with an
    ``eps``), the map never saturates: far from the origin it is linear, and it is a bijection
    of :math:`\mathbb{R}`, with :math:`\min_k z_k \le y \le \max_k z_k` (:math:`S` is a mean of
    the :math:`\sigma(z_k)`) and :math:`0 < \partial y / \partial x \le \max_k a_k`.
    ``depth`` :math:`L` sublayers, each with its own parameters, are chained,
    :math:`y = f_L \circ \dots \circ f_1(x)`, and their log-slopes added.

    **Bounds and inverse.** In value (gradients pass unchanged), :math:`a_k \in [e^{-5}, e^{3}]`
    and each unit's transition point :math:`-b_k / a_k` lies in :math:`[-B, B]` (``bound``),
    which keeps the map invertible in floating point far from the data. The inverse is
    numerical (the shared :class:`~pyroflows.transforms.RootFinder`), in a bracket pulled back
    through the sublayers that needs no search. Both derivations are in the documentation's
    *Numerical care* page.

    **Parameters** per dimension: :math:`3KL`, laid out as :math:`L` blocks of
    :math:`(\tilde a, \tilde w, b)`, each :math:`K` rows (Pyro's ``A, W_pre, b`` order).
    ``identity_params`` sets :math:`b_k = (2k + 1 - K)/K` (evenly spread on :math:`(-1, 1)`, so
    the hidden units differ and train apart), :math:`w_k = 1/K`, and one common
    :math:`a = 1/(4 \operatorname{mean}_k \sigma'(b_k))`: then :math:`f(0) = 0`,
    :math:`f'(0) = 1` and :math:`f` is odd, so each sublayer is the identity up to third order
    at 0 (for :math:`K = 16`: :math:`a \approx 1.08`, :math:`f(1) \approx 1.006`,
    :math:`f(3) \approx 3.10`, slope :math:`a` far out; :math:`K = 1` is exactly the
    identity).

    **Cost** per element: :math:`O(KL)` forward; the inverse :math:`O(KL)` per root-finder
    iteration. In an autoregressive layer the forward map is one MADE pass,
    :math:`O(D H K L)` per sample, and the inverse :math:`D` sequential MADE passes, each
    followed by a root-find.

    Args:
        hidden_units: hidden units :math:`K` per sublayer.
        depth: number :math:`L` of stacked DSF sublayers.
        root_finder: settings of the numerical inverse (tolerance, iteration cap, raise/warn).
        bound: :math:`B`, the largest distance of a unit's transition point from 0.

    References:
        Huang, Krueger, Lacoste & Courville, "Neural Autoregressive Flows", 2018,
        arXiv:1804.00779 (deep sigmoidal flow: their equation 8).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> dsf = DeepSigmoid(hidden_units=4, depth=2)
        >>> params = torch.randn(5, dsf.params_per_dim, 3, dtype=torch.float64)
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> y, log_slope = dsf.forward(x, params)
        >>> x_back, log_slope_back = dsf.inverse(y, params)
        >>> bool(torch.allclose(x_back, x)), bool(torch.allclose(log_slope_back, log_slope))
        (True, True)
        >>> near_identity = DeepSigmoid()  # K = 16, L = 1, at its identity parameters
        >>> x = torch.tensor([[0.0, 0.5, 1e3]])  # identity near 0, slope a ~ 1.08 far out
        >>> near_identity.forward(x, near_identity.identity_params(3))[0]
        tensor([[0.0000e+00, 5.0081e-01, 1.0815e+03]])
    """

    def __init__(
        self,
        hidden_units: int = 16,
        depth: int = 1,
        root_finder: RootFinder | None = None,
        bound: float = 10.0,
    ) -> None:
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be positive, got {hidden_units}")
        if depth < 1:
            raise ValueError(f"depth must be positive, got {depth}")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.hidden_units, self.depth, self.bound = int(hidden_units), int(depth), float(bound)
        self.params_per_dim = 3 * self.hidden_units * self.depth
        self.root_finder = root_finder if root_finder is not None else RootFinder()

    def __repr__(self) -> str:
        finder = "" if self.root_finder == RootFinder() else f", root_finder={self.root_finder}"
        return (
            f"DeepSigmoid(hidden_units={self.hidden_units}, depth={self.depth}, "
            f"bound={self.bound}{finder})"
        )

    def identity_params(self, dim: int) -> Tensor:
        """Spread offsets, equal weights and the slope that makes each sublayer ~identity at 0."""
        count = self.hidden_units
        offsets = (2 * torch.arange(count, dtype=torch.float64) + 1 - count) / count
        slope = 1 / (4 * (torch.sigmoid(offsets) * torch.sigmoid(-offsets)).mean())
        raw_slope = torch.full((count,), inverse_softplus(float(slope)), dtype=torch.float64)
        block = torch.stack([raw_slope, torch.zeros(count, dtype=torch.float64), offsets])
        params = block.repeat(self.depth, 1).reshape(self.params_per_dim, 1).expand(-1, dim)
        return params.to(torch.get_default_dtype()).clone()

    def _sublayers(self, params: Tensor) -> list[_Sublayer]:
        """``(a, log a, b, log w)`` of each sublayer, each ``(..., K, d)``, within the bounds."""
        blocks = params.unflatten(-2, (self.depth, 3, self.hidden_units)).unbind(-4)
        sublayers = []
        for block in blocks:
            raw_slope, raw_weight, offset = block.unbind(-3)
            slope = F.softplus(clamp_in_value(raw_slope, *_RAW_SLOPE_RANGE))
            # Transition points -b/a in [-bound, bound]: b clamped to [-bound a, bound a].
            limit = self.bound * slope.detach()
            offset = clamp_in_value(offset, -limit, limit)
            sublayers.append((slope, slope.log(), offset, torch.log_softmax(raw_weight, dim=-2)))
        return sublayers

    @staticmethod
    def _map(x: Tensor, sublayers: list[_Sublayer]) -> tuple[Tensor, Tensor]:
        """The composite map and its log-slope (the chain rule: log-slopes add)."""
        y, log_slope = _sigmoid_mixture(x, sublayers[0])
        for sublayer in sublayers[1:]:
            y, more = _sigmoid_mixture(y, sublayer)
            log_slope = log_slope + more
        return y, log_slope

    @staticmethod
    @torch.no_grad()
    def _bracket(y: Tensor, sublayers: list[_Sublayer]) -> tuple[Tensor, Tensor]:
        r"""Inputs :math:`[l, u]` with :math:`f(l) \le y \le f(u)`, pulled back layer by layer."""
        lower = upper = y.detach()
        for slope, _, offset, _ in reversed(sublayers):
            lower = ((lower.unsqueeze(-2) - offset) / slope).amin(-2)
            upper = ((upper.unsqueeze(-2) - offset) / slope).amax(-2)
        return lower, upper

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`f(x)` and :math:`\log \partial f / \partial x` element-wise."""
        return self._map(x, self._sublayers(params))

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`f^{-1}(y)` (root finder) and the forward log-slope there."""
        sublayers = self._sublayers(params)

        def value_and_slope(x: Tensor) -> tuple[Tensor, Tensor]:
            value, log_slope = self._map(x, sublayers)
            return value, log_slope.exp()

        lower, upper = self._bracket(y, sublayers)
        x = self.root_finder(value_and_slope, y, lower, upper)
        return x, self._map(x, sublayers)[1]
