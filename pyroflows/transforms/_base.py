r"""Shared machinery of every pyroflows transform.

A flow layer subclasses :class:`FlowModule` and writes its maths once, as private hooks that
take an explicit ``context`` (``None`` for an unconditional flow):

* ``_forward_pass(x, context) -> (y, log_det)``: the map :math:`y = f(x)` and
  :math:`\log|\det \partial y / \partial x|` with exactly the batch shape;
* ``_inverse_pass(y, context) -> (x, forward_log_det or None)``: the inverse
  :math:`x = f^{-1}(y)`, plus the *forward* log-det :math:`\log|\det \partial y / \partial x|`
  at ``x`` when it comes for free (``None`` otherwise);
* ``_log_det(x, y, context)``: only where something cheaper than ``_forward_pass`` exists.

Everything else calls the two public passes, which check shapes once and hold the "no free
log-det" fallback in one place:

* ``forward_and_log_det(x, context=None) -> (y, log|det dy/dx|)``;
* ``inverse_and_log_det(y, context=None) -> (x, log|det dx/dy|)`` (the inverse's own log-det,
  minus the forward one at ``x``, as in distrax and FlowJAX).

Events may have any shape (``event_shape``: ``(D,)`` for vectors, ``(C, H, W)`` for images);
log-dets have exactly the batch shape. From the hooks, :class:`FlowModule` provides the whole
torch/Pyro interface: it *is* a
:class:`~pyro.distributions.torch_transform.TransformModule` (so it drops into
``TransformedDistribution`` unconditioned), and, built with ``context_dim > 0``, it is also a
:class:`~pyro.distributions.conditional.ConditionalTransformModule` whose ``condition(context)``
returns a :class:`ConditionedFlow` view sharing the same parameters. Event and context sizes
are checked (shape only, no device sync).

**The pass cache** (``cache_size == 1``, the default) makes the torch interface
(``__call__``, ``inv``, ``log_abs_det_jacobian``) free after a pass: every value a flow has
computed and that is still alive is inverted, and the pair scored, from the pass that made
it. So a draw from ``TransformedDistribution(base, [flows...])`` is scored without an inverse
pass wherever the flow is used: one site or many sites of one trace (Pyro's
``examples/dmm.py`` applies the same IAFs at every time step), a prior and a guide sharing a
flow, new ``flow.condition(c_t)`` views per step. The rules, one mechanism:

* **Where it lives.** One cache per flow module, shared by its views (``condition``,
  ``with_cache(1)``) and its ``.inv``; a :class:`FlowSequence` keeps one entry for its
  whole pass (its layers keep none).
* **What an entry is.** A pass ``(x, y, log|det dy/dx|, context)``, forward or inverse. It
  is found again by the *identity* of ``x`` (a forward call) or ``y`` (an inverse call, a
  log-det), never by value: a copy of a draw runs the pass.
* **When it serves.** Only if ``x``, ``y`` and the context have not been modified in place
  since (their version counters), the context is the pass's tensor itself, the parameters
  and buffers have not changed (their version counters: an optimizer step empties the cache,
  so no ``clear_cache()`` is needed between steps, unlike Pyro's flows), and, under
  ``torch.jit.trace``, the pass was recorded by the same trace (a pass from outside would
  become a constant of the trace).
* **How long.** The entry holds the pass's input and log-det, and its output only weakly: it
  dies with the output (drop the draw, and its base draw and log-det go too; no reference
  cycles). At most 256 entries per flow: past that the oldest are forgotten, and scoring them
  runs the inverse. Entries whose output is kept alive only by the autograd graph of their own
  log-det (some numerically inverted flows) last until that bound or the next parameter update.
* **When it is bypassed.** ``cache_size == 0`` (``flow.with_cache(0)``: every call runs its
  pass); while ``torch.compile`` traces (its keys are data that dynamo cannot guard on, so
  compiled code should call the public passes, which return the log-det with the map); for
  inference tensors (``torch.inference_mode``), which have no version counter. Caches never
  travel with ``pickle``/``deepcopy``.

An inverse pass therefore runs only for values the flow did not make (data, a copy, a value
modified in place, a draw from before a parameter update) or under the bypasses above. The
cache is an optimisation only: results are the same without it (to rounding: an exact inverse
recomputes ``x``). The public passes never use it, and
:class:`~pyroflows.distributions.FlowDistribution` needs none (each draw carries its
log-density).

Example:
    >>> import torch
    >>> from pyroflows.transforms import affine_autoregressive
    >>> flow = affine_autoregressive(3)
    >>> xs = [torch.randn(3) for _ in range(5)]
    >>> ys = [flow(x) for x in xs]  # five passes, e.g. five sites of one trace
    >>> all(flow.inv(y) is x for x, y in zip(xs, ys))  # each inverted from its own pass
    True
    >>> flow.inv(ys[0].clone()) is xs[0]  # a copy is no value of the flow's: inverted
    False
"""

from __future__ import annotations

import copy
import functools
import math
import warnings
import weakref
from collections.abc import Callable, Sequence
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
    "FlowView",
    "InverseFlow",
    "InverseNotConvergedError",
    "InverseNotConvergedWarning",
    "RootFinder",
]


_MAX_PASSES = 256
_Versions = Callable[[], int]


def _version_of(tensor: Tensor) -> int | None:
    """The tensor's version counter (bumped by every in-place update), or ``None``.

    An inference tensor has none, and is then never cached.
    """
    return None if tensor.is_inference() else tensor._version


def _tracing_state() -> Any:
    """The ``torch.jit.trace`` being recorded (``None`` outside tracing)."""
    return torch._C._get_tracing_state()


class _Pass:
    """One remembered pass: its input, output, forward log-det, context and their versions.

    The input (``x`` of a forward pass, ``y`` of an inverse one) is held, since nothing else
    may hold it (``TransformedDistribution.rsample`` drops its base draw); the output is held
    weakly (``weakref.ref``), so the entry dies with it.
    """

    __slots__ = (
        "context",
        "context_version",
        "log_det",
        "trace",
        "x",
        "x_id",
        "x_version",
        "y",
        "y_id",
        "y_version",
    )

    def tensors(self) -> tuple[Tensor | None, Tensor | None]:
        x, y = self.x, self.y
        return (x() if isinstance(x, weakref.ref) else x, y() if isinstance(y, weakref.ref) else y)


def _forget(cache_ref: weakref.ref, serial: int, _: weakref.ref) -> None:
    """Weakref callback: the output of pass ``serial`` died, so its entry goes."""
    cache = cache_ref()
    if cache is not None:
        cache.drop(serial)


class _PassCache:
    """Every live pass of one flow at its current parameters (see the module documentation).

    Entries are found by the identity of their input or output tensor, and serve a lookup only
    when that tensor, its partner and the context still have the version counters they had at
    the pass (no in-place update since), the parameters' and buffers' version counters are
    unchanged (an optimizer step empties the cache) and the same ``torch.jit`` trace (or
    none) is being recorded. Each entry dies with its output; at most ``_MAX_PASSES`` are
    kept (the oldest go first).
    """

    __slots__ = ("__weakref__", "_by_x", "_by_y", "_passes", "_serial", "versions")

    def __init__(self) -> None:
        self._passes: dict[int, _Pass] = {}  # by serial number, oldest first
        self._by_x: dict[int, int] = {}  # id(x) -> serial of the latest pass from x
        self._by_y: dict[int, int] = {}  # id(y) -> serial of the latest pass to y
        self._serial = 0
        self.versions: int | None = None

    def __len__(self) -> int:
        return len(self._passes)

    def clear(self) -> None:
        self._passes, self._by_x, self._by_y = {}, {}, {}

    def drop(self, serial: int) -> None:
        entry = self._passes.pop(serial, None)
        if entry is not None:
            if self._by_x.get(entry.x_id) == serial:
                del self._by_x[entry.x_id]
            if self._by_y.get(entry.y_id) == serial:
                del self._by_y[entry.y_id]

    def _current(self, versions: int) -> bool:
        """Whether the entries were made at these parameter versions (if not, forget them)."""
        if versions != self.versions:
            self.clear()
            self.versions = versions
            return False
        return True

    def store(
        self,
        x: Tensor,
        y: Tensor,
        log_det: Tensor,
        context: Tensor | None,
        versions: int,
        *,
        inverse: bool,
    ) -> None:
        """Remember a pass (``inverse``: ``x`` was computed from ``y``, else ``y`` from ``x``)."""
        self._current(versions)
        entry = _Pass()
        entry.x_version, entry.y_version = _version_of(x), _version_of(y)
        entry.context_version = None if context is None else _version_of(context)
        if None in (entry.x_version, entry.y_version) or (
            context is not None and entry.context_version is None
        ):
            return  # inference tensors have no version counter: nothing could tell them stale
        self._serial = serial = self._serial + 1
        forget = functools.partial(_forget, weakref.ref(self), serial)
        entry.x = weakref.ref(x, forget) if inverse else x
        entry.y = y if inverse else weakref.ref(y, forget)
        entry.x_id, entry.y_id = id(x), id(y)
        entry.log_det, entry.context, entry.trace = log_det, context, _tracing_state()
        self._passes[serial] = entry
        self._by_x[entry.x_id] = self._by_y[entry.y_id] = serial
        while len(self._passes) > _MAX_PASSES:
            self.drop(next(iter(self._passes)))

    def _lookup(
        self, index: dict[int, int], key: Tensor, context: Tensor | None, versions: _Versions
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(x, y, log_det)`` of the valid pass whose ``x`` (or ``y``: ``index``) is ``key``.

        ``versions()`` gives the parameters' current versions; it is called only on a
        candidate (it walks the module tree).
        """
        serial = index.get(id(key))
        if serial is None or not self._current(versions()):
            return None
        entry = self._passes.get(serial)
        if entry is None or entry.context is not context:
            return None
        x, y = entry.tensors()
        if (
            x is None
            or y is None
            or key is not (x if index is self._by_x else y)
            or _version_of(x) != entry.x_version
            or _version_of(y) != entry.y_version
            or (context is not None and _version_of(context) != entry.context_version)
            or entry.trace is not _tracing_state()
        ):
            return None
        return x, y, entry.log_det

    def output_for(self, x: Tensor, context: Tensor | None, versions: _Versions) -> Tensor | None:
        found = self._lookup(self._by_x, x, context, versions)
        return None if found is None else found[1]

    def input_for(self, y: Tensor, context: Tensor | None, versions: _Versions) -> Tensor | None:
        found = self._lookup(self._by_y, y, context, versions)
        return None if found is None else found[0]

    def log_det_for(
        self, x: Tensor, y: Tensor, context: Tensor | None, versions: _Versions
    ) -> Tensor | None:
        found = self._lookup(self._by_y, y, context, versions)
        return found[2] if found is not None and found[0] is x else None


def _real_events(event_dim: int) -> constraints.Constraint:
    """The domain of a bijection of real events of rank ``event_dim``."""
    if event_dim == 0:
        return constraints.real
    if event_dim == 1:
        return constraints.real_vector
    return constraints.independent(constraints.real, event_dim)


def _log_det_over_event(layer: Transform, log_det: Tensor) -> Tensor:
    """A layer's log-det summed over the event dimensions it leaves (``domain.event_dim``).

    Element-wise flows in Pyro's mode (``event_dim=0``) return one log-slope per element; a
    sequence of layers sums them so that its own log-det has the batch shape.
    """
    extra = len(layer.event_shape) - layer.domain.event_dim
    return log_det.sum(tuple(range(-extra, 0))) if extra > 0 else log_det


class _CachedPasses:
    """The torch/Pyro transform interface on top of the public passes, with the pass cache.

    ``__call__``, ``inv`` and ``log_abs_det_jacobian``, shared by a flow and its views.
    """

    _cache_size: int

    def _flow_and_context(self) -> tuple[FlowModule, Tensor | None]:
        raise NotImplementedError

    def _versions(self) -> int:
        """Sum of the version counters of the flow's parameters and buffers.

        Counters only grow (every in-place update bumps one), so the sum changes whenever
        any parameter or buffer is modified. A plain walk over the module tree:
        ``nn.Module.parameters()`` costs ~10x more, and this runs on every cached call.
        """
        total = 0
        stack: list[nn.Module] = [self._flow_and_context()[0]]
        while stack:
            module = stack.pop()
            for tensors in (module._parameters, module._buffers):
                for tensor in tensors.values():
                    if tensor is not None:
                        total += tensor._version
            stack.extend(module._modules.values())
        return total

    def _caching(self) -> bool:
        """Whether passes go through the cache: ``cache_size == 1``, and not while compiling.

        Under ``torch.compile`` the cache is bypassed, so the torch interface traces without
        a graph break: its key (tensor identities and version counters) is data dynamo cannot
        guard on, and an entry stored by one compiled call could not be told stale in the
        next. The price is that a compiled ``log_abs_det_jacobian`` after ``__call__``, or an
        ``inv`` of a just-computed output, runs its pass again (AOTAutograd does not merge the
        two), so compiled code should call :meth:`forward_and_log_det` /
        :meth:`inverse_and_log_det`, which give the log-det with the pass. Eager calls are
        unaffected.
        """
        return self._cache_size == 1 and not torch.compiler.is_compiling()

    @property
    def _pass_cache(self) -> _PassCache:
        """The cache of the flow module itself, shared by all its views and its inverse."""
        return self._flow_and_context()[0]._passes

    def __call__(self, x: Tensor) -> Tensor:
        if self._caching():
            flow, context = self._flow_and_context()
            cached = flow._passes.output_for(x, context, self._versions)
            if cached is not None:
                return cached
        return self._call(x)

    def _inv_call(self, y: Tensor) -> Tensor:
        if self._caching():
            flow, context = self._flow_and_context()
            cached = flow._passes.input_for(y, context, self._versions)
            if cached is not None:
                return cached
        return self._inverse(y)

    def _call(self, x: Tensor) -> Tensor:
        flow, context = self._flow_and_context()
        y, log_det = flow.forward_and_log_det(x, context)
        if self._caching():
            flow._passes.store(x, y, log_det, context, self._versions(), inverse=False)
        return y

    def _inverse(self, y: Tensor) -> Tensor:
        flow, context = self._flow_and_context()
        x, inverse_log_det = flow.inverse_and_log_det(y, context)
        if self._caching():
            flow._passes.store(x, y, -inverse_log_det, context, self._versions(), inverse=True)
        return x

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Return :math:`\log|\det \partial y / \partial x|`, with the batch shape of ``x``."""
        flow, context = self._flow_and_context()
        if self._caching():
            cached = flow._passes.log_det_for(x, y, context, self._versions)
            if cached is not None:
                return cached
        context = flow._context_for(context)
        flow._check_event(x, "input x")
        return flow._log_det(x, y, context)

    def clear_cache(self) -> None:
        """Forget the flow's cached passes (shared with its views and its inverse)."""
        self._pass_cache.clear()

    @property
    def inv(self) -> InverseFlow:
        """The inverse flow; a module sharing these parameters, conditional if this one is."""
        return InverseFlow(self)

    def __repr__(self) -> str:
        return nn.Module.__repr__(self)


class FlowModule(_CachedPasses, TransformModule, ConditionalTransformModule):
    r"""Base class of learnable flow layers, conditional when ``context_dim > 0``.

    A subclass implements the map :math:`y = f(x; \theta)` and its log-determinant
    :math:`\log|\det \partial y / \partial x|` once, in ``_forward_pass(x, context)`` (and the
    inverse in ``_inverse_pass(y, context)``); parameters :math:`\theta` are free tensors, or
    :math:`\theta(c)` produced from a context :math:`c` (see
    :class:`~pyroflows.nn.FlowParameters`). The base class turns that into the public passes
    :meth:`forward_and_log_det` and :meth:`inverse_and_log_det` and the torch/Pyro transform
    interface, checks shapes and caches passes (see the module documentation).

    Args:
        event_shape: shape of one event: an int :math:`D` for vectors ``(..., D)``, or a
            tuple such as ``(C, H, W)`` for images. ``input_dim`` is the number of elements.
        context_dim: size of the context vector; ``0`` for an unconditional flow.
        cache_size: ``1`` (default) caches every live pass, so that the inverse of a value
            the flow computed, and the log-det of such a pair, cost nothing (see the module
            documentation for the rules); ``0`` disables caching.

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
        ...     def _forward_pass(self, x, context):
        ...         return x + self.params(context)["mu"], x.new_zeros(x.shape[:-1])
        ...     def _inverse_pass(self, y, context):
        ...         return y - self.params(context)["mu"], y.new_zeros(y.shape[:-1])
        >>> Shift(2)(torch.ones(2)).detach()
        tensor([1., 1.])
        >>> y, log_det = Shift(2, context_dim=3).forward_and_log_det(torch.ones(5, 2),
        ...                                                          torch.zeros(5, 3))
        >>> y.shape, log_det.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    bijective = True

    def __init__(
        self, event_shape: int | Sequence[int], context_dim: int = 0, *, cache_size: int = 1
    ) -> None:
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        if not shape or any(int(size) < 1 for size in shape):
            raise ValueError(
                "input_dim (the event size) must be a positive integer, or the event shape a "
                f"tuple of them; got {event_shape!r}"
            )
        if int(context_dim) < 0:
            raise ValueError(f"context_dim must be 0 or positive, got {context_dim!r}")
        super().__init__(cache_size=cache_size)
        self.event_shape = tuple(int(size) for size in shape)
        self.input_dim = math.prod(self.event_shape)
        self.context_dim = int(context_dim)
        self._passes = _PassCache()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_passes"] = _PassCache()  # caches never travel (pickle, deepcopy)
        state.pop("_cached_x_y", None)  # torch's own cache slot; unused here
        return state

    @property
    def domain(self) -> constraints.Constraint:
        return _real_events(len(self.event_shape))

    @property
    def sign(self) -> int:
        """``+1`` or ``-1``: the sign of every element-wise derivative of the map.

        As in torch's ``Transform.sign``, defined only for element-wise monotone maps (the
        element-wise flows, and stacks of them, are increasing: ``+1``). On other flows it is
        absent: an ``AttributeError`` (``nn.Module`` reports the attribute missing), not the
        ``NotImplementedError`` of torch's base class, so ``hasattr(flow, "sign")`` is
        ``False``: ``torch.jit`` tracing enumerates every attribute of a module that way.

        Example:
            >>> from pyroflows.transforms import Radial, Spline
            >>> Spline(3).sign, Spline(3).inv.sign, hasattr(Radial(3), "sign")
            (1, 1, False)
        """
        raise _SignUndefinedError(
            f"{type(self).__name__} has no sign: it is defined only for element-wise monotone maps"
        )

    @property
    def codomain(self) -> constraints.Constraint:
        return _real_events(len(self.event_shape))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The hooks were called _forward and _backward before 0.1: a subclass written then
        # still works, with a DeprecationWarning naming the new name.
        super().__init_subclass__(**kwargs)
        for old, new in (("_forward", "_forward_pass"), ("_backward", "_inverse_pass")):
            if old in cls.__dict__ and new not in cls.__dict__:
                warnings.warn(
                    f"{cls.__name__}.{old} is deprecated: name the hook {new}",
                    DeprecationWarning,
                    stacklevel=2,
                )
                setattr(cls, new, cls.__dict__[old])

    # -- the maths, written once per flow -------------------------------------------------
    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def _log_det(self, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self._forward_pass(x, context)[1]

    # -- training ---------------------------------------------------------------------------
    def auxiliary_loss(self) -> Tensor | None:
        """A penalty this flow adds to its training loss, from its last pass; ``None`` here.

        Flows with regularised dynamics (:class:`~pyroflows.transforms.ContinuousFlow`)
        return a scalar, consumed by the call;
        :func:`~pyroflows.transforms.auxiliary_loss` sums them over a model's flows, and
        ``fit()`` adds the sum to the negative log-likelihood, ``train_guide`` to the
        negative ELBO. A flow that overrides this also sets :attr:`has_auxiliary_loss`.
        """
        return None

    @property
    def has_auxiliary_loss(self) -> bool:
        """Whether this flow's training passes leave an :meth:`auxiliary_loss` (``False``)."""
        return False

    # -- the public passes --------------------------------------------------------------------
    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y = f_c(x)` and :math:`\log|\det \partial y / \partial x|`.

        One pass, no cache. ``x`` has shape ``(*B, *event_shape)``; the log-det has the batch
        shape (broadcast with the context's). ``context`` is required exactly when the flow is
        conditional.
        """
        context = self._context_for(context)
        self._check_event(x, "input x")
        return self._forward_pass(x, context)

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f_c^{-1}(y)` and :math:`\log|\det \partial x / \partial y|`.

        The log-det is the inverse map's own, :math:`-\log|\det \partial y / \partial x|` at
        ``x``. One pass, no cache; flows whose inverse does not give the log-det for free add
        a ``_log_det`` evaluation (written here once, for every flow).
        """
        context = self._context_for(context)
        self._check_event(y, "input y of the inverse")
        x, log_det = self._inverse_pass(y, context)
        if log_det is None:
            log_det = self._log_det(x, y, context)
        return x, -log_det

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
        return FlowView(self, None, cache_size=cache_size)

    def _flow_and_context(self) -> tuple[FlowModule, Tensor | None]:
        return self, None

    def _context_for(self, context: Tensor | None) -> Tensor | None:
        """The context a pass takes: required and checked for a conditional flow, else none."""
        if self.is_conditional:
            if context is None:
                raise ValueError(
                    f"{type(self).__name__} was built with context_dim={self.context_dim} and "
                    "needs a context: use flow.condition(context)(x), pass context= to "
                    "forward_and_log_det/inverse_and_log_det, or put the flow in "
                    "pyro.distributions.ConditionalTransformedDistribution"
                )
            self._check_context(context)
            return context
        if context is not None:
            raise ValueError(
                f"{type(self).__name__} is unconditional (context_dim=0): it takes no context"
            )
        return None

    # -- checks -----------------------------------------------------------------------------
    def _check_event(self, value: Tensor, role: str) -> None:
        rank = len(self.event_shape)
        if value.dim() < rank or tuple(value.shape[value.dim() - rank :]) != self.event_shape:
            dims = ", ".join(str(size) for size in self.event_shape)
            raise ValueError(
                f"{type(self).__name__} expects {role} of event shape "
                f"{self.event_shape}, i.e. shape (..., {dims}); got shape {tuple(value.shape)}"
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
        if len(self.event_shape) == 1:
            text = f"input_dim={self.input_dim}"
        else:
            text = f"event_shape={self.event_shape}"
        return text + (f", context_dim={self.context_dim}" if self.is_conditional else "")


class _SignUndefinedError(NotImplementedError, AttributeError):
    """``sign`` of a flow that is not an element-wise monotone map.

    A ``NotImplementedError``, as torch's ``Transform.sign`` raises, and an ``AttributeError``,
    so that ``hasattr(flow, "sign")`` is ``False`` instead of raising: ``torch.jit`` enumerates
    a module's attributes with ``hasattr`` when it traces it (``module_has_exports``), which
    crashed on the inherited ``sign`` of every flow. (On an ``nn.Module`` the
    ``AttributeError`` makes Python fall back to ``Module.__getattr__``, whose own
    ``AttributeError`` is what the caller sees.)
    """


def _sign_of(transform: Transform) -> int:
    """``transform.sign``, raising :class:`_SignUndefinedError` where it is not defined."""
    try:
        return transform.sign
    except NotImplementedError as error:
        raise _SignUndefinedError(
            f"{type(transform).__name__} has no sign: it is defined only for element-wise "
            "monotone maps"
        ) from error


class _SharesTheFlowsEvents:
    """Event shape, size, checks and sign of a wrapper (a view or an inverse): its flow's."""

    flow: FlowModule

    @property
    def sign(self) -> int:
        """The flow's (an inverse of an increasing map is increasing); see ``FlowModule.sign``."""
        return _sign_of(self.flow)

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one event of the flow."""
        return self.flow.event_shape

    @property
    def input_dim(self) -> int:
        """Number of elements of one event of the flow."""
        return self.flow.input_dim

    def _check_event(self, value: Tensor, role: str) -> None:
        self.flow._check_event(value, role)


class FlowView(_SharesTheFlowsEvents, _CachedPasses, TransformModule):
    r"""A :class:`FlowModule` seen as a plain transform: at a fixed context, or with another cache.

    The map is the flow's, :math:`x \mapsto f(x; \theta(c))` at the view's context :math:`c`
    (if any); it shares the flow's parameters. ``flow.with_cache(0)`` returns one with
    ``context=None``; :class:`ConditionedFlow` (``flow.condition(context)``) is the view at a
    context.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import Radial
        >>> flow = Radial(2)
        >>> view = flow.with_cache(0)
        >>> type(view).__name__, set(view.parameters()) == set(flow.parameters())
        ('FlowView', True)
    """

    bijective = True

    def __init__(self, flow: FlowModule, context: Tensor | None, *, cache_size: int = 1) -> None:
        super().__init__(cache_size=cache_size)
        self.flow = flow
        self.context = context

    @property
    def domain(self) -> constraints.Constraint:
        return self.flow.domain

    @property
    def codomain(self) -> constraints.Constraint:
        return self.flow.codomain

    # -- the public passes, at the bound context -----------------------------------------------
    def forward_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y = f_c(x)` and :math:`\log|\det \partial y / \partial x|`."""
        return self.flow.forward_and_log_det(x, self._bound(context))

    def inverse_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f_c^{-1}(y)` and :math:`\log|\det \partial x / \partial y|`."""
        return self.flow.inverse_and_log_det(y, self._bound(context))

    def _bound(self, context: Tensor | None) -> Tensor | None:
        if context is None:
            return self.context
        if self.context is not None:
            raise ValueError("this flow is already conditioned on a context: pass none")
        return context

    @property
    def context_dim(self) -> int:
        """Context size still to be given: 0 once conditioned."""
        return 0 if self.context is not None else self.flow.context_dim

    def _flow_and_context(self) -> tuple[FlowModule, Tensor | None]:
        if self.context is None:
            return self.flow._flow_and_context()
        return self.flow, self.context

    def with_cache(self, cache_size: int = 1) -> Transform:
        """Return this view with another ``cache_size`` (parameters shared)."""
        if cache_size == self._cache_size:
            return self
        return type(self)(self.flow, self.context, cache_size=cache_size)

    def __deepcopy__(self, memo: dict[int, Any]) -> FlowView:
        flow = copy.deepcopy(self.flow, memo)
        context = None if self.context is None else self.context.detach().clone()
        return type(self)(flow, context, cache_size=self._cache_size)


class ConditionedFlow(FlowView):
    r"""A conditional :class:`FlowModule` fixed at one context: a plain transform.

    For a conditional flow :math:`y = f(x; \theta(c))`, this is :math:`x \mapsto f(x;
    \theta(c))` at a fixed :math:`c`. Returned by ``flow.condition(context)``; ``context`` of
    shape ``(*B, context_dim)`` gives per-sample parameters of batch shape ``B``, broadcast
    against the inputs' batch shape. Shares the flow's parameters.

    References:
        Winkler et al., "Learning Likelihoods with Conditional Normalizing Flows", 2019,
        arXiv:1912.00042.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import Radial
        >>> flow = Radial(2, context_dim=1)
        >>> view = flow.condition(torch.tensor([[0.0], [1.0], [2.0]]))
        >>> view(torch.zeros(3, 2)).shape, set(view.parameters()) == set(flow.parameters())
        (torch.Size([3, 2]), True)
    """

    def __init__(self, flow: FlowModule, context: Tensor, *, cache_size: int = 1) -> None:
        if not isinstance(context, Tensor):
            raise TypeError(f"context must be a torch.Tensor, got {type(context).__name__}")
        super().__init__(flow, context, cache_size=cache_size)


class InverseFlow(_SharesTheFlowsEvents, TransformModule, ConditionalTransformModule):
    r"""The inverse of a flow, as a module that shares (and exposes) its parameters.

    .. math::
        x = f^{-1}(y), \qquad
        \log\left|\det \frac{\partial x}{\partial y}\right|
        = -\log\left|\det \frac{\partial y}{\partial x}\right|_{x = f^{-1}(y)} .

    ``flow.inv`` returns one. Unlike torch's private inverse wrapper it is an ``nn.Module``
    (``.parameters()``, ``.to()``, ``state_dict`` reach the flow's), and it is conditional
    exactly when the flow is: ``flow.inv.condition(c)`` is ``flow.condition(c).inv``, so Pyro's
    ``ConditionalTransformedDistribution`` never mistakes it for a constant transform.
    Calls go through the flow's own cache, so an inverse after a forward pass is free, and its
    public passes are the flow's, swapped.
    Useful to choose which direction of a flow is the cheap one: ``Planar(D).inv`` in a density
    model scores data with the analytic planar map.

    References:
        Papamakarios et al., "Masked Autoregressive Flow for Density Estimation", 2017,
        arXiv:1705.07057 (one flow, used in either direction).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import Planar
        >>> flow = Planar(2)
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

    # -- the public passes: the flow's, swapped ---------------------------------------------------
    def forward_and_log_det(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f_c^{-1}(y)` and :math:`\log|\det \partial x / \partial y|`."""
        return self.flow.inverse_and_log_det(y, context)

    def inverse_and_log_det(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y = f_c(x)` and :math:`\log|\det \partial y / \partial x|`."""
        return self.flow.forward_and_log_det(x, context)

    @property
    def context_dim(self) -> int:
        """Context size of the flow (0: unconditional)."""
        return self.flow.context_dim

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
