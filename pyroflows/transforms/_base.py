r"""Shared machinery of every pyroflows transform.

A flow layer subclasses :class:`FlowModule` and writes its maths once, as three private methods
that take an explicit ``context`` (``None`` for an unconditional flow):

* ``_forward(x, context) -> (y, log_det)``: the map :math:`y = f(x)` and
  :math:`\log|\det \partial y / \partial x|` with exactly the batch shape;
* ``_backward(y, context) -> (x, log_det or None)``: the inverse, plus the forward log-det at
  ``x`` when it comes for free;
* ``_log_det(x, y, context)``: only where something cheaper than ``_forward`` exists.

From those, :class:`FlowModule` provides the whole torch/Pyro interface: it *is* a
:class:`~pyro.distributions.torch_transform.TransformModule` (so it drops into
``TransformedDistribution`` unconditioned), and, built with ``context_dim > 0``, it is also a
:class:`~pyro.distributions.conditional.ConditionalTransformModule` whose ``condition(context)``
returns a :class:`ConditionedFlow` view sharing the same parameters. Event and context sizes
are checked (shape only, no device sync). With ``cache_size == 1`` the latest pass is cached:
the inverse of a just-computed output and the log-det of a just-computed pair cost nothing, so
sampling and scoring the sample is one pass. The cache is keyed by the parameters' version
counters as well, so it can never serve a pass made with parameters that have since changed
(no ``clear_cache()`` between optimizer steps, unlike Pyro's flows). Caches never travel with
``pickle``/``deepcopy``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from pyro.distributions.conditional import ConditionalTransform, ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from ._root import InverseNotConvergedError, InverseNotConvergedWarning, RootFinder

__all__ = [
    "ConditionedFlow",
    "FlowModule",
    "InverseFlow",
    "InverseNotConvergedError",
    "InverseNotConvergedWarning",
    "RootFinder",
]


class _PassCache:
    """The latest pass ``(x, y, log_det)``, valid while the parameters are unchanged.

    Entries are keyed by the identity of ``x`` and ``y`` *and* by the version counters of the
    parameters and buffers that produced them, so an optimizer step (or any in-place update)
    invalidates the entry: training on the same data tensor every step never reuses a stale
    pass, and needs no ``clear_cache()`` call.
    """

    __slots__ = ("log_det", "versions", "x", "y")

    def __init__(self) -> None:
        self.x = self.y = self.log_det = self.versions = None

    def store(self, x: Tensor, y: Tensor, log_det: Tensor | None, versions: int) -> None:
        self.x, self.y, self.log_det, self.versions = x, y, log_det, versions

    def output_for(self, x: Tensor, versions: int) -> Tensor | None:
        return self.y if x is self.x and versions == self.versions else None

    def input_for(self, y: Tensor, versions: int) -> Tensor | None:
        return self.x if y is self.y and versions == self.versions else None

    def log_det_for(self, x: Tensor, y: Tensor, versions: int) -> Tensor | None:
        if x is self.x and y is self.y and versions == self.versions:
            return self.log_det
        return None


class _CachedPasses:
    """The forward/inverse/log-det plumbing shared by a flow and its conditioned views."""

    _cache_size: int

    def _flow_and_context(self) -> tuple[FlowModule, Tensor | None]:
        raise NotImplementedError

    def _versions(self) -> int:
        """Sum of the version counters of everything a pass depends on.

        Counters only grow (every in-place update bumps one), so the sum changes whenever
        any parameter, buffer or the context is modified. A plain walk over the module tree:
        ``nn.Module.parameters()`` costs ~10x more, and this runs on every call.
        """
        flow, context = self._flow_and_context()
        total = 0 if context is None else context._version
        stack = [flow]
        while stack:
            module = stack.pop()
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None:
                        total += tensor._version
            stack.extend(module._modules.values())
        return total

    def __call__(self, x: Tensor) -> Tensor:
        if self._cache_size == 1:
            cached = self._pass_cache.output_for(x, self._versions())
            if cached is not None:
                return cached
        return self._call(x)

    def _inv_call(self, y: Tensor) -> Tensor:
        if self._cache_size == 1:
            cached = self._pass_cache.input_for(y, self._versions())
            if cached is not None:
                return cached
        return self._inverse(y)

    def _call(self, x: Tensor) -> Tensor:
        flow, context = self._flow_and_context()
        flow._check_event(x, "input x")
        y, log_det = flow._forward(x, context)
        self._remember(x, y, log_det)
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        flow, context = self._flow_and_context()
        flow._check_event(y, "input y of the inverse")
        x, log_det = flow._backward(y, context)
        self._remember(x, y, log_det)
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Return :math:`\log|\det \partial y / \partial x|`, with the batch shape of ``x``."""
        if self._cache_size == 1:
            cached = self._pass_cache.log_det_for(x, y, self._versions())
            if cached is not None:
                return cached
        flow, context = self._flow_and_context()
        flow._check_event(x, "input x")
        return flow._log_det(x, y, context)

    def _remember(self, x: Tensor, y: Tensor, log_det: Tensor | None) -> None:
        if self._cache_size == 1:
            self._pass_cache.store(x, y, log_det, self._versions())

    def clear_cache(self) -> None:
        """Forget the cached pass (inputs, outputs and log-det)."""
        self._pass_cache = _PassCache()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_pass_cache"] = _PassCache()
        state.pop("_cached_x_y", None)  # torch's own cache slot; unused here
        return state

    @property
    def inv(self) -> InverseFlow:
        """The inverse flow; a module sharing these parameters, conditional if this one is."""
        return InverseFlow(self)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)


class FlowModule(_CachedPasses, TransformModule, ConditionalTransformModule):
    r"""Base class of learnable flow layers on vectors, conditional when ``context_dim > 0``.

    A subclass implements the map :math:`y = f(x; \theta)` and its log-determinant
    :math:`\log|\det \partial y / \partial x|` once, in ``_forward(x, context)`` (and the
    inverse in ``_backward(y, context)``); parameters :math:`\theta` are free tensors, or
    :math:`\theta(c)` produced from a context :math:`c` (see
    :class:`~pyroflows.nn.FlowParameters`). The base class turns that into the torch/Pyro
    transform interface, checks shapes and caches passes (see the module documentation).

    Args:
        input_dim: event size :math:`D`; inputs have shape ``(..., D)``.
        context_dim: size of the context vector; ``0`` for an unconditional flow.
        cache_size: ``1`` (default) caches the latest pass so that
            ``log_abs_det_jacobian`` of a just-computed pair and the inverse of a just-computed
            output cost nothing; ``0`` disables caching.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762 (the change-of-variables framework every flow follows).

    Example:
        A new flow, :math:`y = x + \mu`, written once and usable unconditioned or conditioned:

        >>> import torch
        >>> from pyroflows.nn import FlowParameters
        >>> class Shift(FlowModule):
        ...     def __init__(self, input_dim, context_dim=0):
        ...         super().__init__(input_dim, context_dim)
        ...         self.params = FlowParameters({"mu": torch.zeros(input_dim)}, context_dim)
        ...     def _forward(self, x, context):
        ...         return x + self.params(context)["mu"], x.new_zeros(x.shape[:-1])
        ...     def _backward(self, y, context):
        ...         return y - self.params(context)["mu"], y.new_zeros(y.shape[:-1])
        >>> Shift(2)(torch.ones(2)).detach()
        tensor([1., 1.])
        >>> Shift(2, context_dim=3).condition(torch.zeros(5, 3))(torch.ones(5, 2)).shape
        torch.Size([5, 2])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, context_dim: int = 0, *, cache_size: int = 1) -> None:
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        if int(context_dim) < 0:
            raise ValueError(f"context_dim must be 0 or positive, got {context_dim!r}")
        super().__init__(cache_size=cache_size)
        self.input_dim = int(input_dim)
        self.context_dim = int(context_dim)
        self._pass_cache = _PassCache()

    # -- the maths, written once per flow -------------------------------------------------
    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _backward(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def _log_det(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self._forward(x, context)[1]

    # -- conditioning ---------------------------------------------------------------------
    @property
    def is_conditional(self) -> bool:
        """Whether this flow needs a context (``context_dim > 0``)."""
        return self.context_dim > 0

    def condition(self, context: Tensor) -> Transform:
        """Return the flow at ``context`` (shape ``(..., context_dim)``) as a transform.

        The result shares this module's parameters. An unconditional flow returns itself, so a
        stack may mix conditional and unconditional layers under Pyro's
        ``ConditionalTransformedDistribution``.
        """
        if not self.is_conditional:
            return self
        self._check_context(context)
        return ConditionedFlow(self, context, cache_size=self._cache_size)

    def with_cache(self, cache_size: int = 1) -> Transform:
        """Return a view of this flow with another ``cache_size`` (parameters shared)."""
        if cache_size == self._cache_size:
            return self
        return ConditionedFlow(self, None, cache_size=cache_size)

    def _flow_and_context(self) -> tuple[FlowModule, Tensor | None]:
        if self.is_conditional:
            raise ValueError(
                f"{type(self).__name__} was built with context_dim={self.context_dim} and needs "
                "a context: use flow.condition(context)(x), or put the flow in "
                "pyro.distributions.ConditionalTransformedDistribution"
            )
        return self, None

    # -- checks -----------------------------------------------------------------------------
    def _check_event(self, value: Tensor, role: str) -> None:
        if value.dim() < 1 or value.shape[-1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects {role} of event shape ({self.input_dim},), "
                f"i.e. shape (..., {self.input_dim}); got shape {tuple(value.shape)}"
            )

    def _check_context(self, context: Tensor) -> None:
        if not isinstance(context, Tensor):
            raise TypeError(f"context must be a torch.Tensor, got {type(context).__name__}")
        if context.dim() < 1 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"{type(self).__name__} expects a context of shape (..., {self.context_dim}); "
                f"got shape {tuple(context.shape)}"
            )

    def extra_repr(self) -> str:
        """Show the sizes in ``repr``."""
        text = f"input_dim={self.input_dim}"
        return text + (f", context_dim={self.context_dim}" if self.is_conditional else "")


class ConditionedFlow(_CachedPasses, TransformModule):
    r"""A :class:`FlowModule` fixed at one context: a plain transform sharing its parameters.

    For a conditional flow :math:`y = f(x; \theta(c))`, this is :math:`x \mapsto f(x;
    \theta(c))` at a fixed :math:`c`. Returned by ``flow.condition(context)``; ``context`` of
    shape ``(*B, context_dim)`` gives per-sample parameters of batch shape ``B``, broadcast
    against the inputs' batch shape. (Also used by ``with_cache`` with ``context=None`` for a
    view with another cache size.)

    References:
        Winkler et al., "Learning Likelihoods with Conditional Normalizing Flows", 2019,
        arXiv:1912.00042.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import radial
        >>> flow = radial(2, context_dim=1)
        >>> view = flow.condition(torch.tensor([[0.0], [1.0], [2.0]]))
        >>> view(torch.zeros(3, 2)).shape, set(view.parameters()) == set(flow.parameters())
        (torch.Size([3, 2]), True)
    """

    bijective = True

    def __init__(self, flow: FlowModule, context: Tensor | None, *, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        self.flow = flow
        self.context = context
        self._pass_cache = _PassCache()

    @property
    def domain(self) -> constraints.Constraint:
        return self.flow.domain

    @property
    def codomain(self) -> constraints.Constraint:
        return self.flow.codomain

    def _flow_and_context(self) -> tuple[FlowModule, Tensor | None]:
        if self.context is None:
            return self.flow._flow_and_context()
        return self.flow, self.context

    def with_cache(self, cache_size: int = 1) -> Transform:
        """Return this view with another ``cache_size`` (parameters shared)."""
        if cache_size == self._cache_size:
            return self
        return ConditionedFlow(self.flow, self.context, cache_size=cache_size)

    def __deepcopy__(self, memo: dict[int, Any]) -> ConditionedFlow:
        flow = copy.deepcopy(self.flow, memo)
        context = None if self.context is None else self.context.detach().clone()
        return ConditionedFlow(flow, context, cache_size=self._cache_size)


class InverseFlow(TransformModule, ConditionalTransformModule):
    r"""The inverse of a flow, as a module that shares (and exposes) its parameters.

    .. math::
        x = f^{-1}(y), \qquad
        \log\left|\det \frac{\partial x}{\partial y}\right|
        = -\log\left|\det \frac{\partial y}{\partial x}\right|_{x = f^{-1}(y)} .

    ``flow.inv`` returns one. Unlike torch's private inverse wrapper it is an ``nn.Module``
    (``.parameters()``, ``.to()``, ``state_dict`` reach the flow's), and it is conditional
    exactly when the flow is: ``flow.inv.condition(c)`` is ``flow.condition(c).inv``, so Pyro's
    ``ConditionalTransformedDistribution`` never mistakes it for a constant transform.
    Calls go through the flow's own cache, so an inverse after a forward pass is free.
    Useful to choose which direction of a flow is the cheap one: ``planar(D).inv`` in a density
    model scores data with the analytic planar map.

    References:
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", 2017,
        arXiv:1705.07057 (one flow, used in either direction).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import planar
        >>> flow = planar(2)
        >>> inverse = flow.inv
        >>> inverse.inv is flow, len(list(inverse.parameters()))
        (True, 3)
    """

    bijective = True

    def __init__(self, flow: Transform) -> None:
        super().__init__(cache_size=0)
        self.flow = flow

    @property
    def domain(self) -> constraints.Constraint:
        return self.flow.codomain

    @property
    def codomain(self) -> constraints.Constraint:
        return self.flow.domain

    @property
    def inv(self) -> Transform:
        """The original flow."""
        return self.flow

    # -- the pass interface of FlowModule, so an inverse can sit inside a FlowSequence ----
    @property
    def input_dim(self) -> int:
        """Event size of the flow."""
        return self.flow.input_dim

    @property
    def context_dim(self) -> int:
        """Context size of the flow (0: unconditional)."""
        return self.flow.context_dim

    def _check_event(self, value: Tensor, role: str) -> None:
        self.flow._check_event(value, role)

    def _forward(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, log_det = self.flow._backward(y, context)
        if log_det is None:
            log_det = self.flow._log_det(x, y, context)
        return x, -log_det

    def _backward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, log_det = self.flow._forward(x, context)
        return y, -log_det

    def _log_det(self, y: Tensor, x: Tensor, context: Tensor | None) -> Tensor:
        return -self.flow._log_det(x, y, context)

    def __call__(self, y: Tensor) -> Tensor:
        return self.flow._inv_call(y)

    def _inv_call(self, x: Tensor) -> Tensor:
        return self.flow(x)

    def log_abs_det_jacobian(self, y: Tensor, x: Tensor) -> Tensor:
        r"""Return :math:`\log|\det \partial x / \partial y|` = minus the flow's log-det."""
        return -self.flow.log_abs_det_jacobian(x, y)

    def condition(self, context: Tensor) -> Transform:
        """Return the inverse of the flow conditioned on ``context``."""
        if isinstance(self.flow, ConditionalTransform):
            return self.flow.condition(context).inv
        return self

    def with_cache(self, cache_size: int = 1) -> Transform:
        """Return the inverse of the flow's view with this ``cache_size``."""
        return self.flow.with_cache(cache_size).inv

    def clear_cache(self) -> None:
        """Clear the flow's cache (the inverse keeps none of its own)."""
        self.flow.clear_cache()

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        return self.flow.inverse_shape(shape)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        return self.flow.forward_shape(shape)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)
