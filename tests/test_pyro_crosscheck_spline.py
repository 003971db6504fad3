"""Cross-checks of pyroflows' rational-quadratic splines against Pyro's ``order="quadratic"``.

Both libraries parameterise a spline on :math:`[-B, B]` (identity outside) with ``K`` raw
widths and ``K`` raw heights (softmax, then a minimum bin fraction of ``1e-3``) and ``K - 1``
raw interior knot slopes (softplus, plus a minimum slope of ``1e-3``). Pyro's ``Spline``
stores them as ``unnormalized_widths`` ``(D, K)``, ``unnormalized_heights`` ``(D, K)`` and
``unnormalized_derivatives`` ``(D, K - 1)``; pyroflows' ``Spline`` as the rows ``[0:K]``,
``[K:2K]`` and ``[2K:3K-1]`` of ``params.knots`` ``(3K - 1, D)``.

The one difference is the slope at the two boundary knots :math:`\\pm B`. pyroflows uses 1,
so that the spline joins its identity tails with a continuous derivative (as the reference
NSF code does). Pyro's ``_monotonic_rational_spline`` adds ``min_derivative`` to the interior
slopes and then pads the boundary slopes with ``1 - min_derivative`` = 0.999 (its own comment
reads "Not sure why this is 1.0 - min_derivative rather than 1.0"), so with identical raw
parameters the two maps differ in the first and last bins, and nowhere else: by ~1e-3 in
``log|det J|``, up to ~3e-4 B in the output, and more in the inverse where an end bin is flat
(dx/dy large). Pyro's tails have slope 1, so its own derivative jumps from 0.999 to 1 at
:math:`\\pm B`, and pyroflows' identity parameters are not an identity map in Pyro.

Hence the exact comparisons (float64, ~1e-12) use Pyro's ``ConditionedSpline`` fed with Pyro's
own constrained parameters (``softmax``, ``softmax``, ``softplus`` of our raw values) but with
the minimum slope moved out of ``_monotonic_rational_spline`` (``min_derivative=0`` and
``1e-3`` added to the softplus), which makes Pyro pad the boundary slopes with exactly 1: the
same knots, bin sizes and slopes as pyroflows, up to rounding. The stock Pyro
``Spline`` module is then checked to agree exactly in the tails and interior bins, and its
end-bin difference is pinned down (``test_stock_pyro_spline_differs_only_in_end_bins``).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from crosscheck_helpers import assert_close, seed_for
from pyro.distributions import transforms as pyro_transforms
from pyro.distributions.transforms.spline import (
    ConditionedSpline,
    _calculate_knots,
    _monotonic_rational_spline,
)
from torch import Tensor

from pyroflows.transforms import RationalQuadraticSpline, Spline, spline_coupling

# K = 1 has no interior slope: width = height = 2B and both knot slopes 1, so pyroflows' spline
# (and Pyro's with unit boundary slopes) is the identity on [-B, B]; it is checked as such.
COUNT_BINS = [1, 2, 4, 8]
BOUNDS = [2.0, 3.0]
DIMS = [1, 3]
BATCH_SHAPES = [(7,), (3, 4)]
# Minimum bin fraction and minimum knot slope: the same constants in both libraries.
MIN_BIN = MIN_DERIVATIVE = 1e-3
# Same closed forms in float64 on the same knots: a few ulps apart at most.
TIGHT = {"atol": 1e-12, "rtol": 1e-12}
# The inverse at y exactly on a knot: both libraries solve for xi = 1 in the bin left of it,
# each to within a few ulps of x, and in a narrow bin the log-slope varies by O(1 / width) per
# unit of x there, so their log-dets at that knot are ~1e-12 apart (5e-12 seen).
KNOT_INVERSE_LOG_DET = {"atol": 1e-10, "rtol": 1e-10}
# Round trips x -> y -> x (within one library) lose more where a bin is steep: solving the
# quadratic for xi amplifies the rounding of y by dx/dy (up to 1 / min slope = 1e3); 2e-10
# seen. Pyro's inverse agrees with pyroflows' to TIGHT at the same points.
ROUND_TRIP = {"atol": 1e-9, "rtol": 1e-9}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run these tiny float64 computations on one thread, then restore the setting.

    With several intra-op threads on a busy machine, thread start-up dominates (a softmax of a
    few dozen numbers can take milliseconds); one thread keeps the whole module well under 5 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def inputs(batch_shape: tuple[int, ...], dim: int, bound: float) -> Tensor:
    """Uniform on ``[-1.5 B, 1.5 B]``, with one point in each tail for sure."""
    x = bound * (3 * torch.rand(*batch_shape, dim, dtype=torch.float64) - 1.5)
    flat = x.view(-1)
    flat[0], flat[-1] = -bound - 0.4, bound + 0.7
    inside = x.abs() < bound
    assert inside.any() and (~inside).any()
    return x


# -- Pyro's spline with pyroflows' knots ---------------------------------------------------------


class UnitBoundarySlopeSpline(ConditionedSpline):
    """Pyro's ``ConditionedSpline`` with boundary knot slopes 1 instead of ``1 - 1e-3``.

    Takes Pyro's constrained parameters ``(softmax(w), softmax(h), softplus(d), None)``.
    ``_monotonic_rational_spline`` computes ``d + min_derivative`` and pads it with
    ``1 - min_derivative``; passing ``d + 1e-3`` with ``min_derivative=0`` gives the same
    interior slopes and boundary slopes of exactly 1. Everything else (bin search, formulas,
    inverse, log-det sign, identity tails, caching) is Pyro's code.
    """

    def spline_op(self, x: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
        w, h, d, lambdas = self._params
        return _monotonic_rational_spline(
            x, w, h, d + MIN_DERIVATIVE, lambdas, bound=self.bound, min_derivative=0.0, **kwargs
        )


def pyro_params(raw: Tensor, count_bins: int) -> tuple[Tensor, Tensor, Tensor, None]:
    """Pyro's quadratic-spline parameters from pyroflows' raw ``(..., 3K - 1, d)`` layout.

    Pyro wants ``(..., d, K)``, ``(..., d, K)``, ``(..., d, K - 1)``, after softmax / softplus
    (as ``Spline._params`` and ``ConditionalSpline._params`` compute them).
    """
    raw = raw.movedim(-2, -1)
    widths, heights = raw[..., :count_bins], raw[..., count_bins : 2 * count_bins]
    derivatives = raw[..., 2 * count_bins :]
    return F.softmax(widths, dim=-1), F.softmax(heights, dim=-1), F.softplus(derivatives), None


def pyro_knots(normalized: Tensor, bound: float) -> Tensor:
    """Pyro's knot positions ``(..., K + 1)`` for softmax-normalised bin sizes."""
    count = normalized.shape[-1]
    lengths = MIN_BIN + (1 - MIN_BIN * count) * normalized
    return _calculate_knots(lengths, -bound, bound)[1]


@torch.no_grad()
def random_spline(dim: int, count_bins: int, bound: float, scale: float = 1.5) -> Spline:
    flow = Spline(dim, count_bins=count_bins, bound=bound).double()
    flow.params.knots.normal_(0.0, scale)
    return flow


@torch.no_grad()
def copy_to_pyro(flow: Spline, reference: pyro_transforms.Spline) -> None:
    """pyroflows ``knots`` ``(3K - 1, D)`` rows -> Pyro's three ``(D, .)`` raw parameters."""
    count = flow.transformer.count_bins
    knots = flow.params.knots
    assert reference.unnormalized_widths.shape == (flow.input_dim, count)
    assert reference.unnormalized_derivatives.shape == (flow.input_dim, count - 1)
    reference.unnormalized_widths.copy_(knots[:count].T)
    reference.unnormalized_heights.copy_(knots[count : 2 * count].T)
    reference.unnormalized_derivatives.copy_(knots[2 * count :].T)


def check_flow_against_reference(
    flow: torch.distributions.Transform,
    reference: ConditionedSpline,
    x: Tensor,
    y_other: Tensor,
    inverse_log_det_tol: dict[str, float] = TIGHT,
) -> None:
    """Forward, log-det and inverse of ``flow`` against an element-wise Pyro spline.

    ``reference`` acts on ``x`` ``(..., d)`` with an element-wise log-det; ``y_other`` are
    further points for the inverse.
    """
    y_ref = reference(x)
    log_det_ref = reference.log_abs_det_jacobian(x, y_ref).sum(-1)
    y = flow(x)
    assert_close(y, y_ref)
    assert_close(flow.log_abs_det_jacobian(x, y), log_det_ref)
    assert_close(flow.log_abs_det_jacobian(x.clone(), y_ref), log_det_ref)

    # Inverse of Pyro's output (cloned so no cache answers), and of an arbitrary point.
    for target in (y_ref, y_other):
        x_ref = reference.inv(target.clone())
        inverse_log_det_ref = reference.inv.log_abs_det_jacobian(target, x_ref).sum(-1)
        x_back = flow.inv(target.clone())
        assert_close(x_back, x_ref)
        inverse_log_det = flow.inv.log_abs_det_jacobian(target.clone(), x_back)
        assert_close(inverse_log_det, inverse_log_det_ref, inverse_log_det_tol)
    assert_close(flow.inv(y_ref.clone()), x, ROUND_TRIP)


# -- element-wise spline, exact comparison -------------------------------------------------------


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("count_bins", COUNT_BINS)
def test_spline_matches_pyro_spline_with_unit_boundary_slopes(
    count_bins: int, bound: float, dim: int, batch_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(seed_for("spline", count_bins, bound, dim, batch_shape))
    flow = random_spline(dim, count_bins, bound)
    raw = flow.params.knots.detach()
    reference = UnitBoundarySlopeSpline(pyro_params(raw, count_bins), bound, order="quadratic")
    x = inputs(batch_shape, dim, bound)
    y_other = inputs(batch_shape, dim, bound)
    with torch.no_grad():
        inside = x.abs() < bound
        y_ref = reference(x)
        if count_bins == 1:
            assert_close(y_ref, x)
        else:
            assert (y_ref - x)[inside].abs().max() > 1e-2  # not (close to) the identity map
        assert torch.equal(y_ref[~inside], x[~inside])  # identity tails
        check_flow_against_reference(flow, reference, x, y_other)
        # The transformer itself, element-wise, both directions (Pyro's inverse returns
        # log|dx/dy|, pyroflows' the forward log|dy/dx| at the result).
        y, log_slope = flow.transformer.forward(x, raw)
        y_pyro, log_slope_pyro = reference.spline_op(x)
        assert_close(y, y_pyro)
        assert_close(log_slope, log_slope_pyro)
        x_back, inverse_log_slope = flow.transformer.inverse(y_other.clone(), raw)
        x_pyro, inverse_log_slope_pyro = reference.spline_op(y_other.clone(), inverse=True)
        assert_close(x_back, x_pyro)
        assert_close(inverse_log_slope, -inverse_log_slope_pyro)


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("count_bins", COUNT_BINS)
def test_spline_matches_pyro_at_knots(count_bins: int, bound: float) -> None:
    """At every knot, the end points :math:`\\pm B` included: bin conventions agree."""
    dim = 3
    torch.manual_seed(seed_for("knots", count_bins, bound))
    flow = random_spline(dim, count_bins, bound)
    raw = flow.params.knots.detach()
    params = pyro_params(raw, count_bins)
    reference = UnitBoundarySlopeSpline(params, bound, order="quadratic")
    x_knots = pyro_knots(params[0], bound).T.contiguous()  # (K + 1, D)
    y_knots = pyro_knots(params[1], bound).T.contiguous()
    # The knots pyroflows builds are Pyro's.
    ours = RationalQuadraticSpline(count_bins, bound)._spline(raw)
    assert_close(ours[0], x_knots.T)
    assert_close(ours[2], y_knots.T)
    assert_close(ours[4][..., 1:-1], params[2] + MIN_DERIVATIVE)
    assert torch.equal(ours[4][..., [0, -1]], torch.ones(dim, 2, dtype=torch.float64))
    with torch.no_grad():
        assert_close(reference(x_knots), y_knots)
        assert_close(reference.inv(y_knots.clone()), x_knots)
        check_flow_against_reference(flow, reference, x_knots, y_knots, KNOT_INVERSE_LOG_DET)


# -- the stock Pyro Spline module: identical raw parameters ---------------------------------------


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("count_bins", COUNT_BINS)
def test_stock_pyro_spline_differs_only_in_end_bins(
    count_bins: int, bound: float, dim: int
) -> None:
    """Pyro's ``Spline(order="quadratic")`` with the same raw parameters.

    Equal (~1e-12) in the tails and in the interior bins; different in the first and last
    bins, where Pyro's boundary slope 0.999 enters; at :math:`\\pm B` Pyro's log-slope is
    ``log(0.999)`` (its inside mask is closed), pyroflows' 0.
    """
    torch.manual_seed(seed_for("stock", count_bins, bound, dim))
    flow = random_spline(dim, count_bins, bound)
    reference = pyro_transforms.Spline(dim, count_bins, bound, order="quadratic").double()
    copy_to_pyro(flow, reference)
    raw = flow.params.knots.detach()
    with torch.no_grad():
        w, h, _, _ = reference._params()
        x_knots, y_knots = pyro_knots(w, bound), pyro_knots(h, bound)  # (D, K + 1)
        # Random points, every bin's midpoint, and the tails.
        midpoints = ((x_knots[:, 1:] + x_knots[:, :-1]) / 2).T
        tails = torch.tensor(
            [[-bound - 1.0], [-bound - 1e-9], [bound + 1e-9], [bound + 2.0]], dtype=torch.float64
        )
        x = torch.cat([inputs((40,), dim, bound), midpoints, tails.expand(-1, dim)])
        y_ours, log_ours = flow.transformer.forward(x, raw)
        y_pyro, log_pyro = reference.spline_op(x)
        x_back_ours, _ = flow.transformer.inverse(y_ours.clone(), raw)
        x_back_pyro, _ = reference.spline_op(y_ours.clone(), inverse=True)

    def regions(values: Tensor, knots: Tensor) -> tuple[Tensor, Tensor]:
        bins = (values.unsqueeze(-1) > knots[:, 1:-1]).sum(-1)
        inside = values.abs() < bound
        end = inside & ((bins == 0) | (bins == count_bins - 1))
        return ~end, end

    same, end = regions(x, x_knots)
    assert_close(y_ours[same], y_pyro[same])
    assert_close(log_ours[same], log_pyro[same])
    same_inv, end_inv = regions(y_ours, y_knots)
    assert_close(x_back_ours[same_inv], x_back_pyro[same_inv])
    if count_bins >= 3:  # interior bins exist and are compared
        assert (same & (x.abs() < bound)).sum() >= dim * (count_bins - 2)
    assert (same & (x.abs() > bound)).sum() >= 4 * dim  # tails compared

    # The end-bin difference: present, and of the size a 1e-3 change of a knot slope makes.
    assert end.sum() >= 2 * dim and end_inv.any()
    log_gap = (log_ours - log_pyro)[end].abs().max()
    y_gap = (y_ours - y_pyro)[end].abs().max()
    assert 1e-5 < log_gap < 1e-2
    assert 1e-7 < y_gap < 1e-2 * bound
    assert (x_back_ours - x_back_pyro)[end_inv].abs().max() > 1e-7
    # Exactly at the boundary knots: identity for pyroflows, slope 0.999 for Pyro.
    edges = torch.tensor([-bound, bound], dtype=torch.float64).unsqueeze(-1).expand(-1, dim)
    with torch.no_grad():
        y_edge, log_edge = reference.spline_op(edges)
        y_edge_ours, log_edge_ours = flow.transformer.forward(edges, raw)
    assert_close(y_edge, edges)
    assert torch.equal(y_edge_ours, edges) and torch.equal(log_edge_ours, torch.zeros_like(edges))
    assert_close(log_edge, torch.full_like(edges, math.log(1 - MIN_DERIVATIVE)))


# -- coupling layer: conditioner outputs into Pyro's ConditionedSpline -------------------------


@torch.no_grad()
def perturb_conditioner(flow, weight_scale: float = 0.5, bias_scale: float = 1.0) -> None:
    """Random output layer (it starts at zero weights and the identity parameters)."""
    layer = flow.conditioner.output_layer
    layer.weight.normal_(0.0, weight_scale)
    layer.bias.normal_(0.0, bias_scale)


def conditioner_raw(flow, value: Tensor, context: Tensor | None) -> Tensor:
    """Raw spline parameters ``(..., 3K - 1, d)`` from a coupling layer's conditioner.

    As ``Coupling`` computes them: the conditioner sees the passed-through coordinates
    (concatenated with the context) and its output is read as ``(3K - 1, d)``.
    """
    passed = value[..., flow.identity_index]
    net_input = passed
    if context is not None:
        batch = torch.broadcast_shapes(passed.shape[:-1], context.shape[:-1])
        net_input = torch.cat(
            [passed.expand(*batch, -1), context.expand(*batch, context.shape[-1])], dim=-1
        )
    count = flow.transformer.count_bins
    return flow.conditioner(net_input).unflatten(-1, (3 * count - 1, len(flow.transformed_index)))


def reference_coupling(
    flow, value: Tensor, context: Tensor | None, reference_class: type, inverse: bool = False
) -> tuple[Tensor, Tensor]:
    """Pyro's spline on the transformed coordinates, parameters from our conditioner.

    Returns the output (``x`` if ``inverse``) and the forward ``log|det J|``.
    """
    count = flow.transformer.count_bins
    passed = value[..., flow.identity_index]
    raw = conditioner_raw(flow, value, context)
    spline = reference_class(pyro_params(raw, count), flow.transformer.bound, order="quadratic")
    part = value[..., flow.transformed_index]
    if inverse:
        out = spline.inv(part)
        log_det = -spline.inv.log_abs_det_jacobian(part, out).sum(-1)
    else:
        out = spline(part)
        log_det = spline.log_abs_det_jacobian(part, out).sum(-1)
    merged = torch.empty_like(value)
    merged[..., flow.identity_index] = passed
    merged[..., flow.transformed_index] = out
    return merged, log_det


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("context_dim", [0, 2])
@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("count_bins", COUNT_BINS)
def test_spline_coupling_matches_pyro_conditioned_spline(
    count_bins: int, bound: float, dim: int, context_dim: int, batch_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(seed_for("coupling", count_bins, bound, dim, context_dim, batch_shape))
    flow = spline_coupling(dim, context_dim, [16], count_bins=count_bins, bound=bound).double()
    perturb_conditioner(flow)
    x = inputs(batch_shape, dim, bound)
    y_other = inputs(batch_shape, dim, bound)
    context = None
    target = flow
    if context_dim:
        context = torch.randn(*batch_shape, context_dim, dtype=torch.float64)
        target = flow.condition(context)
    with torch.no_grad():
        y_ref, log_det_ref = reference_coupling(flow, x, context, UnitBoundarySlopeSpline)
        moved = (y_ref - x)[..., flow.transformed_index]
        inside = x[..., flow.transformed_index].abs() < bound
        assert torch.equal(moved[~inside], 0 * moved[~inside])  # identity tails
        if count_bins == 1:  # the identity, see COUNT_BINS
            assert_close(y_ref, x)
        else:
            assert moved[inside].abs().max() > 1e-2
        y = target(x)
        assert_close(y, y_ref)
        assert_close(target.log_abs_det_jacobian(x, y), log_det_ref)
        assert_close(target.log_abs_det_jacobian(x.clone(), y_ref), log_det_ref)
        for point in (y_ref, y_other):
            x_ref, inverse_log_det_ref = reference_coupling(
                flow, point, context, UnitBoundarySlopeSpline, inverse=True
            )
            x_back = target.inv(point.clone())
            assert_close(x_back, x_ref)
            assert_close(target.log_abs_det_jacobian(x_back, point), inverse_log_det_ref)
        assert_close(target.inv(y_ref.clone()), x, ROUND_TRIP)


@pytest.mark.parametrize("count_bins", [1, 2, 8])
def test_spline_coupling_vs_stock_conditioned_spline(count_bins: int) -> None:
    """Stock ``ConditionedSpline``: equal in the tails and interior bins, not in the end bins."""
    bound, dim = 3.0, 4
    torch.manual_seed(seed_for("stock coupling", count_bins))
    flow = spline_coupling(dim, 0, [16], count_bins=count_bins, bound=bound).double()
    perturb_conditioner(flow)
    x = inputs((200,), dim, bound)
    with torch.no_grad():
        y_stock, _ = reference_coupling(flow, x, None, ConditionedSpline)
        y_unit, _ = reference_coupling(flow, x, None, UnitBoundarySlopeSpline)
        y = flow(x)
        x_knots = pyro_knots(pyro_params(conditioner_raw(flow, x, None), count_bins)[0], bound)
    assert_close(y, y_unit)
    assert torch.equal(y[..., flow.identity_index], y_stock[..., flow.identity_index])
    part = x[..., flow.transformed_index]
    bins = (part.unsqueeze(-1) > x_knots[..., 1:-1]).sum(-1)
    inside = part.abs() < bound
    end = inside & ((bins == 0) | (bins == count_bins - 1))
    interior = inside & ~end
    tails = ~inside
    gap = (y - y_stock)[..., flow.transformed_index]
    assert tails.sum() > 20 and (gap[tails] == 0).all()
    if count_bins > 2:
        assert interior.sum() > 20
        assert_close(
            y[..., flow.transformed_index][interior], y_stock[..., flow.transformed_index][interior]
        )
    assert end.sum() > 10 and 1e-7 < gap[end].abs().max() < 1e-2
