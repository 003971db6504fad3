"""Cross-checks of pyroflows' affine autoregressive and coupling layers against Pyro's.

Pyro's ``AffineAutoregressive`` / ``AffineCoupling`` (and their conditional versions) take the
conditioner network as an argument. Here that network is a thin adapter around the *same*
pyroflows conditioner (the layer's MADE, or the coupling layer's MLP) returning Pyro's
``(mean, log_scale)`` tuple, so both libraries see identical conditioner outputs and any
difference comes from the transform formulas: forward map, clamping, log-determinant and
the (sequential, for autoregressive layers) inverse. In float64 they must agree to ~1e-12.

The one deliberate difference: pyroflows' stable (gated, IAF) affine bounds
:math:`\\log\\sigma` below at ``log_scale_min = -5`` (in value) so the layer stays invertible
in floating point, while Pyro's stable variant does not clamp it.
``test_stable_iaf_differs_only_where_log_sigma_below_bound`` pins that difference down.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from crosscheck_helpers import assert_close, seed_for
from pyro.distributions.transforms import (
    AffineAutoregressive,
    AffineCoupling,
    ConditionalAffineAutoregressive,
    ConditionalAffineCoupling,
)
from torch import Tensor, nn

from pyroflows.nn import MADE, MLP
from pyroflows.transforms import Affine, Autoregressive, Coupling, coupling_mask

AR_DIMS = [1, 3, 6]
COUPLING_DIMS = [2, 3, 6]
BATCH_SHAPES = [(7,), (3, 4)]
HIDDEN = [16, 16]
# Same formulas in float64 on the same conditioner outputs: a few ulps apart at most.
TIGHT = {"atol": 1e-12, "rtol": 1e-12}


def inputs(batch_shape: tuple[int, ...], dim: int, scale: float = 1.5) -> Tensor:
    return scale * torch.randn(*batch_shape, dim, dtype=torch.float64)


# -- adapters: pyroflows' conditioners as the networks Pyro's transforms expect ---------------


class MADEAsPyroARN(nn.Module):
    """A pyroflows MADE seen as Pyro's autoregressive network: ``x -> (mean, log_scale)``.

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
    """A pyroflows coupling layer's conditioner seen as Pyro's hypernet: ``x_a -> (mean, s)``.

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


# -- perturbing the conditioners (their output layers start at the identity map) -------------


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
    return torch.tensor(pattern, dtype=torch.float64).repeat(dim)[:dim]


def autoregressive_pair(
    dim: int,
    regime: str,
    ordering: str,
    stable: bool = False,
    context_dim: int = 0,
) -> tuple[Autoregressive, MADEAsPyroARN]:
    flow = Autoregressive(
        dim,
        context_dim=context_dim,
        hidden_dims=HIDDEN,
        transformer=Affine(stable=stable),
        ordering=ordering,
        seed=3,
    ).double()
    perturb_output_layer(flow.made.output_layer, dim, 0.4, log_scale_bias(dim, regime))
    return flow, MADEAsPyroARN(flow.made)


@torch.no_grad()
def widen_gate(flow: Autoregressive, dim: int) -> None:
    """Stable variant: a gate sigmoid(raw + 2) that varies clearly, from ~0.2 to ~1."""
    flow.made.output_layer.weight.mul_(3.0)
    flow.made.output_layer.bias[dim:] = torch.linspace(-3.0, 1.0, dim, dtype=torch.float64)


def assert_regime(raw: Tensor, regime: str) -> None:
    """Raw log-scales inside both clamps, or (``"clamped"``) past each clamp somewhere."""
    if regime == "clamped":
        assert (raw < -5).any()
        if raw.shape[-1] > 1:  # a single transformed coordinate only gets the -7 offset
            assert (raw > 3).any()
    else:
        assert ((raw > -5) & (raw < 3)).all()


def assert_nontrivial(x: Tensor, y: Tensor, log_det: Tensor) -> None:
    assert (y - x).abs().max() > 0.1  # not (close to) the identity map
    assert log_det.abs().max() > 0.05  # nor volume preserving


def check_against_reference(
    reference: torch.distributions.Transform,
    flow: torch.distributions.Transform,
    x: Tensor,
    y_arbitrary: Tensor,
) -> None:
    """Forward, log-det (cached and recomputed) and inverse of ``flow`` against ``reference``."""
    y_ref = reference(x)
    log_det_ref = reference.log_abs_det_jacobian(x, y_ref)
    assert log_det_ref.shape == x.shape[:-1]
    assert_nontrivial(x, y_ref, log_det_ref)
    # Pyro recomputing its log-det for a fresh input agrees with its cached one.
    assert_close(reference.log_abs_det_jacobian(x.clone(), y_ref), log_det_ref)

    y = flow(x)
    assert_close(y, y_ref)
    assert_close(flow.log_abs_det_jacobian(x, y), log_det_ref)
    assert_close(flow.log_abs_det_jacobian(x.clone(), y_ref), log_det_ref)

    # Inverse of Pyro's output recovers x (fresh tensors: no cache can answer).
    y_fresh = y_ref.clone()
    x_back = flow.inv(y_fresh)
    assert_close(x_back, x, {"atol": 1e-10, "rtol": 1e-10})
    assert_close(flow.inv.log_abs_det_jacobian(y_fresh, x_back), -log_det_ref)

    # Both inverses of an arbitrary point, and the log-dets of those inverse passes.
    x_ours = flow.inv(y_arbitrary.clone())
    y_for_ref = y_arbitrary.clone()
    x_ref = reference.inv(y_for_ref)
    assert_close(x_ours, x_ref)
    log_det_inv_ref = reference.log_abs_det_jacobian(x_ref, y_for_ref)  # Pyro's cached pass
    assert_close(flow.log_abs_det_jacobian(x_ours, y_arbitrary), log_det_inv_ref)


def test_default_constants_match_pyro() -> None:
    # Every comparison below uses Pyro's defaults (log_scale_min_clip=-5,
    # log_scale_max_clip=3, sigmoid_bias=2) against pyroflows' ``Affine`` defaults.
    ours = Affine()
    made = MADE(2, [4])
    for reference in (
        AffineAutoregressive(MADEAsPyroARN(made)),
        AffineCoupling(1, CouplingConditionerAsPyroHypernet(MLP(1, [4], 2), 1)),
    ):
        assert reference.log_scale_min_clip == ours.log_scale_min == -5.0
        assert reference.log_scale_max_clip == ours.log_scale_max == 3.0
    assert AffineAutoregressive(MADEAsPyroARN(made)).sigmoid_bias == ours.sigmoid_bias == 2.0


# -- 1. affine autoregressive (plain) ----------------------------------------------------------


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("ordering", ["natural", "reverse", "random"])
@pytest.mark.parametrize("regime", ["moderate", "clamped"])
@pytest.mark.parametrize("dim", AR_DIMS)
def test_affine_autoregressive_matches_pyro(
    dim: int, regime: str, ordering: str, batch_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(seed_for("affine autoregressive", dim, regime, ordering, batch_shape))
    flow, arn = autoregressive_pair(dim, regime, ordering)
    if ordering == "random" and dim == 6:
        # A permutation that is not its own inverse, so argsort(degrees) vs degrees - 1
        # (the two candidate conventions for Pyro's ``permutation``) really differ.
        assert not torch.equal(arn.permutation, flow.made.degrees - 1)
    reference = AffineAutoregressive(arn)  # Pyro's default clamps: [-5, 3]
    x = inputs(batch_shape, dim)
    with torch.no_grad():
        raw = arn(x)[1]
        assert_regime(raw, regime)
        check_against_reference(reference, flow, x, inputs(batch_shape, dim))


# -- 2. stable (gated) IAF ---------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("ordering", ["natural", "random"])
@pytest.mark.parametrize("dim", AR_DIMS)
def test_stable_iaf_matches_pyro(dim: int, ordering: str, batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("stable iaf", dim, ordering, batch_shape))
    flow, arn = autoregressive_pair(dim, "moderate", ordering, stable=True)
    widen_gate(flow, dim)
    reference = AffineAutoregressive(arn, stable=True)
    x = inputs(batch_shape, dim)
    y_arbitrary = inputs(batch_shape, dim)
    with torch.no_grad():
        # Moderate inputs: log sigma stays above -5, where pyroflows' bound is inactive.
        for value in (x, y_arbitrary, reference.inv(y_arbitrary.clone())):
            log_sigma = F.logsigmoid(arn(value)[1] + 2.0)
            assert (log_sigma > -5).all()
        check_against_reference(reference, flow, x, y_arbitrary)


def test_stable_iaf_differs_only_where_log_sigma_below_bound() -> None:
    # Deliberate difference: pyroflows' stable Affine clamps log(sigma) to >= -5 in value
    # (gradients pass), as the plain affine clamps its log-scale, so that the gate cannot
    # underflow and the layer stays invertible in floating point; Pyro's stable variant
    # leaves log(sigma) unbounded. Where Pyro's log(sigma) >= -5 the two agree; where it is
    # below, pyroflows uses sigma = exp(-5) instead, and nothing else changes.
    dim = 4
    torch.manual_seed(seed_for("stable iaf bound"))
    flow, arn = autoregressive_pair(dim, "moderate", "natural", stable=True)
    with torch.no_grad():  # raw + 2 ~ -9 for coordinates 0 and 2, ~ +2.5 for 1 and 3
        flow.made.output_layer.bias[dim:] = torch.tensor([-11.0, 0.5, -11.0, 0.5])
    reference = AffineAutoregressive(arn, stable=True)
    x = inputs((50,), dim)
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
        bound = torch.tensor(-5.0, dtype=torch.float64)
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


# -- 3. affine coupling ------------------------------------------------------------------------


def coupling_pair(
    dim: int, regime: str, context_dim: int = 0
) -> tuple[Coupling, CouplingConditionerAsPyroHypernet]:
    # "half" mask: the first D // 2 coordinates pass through, as with Pyro's split_dim = D // 2.
    mask = coupling_mask(dim, "half")
    assert torch.equal(mask, torch.arange(dim) < dim // 2)
    flow = Coupling(
        dim, context_dim=context_dim, hidden_dims=HIDDEN, transformer=Affine(), mask=mask
    ).double()
    count = dim - dim // 2
    perturb_output_layer(flow.conditioner.output_layer, count, 0.4, log_scale_bias(count, regime))
    return flow, CouplingConditionerAsPyroHypernet(flow.conditioner, count)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("regime", ["moderate", "clamped"])
@pytest.mark.parametrize("dim", COUPLING_DIMS)
def test_affine_coupling_matches_pyro(dim: int, regime: str, batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("affine coupling", dim, regime, batch_shape))
    flow, hypernet = coupling_pair(dim, regime)
    reference = AffineCoupling(dim // 2, hypernet)
    x = inputs(batch_shape, dim)
    with torch.no_grad():
        raw = hypernet(x[..., : dim // 2])[1]
        assert_regime(raw, regime)
        check_against_reference(reference, flow, x, inputs(batch_shape, dim))
        assert torch.equal(flow(x)[..., : dim // 2], x[..., : dim // 2])


# -- 4. conditional variants -------------------------------------------------------------------

CONTEXT_DIM = 3
NUM_CONTEXTS = 6
# Inputs of shape (B, D) with contexts (B, C), and (S, B, D): S samples per context.
SAMPLE_SHAPES = [(), (2,)]


def assert_varies_with_context(reference: torch.distributions.Transform, dim: int) -> None:
    """The same input under different contexts must map to clearly different outputs."""
    x = inputs((), dim).expand(NUM_CONTEXTS, dim)
    y = reference(x)
    spread = y.max(0).values - y.min(0).values
    assert spread.max() > 0.05


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
@pytest.mark.parametrize("stable", [False, True])
@pytest.mark.parametrize("dim", AR_DIMS)
def test_conditional_affine_autoregressive_matches_pyro(
    dim: int, stable: bool, sample_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(seed_for("conditional autoregressive", dim, stable, sample_shape))
    flow, arn = autoregressive_pair(dim, "moderate", "random", stable, CONTEXT_DIM)
    with torch.no_grad():
        flow.made.context_layer.weight.normal_(0.0, 0.5)
    if stable:
        widen_gate(flow, dim)
    context = torch.randn(NUM_CONTEXTS, CONTEXT_DIM, dtype=torch.float64)
    reference = ConditionalAffineAutoregressive(arn, stable=stable).condition(context)
    x = inputs((*sample_shape, NUM_CONTEXTS), dim)
    with torch.no_grad():
        assert_varies_with_context(reference, dim)
        raw = arn(x, context)[1]
        if stable:
            assert (F.logsigmoid(raw + 2.0) > -5).all()
        else:
            assert ((raw > -5) & (raw < 3)).all()
        check_against_reference(
            reference, flow.condition(context), x, inputs((*sample_shape, NUM_CONTEXTS), dim)
        )


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
@pytest.mark.parametrize("dim", COUPLING_DIMS)
def test_conditional_affine_coupling_matches_pyro(dim: int, sample_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("conditional coupling", dim, sample_shape))
    flow, hypernet = coupling_pair(dim, "moderate", CONTEXT_DIM)
    context = torch.randn(NUM_CONTEXTS, CONTEXT_DIM, dtype=torch.float64)
    reference = ConditionalAffineCoupling(dim // 2, hypernet).condition(context)
    x = inputs((*sample_shape, NUM_CONTEXTS), dim)
    with torch.no_grad():
        assert_varies_with_context(reference, dim)
        raw = hypernet(x[..., : dim // 2], context)[1]
        assert ((raw > -5) & (raw < 3)).all()
        check_against_reference(
            reference, flow.condition(context), x, inputs((*sample_shape, NUM_CONTEXTS), dim)
        )
