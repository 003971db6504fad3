r"""Jacobian conditioning of flows: singular values, condition numbers, log-dets, inverse errors.

A flow :math:`f` is a bijection whose Jacobian :math:`J_f(x) = \partial f / \partial x` at a
point has singular values :math:`\sigma_1(x) \ge \dots \ge \sigma_D(x) > 0`; the condition
number

.. math::
    \kappa(x) = \frac{\sigma_{\max}(J_f(x))}{\sigma_{\min}(J_f(x))}, \qquad
    \sigma_{\min}(J_f(x)) = \frac{1}{\sigma_{\max}\big(J_{f^{-1}}(f(x))\big)},

says how much the map stretches one direction against another: :math:`\log|\det J_f| =
\sum_i \log \sigma_i`, and a large :math:`\kappa` means a nearly singular map, whose inverse
amplifies errors by up to :math:`\kappa` (the second identity holds because
:math:`J_{f^{-1}}(f(x)) = J_f(x)^{-1}`). Koehler, Mehta and Risteski show that padding data
with zeros makes affine couplings universal but drives :math:`\kappa` to infinity, while
Gaussian padding does not; this module measures it.

* :func:`jacobian` and :func:`singular_values`: the exact Jacobian ``(N, D, D)`` at rows
  :math:`x` (``torch.func``) and its singular values;
* :func:`condition_numbers`: :math:`\kappa` per row, exact for :math:`D \le` ``exact_max_dim``,
  otherwise estimated by Lanczos (power) iteration with matrix-free Jacobian products, with
  error bars;
* :func:`log_det_check` and :func:`inverse_error`: the reported log-det against
  :math:`\log|\det J|` of the exact Jacobian, and :math:`\|f^{-1}(f(x)) - x\| / \|x\|`;
* :func:`layer_report` and :func:`guide_report`: all of it per layer (each at its own input),
  as a table and a plot; :class:`ConditioningMonitor` logs it during :func:`~pyroflows.fit`.

Every function takes a pyroflows flow (a layer, a :class:`~pyroflows.transforms.FlowSequence`,
an ``.inv``), any torch or Pyro ``Transform``, or a :class:`~pyroflows.distributions.Flow`
density model, whose map is the one its ``log_prob`` uses: data to base noise, through the
logit map (with ``logit_alpha``), the standardisation :math:`(x - \mu) / \sigma` and the
flow's inverse. Rows ``x`` have shape ``(N, *event_shape)``; a conditional flow takes
``context`` ``(N, C)``, one row per row. Results are on the rows' device, in their dtype.
Rows are mapped independently of each other, as by every flow; an
:class:`~pyroflows.transforms.ActNorm` must have been initialised (by data or a fit) first.

References:
    Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
    normalizing flows", ICML 2021, arXiv:2010.01155.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from . import _jacobians
from ._jacobians import Context, _Map
from .distributions import Flow

if TYPE_CHECKING:
    from .train import History

__all__ = [
    "Conditioning",
    "ConditioningMonitor",
    "EstimateNotConvergedError",
    "EstimateNotConvergedWarning",
    "LayerReport",
    "LayerRow",
    "condition_numbers",
    "guide_report",
    "inverse_error",
    "jacobian",
    "layer_report",
    "log_det_check",
    "singular_values",
]


class EstimateNotConvergedError(RuntimeError):
    r"""An estimate stopped at ``max_iter`` steps with a relative error bound above ``rtol``.

    The bound is the relative residual :math:`\|A y - \theta y\| / \theta` of the Ritz pair
    :math:`(\theta, y)` that estimates the largest eigenvalue of :math:`A = J^\top J` (see
    :func:`condition_numbers`); raised with ``on_failure="raise"``.

    References:
        Golub & Van Loan, "Matrix Computations", 4th ed., 2013, sections 8.2 (power iteration)
        and 10.1 (Lanczos).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import TriangularLinear
        >>> flow = TriangularLinear(6)
        >>> _ = flow.weight.data.normal_()  # a random lower-triangular matrix
        >>> condition_numbers(flow, torch.randn(2, 6), exact_max_dim=2, max_iter=1,
        ...                   on_failure="raise")
        Traceback (most recent call last):
        ...
        pyroflows.diagnostics.EstimateNotConvergedError: the estimate of sigma_max ...
    """


class EstimateNotConvergedWarning(RuntimeWarning):
    r"""Warning counterpart of :class:`EstimateNotConvergedError` (the default).

    The estimate is returned with its (wide) error bars: :math:`\|A y - \theta y\| / \theta`
    bounds the relative error of :math:`\hat\sigma = \sqrt{\theta}`.

    References:
        Golub & Van Loan, "Matrix Computations", 4th ed., 2013, section 10.1.

    Example:
        >>> import warnings, torch
        >>> from pyroflows.transforms import TriangularLinear
        >>> flow = TriangularLinear(6)
        >>> _ = flow.weight.data.normal_()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = condition_numbers(flow, torch.randn(2, 6), exact_max_dim=2, max_iter=1)
        >>> caught[0].category.__name__
        'EstimateNotConvergedWarning'
    """


# -- Jacobians and singular values ----------------------------------------------------------
def jacobian(transform: object, x: Tensor, context: Tensor | None = None) -> Tensor:
    r"""The Jacobian :math:`J_f(x) = \partial f / \partial x` of the forward map at each row.

    .. math::
        J_{n, ij} = \frac{\partial f_i}{\partial x_j}(x_n), \qquad n = 1, \dots, N,

    computed exactly with ``torch.func.vmap(torch.func.jacrev(...))``; where function
    transforms cannot run the map (numerical inverses test convergence in Python), one
    batched pass and :math:`D` vector-Jacobian products instead. Events of any shape are
    flattened (:math:`D` = the event's number of elements). For a
    :class:`~pyroflows.distributions.Flow` the map is data to base noise, as ``log_prob``
    uses it: the logit map (if any), the standardisation, then the flow's inverse.

    Args:
        transform: a pyroflows flow or ``.inv``, a torch/Pyro ``Transform``, or a ``Flow``.
        x: rows ``(N, *event_shape)``.
        context: ``(N, C)`` for a conditional flow.

    Returns:
        ``(N, D, D)``, on ``x``'s device and in its dtype, detached.

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import TriangularLinear
        >>> flow = TriangularLinear(3)  # the identity at the start
        >>> jacobian(flow, torch.randn(4, 3)).shape
        torch.Size([4, 3, 3])
        >>> bool(torch.equal(jacobian(flow, torch.randn(1, 3))[0], torch.eye(3)))
        True
    """
    x, context = _jacobians.prepare(transform, x, context)
    return _jacobians.jacobian_at(_jacobians.whole_map(transform), x, context)


def singular_values(
    transform: object, x: Tensor, context: Tensor | None = None, *, float64: bool = False
) -> Tensor:
    r"""Singular values :math:`\sigma_1 \ge \dots \ge \sigma_D` of the Jacobian at each row.

    .. math::
        J_f(x_n) = U \operatorname{diag}(\sigma_1, \dots, \sigma_D) V^\top, \qquad
        \log\left|\det J_f(x_n)\right| = \sum_i \log \sigma_i .

    Exact: ``torch.linalg.svdvals`` of :func:`jacobian`. ``float64=True`` takes the SVD in
    double precision (the Jacobian itself is in ``x``'s dtype), which resolves small
    singular values of badly conditioned float32 maps better.

    Returns:
        ``(N, D)``, in descending order, on ``x``'s device and in its dtype.

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import ElementwiseAffine
        >>> flow = ElementwiseAffine(2)
        >>> with torch.no_grad():  # y = (x1, 2 x2)
        ...     _ = flow.params.log_scale.copy_(torch.tensor([1.0, 2.0]).log())
        >>> singular_values(flow, torch.randn(3, 2))[0].tolist()
        [2.0, 1.0]
    """
    jac = jacobian(transform, x, context)
    return _jacobians.svdvals(jac, float64)


# -- condition numbers ----------------------------------------------------------------------------
@dataclass
class Conditioning:
    r"""Condition numbers :math:`\kappa = \sigma_{\max} / \sigma_{\min}` of a Jacobian, per row.

    All tensors have shape ``(N,)``. ``exact``: from the SVD of the Jacobian, else estimated.
    Error bars: ``sigma_max_error`` :math:`\delta_{\max}` bounds
    :math:`|\hat\sigma_{\max} - \sigma_{\max}|` by the iteration's residual (and the spread
    of its random starts), ``sigma_min_error`` :math:`\delta_{\min}` likewise through the
    inverse map, both at least the rounding of the dtype, :math:`4\sqrt{D}\,\epsilon\,
    \hat\sigma_{\max}` (so exact values carry that alone), and ``condition_error`` =
    :math:`\hat\kappa (\delta_{\max} / \hat\sigma_{\max} + \delta_{\min} /
    \hat\sigma_{\min})`. ``iterations`` is the number of Lanczos steps taken (0 when exact).
    Returned by :func:`condition_numbers`.

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import TriangularLinear
        >>> result = condition_numbers(TriangularLinear(2), torch.randn(3, 2))
        >>> result.condition.tolist(), result.exact
        ([1.0, 1.0, 1.0], True)
    """

    condition: Tensor
    sigma_max: Tensor
    sigma_min: Tensor
    condition_error: Tensor
    sigma_max_error: Tensor
    sigma_min_error: Tensor
    iterations: int = 0
    exact: bool = True


def _not_converged(name: str, what: str, relative: Tensor, est: _jacobians.Estimator) -> None:
    failed = relative > est.rtol
    if not bool(failed.any()):
        return
    message = (
        f"the estimate of {what} of {name} did not converge in {est.max_iter} iterations "
        f"for {int(failed.sum())} of {failed.numel()} rows (largest relative residual "
        f"{float(relative.max()):.3g}, expected <= rtol={est.rtol:g}); the error bars say how "
        "far off it may be. Raise max_iter or rtol, or exact_max_dim to the event size for "
        "the exact SVD"
    )
    if est.on_failure == "raise":
        raise EstimateNotConvergedError(message)
    warnings.warn(message, EstimateNotConvergedWarning, stacklevel=4)


def _result(high, low, high_error, low_error, size, steps: int, exact: bool) -> Conditioning:
    """The :class:`Conditioning`, with error bars no tighter than the dtype's rounding.

    Rounding perturbs the Jacobian by about ``eps * sigma_max``, so both singular values are
    known to that absolute accuracy at best (the relative error of sigma_min is ``eps * kappa``).
    """
    floor = _jacobians.rounding(size, high.dtype) * high
    high_error, low_error = torch.maximum(high_error, floor), torch.maximum(low_error, floor)
    condition = high / low
    condition_error = condition * (high_error / high + low_error / low)
    fields = (condition, high, low, condition_error, high_error, low_error)
    return Conditioning(*(t.detach() for t in fields), steps, exact)


def _condition(step: _Map, x: Tensor, context: Context, est: _jacobians.Estimator) -> Conditioning:
    _jacobians.check_rows(step, x)
    rows, shape = x.shape[0], x.shape[1:]
    size = shape.numel()
    if size <= est.exact_max_dim:
        sigma = _jacobians.svdvals(_jacobians.jacobian_at(step, x, context), float64=False)
        zero = torch.zeros_like(sigma[:, 0])
        return _result(sigma[:, 0], sigma[:, -1], zero, zero, size, 0, True)
    copies = est.num_starts * rows
    repeated = _jacobians.repeat(context, est.num_starts)
    gen = torch.Generator(device=x.device).manual_seed(est.seed)
    point = x.reshape(rows, size).repeat(est.num_starts, 1)
    forward = _jacobians.flat_map(step, shape, copies)
    high, high_error, steps, relative = _jacobians.lanczos(
        lambda v: forward(v, repeated), point, rows, est, gen
    )
    _not_converged(step.name, "sigma_max", relative, est)
    with torch.no_grad():
        image = forward(point, repeated)

    def inverse(v: Tensor) -> Tensor:
        return step.inverse(v.reshape(copies, *shape), repeated).reshape(copies, size)

    try:
        top, top_error, more, relative = _jacobians.lanczos(inverse, image, rows, est, gen)
    except NotImplementedError as error:
        raise ValueError(
            f"estimating sigma_min of {step.name} needs its inverse ({error}); use "
            f"exact_max_dim >= {size} for the exact SVD"
        ) from None
    _not_converged(step.name, "sigma_min (through the inverse)", relative, est)
    low = 1 / top
    return _result(high, low, high_error, low * top_error / top, size, max(steps, more), False)


def condition_numbers(
    transform: object,
    x: Tensor,
    context: Tensor | None = None,
    *,
    exact_max_dim: int = 64,
    num_starts: int = 1,
    max_iter: int = 100,
    rtol: float = 1e-3,
    seed: int = 0,
    on_failure: Literal["warn", "raise"] = "warn",
) -> Conditioning:
    r"""Condition numbers :math:`\kappa(x) = \sigma_{\max}(J_f(x)) / \sigma_{\min}(J_f(x))`.

    **Exact** for :math:`D \le` ``exact_max_dim``: the SVD of :func:`jacobian`.

    **Estimated** above it, without forming any :math:`D \times D` matrix. Power iteration on
    :math:`A = J^\top J`, with one Jacobian-vector product (``torch.func.jvp``) and one
    vector-Jacobian product (``torch.func.vjp``) per step,

    .. math::
        w = J^\top (J v), \qquad \lambda = v^\top w = \|J v\|^2, \qquad v \leftarrow w / \|w\|,

    converges to :math:`\lambda = \sigma_{\max}^2`, slowly when the top singular values are
    close. So the same products drive the Lanczos iteration instead, which keeps every vector
    :math:`v_1, \dots, v_k` (orthonormalised) and takes the largest eigenvalue
    :math:`\theta` of :math:`A` restricted to their span (the Ritz value; :math:`k \le D`
    steps, exact at :math:`k = D`). :math:`\sigma_{\min}` is the same estimate through the
    inverse map at :math:`y = f(x)`,

    .. math::
        \sigma_{\min}(J_f(x)) = 1 / \sigma_{\max}\big(J_{f^{-1}}(y)\big),

    so the flow needs an inverse (analytic or numerical). Each row runs ``num_starts``
    random starts (seeded by ``seed``; the global RNG is untouched) until the relative
    residual :math:`r = \|A y - \theta y\| / \theta` of its Ritz pair :math:`(\theta, y)`
    is below ``rtol`` (checked every 5 steps) or ``max_iter`` steps. Since :math:`A` is
    symmetric, an eigenvalue lies within :math:`r \theta` of :math:`\theta`, so :math:`r`
    bounds the relative error of :math:`\hat\sigma = \sqrt{\theta}`: the error bars are
    :math:`\max(r \hat\sigma, \hat\sigma - \min_{\text{starts}} \hat\sigma)` for the best
    start, and never below the dtype's rounding (see :class:`Conditioning`: in float32,
    :math:`\sigma_{\min}` of a map with :math:`\kappa = 10^4` is known to about 0.1%, exact
    or estimated). Rows that do not converge warn (:class:`EstimateNotConvergedWarning`) or
    raise (:class:`EstimateNotConvergedError`, ``on_failure="raise"``).

    Cost: exact, :math:`D` backward passes (or one vmapped pass) and an SVD per row;
    estimated, two forward and one backward pass of the flow and of its inverse per step,
    and :math:`O(k D)` memory per row for the Lanczos vectors.

    Args:
        transform: a pyroflows flow or ``.inv``, a torch/Pyro ``Transform``, or a
            :class:`~pyroflows.distributions.Flow` (data to noise; see :func:`jacobian`).
        x: rows ``(N, *event_shape)``.
        context: ``(N, C)`` for a conditional flow.
        exact_max_dim: largest event size :math:`D` computed exactly.
        num_starts: random starts per row (the error bars include their spread).
        max_iter: cap on the Lanczos steps (at most :math:`D` are taken).
        rtol: tolerance on the relative error bound of each estimated singular value.
        seed: seed of the random starts.
        on_failure: ``"warn"`` (default) or ``"raise"`` when an estimate has not converged.

    Returns:
        A :class:`Conditioning` of ``(N,)`` tensors, with error bars and the iterations.

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155; Golub & Van Loan, "Matrix Computations",
        4th ed., 2013, sections 8.2 (power iteration) and 10.1 (Lanczos).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import build
        >>> flow = build("maf", 12, num_layers=2)
        >>> x = torch.randn(5, 12)
        >>> exact = condition_numbers(flow, x)
        >>> estimate = condition_numbers(flow, x, exact_max_dim=4)  # D = 12 > 4: estimated
        >>> estimate.exact, bool(((estimate.condition - exact.condition).abs()
        ...                       <= estimate.condition_error + 1e-4).all())
        (False, True)
    """
    x, context = _jacobians.prepare(transform, x, context)
    est = _jacobians.Estimator(exact_max_dim, num_starts, max_iter, rtol, seed, on_failure)
    return _condition(_jacobians.whole_map(transform), x, context, est)


# -- the other checks -----------------------------------------------------------------------------
def log_det_check(transform: object, x: Tensor, context: Tensor | None = None) -> Tensor:
    r"""Per row, :math:`|\,\text{reported log-det} - \log|\det J_f(x)|\,|`, the exact Jacobian's.

    .. math::
        \Delta_n = \left| \ell(x_n) - \log\left|\det J_f(x_n)\right| \right|,

    with :math:`\ell` the log-det the flow returns with its forward map and the right-hand
    side ``torch.linalg.slogdet`` of :func:`jacobian`. Meant for small :math:`D` (it forms
    the Jacobian); run it in float64 (``flow.double()``, float64 rows) to test a formula,
    as the conformance tests do. ``.max()`` gives the worst row.

    Returns:
        ``(N,)``, on ``x``'s device and in its dtype.

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import build
        >>> flow = build("realnvp", 4, num_layers=2).double()
        >>> float(log_det_check(flow, torch.randn(8, 4, dtype=torch.float64)).max()) < 1e-10
        True
    """
    x, context = _jacobians.prepare(transform, x, context)
    step = _jacobians.whole_map(transform)
    jac = _jacobians.jacobian_at(step, x, context)
    with torch.no_grad():
        reported = step.forward(x, context)[1]
    return (reported - torch.linalg.slogdet(jac).logabsdet).abs()


def inverse_error(transform: object, x: Tensor, context: Tensor | None = None) -> Tensor:
    r"""Relative round-trip error :math:`\|f^{-1}(f(x)) - x\| / \|x\|` per row.

    .. math::
        e_n = \frac{\|f^{-1}(f(x_n)) - x_n\|_2}{\|x_n\|_2}

    (divided by 1 for a zero row). Both passes are the flow's own, without any cache, so
    this measures the inverse's accuracy: about the dtype's precision times :math:`\kappa`
    for an analytic inverse, the root finder's tolerance for a numerical one.

    Returns:
        ``(N,)``, on ``x``'s device and in its dtype.

    References:
        Behrmann et al., "Understanding and Mitigating Exploding Inverses in Invertible
        Neural Networks", 2021, arXiv:2006.09347.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import build
        >>> flow = build("nsf", 3, num_layers=2)
        >>> float(inverse_error(flow, torch.randn(6, 3)).max()) < 1e-5
        True
    """
    x, context = _jacobians.prepare(transform, x, context)
    step = _jacobians.whole_map(transform)
    _jacobians.check_rows(step, x)
    with torch.no_grad():
        back = step.inverse(step.forward(x, context)[0], context)
    return _jacobians.relative_error(back, x)


# -- per-layer reports -----------------------------------------------------------------------------
@dataclass
class LayerRow:
    r"""One layer's (or the whole map's) conditioning at the rows of a :class:`LayerReport`.

    Over the rows :math:`x_n` that reach the layer: the median and maximum of
    :math:`\kappa = \sigma_{\max} / \sigma_{\min}`, the smallest :math:`\sigma_{\min}`, the
    largest :math:`\sigma_{\max}`, the mean log-det :math:`\frac1N \sum_n \log|\det J(x_n)|`
    (as the layer reports it), the largest relative inverse error (``nan`` without an
    inverse), whether the singular values are exact (else estimated), and the largest
    relative error bar of :math:`\kappa` (the dtype's rounding alone when exact).

    Example:
        >>> import torch
        >>> from pyroflows.transforms import TriangularLinear
        >>> row = layer_report(TriangularLinear(2), torch.randn(4, 2)).rows[0]
        >>> row.name, row.cond_max, row.log_det_mean
        ('TriangularLinear', 1.0, 0.0)
    """

    name: str
    cond_median: float
    cond_max: float
    sigma_min: float
    sigma_max: float
    log_det_mean: float
    inverse_error_max: float
    exact: bool = True
    cond_rel_error: float = 0.0


_COLUMNS = (
    ("layer", "name"),
    ("cond median", "cond_median"),
    ("cond max", "cond_max"),
    ("sigma min", "sigma_min"),
    ("sigma max", "sigma_max"),
    ("mean log-det", "log_det_mean"),
    ("max inv. error", "inverse_error_max"),
    ("exact", "exact"),
)


def _cell(row: LayerRow, name: str) -> str:
    """One cell of the table: numbers to 4 digits; an estimate shows its relative error bar."""
    value = getattr(row, name)
    if name == "exact":
        return "yes" if value else f"~{row.cond_rel_error:.0e}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class LayerReport:
    r"""Conditioning of each layer of a flow, and of the whole map, at given rows.

    ``rows`` holds one :class:`LayerRow` per layer, in the order the layers are applied (each
    evaluated at its own input, the previous layers' output), then the whole map's row. The
    condition number of a composition is not the product of the layers' (only
    :math:`\kappa(AB) \le \kappa(A) \kappa(B)`), while log-dets add:
    :math:`\log|\det J_{f_K \circ \dots \circ f_1}| = \sum_k \log|\det J_{f_k}|`. Built by
    :func:`layer_report` and :func:`guide_report`; ``str(report)`` is :meth:`table`.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import build
        >>> report = layer_report(build("realnvp", 2, num_layers=2), torch.randn(16, 2))
        >>> [row.name for row in report.rows][-2:]
        ['1: Coupling', 'whole flow']
        >>> print(report.table().splitlines()[0])  # doctest: +NORMALIZE_WHITESPACE
        layer  cond median  cond max  sigma min  sigma max  mean log-det  max inv. error  exact
    """

    rows: list[LayerRow] = field(default_factory=list)

    @property
    def total(self) -> LayerRow:
        """The whole map's row (the last)."""
        return self.rows[-1]

    def table(self) -> str:
        """The rows as an aligned text table (numbers to 4 significant digits)."""
        lines = [[title for title, _ in _COLUMNS]]
        for row in self.rows:
            lines.append([_cell(row, name) for _, name in _COLUMNS])
        widths = [max(len(line[i]) for line in lines) for i in range(len(_COLUMNS))]
        return "\n".join(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in lines
        )

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """``{"rows": [...]}`` of plain numbers and strings (JSON-friendly)."""
        return {"rows": [asdict(row) for row in self.rows]}

    def plot(self, ax=None):
        r"""Bars of :math:`\log_{10}` of the median condition number per layer, ticks at the max.

        Needs matplotlib (imported here); returns the axes.
        """
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.subplots(figsize=(max(4, 0.6 * len(self.rows)), 3))[1]
        names = [row.name for row in self.rows]
        positions = range(len(names))
        ax.bar(positions, [math.log10(row.cond_median) for row in self.rows], label="median")
        ax.scatter(
            positions,
            [math.log10(row.cond_max) for row in self.rows],
            marker="_",
            s=200,
            color="black",
            label="max",
            zorder=3,
        )
        ax.set_xticks(list(positions), names, rotation=45, ha="right")
        ax.set_ylabel(r"$\log_{10} \kappa$")
        ax.legend()
        return ax


def _summary(
    step: _Map, x: Tensor, context: Context, est: _jacobians.Estimator
) -> tuple[LayerRow, Tensor]:
    """``step``'s row at ``x``, and its output (the next layer's input)."""
    result = _condition(step, x, context, est)
    with torch.no_grad():
        y, log_det = step.forward(x, context)
        try:
            error = _jacobians.relative_error(step.inverse(y, context), x).max()
        except NotImplementedError:
            error = torch.full((), math.nan, dtype=x.dtype, device=x.device)
        log_det = (log_det + x.new_zeros(x.shape[:1])).mean()
    rel_error = (result.condition_error / result.condition).max()
    numbers = torch.stack(
        [
            result.condition.median(),
            result.condition.max(),
            result.sigma_min.min(),
            result.sigma_max.max(),
            log_det,
            error,
            rel_error,
        ]
    ).tolist()  # one read-back per layer
    *values, rel = numbers
    return LayerRow(step.name, *values, exact=result.exact, cond_rel_error=rel), y.detach()


def _report(
    layers: list[_Map], whole: _Map, x: Tensor, context: Context, est: _jacobians.Estimator
) -> LayerReport:
    rows, value = [], x
    for step in layers:
        row, value = _summary(step, value, context, est)
        rows.append(row)
    rows.append(_summary(whole, x, context, est)[0])
    return LayerReport(rows)


def layer_report(
    flow: object,
    x: Tensor,
    context: Tensor | None = None,
    *,
    exact_max_dim: int = 64,
    **estimator: Any,
) -> LayerReport:
    r"""Conditioning, log-det and inverse error of every layer of a flow, and of the whole map.

    Layers are applied in turn, :math:`x_k = f_k(x_{k-1})`, :math:`x_0 = x`, and layer
    :math:`k` is measured at its own inputs :math:`x_{k-1}`: median and maximum
    :math:`\kappa(J_{f_k})`, extreme singular values, mean log-det and round-trip error (a
    :class:`LayerRow`); the last row is the whole map at :math:`x`, whose log-det is the sum of
    the layers'. The layers are those of a
    :class:`~pyroflows.transforms.FlowSequence` (or its ``.inv``), of Pyro's
    ``ComposeTransformModule`` or torch's ``ComposeTransform``; any other flow is one layer.
    For a :class:`~pyroflows.distributions.Flow` they run from the data to the noise: the
    logit map (``logit_alpha``), the standardisation, then the inverses of the flow's layers,
    last layer first (named ``"k: Layer.inv"`` by their index in the sequence).

    Args:
        flow: a flow, a ``Transform``, or a ``Flow``.
        x: rows ``(N, *event_shape)`` (a ``Flow``: data rows).
        context: ``(N, C)`` for a conditional flow (given to every conditional layer).
        exact_max_dim: largest event size computed exactly (see :func:`condition_numbers`).
        **estimator: ``num_starts``, ``max_iter``, ``rtol``, ``seed``, ``on_failure`` of the
            estimate (see :func:`condition_numbers`).

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows import Flow
        >>> model = Flow.build("realnvp", 2, num_layers=2)
        >>> report = layer_report(model, torch.randn(32, 2))
        >>> [row.name for row in report.rows]
        ['standardisation', '1: Coupling.inv', '0: Coupling.inv', 'whole flow']
        >>> total = sum(row.log_det_mean for row in report.rows[:-1])
        >>> abs(total - report.total.log_det_mean) < 1e-5
        True
    """
    x, context = _jacobians.prepare(flow, x, context)
    est = _jacobians.Estimator(exact_max_dim, **estimator)
    return _report(_jacobians.layer_maps(flow), _jacobians.whole_map(flow), x, context, est)


def guide_report(
    guide: object,
    num_samples: int = 256,
    *,
    data: Tensor | None = None,
    seed: int = 0,
    exact_max_dim: int = 64,
    **estimator: Any,
) -> LayerReport:
    r"""The :func:`layer_report` of a flow guide's map from base noise to the latent.

    For :class:`~pyroflows.infer.AutoFlow` the map is
    :math:`\varepsilon \mapsto z = \mu + \sigma \odot f(\varepsilon)` (the packed
    unconstrained latent), measured at ``num_samples`` draws
    :math:`\varepsilon \sim \mathcal{N}(0, I_D)` (seeded by ``seed``; the global RNG is
    untouched): one row per layer of :math:`f`, one for the location and scale
    (``"loc/scale"``, :math:`\kappa = \max_i \sigma_i / \min_i \sigma_i`), then the whole
    map. The guide must have been set up (called once, e.g. by an SVI step).

    For :class:`~pyroflows.infer.AmortizedFlow`, give the observations ``data``
    ``(N, input_dim)``: each row gets one draw, and the map is
    :math:`\varepsilon \mapsto \mu(x) + \sigma(x) \odot f_{h(x)}(\varepsilon)` at its own
    encoder outputs (``num_samples`` is not used).

    Args:
        guide: an ``AutoFlow`` (set up) or an ``AmortizedFlow``.
        num_samples: draws of the base noise (``AutoFlow``).
        data: the observations (``AmortizedFlow``).
        seed: seed of the draws and of the estimator.
        exact_max_dim: largest event size computed exactly (see :func:`condition_numbers`).
        **estimator: the estimate's options, as in :func:`layer_report`.

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyroflows.infer import AutoFlow
        >>> def model():
        ...     pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        >>> pyro.clear_param_store()
        >>> guide = AutoFlow(model, "iaf", num_layers=2, hidden_dims=[8])
        >>> _ = guide()  # sets the guide up
        >>> report = guide_report(guide, num_samples=64)
        >>> [row.name for row in report.rows][-3:]
        ['2: TriangularLinear', 'loc/scale', 'whole guide']
    """
    from .infer import AmortizedFlow, AutoFlow

    est = _jacobians.Estimator(exact_max_dim, seed=seed, **estimator)
    if isinstance(guide, AutoFlow):
        if guide.prototype_trace is None:
            raise ValueError("guide_report needs the guide set up: call it once first")
        loc, scale = guide.loc.detach(), guide.log_scale.detach().exp()
        gen = torch.Generator(device=loc.device).manual_seed(seed)
        shape = (num_samples, guide.latent_dim)
        eps = torch.randn(shape, generator=gen, dtype=loc.dtype, device=loc.device)
        affine = _jacobians.location_scale(loc, scale)
        layers = [*_jacobians.layer_maps(guide.flow), affine]
        whole = _jacobians.chain([_jacobians.single_map(guide.flow), affine], "whole guide")
        return _report(layers, whole, eps, None, est)
    if isinstance(guide, AmortizedFlow):
        if data is None:
            raise ValueError("guide_report of an AmortizedFlow needs data= (N, input_dim)")
        with torch.no_grad():
            loc, scale, h = guide.encode(torch.as_tensor(data))
        gen = torch.Generator(device=loc.device).manual_seed(seed)
        eps = torch.randn(loc.shape, generator=gen, dtype=loc.dtype, device=loc.device)
        context = (loc, scale) if h is None else (h, loc, scale)
        affine = _jacobians.location_scale(None, None, index=len(context) - 2)
        flow = [] if guide.flow is None else [guide.flow]
        layers = [_jacobians.on_part(m, 0) for f in flow for m in _jacobians.layer_maps(f)]
        parts = [_jacobians.on_part(_jacobians.single_map(f), 0) for f in flow]
        whole = _jacobians.chain([*parts, affine], "whole guide")
        return _report([*layers, affine], whole, eps, context, est)
    raise TypeError(f"expected an AutoFlow or an AmortizedFlow, got {type(guide).__name__}")


class ConditioningMonitor:
    r"""A :func:`~pyroflows.fit` callback: the conditioning of the model at fixed rows.

    Every ``every`` epochs it returns, for the model's data-to-noise map at the rows ``x``
    (see :func:`condition_numbers`), the median and maximum of
    :math:`\kappa(x_n) = \sigma_{\max} / \sigma_{\min}`, the smallest :math:`\sigma_{\min}` and
    the largest :math:`\sigma_{\max}`, as ``{"cond_median", "cond_max", "sigma_min",
    "sigma_max"}`` (keys with ``prefix`` in front); ``fit`` stores them per epoch in
    :attr:`History.logs <pyroflows.train.History>` (an empty dict on other epochs). The rows
    are moved to the model's device and dtype.

    Args:
        x: data rows ``(N, *event_shape)``, e.g. a few hundred validation rows.
        context: their contexts, for a conditional model.
        every: measure every ``every``-th epoch.
        prefix: put in front of every key (to tell several monitors apart).
        exact_max_dim: largest event size computed exactly (see :func:`condition_numbers`).
        **estimator: the estimate's options (see :func:`layer_report`).

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows import Flow, fit
        >>> from pyroflows.data import make_toy
        >>> data = make_toy("moons", 256)
        >>> model = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])
        >>> history = fit(model, data, epochs=2, progress=False,
        ...               callbacks=[ConditioningMonitor(data[:64])])
        >>> len(history.logs), sorted(history.logs[0])
        (2, ['cond_max', 'cond_median', 'sigma_max', 'sigma_min'])
    """

    def __init__(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        every: int = 1,
        prefix: str = "",
        exact_max_dim: int = 64,
        **estimator: Any,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive number of epochs, got {every}")
        self.x, self.context = torch.as_tensor(x), context
        self.every, self.prefix = int(every), prefix
        self._estimator = _jacobians.Estimator(exact_max_dim, **estimator)

    def __call__(self, model: Flow, history: History | None = None) -> dict[str, float] | None:
        """The numbers at the current epoch (``None`` between every ``every`` epochs)."""
        epoch = history.epoch[-1] if history is not None and history.epoch else self.every
        if epoch % self.every:
            return None
        like = model.data_loc
        x = self.x.to(device=like.device, dtype=like.dtype)
        context = self.context
        if context is not None:
            context = torch.as_tensor(context).to(device=like.device, dtype=like.dtype)
        x, context = _jacobians.prepare(model, x, context)
        result = _condition(_jacobians.whole_map(model), x, context, self._estimator)
        numbers = torch.stack(
            [
                result.condition.median(),
                result.condition.max(),
                result.sigma_min.min(),
                result.sigma_max.max(),
            ]
        ).tolist()
        names = ("cond_median", "cond_max", "sigma_min", "sigma_max")
        return {self.prefix + name: value for name, value in zip(names, numbers, strict=True)}

    def __repr__(self) -> str:
        return f"ConditioningMonitor(rows={len(self.x)}, every={self.every})"
