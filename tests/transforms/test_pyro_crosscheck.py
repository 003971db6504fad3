"""Cross-checks against Pyro's reference implementations: one table of pairs, one check.

Each entry of ``PAIRS`` builds one of our flows (float64, parameters away from the identity),
the Pyro transform it must equal, and copies our parameters into Pyro's. ``check_matches`` then
asks for the same outputs and the same ``log|det J|`` as Pyro's, to ~1e-12: forward at ``x``;
inverse at Pyro's output and at an arbitrary point, against Pyro's inverse where it has one
(Pyro's planar and radial flows have none: there our inverse must recover ``x`` from Pyro's
output). Conditional flows are compared with Pyro's conditioned transforms fed the per-context
parameters (or the very networks) that ours use.

The round trip and "cached log-det equals recomputed" are not repeated here: the conformance
suite (``test_conformance.py``) checks them for every registered flow.

How each pair is matched:

* Planar, radial, Householder, permutation: same parameter values (Pyro's ``u``, ``w``,
  ``bias``; ``x0``, ``alpha_prime``, ``beta_prime``; ``u_unnormed``; ``Permute``). The
  conditional planar and radial flows feed their hypernetwork's outputs to Pyro's
  ``ConditionedPlanar`` / ``ConditionedRadial``.
* Affine autoregressive and coupling layers: Pyro's ``AffineAutoregressive`` /
  ``AffineCoupling`` (and their conditional versions) take the conditioner network as an
  argument; here that network is a thin adapter around *our* conditioner (the layer's MADE, or
  the coupling layer's MLP) returning Pyro's ``(mean, log_scale)``, so any difference comes
  from the transform formulas (forward, clamps, log-det, sequential inverse). One deliberate
  difference: our stable (gated) affine bounds :math:`\\log\\sigma` below at -5 (in value) so
  the layer stays invertible in floating point; Pyro's does not
  (``test_stable_iaf_differs_only_where_log_sigma_below_bound``).
* Rational-quadratic splines: both libraries use ``K`` raw widths and heights (softmax, minimum
  bin fraction 1e-3) and ``K - 1`` raw interior knot slopes (softplus plus 1e-3); Pyro's
  ``Spline`` stores them as ``unnormalized_widths`` ``(D, K)``, ``unnormalized_heights``
  ``(D, K)``, ``unnormalized_derivatives`` ``(D, K - 1)``, ours as the rows ``[0:K]``,
  ``[K:2K]``, ``[2K:3K-1]`` of ``params.knots`` ``(3K - 1, D)``. The one difference is the
  slope at the boundary knots :math:`\\pm B`: ours is 1 (the spline joins its identity tails
  with a continuous derivative, as the reference NSF code does); Pyro's
  ``_monotonic_rational_spline`` pads them with ``1 - min_derivative`` = 0.999 (its comment
  reads "Not sure why this is 1.0 - min_derivative rather than 1.0"). So the exact comparisons
  use Pyro's ``ConditionedSpline`` with the minimum slope moved out of
  ``_monotonic_rational_spline`` (``UnitBoundarySlopeSpline``), which pads with exactly 1;
  the stock Pyro spline is then checked to agree in the tails and interior bins and to differ
  only in the end bins (``test_stock_pyro_spline_differs_only_in_end_bins``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from pyro.distributions import transforms as pyro_transforms
from pyro.distributions.transforms import (
    AffineAutoregressive,
    AffineCoupling,
    ConditionalAffineAutoregressive,
    ConditionalAffineCoupling,
)
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial
from pyro.distributions.transforms.spline import (
    ConditionedSpline,
    _calculate_knots,
    _monotonic_rational_spline,
)
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from pyroflows.nn import MADE, MLP
from pyroflows.transforms import (
    Affine,
    Autoregressive,
    Coupling,
    Householder,
    Permutation,
    Planar,
    Radial,
    RationalQuadraticSpline,
    Spline,
    coupling_mask,
    spline_coupling,
)

from .crosscheck_helpers import TIGHT, assert_close, seed_for

F64 = torch.float64
# Our planar and radial inverses are numerical root solves (relative tolerance eps**0.75 ~
# 2e-12): the recovered input is held to a looser, still float64-only, bound.
ROOT_SOLVE = {"atol": 1e-10, "rtol": 1e-10}
# The spline inverse at y exactly on a knot: both libraries solve for xi = 1 in the bin left of
# it, each to within a few ulps of x, and in a narrow bin the log-slope varies by O(1 / width)
# per unit of x there, so their log-dets at that knot are ~1e-12 apart (5e-12 seen).
KNOT_INVERSE_LOG_DET = {"atol": 1e-10, "rtol": 1e-10}
# The spline coupling's inverse solves a quadratic in each bin; where a bin is steep (dx/dy up
# to 1 / min slope = 1e3) the two libraries' differently rounded bin coefficients give roots up
# to 1000-fold further apart than the coefficients (1.1e-10 seen, K = 8, D = 5).
STEEP_BIN_INVERSE = {"atol": 1e-9, "rtol": 1e-9}
CONTEXT_DIM = 3
NUM_CONTEXTS = 6
# Minimum bin fraction and minimum knot slope of the splines: the same in both libraries.
MIN_BIN = MIN_DERIVATIVE = 1e-3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run these tiny float64 computations on one thread, then restore the setting.

    With several intra-op threads on a busy machine, thread start-up dominates (a softmax of a
    few dozen numbers can take milliseconds); one thread keeps the whole module fast.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian(shape: tuple[int, ...], dim: int, scale: float = 1.5) -> Tensor:
    return scale * torch.randn(*shape, dim, dtype=F64)


def gaussian_inputs(ours, shape: tuple[int, ...], dim: int, **_) -> tuple[Tensor, Tensor]:
    return gaussian(shape, dim), gaussian(shape, dim)


def assert_varies_with_context(values: Tensor) -> None:
    """Per-context parameters ``(NUM_CONTEXTS, ...)`` differ clearly between contexts."""
    flat = values.reshape(NUM_CONTEXTS, -1)
    assert (flat.max(0).values - flat.min(0).values).min() > 0.05


def assert_nontrivial(x: Tensor, y: Tensor, log_det: Tensor) -> None:
    assert (y - x).abs().max() > 0.1  # not (close to) the identity map
    assert log_det.abs().max() > 0.05  # nor volume preserving


# == the check ===================================================================================


class Pair(NamedTuple):
    """Pyro's transform and ours, with the same parameters.

    ``ours(**setting)`` builds our flow; ``pyro(ours, context, **setting)`` builds Pyro's
    transform for it (a fresh module, or one around our own network or parameters);
    ``copy_params(ours, pyro)`` copies our parameter values into Pyro's module (``None`` when
    Pyro's transform already uses ours). ``settings`` are the parametrisations checked.
    """

    pyro: Callable[..., Transform]
    ours: Callable[..., Any]
    copy_params: Callable[[Any, Transform], None] | None
    settings: list[dict[str, Any]]
    # Inputs ``(x, y_other)`` of shape ``shape + (dim,)``; default ``gaussian_inputs``.
    inputs: Callable[..., tuple[Tensor, Tensor]] | None = None
    # Assertions that the case exercises what it claims (a regime, a context dependence).
    precondition: Callable[..., None] | None = None
    pyro_inverse: bool = True
    inverse_tol: dict[str, float] = TIGHT


def pyro_log_det(reference: Transform, x: Tensor, y: Tensor) -> Tensor:
    """``log|det J|`` summed over the event (element-wise splines give it per coordinate)."""
    log_det = reference.log_abs_det_jacobian(x, y)
    return log_det.sum(-1) if reference.domain.event_dim == 0 else log_det


def check_matches(
    reference: Transform,
    ours: Transform,
    x: Tensor,
    y_other: Tensor,
    pyro_inverse: bool = True,
    inverse_tol: dict[str, float] = TIGHT,
    inverse_log_det_tol: dict[str, float] | None = None,
) -> None:
    """Outputs and log-dets of ``ours`` equal those of Pyro's ``reference``, both directions."""
    inverse_log_det_tol = inverse_log_det_tol or inverse_tol
    y_ref = reference(x)
    log_det_ref = pyro_log_det(reference, x, y_ref)
    assert log_det_ref.shape == x.shape[:-1]
    y = ours(x)
    assert y.shape == x.shape
    assert_close(y, y_ref)
    assert ours.domain.event_dim == reference.domain.event_dim  # Pyro's log-det shapes
    assert_close(pyro_log_det(ours, x, y), log_det_ref)

    if not pyro_inverse:  # our inverse recovers x from Pyro's output (cloned: no cache answers)
        y_fresh = y_ref.clone()
        x_back = ours.inv(y_fresh)
        assert_close(x_back, x, inverse_tol)
        assert_close(pyro_log_det(ours.inv, y_fresh, x_back), -log_det_ref, inverse_tol)
        return
    # Both inverses of Pyro's output and of an arbitrary point, and their log-dets.
    for target in (y_ref, y_other):
        x_ref = reference.inv(target.clone())
        x_ours = ours.inv(target.clone())
        assert_close(x_ours, x_ref, inverse_tol)
        assert_close(
            pyro_log_det(ours.inv, target, x_ours),
            pyro_log_det(reference.inv, target, x_ref),
            inverse_log_det_tol,
        )


# == planar, radial, Householder, permutation ====================================================

DIMS = [1, 2, 5]
BATCH_SHAPES = [(), (7,), (3, 4)]
SAMPLE_SHAPES = [(), (2,)]  # conditional: S samples of each of NUM_CONTEXTS contexts


def planar_ours(dim: int, regime: str, **_) -> Planar:
    flow = Planar(dim).double()
    w, u = torch.randn(dim, dtype=F64), torch.randn(dim, dtype=F64)
    if regime == "wu_below_minus_one":  # where the u -> u_hat correction is active
        u = u - (2.5 + (w @ u)) * w / (w @ w)
        assert float(w @ u) < -1
    with torch.no_grad():
        flow.params.w.copy_(w)
        flow.params.u.copy_(u)
        flow.params.bias.copy_(torch.randn((), dtype=F64))
    return flow


@torch.no_grad()
def copy_planar(ours: Planar, reference: pyro_transforms.Planar) -> None:
    """Ours: ``params.u/w`` (D,) and a 0-d ``bias``; Pyro: ``u``, ``w`` (D,), ``bias`` (1,)."""
    reference.u.copy_(ours.params.u)
    reference.w.copy_(ours.params.w)
    reference.bias.copy_(ours.params.bias.reshape(1))


# (alpha_raw, beta_raw) -> beta = softplus(beta_raw) - softplus(alpha_raw)
RADIAL_RAWS = {"contracting": (0.3, -1.2), "expanding": (-0.5, 1.5)}  # beta ~ -0.59, +1.23


def radial_ours(dim: int, regime: str, **_) -> Radial:
    flow = Radial(dim).double()
    alpha_raw, beta_raw = RADIAL_RAWS[regime]
    with torch.no_grad():
        flow.params.center.copy_(torch.randn(dim, dtype=F64))
        flow.params.alpha_raw.fill_(alpha_raw)
        flow.params.beta_raw.fill_(beta_raw)
    beta = F.softplus(flow.params.beta_raw) - F.softplus(flow.params.alpha_raw)
    assert (float(beta.detach()) < 0) == (regime == "contracting")
    return flow


@torch.no_grad()
def copy_radial(ours: Radial, reference: pyro_transforms.Radial) -> None:
    """Ours: 0-d ``alpha_raw``, ``beta_raw``; Pyro: ``x0``, ``alpha_prime``, ``beta_prime``."""
    reference.x0.copy_(ours.params.center)
    reference.alpha_prime.copy_(ours.params.alpha_raw.reshape(1))
    reference.beta_prime.copy_(ours.params.beta_raw.reshape(1))


def radial_inputs(ours: Radial, shape: tuple[int, ...], dim: int, **_) -> tuple[Tensor, Tensor]:
    x = gaussian(shape, dim)
    if shape:  # one input exactly at the centre (r = 0)
        x.reshape(-1, dim)[0] = ours.params.center.detach()
    return x, gaussian(shape, dim)


def householder_ours(dim: int, count: int, **_) -> Householder:
    flow = Householder(dim, num_reflections=count).double()
    with torch.no_grad():
        flow.vectors.normal_()
    return flow


@torch.no_grad()
def copy_householder(ours: Householder, reference: pyro_transforms.Householder) -> None:
    """Ours: ``vectors`` (K, D); Pyro: ``u_unnormed`` (K, D), same row order."""
    assert reference.u_unnormed.shape == ours.vectors.shape
    reference.u_unnormed.copy_(ours.vectors)


def permutation_ours(dim: int, **_) -> Permutation:
    perm = torch.randperm(dim)
    if dim > 1 and torch.equal(perm, torch.arange(dim)):
        perm = perm.flip(0)
    return Permutation(perm)


def moves_inputs(ours, reference, x, *_, **__) -> None:
    assert (reference(x) - x).abs().max() > 1e-3  # not (close to) the identity map


@torch.no_grad()
def spread_hypernet(flow: Planar | Radial, scale: float) -> None:
    """Make the per-context parameters vary clearly with the context (init_scale is 1e-2)."""
    layer = flow.params.hypernet.output_layer
    layer.weight.normal_(0.0, scale)
    layer.bias.normal_(0.0, 0.5)


def conditional_planar_ours(dim: int, **_) -> Planar:
    flow = Planar(dim, context_dim=CONTEXT_DIM, hidden_dims=[16]).double()
    spread_hypernet(flow, scale=0.5)
    return flow


@torch.no_grad()
def conditioned_planar(ours: Planar, context: Tensor, dim: int, **_) -> ConditionedPlanar:
    params = ours.params(context)
    assert params["u"].shape == params["w"].shape == (NUM_CONTEXTS, dim)
    assert params["bias"].shape == (NUM_CONTEXTS,)
    for value in params.values():
        assert_varies_with_context(value)
    # ConditionedPlanar unpacks (bias, u, w); its bias carries a trailing size-1 dimension.
    return ConditionedPlanar((params["bias"].unsqueeze(-1), params["u"], params["w"]))


# Offsets of (alpha_raw, beta_raw) far enough apart that every context keeps the sign of beta.
CONDITIONAL_RADIAL_RAWS = {"contracting": (1.5, -2.0), "expanding": (-1.5, 2.0)}


def conditional_radial_ours(dim: int, regime: str, **_) -> Radial:
    flow = Radial(dim, context_dim=CONTEXT_DIM, hidden_dims=[16]).double()
    spread_hypernet(flow, scale=0.3)
    with torch.no_grad():  # output layout (center, alpha_raw, beta_raw): set the raws' offsets
        flow.params.hypernet.output_layer.bias[-2:] = torch.tensor(CONDITIONAL_RADIAL_RAWS[regime])
    return flow


@torch.no_grad()
def conditioned_radial(ours: Radial, context: Tensor, dim: int, regime: str, **_):
    params = ours.params(context)
    assert params["center"].shape == (NUM_CONTEXTS, dim)
    assert params["alpha_raw"].shape == params["beta_raw"].shape == (NUM_CONTEXTS,)
    for value in params.values():
        assert_varies_with_context(value)
    beta = F.softplus(params["beta_raw"]) - F.softplus(params["alpha_raw"])
    assert ((beta < 0) if regime == "contracting" else (beta > 0)).all()
    # ConditionedRadial unpacks (x0, alpha_prime, beta_prime), scalars with a trailing 1.
    return ConditionedRadial(
        (params["center"], params["alpha_raw"].unsqueeze(-1), params["beta_raw"].unsqueeze(-1))
    )


def moves_inputs_clearly(ours, reference, x, *_, **__) -> None:
    assert (reference(x) - x).abs().max() > 0.1


# == affine autoregressive and coupling layers ===================================================

AR_DIMS = [1, 3, 6]
COUPLING_DIMS = [2, 3, 6]
LAYER_BATCH_SHAPES = [(7,), (3, 4)]
HIDDEN = [16, 16]


class MADEAsPyroARN(nn.Module):
    """Our MADE seen as Pyro's autoregressive network: ``x -> (mean, log_scale)``.

    Pyro's sequential inverse visits the inputs in the order ``permutation[0], ...``: as in
    ``pyro.nn.AutoRegressiveNN`` (``var_index[permutation] = arange(D)``), ``permutation[k]``
    is the input at position ``k`` of the autoregressive order. MADE's ``degrees[i]`` is the
    1-based position of input ``i``, so ``permutation = argsort(degrees)``.
    ``ConditionalAffineAutoregressive.condition`` also reads ``get_permutation``.
    """

    def __init__(self, made: MADE) -> None:
        super().__init__()
        self.made = made
        self.permutation = torch.argsort(made.degrees)

    def get_permutation(self) -> Tensor:
        return self.permutation

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # Pyro's inverse starts from ``torch.zeros(...)`` in the default dtype (float32):
        # cast to the network's dtype (the values are zeros or already float64).
        params = self.made(x.to(self.made.output_layer.weight.dtype), context)
        return params[..., 0, :], params[..., 1, :]  # (mean / shift, raw log-scale)


class CouplingConditionerAsPyroHypernet(nn.Module):
    """A coupling layer's conditioner seen as Pyro's hypernet: ``x_a -> (mean, s)``.

    The conditioner outputs ``P * d`` values that ``Coupling`` reads with
    ``.unflatten(-1, (P, d))``: shift ``out[..., :d]``, raw log-scale ``out[..., d:]``. With a
    context, ``Coupling`` feeds ``cat([x_a, context])`` (broadcast to a common batch shape).
    """

    def __init__(self, conditioner: MLP, transformed_count: int) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.count = transformed_count

    def forward(self, x_a: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        net_input = x_a
        if context is not None:
            batch = torch.broadcast_shapes(x_a.shape[:-1], context.shape[:-1])
            net_input = torch.cat(
                [x_a.expand(*batch, -1), context.expand(*batch, context.shape[-1])], dim=-1
            )
        out = self.conditioner(net_input)
        assert out.shape[-1] == 2 * self.count
        return out[..., : self.count], out[..., self.count :]


@torch.no_grad()
def perturb_output_layer(
    layer: nn.Linear, dim: int, weight_scale: float, raw_log_scale_bias: Tensor
) -> None:
    """Random output weights and shift bias; outputs ``[dim:2 dim]`` are the raw log-scales."""
    layer.weight.normal_(0.0, weight_scale)
    layer.bias.normal_(0.0, 0.5)
    layer.bias[dim : 2 * dim] = raw_log_scale_bias


def log_scale_bias(dim: int, regime: str) -> Tensor:
    """Raw log-scale offsets: well inside the clamps (``"moderate"``, but clearly non-zero),
    or pushing some coordinates past each of Pyro's clamps, -5 and 3 (``"clamped"``)."""
    pattern = [-7.0, 5.0, 0.0] if regime == "clamped" else [0.7, -0.9, 0.4]
    return torch.tensor(pattern, dtype=F64).repeat(dim)[:dim]


def assert_regime(raw: Tensor, regime: str) -> None:
    """Raw log-scales inside both clamps, or (``"clamped"``) past each clamp somewhere."""
    if regime == "clamped":
        assert (raw < -5).any()
        if raw.shape[-1] > 1:  # a single transformed coordinate only gets the -7 offset
            assert (raw > 3).any()
    else:
        assert ((raw > -5) & (raw < 3)).all()


@torch.no_grad()
def widen_gate(flow: Autoregressive, dim: int) -> None:
    """Stable variant: a gate sigmoid(raw + 2) that varies clearly, from ~0.2 to ~1."""
    flow.made.output_layer.weight.mul_(3.0)
    flow.made.output_layer.bias[dim:] = torch.linspace(-3.0, 1.0, dim, dtype=F64)


def autoregressive_ours(
    dim: int,
    regime: str = "moderate",
    ordering: str = "random",
    stable: bool = False,
    context_dim: int = 0,
    **_,
) -> Autoregressive:
    flow = Autoregressive(
        dim,
        context_dim=context_dim,
        hidden_dims=HIDDEN,
        transformer=Affine(stable=stable),
        ordering=ordering,
        seed=3,
    ).double()
    perturb_output_layer(flow.made.output_layer, dim, 0.4, log_scale_bias(dim, regime))
    if context_dim:
        with torch.no_grad():
            flow.made.context_layer.weight.normal_(0.0, 0.5)
    if stable:
        widen_gate(flow, dim)
    return flow


def affine_autoregressive_pyro(ours, context, stable: bool = False, **_) -> Transform:
    # Pyro's defaults: log-scale clamps [-5, 3], sigmoid_bias 2 (test_default_constants_...).
    arn = MADEAsPyroARN(ours.made)
    if context is None:
        return AffineAutoregressive(arn, stable=stable)
    return ConditionalAffineAutoregressive(arn, stable=stable).condition(context)


def stable_inputs(ours, shape: tuple[int, ...], dim: int, **_) -> tuple[Tensor, Tensor]:
    """Moderate inputs, and the image of moderate inputs as the arbitrary point to invert:
    where log sigma (at the inverse) falls below -5, ours deliberately differs from Pyro's."""
    with torch.no_grad():
        return gaussian(shape, dim), ours(gaussian(shape, dim))


def coupling_ours(dim: int, regime: str = "moderate", context_dim: int = 0, **_) -> Coupling:
    # "half" mask: the first D // 2 coordinates pass through, as with Pyro's split_dim = D // 2.
    mask = coupling_mask(dim, "half")
    assert torch.equal(mask, torch.arange(dim) < dim // 2)
    flow = Coupling(
        dim, context_dim=context_dim, hidden_dims=HIDDEN, transformer=Affine(), mask=mask
    ).double()
    count = dim - dim // 2
    perturb_output_layer(flow.conditioner.output_layer, count, 0.4, log_scale_bias(count, regime))
    return flow


def affine_coupling_pyro(ours, context, dim: int, **_) -> Transform:
    hypernet = CouplingConditionerAsPyroHypernet(ours.conditioner, dim - dim // 2)
    if context is None:
        return AffineCoupling(dim // 2, hypernet)
    return ConditionalAffineCoupling(dim // 2, hypernet).condition(context)


def autoregressive_regime(ours, reference, x, y_other, context, dim, **setting) -> None:
    assert_nontrivial(x, reference(x), pyro_log_det(reference, x, reference(x)))
    arn = MADEAsPyroARN(ours.made)
    if setting.get("ordering") == "random" and dim == 6:
        # A permutation that is not its own inverse, so argsort(degrees) vs degrees - 1
        # (the two candidate conventions for Pyro's ``permutation``) really differ.
        assert not torch.equal(arn.permutation, ours.made.degrees - 1)
    if setting.get("stable"):
        # Moderate inputs: log sigma stays above -5, where our bound is inactive.
        for value in (x, y_other, reference.inv(y_other.clone())):
            assert (F.logsigmoid(arn(value, context)[1] + 2.0) > -5).all()
    else:
        assert_regime(arn(x, context)[1], setting.get("regime", "moderate"))


def coupling_regime(ours, reference, x, y_other, context, dim, **setting) -> None:
    y_ref = reference(x)
    assert_nontrivial(x, y_ref, pyro_log_det(reference, x, y_ref))
    hypernet = CouplingConditionerAsPyroHypernet(ours.conditioner, dim - dim // 2)
    assert_regime(hypernet(x[..., : dim // 2], context)[1], setting.get("regime", "moderate"))
    transform = ours.condition(context) if context is not None else ours
    assert torch.equal(transform(x)[..., : dim // 2], x[..., : dim // 2])


def varies_with_context(check: Callable[..., None]) -> Callable[..., None]:
    """``check``, and the same input under different contexts maps to different outputs."""

    def precondition(ours, reference, x, y_other, context, dim, **setting) -> None:
        same = gaussian((), dim).expand(NUM_CONTEXTS, dim)
        y = reference(same)
        assert (y.max(0).values - y.min(0).values).max() > 0.05
        check(ours, reference, x, y_other, context, dim, **setting)

    return precondition


# == rational-quadratic splines ==================================================================

# K = 1 has no interior slope: width = height = 2B and both knot slopes 1, so our spline (and
# Pyro's with unit boundary slopes) is the identity on [-B, B]; it is checked as such.
COUNT_BINS = [1, 2, 4, 8]
BOUNDS = [2.0, 3.0]


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
    """Pyro's quadratic-spline parameters from our raw ``(..., 3K - 1, d)`` layout.

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


def spline_inputs(ours, shape: tuple[int, ...], dim: int, bound: float, **_):
    """Uniform on ``[-1.5 B, 1.5 B]``, with one point in each tail for sure."""
    return uniform_with_tails(shape, dim, bound), uniform_with_tails(shape, dim, bound)


def uniform_with_tails(shape: tuple[int, ...], dim: int, bound: float) -> Tensor:
    x = bound * (3 * torch.rand(*shape, dim, dtype=F64) - 1.5)
    flat = x.view(-1)
    flat[0], flat[-1] = -bound - 0.4, bound + 0.7
    inside = x.abs() < bound
    assert inside.any() and (~inside).any()
    return x


@torch.no_grad()
def random_spline(dim: int, count_bins: int, bound: float, scale: float = 1.5, **_) -> Spline:
    flow = Spline(dim, count_bins=count_bins, bound=bound).double()
    flow.params.knots.normal_(0.0, scale)
    return flow


@torch.no_grad()
def copy_spline(ours: Spline, reference: pyro_transforms.Spline) -> None:
    """Our ``knots`` ``(3K - 1, D)`` rows -> Pyro's three ``(D, .)`` raw parameters."""
    count = ours.transformer.count_bins
    knots = ours.params.knots
    assert reference.unnormalized_widths.shape == (ours.input_dim, count)
    assert reference.unnormalized_derivatives.shape == (ours.input_dim, count - 1)
    reference.unnormalized_widths.copy_(knots[:count].T)
    reference.unnormalized_heights.copy_(knots[count : 2 * count].T)
    reference.unnormalized_derivatives.copy_(knots[2 * count :].T)


def unit_boundary_spline(ours: Spline, context, count_bins: int, bound: float, **_):
    raw = ours.params.knots.detach()
    return UnitBoundarySlopeSpline(pyro_params(raw, count_bins), bound, order="quadratic")


def spline_moves_inside(ours, reference, x, y_other, context, count_bins, bound, **_) -> None:
    """The identity for K = 1 (see COUNT_BINS), clearly not otherwise; identity tails."""
    inside = x.abs() < bound
    y_ref = reference(x)
    if count_bins == 1:
        assert_close(y_ref, x)
    else:
        assert (y_ref - x)[inside].abs().max() > 1e-2
    assert torch.equal(y_ref[~inside], x[~inside])
    # The transformer itself, element-wise, both directions (Pyro's inverse returns
    # log|dx/dy|, ours the forward log|dy/dx| at the result).
    raw = ours.params.knots.detach()
    y, log_slope = ours.transformer.forward(x, raw)
    y_pyro, log_slope_pyro = reference.spline_op(x)
    assert_close(y, y_pyro)
    assert_close(log_slope, log_slope_pyro)
    x_back, inverse_log_slope = ours.transformer.inverse(y_other.clone(), raw)
    x_pyro, inverse_log_slope_pyro = reference.spline_op(y_other.clone(), inverse=True)
    assert_close(x_back, x_pyro)
    assert_close(inverse_log_slope, -inverse_log_slope_pyro)


@torch.no_grad()
def perturb_conditioner(flow, weight_scale: float = 0.5, bias_scale: float = 1.0) -> None:
    """Random output layer (it starts at zero weights and the identity parameters)."""
    layer = flow.conditioner.output_layer
    layer.weight.normal_(0.0, weight_scale)
    layer.bias.normal_(0.0, bias_scale)


def spline_coupling_ours(dim, context_dim, count_bins, bound, **_):
    flow = spline_coupling(  # identity=True: the conditioned spline alone (Pyro's upper_spline)
        dim,
        hidden_dims=[16],
        count_bins=count_bins,
        bound=bound,
        context_dim=context_dim,
        identity=True,
    ).double()
    perturb_conditioner(flow)
    return flow


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


class PyroSplineCoupling(Transform):
    """A spline coupling layer made of Pyro's spline fed with our conditioner's outputs.

    Pyro's own ``SplineCoupling`` pads the boundary slopes with 0.999 (see the module
    docstring); this one uses ``UnitBoundarySlopeSpline`` on our layer's mask. The log-det
    at ``x`` is the one Pyro's spline found on the pass that produced or took ``x``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, flow, context: Tensor | None, reference_class: type) -> None:
        super().__init__(cache_size=1)
        self.flow, self.context, self.reference_class = flow, context, reference_class
        self._log_dets: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def _pass(self, value: Tensor, inverse: bool) -> Tensor:
        out, log_det = reference_coupling(
            self.flow, value, self.context, self.reference_class, inverse
        )
        x, y = (out, value) if inverse else (value, out)
        self._log_dets[id(x)] = (x, y, log_det)
        return out

    def _call(self, x: Tensor) -> Tensor:
        return self._pass(x, inverse=False)

    def _inverse(self, y: Tensor) -> Tensor:
        return self._pass(y, inverse=True)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        x_seen, _, log_det = self._log_dets.get(id(x), (None, None, None))
        if x_seen is x:
            return log_det
        return reference_coupling(self.flow, x, self.context, self.reference_class)[1]


def spline_coupling_pyro(ours, context, **_) -> PyroSplineCoupling:
    return PyroSplineCoupling(ours, context, UnitBoundarySlopeSpline)


def spline_coupling_moves_inside(ours, reference, x, y_other, context, count_bins, bound, **_):
    y_ref = reference(x)
    moved = (y_ref - x)[..., ours.transformed_index]
    inside = x[..., ours.transformed_index].abs() < bound
    assert torch.equal(moved[~inside], 0 * moved[~inside])  # identity tails
    if count_bins == 1:  # the identity, see COUNT_BINS
        assert_close(y_ref, x)
    else:
        assert moved[inside].abs().max() > 1e-2


# == the table ===================================================================================


def grid(**axes: list) -> list[dict[str, Any]]:
    """Every combination of the axes' values, as keyword dictionaries."""
    settings: list[dict[str, Any]] = [{}]
    for name, values in axes.items():
        settings = [{**setting, name: value} for setting in settings for value in values]
    return settings


def householder_grid() -> list[dict[str, Any]]:
    return [
        setting | {"count": count}
        for setting in grid(dim=DIMS, batch_shape=BATCH_SHAPES)
        for count in sorted({1, max(1, setting["dim"] // 2), setting["dim"]})
    ]


def contexts(**axes: list) -> list[dict[str, Any]]:
    return grid(**axes, sample_shape=SAMPLE_SHAPES, batch_shape=[(NUM_CONTEXTS,)])


PAIRS: dict[str, Pair] = {
    "planar": Pair(
        lambda ours, context, dim, **_: pyro_transforms.Planar(dim).double(),
        planar_ours,
        copy_planar,
        grid(dim=DIMS, regime=["random", "wu_below_minus_one"], batch_shape=BATCH_SHAPES),
        precondition=moves_inputs,
        pyro_inverse=False,
        inverse_tol=ROOT_SOLVE,
    ),
    "radial": Pair(
        lambda ours, context, dim, **_: pyro_transforms.Radial(dim).double(),
        radial_ours,
        copy_radial,
        grid(dim=DIMS, regime=list(RADIAL_RAWS), batch_shape=BATCH_SHAPES),
        inputs=radial_inputs,
        precondition=moves_inputs,
        pyro_inverse=False,
        inverse_tol=ROOT_SOLVE,
    ),
    "householder": Pair(
        lambda ours, context, dim, count, **_: pyro_transforms.Householder(
            dim, count_transforms=count
        ).double(),
        householder_ours,
        copy_householder,
        householder_grid(),
        precondition=moves_inputs,
    ),
    "permutation": Pair(
        lambda ours, context, **_: pyro_transforms.Permute(ours.permutation),
        permutation_ours,
        None,
        grid(dim=DIMS, batch_shape=BATCH_SHAPES),
    ),
    "conditional_planar": Pair(
        conditioned_planar,
        conditional_planar_ours,
        None,
        contexts(dim=DIMS),
        precondition=moves_inputs_clearly,
        pyro_inverse=False,
        inverse_tol=ROOT_SOLVE,
    ),
    "conditional_radial": Pair(
        conditioned_radial,
        conditional_radial_ours,
        None,
        contexts(dim=DIMS, regime=list(CONDITIONAL_RADIAL_RAWS)),
        precondition=moves_inputs_clearly,
        pyro_inverse=False,
        inverse_tol=ROOT_SOLVE,
    ),
    "affine_autoregressive": Pair(
        affine_autoregressive_pyro,
        autoregressive_ours,
        None,
        grid(
            dim=AR_DIMS,
            regime=["moderate", "clamped"],
            ordering=["natural", "reverse", "random"],
            batch_shape=LAYER_BATCH_SHAPES,
        ),
        precondition=autoregressive_regime,
    ),
    "stable_iaf": Pair(
        affine_autoregressive_pyro,
        autoregressive_ours,
        None,
        grid(
            dim=AR_DIMS,
            ordering=["natural", "random"],
            stable=[True],
            batch_shape=LAYER_BATCH_SHAPES,
        ),
        inputs=stable_inputs,
        precondition=autoregressive_regime,
    ),
    "affine_coupling": Pair(
        affine_coupling_pyro,
        coupling_ours,
        None,
        grid(dim=COUPLING_DIMS, regime=["moderate", "clamped"], batch_shape=LAYER_BATCH_SHAPES),
        precondition=coupling_regime,
    ),
    "conditional_affine_autoregressive": Pair(
        affine_autoregressive_pyro,
        autoregressive_ours,
        None,
        contexts(dim=AR_DIMS, stable=[False, True], context_dim=[CONTEXT_DIM]),
        precondition=varies_with_context(autoregressive_regime),
    ),
    "conditional_affine_coupling": Pair(
        affine_coupling_pyro,
        coupling_ours,
        None,
        contexts(dim=COUPLING_DIMS, context_dim=[CONTEXT_DIM]),
        precondition=varies_with_context(coupling_regime),
    ),
    "spline": Pair(
        unit_boundary_spline,
        random_spline,
        None,
        grid(count_bins=COUNT_BINS, bound=BOUNDS, dim=[1, 3], batch_shape=LAYER_BATCH_SHAPES),
        inputs=spline_inputs,
        precondition=spline_moves_inside,
    ),
    "spline_coupling": Pair(
        spline_coupling_pyro,
        spline_coupling_ours,
        None,
        grid(
            count_bins=COUNT_BINS,
            bound=BOUNDS,
            dim=[2, 5],
            context_dim=[0, 2],
            batch_shape=LAYER_BATCH_SHAPES,
        ),
        inputs=spline_inputs,
        precondition=spline_coupling_moves_inside,
        inverse_tol=STEEP_BIN_INVERSE,
    ),
}

CASES = [(name, setting) for name, pair in PAIRS.items() for setting in pair.settings]


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    name, setting = case
    return "-".join([name, *(f"{key}={value}" for key, value in setting.items())]).replace(" ", "")


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_matches_pyro(case: tuple[str, dict[str, Any]]) -> None:
    name, setting = case
    pair = PAIRS[name]
    torch.manual_seed(seed_for(name, *setting.items()))
    ours = pair.ours(**setting)
    context = None
    if getattr(ours, "context_dim", 0):
        context = torch.randn(*setting["batch_shape"], ours.context_dim, dtype=F64)
    reference = pair.pyro(ours, context, **setting)
    if pair.copy_params is not None:
        pair.copy_params(ours, reference)
    shape = (*setting.get("sample_shape", ()), *setting["batch_shape"])
    x, y_other = (pair.inputs or gaussian_inputs)(ours, shape, **setting)
    transform = ours.condition(context) if context is not None else ours
    with torch.no_grad():
        if pair.precondition is not None:
            pair.precondition(ours, reference, x, y_other, context, **setting)
        check_matches(reference, transform, x, y_other, pair.pyro_inverse, pair.inverse_tol)


# == cross-checks that are not a pair of equal maps ==============================================


def test_permutation_is_not_inverted_by_mistake() -> None:
    # A non-involutive permutation: y_i = x_{perm[i]} differs from y_{perm[i]} = x_i.
    perm = torch.tensor([1, 2, 0])
    x = torch.tensor([10.0, 20.0, 30.0], dtype=F64)
    expected = torch.tensor([20.0, 30.0, 10.0], dtype=F64)
    assert torch.equal(pyro_transforms.Permute(perm)(x), expected)
    assert torch.equal(Permutation(perm)(x), expected)


def test_default_constants_match_pyro() -> None:
    # Every comparison above uses Pyro's defaults (log_scale_min_clip=-5,
    # log_scale_max_clip=3, sigmoid_bias=2) against our ``Affine`` defaults.
    ours = Affine()
    made = MADE(2, [4])
    for reference in (
        AffineAutoregressive(MADEAsPyroARN(made)),
        AffineCoupling(1, CouplingConditionerAsPyroHypernet(MLP(1, [4], 2), 1)),
    ):
        assert reference.log_scale_min_clip == ours.log_scale_min == -5.0
        assert reference.log_scale_max_clip == ours.log_scale_max == 3.0
    assert AffineAutoregressive(MADEAsPyroARN(made)).sigmoid_bias == ours.sigmoid_bias == 2.0


def test_stable_iaf_differs_only_where_log_sigma_below_bound() -> None:
    # Deliberate difference: our stable Affine clamps log(sigma) to >= -5 in value
    # (gradients pass), as the plain affine clamps its log-scale, so that the gate cannot
    # underflow and the layer stays invertible in floating point; Pyro's stable variant
    # leaves log(sigma) unbounded. Where Pyro's log(sigma) >= -5 the two agree; where it is
    # below, ours uses sigma = exp(-5) instead, and nothing else changes.
    dim = 4
    torch.manual_seed(seed_for("stable iaf bound"))
    flow = autoregressive_ours(dim, "moderate", "natural", stable=True)
    arn = MADEAsPyroARN(flow.made)
    with torch.no_grad():  # raw + 2 ~ -9 for coordinates 0 and 2, ~ +2.5 for 1 and 3
        flow.made.output_layer.bias[dim:] = torch.tensor([-11.0, 0.5, -11.0, 0.5])
    reference = AffineAutoregressive(arn, stable=True)
    x = gaussian((50,), dim)
    with torch.no_grad():
        mean, raw = arn(x)
        log_sigma = F.logsigmoid(raw + 2.0)  # Pyro's log(sigma), unbounded
        below = log_sigma < -5
        assert below.any() and (~below).any()
        y_ref = reference(x)
        log_det_ref = reference.log_abs_det_jacobian(x, y_ref)
        y = flow(x)
        log_det = flow.log_abs_det_jacobian(x, y)

        # Identical wherever log(sigma) >= -5 ...
        assert_close(y[~below], y_ref[~below])
        # ... and, where it is below, exactly the update with sigma = exp(-5):
        # y = sigma x + (1 - sigma) mean, so y_ours - y_pyro = (exp(-5) - sigma)(x - mean).
        bound = torch.tensor(-5.0, dtype=F64)
        expected_gap = (bound.exp() - log_sigma.exp()) * (x - mean)
        assert_close(y - y_ref, torch.where(below, expected_gap, torch.zeros_like(y)))
        assert ((y - y_ref)[below].abs() > 1e-6).all()  # a real difference there
        # Log-det: sum of log(sigma) with the bound applied, versus unbounded.
        assert_close(log_det, log_sigma.clamp(min=-5.0).sum(-1))
        assert_close(log_det_ref, log_sigma.sum(-1))
        assert (log_det - log_det_ref > 1.0).all()

        # Each side's inverse still inverts its own forward map.
        assert_close(flow.inv(y.clone()), x, {"atol": 1e-10, "rtol": 1e-10})
        assert_close(reference.inv(y_ref.clone()), x, {"atol": 1e-8, "rtol": 1e-8})


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
    # The knots we build are Pyro's.
    ours = RationalQuadraticSpline(count_bins, bound)._spline(raw)
    assert_close(ours[0], x_knots.T)
    assert_close(ours[2], y_knots.T)
    assert_close(ours[4][..., 1:-1], params[2] + MIN_DERIVATIVE)
    assert torch.equal(ours[4][..., [0, -1]], torch.ones(dim, 2, dtype=F64))
    with torch.no_grad():
        assert_close(reference(x_knots), y_knots)
        assert_close(reference.inv(y_knots.clone()), x_knots)
        check_matches(reference, flow, x_knots, y_knots, inverse_log_det_tol=KNOT_INVERSE_LOG_DET)


@pytest.mark.parametrize("dim", [1, 3])
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("count_bins", COUNT_BINS)
def test_stock_pyro_spline_differs_only_in_end_bins(
    count_bins: int, bound: float, dim: int
) -> None:
    """Pyro's ``Spline(order="quadratic")`` with the same raw parameters.

    Equal (~1e-12) in the tails and in the interior bins; different in the first and last
    bins, where Pyro's boundary slope 0.999 enters; at :math:`\\pm B` Pyro's log-slope is
    ``log(0.999)`` (its inside mask is closed), ours 0.
    """
    torch.manual_seed(seed_for("stock", count_bins, bound, dim))
    flow = random_spline(dim, count_bins, bound)
    reference = pyro_transforms.Spline(dim, count_bins, bound, order="quadratic").double()
    copy_spline(flow, reference)
    raw = flow.params.knots.detach()
    with torch.no_grad():
        w, h, _, _ = reference._params()
        x_knots, y_knots = pyro_knots(w, bound), pyro_knots(h, bound)  # (D, K + 1)
        # Random points, every bin's midpoint, and the tails.
        midpoints = ((x_knots[:, 1:] + x_knots[:, :-1]) / 2).T
        tails = torch.tensor(
            [[-bound - 1.0], [-bound - 1e-9], [bound + 1e-9], [bound + 2.0]], dtype=F64
        )
        x = torch.cat([uniform_with_tails((40,), dim, bound), midpoints, tails.expand(-1, dim)])
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
    # Exactly at the boundary knots: identity for ours, slope 0.999 for Pyro.
    edges = torch.tensor([-bound, bound], dtype=F64).unsqueeze(-1).expand(-1, dim)
    with torch.no_grad():
        y_edge, log_edge = reference.spline_op(edges)
        y_edge_ours, log_edge_ours = flow.transformer.forward(edges, raw)
    assert_close(y_edge, edges)
    assert torch.equal(y_edge_ours, edges) and torch.equal(log_edge_ours, torch.zeros_like(edges))
    assert_close(log_edge, torch.full_like(edges, math.log(1 - MIN_DERIVATIVE)))


@pytest.mark.parametrize("count_bins", [1, 2, 8])
def test_spline_coupling_vs_stock_conditioned_spline(count_bins: int) -> None:
    """Stock ``ConditionedSpline``: equal in the tails and interior bins, not in the end bins."""
    bound, dim = 3.0, 4
    torch.manual_seed(seed_for("stock coupling", count_bins))
    flow = spline_coupling_ours(dim, 0, count_bins, bound)
    x = uniform_with_tails((200,), dim, bound)
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
