r"""The element-wise structure: every coordinate through its own increasing scalar map.

:class:`Elementwise` applies any :class:`~pyroflows.transforms.transformers.ElementwiseTransformer`
to each element of the event, with free parameters (or parameters from a network of the
context), for events of any shape: vectors ``(D,)`` and images ``(C, H, W)`` alike.
:class:`ElementwiseAffine`, :class:`LeakyReLU` and :class:`Spline` are that structure with the
affine, leaky-ReLU and rational-quadratic spline transformers (and the state-dict names they
always had).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torch.distributions import constraints

from ..nn import FlowParameters
from ._args import _check_hidden_dims, _check_spline_order
from ._base import FlowModule, _real_events
from .transformers import Affine, ElementwiseTransformer, PReLU, RationalQuadraticSpline

__all__ = ["Elementwise", "ElementwiseAffine", "LeakyReLU", "Spline"]


class Elementwise(FlowModule):
    r"""Element-wise flow: :math:`y_i = \tau(x_i; \theta_i)` for every element :math:`i`.

    .. math::
        y_i = \tau(x_i; \theta_i), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = \sum_i \log\left|\frac{\partial \tau}{\partial x_i}(x_i; \theta_i)\right|, \qquad
        x_i = \tau^{-1}(y_i; \theta_i) .

    :math:`\tau` is the ``transformer`` (default :class:`~pyroflows.transforms.Affine` without
    clamping). The parameters :math:`\theta` (``params_per_dim`` per element) are free, starting
    at the transformer's identity parameters, or with ``context_dim > 0`` come from an MLP of
    the context (:class:`~pyroflows.nn.FlowParameters`). Any event shape: ``(D,)``,
    ``(C, H, W)``, ... Cost :math:`O(P)` per element in both directions (the inverse as the
    transformer's: analytic, or a root-find for :class:`~pyroflows.transforms.DeepSigmoid`).

    Args:
        event_shape: :math:`D` (vectors) or a shape such as ``(C, H, W)``.
        hidden_dims: hidden sizes of the context network (conditional only).
        transformer: the element-wise map :math:`\tau`.
        init: initial parameters, shape ``(P, *event_shape)`` (default: the identity).
        context_dim: context size (``0``: unconditional); keyword-only.
        event_dim: how many rightmost dimensions of the event the log-det sums over, as
            torch's ``Transform.event_dim``: ``None`` (default) the whole event, so the
            log-det has the batch shape; ``0`` one log-slope per element, as Pyro's
            element-wise flows (``domain`` is then ``constraints.real``).

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762, section 3.1 (element-wise flows and transformers).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import RationalQuadraticSpline
        >>> flow = Elementwise((2, 4, 4), transformer=RationalQuadraticSpline(count_bins=4))
        >>> y, log_det = flow.forward_and_log_det(torch.randn(5, 2, 4, 4))
        >>> y.shape, log_det.shape
        (torch.Size([5, 2, 4, 4]), torch.Size([5]))
    """

    # State-dict layout: one entry holding all P rows (named _param_name), or one entry per row.
    _param_name: ClassVar[str] = "params"
    _row_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(
        self,
        event_shape: int | Sequence[int],
        hidden_dims: Sequence[int] | None = None,
        transformer: ElementwiseTransformer | None = None,
        init: Tensor | None = None,
        *,
        context_dim: int = 0,
        event_dim: int | None = None,
    ) -> None:
        super().__init__(event_shape, context_dim)
        rank = len(self.event_shape)
        self._event_rank = rank if event_dim is None else int(event_dim)
        if not 0 <= self._event_rank <= rank:
            raise ValueError(
                f"event_dim must be None or 0..{rank} for the event shape {self.event_shape}, "
                f"got {event_dim!r}"
            )
        self.transformer = (
            transformer
            if transformer is not None
            else Affine(log_scale_min=None, log_scale_max=None)
        )
        count = self.transformer.params_per_dim
        if init is None:
            init = self.transformer.identity_params(self.input_dim)
        init = torch.as_tensor(init)
        if init.numel() != count * self.input_dim:
            raise ValueError(
                f"init must have shape ({count}, {', '.join(map(str, self.event_shape))}) "
                f"({count} parameters per element for {self.transformer!r}), "
                f"got {tuple(init.shape)}"
            )
        init = init.reshape(count, *self.event_shape)
        if self._row_names is None:
            named = {self._param_name: init}
        else:
            named = dict(zip(self._row_names, init.unbind(0), strict=True))
        self.params = FlowParameters(named, context_dim, _check_hidden_dims(hidden_dims))

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_event_rank" not in self.__dict__:  # pickled before event_dim existed
            self._event_rank = len(self.event_shape)

    @property
    def domain(self) -> constraints.Constraint:
        """Real events of rank ``event_dim`` (``constraints.real`` in Pyro's mode)."""
        return _real_events(self._event_rank)

    @property
    def codomain(self) -> constraints.Constraint:
        """As the domain."""
        return _real_events(self._event_rank)

    @property
    def sign(self) -> int:
        """``+1``: every transformer is increasing in each element."""
        return 1

    def _theta(self, context: Tensor | None) -> Tensor:
        """Transformer parameters ``(..., P, N)`` over the N flattened elements of an event."""
        named = self.params(context)
        if self._row_names is None:
            theta = named[self._param_name]
        else:
            rank = len(self.event_shape)
            theta = torch.stack([named[name] for name in self._row_names], dim=-rank - 1)
        return theta.flatten(-len(self.event_shape)) if len(self.event_shape) > 1 else theta

    def _map(self, value: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        rank = len(self.event_shape)
        flat = value.flatten(-rank) if rank > 1 else value
        theta = self._theta(context)
        mapped, log_slope = (self.transformer.inverse if inverse else self.transformer.forward)(
            flat, theta
        )
        batch = torch.broadcast_shapes(value.shape[: value.dim() - rank], theta.shape[:-2])
        mapped = mapped.unflatten(-1, self.event_shape) if rank > 1 else mapped
        if self._event_rank == rank:
            return mapped, log_slope.sum(-1).expand(batch)
        # Pyro's mode: one log-slope per element, summed over the rightmost event_dim only
        log_slope = log_slope.unflatten(-1, self.event_shape) if rank > 1 else log_slope
        log_slope = log_slope.expand(*batch, *self.event_shape)
        summed = tuple(range(-self._event_rank, 0))
        return mapped, log_slope.sum(summed) if summed else log_slope

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(x, context, inverse=False)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._map(y, context, inverse=True)


class ElementwiseAffine(Elementwise):
    r"""Element-wise affine flow :math:`y_i = \mu_i + e^{s_i} x_i`, :math:`\log|J| = \sum_i s_i`.

    :class:`Elementwise` with the unclamped :class:`~pyroflows.transforms.Affine` transformer;
    inverse :math:`x_i = (y_i - \mu_i) e^{-s_i}`. Starts as the identity. Parameters are saved
    as ``params.shift`` and ``params.log_scale``.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> flow = ElementwiseAffine(2)
        >>> model = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1),
        ...                                      [flow])
        >>> model.log_prob(model.rsample((4,))).shape
        torch.Size([4])
    """

    _row_names = ("shift", "log_scale")

    def __init__(
        self,
        event_shape: int | Sequence[int],
        hidden_dims: Sequence[int] | None = None,
        *,
        context_dim: int = 0,
    ) -> None:
        super().__init__(event_shape, hidden_dims, context_dim=context_dim)


class LeakyReLU(Elementwise):
    r"""Learnable leaky ReLU: identity for positive inputs, a learnable positive slope below.

    :class:`Elementwise` with the :class:`~pyroflows.transforms.PReLU` transformer,
    :math:`y_i = x_i` for :math:`x_i \ge 0` and :math:`e^{\ell_i} x_i` below,
    :math:`\log|J| = \sum_i \ell_i [x_i < 0]`; the inverse uses slopes :math:`e^{-\ell_i}`.
    Starts with slope ``init_slope``; saved as ``params.log_slope``.

    Args:
        event_shape: :math:`D` or an event shape.
        hidden_dims: hidden sizes of the context network (conditional only).
        init_slope: initial slope :math:`a` of every dimension.
        context_dim: context size (``0``: unconditional); keyword-only.

    Example:
        >>> import torch
        >>> flow = LeakyReLU(3, init_slope=0.5)
        >>> flow(torch.tensor([[1.0, -2.0, 0.0]])).detach()
        tensor([[ 1., -1.,  0.]])
    """

    _row_names = ("log_slope",)

    def __init__(
        self,
        event_shape: int | Sequence[int],
        hidden_dims: Sequence[int] | None = None,
        init_slope: float = 1.0,
        *,
        context_dim: int = 0,
    ) -> None:
        if not init_slope > 0:
            raise ValueError(f"init_slope must be positive, got {init_slope}")
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        init = torch.full((1, *shape), float(init_slope)).log()
        super().__init__(event_shape, hidden_dims, PReLU(), init, context_dim=context_dim)


class Spline(Elementwise):
    r"""Element-wise rational-quadratic spline flow: :math:`y_i = \mathrm{RQS}(x_i; \theta_i)`.

    :class:`Elementwise` with the :class:`~pyroflows.transforms.RationalQuadraticSpline`
    transformer (the formula, log-det and analytic inverse are there): one monotone spline on
    :math:`[-B, B]` per dimension (identity outside), :math:`O(DK)` per sample both ways.
    Starts as the identity; saved as ``params.knots``.

    Signature and event semantics are Pyro's ``Spline(input_dim, count_bins, bound, order)``:
    ``event_dim=0`` by default, so ``log_abs_det_jacobian`` has one entry per element (shape
    ``(..., D)``), ``domain`` is ``constraints.real`` and a ``TransformedDistribution`` keeps
    the base's batch shape (a ``pyro.plate`` over the dimensions behaves as in Pyro). Pass
    ``event_dim=None`` for pyroflows' whole-event mode (log-det of the batch shape), which the
    registry's ``"spline"`` builds.

    Args:
        event_shape: :math:`D` or an event shape.
        count_bins: bins :math:`K` per dimension.
        bound: half-width :math:`B` of the spline interval.
        order: ``"quadratic"`` (Pyro's ``"linear"`` splines are not in pyroflows yet).
        context_dim: context size (``0``: unconditional); keyword-only.
        hidden_dims: hidden sizes of the context network (conditional only); keyword-only.
        event_dim: ``0`` (Pyro's, default) or ``None`` (the whole event); see
            :class:`Elementwise`.

    Example:
        >>> import torch
        >>> flow = Spline(2, count_bins=4)
        >>> x = torch.tensor([[0.3, -5.0]])
        >>> flow(x).detach()  # identity at initialisation
        tensor([[ 0.3000, -5.0000]])
        >>> flow.log_abs_det_jacobian(x, flow(x)).shape, flow.event_dim
        (torch.Size([1, 2]), 0)
    """

    _param_name = "knots"

    def __init__(
        self,
        event_shape: int | Sequence[int],
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "quadratic",
        *,
        context_dim: int = 0,
        hidden_dims: Sequence[int] | None = None,
        event_dim: int | None = 0,
    ) -> None:
        _check_spline_order(order)
        transformer = RationalQuadraticSpline(count_bins, bound)
        super().__init__(
            event_shape, hidden_dims, transformer, context_dim=context_dim, event_dim=event_dim
        )
