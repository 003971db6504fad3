"""The machinery of :mod:`pyroflows.diagnostics`: flows as maps of rows, Jacobians, Lanczos.

A :class:`_Map` is one bijection :math:`y = f(x)` of rows ``(N, *event_shape)`` with its
log-det and (where one exists) its inverse, at an optional per-row context. :func:`whole_map`
turns anything the diagnostics accept into one map, :func:`layer_maps` into the list of its
layers in the order they are applied. :func:`jacobian_at` forms the exact Jacobians of a map
at rows; :func:`lanczos` estimates the largest singular value of the Jacobian without forming
it. The public functions, their maths and their error messages live in
:mod:`pyroflows.diagnostics`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pyro.distributions.conditional import ConditionalTransform
from torch import Tensor
from torch.distributions import ComposeTransform, Transform
from torch.func import jacrev, jvp, vjp, vmap

from .distributions import Flow
from .transforms import ActNorm, FlowModule, FlowSequence, FlowView, InverseFlow
from .transforms._base import _log_det_over_event
from .transforms.preprocessing import affine_and_log_det, inverse_affine_and_log_det

# A context is one tensor (N, C), a tuple of per-row tensors (an amortized guide's
# (h, loc, scale)), or None; every map takes the whole of it and uses its own part.
Context = Tensor | tuple[Tensor, ...] | None
_PYROFLOWS = (FlowModule, InverseFlow, FlowView)


@dataclass
class _Map:
    """A map of rows: ``forward(x, c) -> (y, log|det dy/dx|)``, ``inverse(y, c) -> x``.

    ``event_rank`` is the number of trailing event dimensions of a row; ``inverse`` raises
    ``NotImplementedError`` where the map has none.
    """

    name: str
    forward: Callable[[Tensor, Context], tuple[Tensor, Tensor]]
    inverse: Callable[[Tensor, Context], Tensor]
    event_rank: int = 1


def _no_inverse(name: str) -> Callable[[Tensor, Context], Tensor]:
    def inverse(y: Tensor, context: Context) -> Tensor:
        raise NotImplementedError(f"{name} has no inverse")

    return inverse


def describe(transform: object) -> str:
    """A short name: the class, ``Planar.inv`` for an inverse, ``Planar(c)`` for a view."""
    if isinstance(transform, InverseFlow):
        return f"{describe(transform.flow)}.inv"
    if isinstance(transform, FlowView):
        return describe(transform.flow) + ("(c)" if transform.context is not None else "")
    return type(transform).__name__


def _check_initialised(transform: object) -> None:
    """Refuse an ActNorm that would initialise itself from the diagnostics' rows."""
    if isinstance(transform, torch.nn.Module):
        for module in transform.modules():
            if isinstance(module, ActNorm) and not module.initialized:
                raise ValueError(
                    "an ActNorm layer is not initialised yet: its first forward pass would set "
                    "it from the rows being diagnosed; run the flow on data (or fit it) first"
                )


def flow_map(transform: FlowModule | InverseFlow | FlowView, name: str | None = None) -> _Map:
    """A pyroflows flow through its public passes (no cache), log-dets summed over events."""
    conditional = transform.context_dim > 0

    def forward(x: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        y, log_det = transform.forward_and_log_det(x, context if conditional else None)
        return y, _log_det_over_event(transform, log_det)

    def inverse(y: Tensor, context: Context) -> Tensor:
        return transform.inverse_and_log_det(y, context if conditional else None)[0]

    return _Map(name or describe(transform), forward, inverse, len(transform.event_shape))


def torch_map(transform: Transform, name: str | None = None) -> _Map:
    """A torch or Pyro transform (conditioned on the context when it is conditional)."""
    rank = max(transform.domain.event_dim, 1)

    def bound(context: Context) -> Transform:
        if isinstance(transform, ConditionalTransform):
            if context is None:
                raise ValueError(f"{type(transform).__name__} is conditional: pass a context")
            return transform.condition(context)
        return transform

    def forward(x: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        step = bound(context)
        y = step(x)
        log_det = torch.as_tensor(step.log_abs_det_jacobian(x, y), dtype=x.dtype)
        batch = x.dim() - rank
        while log_det.dim() > batch:
            log_det = log_det.sum(-1)
        return y, log_det + x.new_zeros(x.shape[:batch])

    def inverse(y: Tensor, context: Context) -> Tensor:
        # A copy: the transform's cache would return the forward pass's input unchanged.
        return bound(context).inv(y.clone())

    return _Map(name or describe(transform), forward, inverse, rank)


def chain(maps: Sequence[_Map], name: str) -> _Map:
    """The composition of ``maps`` (applied first to last), log-dets added."""

    def forward(x: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        total = 0
        for step in maps:
            x, log_det = step.forward(x, context)
            total = total + log_det
        return x, total

    def inverse(y: Tensor, context: Context) -> Tensor:
        for step in reversed(maps):
            y = step.inverse(y, context)
        return y

    return _Map(name, forward, inverse, maps[0].event_rank)


def on_part(step: _Map, index: int) -> _Map:
    """``step`` reading part ``index`` of a tuple context."""
    return _Map(
        step.name,
        lambda x, context: step.forward(x, context[index]),
        lambda y, context: step.inverse(y, context[index]),
        step.event_rank,
    )


def standardisation(model: Flow) -> _Map:
    r"""A model's :math:`u = (x - \mu) / \sigma` (data side to flow side)."""
    rank = len(model.event_shape)

    def forward(x: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        return inverse_affine_and_log_det(x, model.data_loc, model.data_scale, rank)

    def inverse(u: Tensor, context: Context) -> Tensor:
        return affine_and_log_det(u, model.data_loc, model.data_scale, rank)[0]

    return _Map("standardisation", forward, inverse, rank)


def location_scale(loc: Tensor | None, scale: Tensor | None, index: int | None = None) -> _Map:
    r"""A guide's :math:`z = \mu + \sigma \odot u`: fixed, or per row (context parts)."""

    def parts(context: Context) -> tuple[Tensor, Tensor]:
        if index is None:
            return loc, scale
        return context[index], context[index + 1]

    def forward(u: Tensor, context: Context) -> tuple[Tensor, Tensor]:
        return affine_and_log_det(u, *parts(context))

    def inverse(z: Tensor, context: Context) -> Tensor:
        return inverse_affine_and_log_det(z, *parts(context))[0]

    return _Map("loc/scale", forward, inverse)


def _parts(transform: object) -> list | None:
    """The layers of a composition, in the order they are applied (``None``: not one)."""
    if isinstance(transform, FlowSequence):
        return list(transform.layers)
    if isinstance(transform, InverseFlow) and isinstance(transform.flow, FlowSequence):
        return [layer.inv for layer in reversed(transform.flow.layers)]
    if isinstance(transform, ComposeTransform):
        return list(transform.parts)
    parts = getattr(transform, "parts", None)  # Pyro's ComposeTransformModule
    if isinstance(transform, Transform) and isinstance(parts, Sequence | torch.nn.ModuleList):
        return list(parts)
    return None


def single_map(transform: object, name: str | None = None) -> _Map:
    """One map for a pyroflows flow or any torch/Pyro transform."""
    _check_initialised(transform)
    if isinstance(transform, _PYROFLOWS):
        return flow_map(transform, name)
    if isinstance(transform, Transform):
        return torch_map(transform, name)
    raise TypeError(
        "expected a pyroflows flow, a torch/Pyro Transform or a pyroflows.Flow, got "
        f"{type(transform).__name__}"
    )


def _model_maps(model: Flow, flow_maps: list[_Map]) -> list[_Map]:
    """Data to noise: the logit map (if any), the standardisation, then the flow's inverse."""
    if getattr(model, "padding", None) is not None:
        raise ValueError(
            "a padded model's flow maps (data, padding) to noise, not the data alone: diagnose "
            "model.flow.inv at model.flow_points(x), e.g. "
            "condition_numbers(model.flow.inv, model.flow_points(x))"
        )
    front = [] if model.logit is None else [flow_map(model.logit, "logit")]
    return [*front, standardisation(model), *flow_maps]


def whole_map(transform: object) -> _Map:
    """The whole map of ``transform`` (a ``Flow``: data to base noise, as ``log_prob``)."""
    if isinstance(transform, Flow):
        _check_initialised(transform)
        return chain(_model_maps(transform, [flow_map(transform.flow.inv)]), "whole flow")
    return single_map(transform, "whole flow")


def layer_maps(transform: object) -> list[_Map]:
    """The layers of ``transform`` as maps, numbered and named, in the order applied."""
    if isinstance(transform, Flow):
        _check_initialised(transform)
        inner = layer_maps(transform.flow.inv)
        return _model_maps(transform, inner)
    parts = _parts(transform)
    if parts is None:
        return [single_map(transform)]
    if isinstance(transform, InverseFlow):  # layer k of the sequence is applied K - 1 - k-th
        count = len(parts)
        return [single_map(p, f"{count - 1 - i}: {describe(p)}") for i, p in enumerate(parts)]
    return [single_map(part, f"{i}: {describe(part)}") for i, part in enumerate(parts)]


# -- rows, Jacobians and the Lanczos estimate ------------------------------------------------
def prepare(transform: object, x: Tensor, context: Context) -> tuple[Tensor, Context]:
    """``x`` as a float tensor (a ``Flow``'s dtype, its device checked), the context checked."""
    x = torch.as_tensor(x)
    if isinstance(transform, Flow):
        x = transform._on_model(x, "x")
        transform._check_context(context)
        if context is not None:
            context = transform._on_model(context, "the context")
    elif not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    for part in (context,) if isinstance(context, Tensor) else context or ():
        if part.shape[:1] != x.shape[:1]:
            raise ValueError(
                f"the context needs one row per row of x ({len(x)}), got shape {tuple(part.shape)}"
            )
    return x.detach(), context


def check_rows(step: _Map, x: Tensor) -> None:
    if x.dim() != step.event_rank + 1:
        event = "D" if step.event_rank == 1 else "*event_shape"
        raise ValueError(
            f"expected rows x of shape (N, {event}) for {step.name}, got shape {tuple(x.shape)}"
        )


def repeat(context: Context, times: int) -> Context:
    if context is None or times == 1:
        return context
    if isinstance(context, Tensor):
        return context.repeat(times, *([1] * (context.dim() - 1)))
    return tuple(repeat(part, times) for part in context)


def flat_map(step: _Map, shape: torch.Size, rows: int) -> Callable[[Tensor, Context], Tensor]:
    """``step`` on flattened rows ``(rows, D)``."""
    size = shape.numel()

    def apply(v: Tensor, context: Context) -> Tensor:
        return step.forward(v.reshape(rows, *shape), context)[0].reshape(rows, size)

    return apply


def jacobian_at(step: _Map, x: Tensor, context: Context) -> Tensor:
    r"""``(N, D, D)``: :math:`J_{ij} = \partial y_i / \partial x_j` at every row."""
    check_rows(step, x)
    rows, shape = x.shape[0], x.shape[1:]
    size = shape.numel()
    flat = x.reshape(rows, size)

    def one_row(v: Tensor, c: Context) -> Tensor:
        return step.forward(v.reshape(shape), c)[0].reshape(size)

    try:
        with warnings.catch_warnings():  # torch's own remark on vmapped searchsorted inputs
            warnings.filterwarnings("ignore", "torch.searchsorted", UserWarning)
            in_dims = (0, None if context is None else 0)
            return vmap(jacrev(one_row), in_dims=in_dims)(flat, context).detach()
    except (RuntimeError, NotImplementedError):
        pass  # data-dependent control flow (a numerical inverse's convergence check)
    # Rows are independent, so one pass and D pull-backs of coordinate vectors give every
    # row's Jacobian (a loop over the D outputs instead of the N rows).
    _, pullback = vjp(lambda v: flat_map(step, shape, rows)(v, context), flat)
    basis = torch.eye(size, dtype=x.dtype, device=x.device)
    jac_rows = [pullback(basis[i].expand(rows, size))[0] for i in range(size)]
    return torch.stack(jac_rows, dim=1).detach()


def svdvals(jac: Tensor, float64: bool) -> Tensor:
    if float64:
        return torch.linalg.svdvals(jac.double()).to(jac.dtype)
    return torch.linalg.svdvals(jac)


@dataclass(frozen=True)
class Estimator:
    exact_max_dim: int = 64
    num_starts: int = 1
    max_iter: int = 100
    rtol: float = 1e-3
    seed: int = 0
    on_failure: Literal["warn", "raise"] = "warn"
    check_every: int = 5

    def __post_init__(self) -> None:
        if self.on_failure not in ("warn", "raise"):
            raise ValueError(f"on_failure must be 'warn' or 'raise', got {self.on_failure!r}")
        if self.num_starts < 1 or self.max_iter < 1:
            raise ValueError(
                f"num_starts and max_iter must be at least 1, got {self.num_starts}, "
                f"{self.max_iter}"
            )
        if not self.rtol > 0:
            raise ValueError(f"rtol must be positive, got {self.rtol}")


def _orthogonalise(w: Tensor, basis: list[Tensor]) -> Tensor:
    """``w`` minus its projections on the orthonormal ``basis``, twice ("twice is enough")."""
    stacked = torch.stack(basis, dim=1)  # (count, k, D)
    for _ in range(2):
        w = w - torch.einsum("ck,ckd->cd", torch.einsum("ckd,cd->ck", stacked, w), stacked)
    return w


def _unit(w: Tensor) -> Tensor:
    return w / w.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)


@torch.no_grad()  # the Jacobian products are torch.func's own; nothing else needs a graph
def lanczos(
    apply: Callable[[Tensor], Tensor], point: Tensor, rows: int, est: Estimator, gen
) -> tuple[Tensor, Tensor, int, Tensor]:
    r"""Largest singular value of the Jacobian of ``apply`` at each of ``rows`` rows.

    ``point`` holds ``num_starts`` copies of the rows, ``(num_starts * rows, D)``; each copy
    starts from its own random vector. Lanczos iteration (with full reorthogonalisation) on
    :math:`A = J^\top J`, with one ``jvp`` and one ``vjp`` per step and no :math:`D \times D`
    matrix: :math:`w = J^\top (J q_j)`, :math:`\alpha_j = q_j^\top w`, :math:`w` made
    orthogonal to :math:`q_1, \dots, q_j`, :math:`\beta_j = \|w\|`,
    :math:`q_{j+1} = w / \beta_j`. Where :math:`\beta_j` is below
    :math:`\sqrt{\epsilon}\,\|A\|` (an invariant subspace, up to rounding) the iteration
    goes on from a new random direction instead, and :math:`\beta_j` is dropped from the
    tridiagonal :math:`T` but kept in the error bound. The largest eigenvalue :math:`\theta`
    of :math:`T` (Ritz vector :math:`y = Q s`) estimates :math:`\sigma_{\max}^2`, and
    :math:`\|A y - \theta y\| = (\sum_k \beta_k^2 s_k^2)^{1/2}` (the last step and the
    dropped ones) bounds its error: some eigenvalue of :math:`A` lies that close. Returns
    :math:`\hat\sigma = \sqrt{\theta}` of the best start ``(rows,)``, its error bound
    ``(rows,)``, the number of steps and the best start's relative error bound ``(rows,)``.
    """
    _, pullback = vjp(apply, point)
    size = point.shape[-1]
    steps = min(est.max_iter, size)
    eps = torch.finfo(point.dtype).eps

    def random() -> Tensor:
        return torch.randn(point.shape, generator=gen, dtype=point.dtype, device=point.device)

    basis = [_unit(random())]
    alphas, couplings, dropped = [], [], []
    scale = torch.zeros(point.shape[:1], dtype=point.dtype, device=point.device)
    for step in range(1, steps + 1):
        _, image = jvp(apply, (point,), (basis[-1],))
        (w,) = pullback(image)
        alpha = (basis[-1] * w).sum(-1)
        w = _orthogonalise(w, basis)
        beta = w.norm(dim=-1)
        scale = torch.maximum(scale, alpha.abs() + beta)  # a lower bound of ||A||
        restart = beta <= eps**0.5 * scale
        alphas.append(alpha)
        couplings.append(torch.where(restart, 0 * beta, beta))
        dropped.append(torch.where(restart, beta, 0 * beta))
        fresh = _unit(_orthogonalise(random(), basis)) if bool(restart.any()) else w
        basis.append(torch.where(restart.unsqueeze(-1), fresh, _unit(w)))
        if step % est.check_every and step != steps:
            continue
        off = torch.stack(couplings[:-1], -1) if step > 1 else alpha[:, None][:, :0]
        tridiagonal = torch.diag_embed(torch.stack(alphas, -1)) + torch.diag_embed(off, 1)
        theta, vectors = torch.linalg.eigh(tridiagonal + torch.diag_embed(off, -1))
        top, weights = theta[:, -1].clamp_min(0), vectors[:, :, -1]  # s of the largest
        # Residual of the Ritz pair: the last step's beta (none once the Krylov space is the
        # whole space) and the dropped ones, each times its component of s.
        last = couplings[-1] if step < size else 0 * beta
        missing = torch.stack(dropped, -1) * weights
        missing[:, -1] = missing[:, -1] + last * weights[:, -1]
        residual = missing.norm(dim=-1)
        relative = residual / top.clamp_min(torch.finfo(point.dtype).tiny)
        if bool((relative <= est.rtol).all()):
            break
    sigma = top.sqrt().reshape(est.num_starts, rows)
    relative = relative.reshape(est.num_starts, rows)
    best, index = sigma.max(0)  # every Ritz value is a lower bound of the largest eigenvalue
    best_relative = relative.gather(0, index.unsqueeze(0)).squeeze(0)
    error = torch.maximum(best_relative * best, best - sigma.min(0).values)
    return best, error, step, best_relative


def rounding(size: int, dtype: torch.dtype) -> float:
    r"""Relative rounding of Jacobian products and SVDs: :math:`4 \sqrt{D}\,\epsilon`."""
    return 4 * math.sqrt(size) * torch.finfo(dtype).eps


def relative_error(back: Tensor, x: Tensor) -> Tensor:
    dims = tuple(range(1, x.dim()))
    size = torch.linalg.vector_norm(x, dim=dims)
    size = torch.where(size > 0, size, torch.ones_like(size))
    return torch.linalg.vector_norm(back - x, dim=dims) / size
