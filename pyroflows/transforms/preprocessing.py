r"""Fixed bijections that carry a model's data to and from the flow's space.

Two maps with nothing to train, written once each as pyroflows flows (exact log-dets, public
passes, ``.inv``, caching, conformance-tested like every flow):

* :class:`FixedAffine`: :math:`y = \mu + \sigma \odot x` with :math:`\mu, \sigma` held as
  buffers; in a density model it is the data's standardisation, read from the standardised
  side to the data side;
* :class:`LogitTransform`: the squeezed logit of data in :math:`[0, 1]` (images), whose
  inverse is the squeezed sigmoid.

A :class:`~pyroflows.distributions.Flow` chains them after its flow, from the base to the
data: ``base -> flow -> affine (loc, scale) -> LogitTransform(alpha).inv -> data`` (see
:class:`~pyroflows.distributions.FlowDistribution`). The affine formula is also the location
and scale step of that distribution, through :func:`affine_and_log_det` and
:func:`inverse_affine_and_log_det`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from ._base import FlowModule

__all__ = [
    "FixedAffine",
    "LogitTransform",
    "affine_and_log_det",
    "inverse_affine_and_log_det",
]


def _sum_event(value: Tensor, event_dim: int) -> Tensor:
    if event_dim == 1:
        return value.sum(-1)
    return value.sum(tuple(range(-event_dim, 0))) if event_dim else value


def _affine_log_det(scale: Tensor, batch_shape: torch.Size, event_dim: int) -> Tensor:
    r""":math:`\sum \log|\sigma|` over the event, broadcast to ``batch_shape``."""
    return _sum_event(scale.abs().log(), event_dim).expand(batch_shape)


def affine_and_log_det(
    x: Tensor, loc: Tensor, scale: Tensor, event_dim: int = 1
) -> tuple[Tensor, Tensor]:
    r"""Return :math:`y = \mu + \sigma \odot x` and :math:`\sum_i \log|\sigma_i|` (the log-det).

    ``loc`` and ``scale`` broadcast against ``x`` (they may carry batch dimensions, as the
    encoder outputs of an amortized posterior do); the log-det sums over the last
    ``event_dim`` dimensions and has the batch shape of ``y``. The one formula behind
    :class:`FixedAffine` and the location-scale step of
    :class:`~pyroflows.distributions.FlowDistribution`.

    Example:
        >>> y, log_det = affine_and_log_det(torch.zeros(4, 2), torch.ones(2),
        ...                                 torch.tensor([2.0, 0.5]))
        >>> y[0].tolist(), log_det.tolist()
        ([1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    """
    y = loc + scale * x
    return y, _affine_log_det(scale, y.shape[: y.dim() - event_dim], event_dim)


def inverse_affine_and_log_det(
    y: Tensor, loc: Tensor, scale: Tensor, event_dim: int = 1
) -> tuple[Tensor, Tensor]:
    r"""Return :math:`x = (y - \mu) / \sigma` and :math:`-\sum_i \log|\sigma_i|`.

    The inverse of :func:`affine_and_log_det`, with the inverse map's own log-det.

    Example:
        >>> x, log_det = inverse_affine_and_log_det(torch.ones(2), torch.ones(2),
        ...                                         torch.tensor([2.0, 4.0]))
        >>> x.tolist(), round(float(log_det), 4)  # -log 8
        ([0.0, 0.0], -2.0794)
    """
    x = (y - loc) / scale
    return x, -_affine_log_det(scale, x.shape[: x.dim() - event_dim], event_dim)


class FixedAffine(FlowModule):
    r"""The fixed element-wise affine map :math:`y = \mu + \sigma \odot x` (buffers, no parameters).

    .. math::
        y = \mu + \sigma \odot x, \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right| = \sum_i \log|\sigma_i| .

    With :math:`\mu, \sigma` the mean and standard deviation of the data it maps standardised
    values back to the data scale (the standardisation, read from the model's base side).
    :math:`\mu` and :math:`\sigma` are buffers: saved by ``state_dict``, moved by ``.to()``,
    never trained.

    Args:
        event_shape: an int :math:`D` or an event shape such as ``(C, H, W)``.
        loc: :math:`\mu`, broadcastable to the event shape (default 0).
        scale: :math:`\sigma`, non-zero, broadcastable to the event shape (default 1).

    References:
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", 2017,
        arXiv:1705.07057 (data standardised before fitting, the log-det added back).

    Example:
        >>> standardise = FixedAffine(2, loc=torch.tensor([1.0, -1.0]), scale=2.0)
        >>> y, log_det = standardise.forward_and_log_det(torch.zeros(3, 2))
        >>> y[0].tolist(), round(float(log_det[0]), 4)  # 2 log 2
        ([1.0, -1.0], 1.3863)
    """

    def __init__(
        self,
        event_shape: int | Sequence[int],
        loc: Tensor | float | None = None,
        scale: Tensor | float | None = None,
        *,
        cache_size: int = 1,
    ) -> None:
        super().__init__(event_shape, cache_size=cache_size)
        shape = self.event_shape
        given = [torch.as_tensor(t) for t in (loc, scale) if t is not None]
        floating = [t.dtype for t in given if t.is_floating_point()]
        dtype = floating[0] if floating else torch.get_default_dtype()
        for other in floating[1:]:
            dtype = torch.promote_types(dtype, other)
        loc = torch.zeros(shape, dtype=dtype) if loc is None else torch.as_tensor(loc).to(dtype)
        scale = (
            torch.ones(shape, dtype=dtype) if scale is None else torch.as_tensor(scale).to(dtype)
        )
        try:
            loc, scale = (torch.broadcast_to(t, shape).clone() for t in (loc, scale))
        except RuntimeError:
            raise ValueError(
                f"loc and scale must broadcast to the event shape {shape}, got shapes "
                f"{tuple(loc.shape)} and {tuple(scale.shape)}"
            ) from None
        if not bool((scale != 0).all()):
            raise ValueError("FixedAffine needs a non-zero scale in every element")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return affine_and_log_det(x, self.loc, self.scale, len(self.event_shape))

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, inverse_log_det = inverse_affine_and_log_det(
            y, self.loc, self.scale, len(self.event_shape)
        )
        return x, -inverse_log_det


class LogitTransform(FlowModule):
    r"""The squeezed logit :math:`\operatorname{logit}(\alpha + (1 - 2\alpha) x)` of data in [0, 1].

    Its inverse (``.inv``) is the squeezed sigmoid.

    .. math::
        s = \alpha + (1 - 2\alpha)\, x, \qquad y = \log s - \log(1 - s), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = \sum_i \big[\log(1 - 2\alpha) - \log s_i - \log(1 - s_i)\big],

        x = \frac{\operatorname{sigmoid}(y) - \alpha}{1 - 2\alpha}, \qquad
        \log s = \log\operatorname{sigmoid}(y), \quad \log(1 - s) = \log\operatorname{sigmoid}(-y).

    The forward map goes from the data to logit space, as
    :func:`~pyroflows.data.logit_transform` (which is this map's :meth:`forward_and_log_det`).
    A density model of data in :math:`[0, 1]` ends its chain with ``LogitTransform(alpha).inv``
    (logit space to data). The inverse pass evaluates the log-det from :math:`y` in log-sigmoid
    form, so it is exact even where :math:`\operatorname{sigmoid}(y)` rounds to 0 or 1.

    **Domain.** The squeeze :math:`\alpha` keeps :math:`y` finite on :math:`[0, 1]`; the map is
    defined on the open interval :math:`(-\alpha, 1 - \alpha) / (1 - 2\alpha) \supset [0, 1]`
    (:attr:`domain`). While Pyro's validation is on (the default) the forward pass raises
    ``ValueError`` naming the rows (flattened batch indices) with values outside it, NaN
    included; the check reads values on the host (a device sync), so
    ``pyro.enable_validation(False)`` takes it off the scoring path. Meta tensors, which have no
    values, are not checked.

    Args:
        event_shape: an int :math:`D` or an event shape such as ``(C, H, W)``.
        alpha: the squeeze :math:`\alpha \in [0, 1/2)`; 0.05 as in RealNVP (MAF uses
            :math:`10^{-6}`). With 0 the ends 0 and 1 are outside the (open) domain.

    References:
        Dinh et al., "Density estimation using Real NVP", 2017, arXiv:1605.08803, section 4.1.

    Example:
        >>> logit = LogitTransform(2, alpha=0.05)
        >>> y, log_det = logit.forward_and_log_det(torch.tensor([[0.5, 0.25]]))
        >>> y.tolist()[0][0], log_det.shape
        (0.0, torch.Size([1]))
        >>> x, _ = logit.inv.forward_and_log_det(y)
        >>> [round(v, 6) for v in x[0].tolist()]
        [0.5, 0.25]
    """

    def __init__(
        self, event_shape: int | Sequence[int], alpha: float = 0.05, *, cache_size: int = 1
    ) -> None:
        alpha = float(alpha)
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        super().__init__(event_shape, cache_size=cache_size)
        self.alpha = alpha
        self._log_squeeze = math.log1p(-2.0 * alpha)  # log(1 - 2 alpha)

    @property
    def bounds(self) -> tuple[float, float]:
        r"""The ends of the (open) domain, :math:`(-\alpha, 1 - \alpha) / (1 - 2\alpha)`."""
        squeeze = 1.0 - 2.0 * self.alpha
        return -self.alpha / squeeze, (1.0 - self.alpha) / squeeze

    @property
    def sign(self) -> int:
        """``+1``: the logit map is increasing in each element."""
        return 1

    @property
    def domain(self) -> constraints.Constraint:
        """The open interval :attr:`bounds` in every element of the event."""
        low, high = self.bounds
        return constraints.independent(constraints.interval(low, high), len(self.event_shape))

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        squeezed = self.alpha + (1.0 - 2.0 * self.alpha) * x
        # The check reads values on the host: skipped on meta and inside torch.compile (where
        # it would break the graph), like Pyro's own value checks under tracing.
        if dist.is_validation_enabled() and x.device.type != "meta":
            if not torch.compiler.is_compiling():
                self._check_range(squeezed)
        log_s, log_one_minus_s = torch.log(squeezed), torch.log1p(-squeezed)
        log_det = _sum_event(self._log_squeeze - log_s - log_one_minus_s, len(self.event_shape))
        return log_s - log_one_minus_s, log_det

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
        log_det = self._log_squeeze - F.logsigmoid(y) - F.logsigmoid(-y)
        return x, _sum_event(log_det, len(self.event_shape))

    def _check_range(self, squeezed: Tensor) -> None:
        inside = (squeezed > 0) & (squeezed < 1)
        outside = ~inside.flatten(squeezed.dim() - len(self.event_shape)).all(-1)
        if bool(outside.any()):
            rows = torch.nonzero(outside.reshape(-1)).flatten()[:10].tolist()
            low, high = self.bounds
            raise ValueError(
                f"LogitTransform(alpha={self.alpha}) takes values in [0, 1] (its domain is the "
                f"open interval ({low:.6g}, {high:.6g}), alpha / (1 - 2 alpha) beyond); rows "
                f"{rows} have values outside it"
            )

    def extra_repr(self) -> str:
        """Show the sizes and the squeeze in ``repr``."""
        return f"{super().extra_repr()}, alpha={self.alpha}"
