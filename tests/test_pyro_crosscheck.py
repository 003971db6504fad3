"""Cross-checks of pyroflows' flows against Pyro's reference implementations.

With the same parameter values, pyroflows' ``Planar``, ``Radial``, ``Householder`` and
``PermutationTransform`` must give the same outputs and the same ``log|det J|`` as Pyro's
``Planar``, ``Radial``, ``Householder`` and ``Permute`` (float64, to ~1e-12). Pyro has no
planar/radial inverse, so pyroflows' inverse is checked by recovering the input from Pyro's
forward output. The conditional flows are checked by feeding the per-context parameters that
pyroflows' hypernetwork produces into Pyro's ``ConditionedPlanar`` / ``ConditionedRadial``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from crosscheck_helpers import assert_close, seed_for
from pyro.distributions import transforms as pyro_transforms
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial

from pyroflows.transforms import Householder, Permutation, Planar, Radial

DIMS = [1, 2, 5]
BATCH_SHAPES = [(), (7,), (3, 4)]
# Both implementations evaluate the same closed forms in float64; they differ only in the
# order of floating-point operations, so agreement is at the level of a few ulps.
TIGHT = {"atol": 1e-12, "rtol": 1e-12}
# pyroflows' planar inverse is a numerical root solve (relative tolerance eps**0.75 ~ 2e-12),
# so the recovered input is held to a looser, still float64-only, bound.
INVERSE = {"atol": 1e-10, "rtol": 1e-10}


def inputs(batch_shape: tuple[int, ...], dim: int, scale: float = 1.5) -> torch.Tensor:
    return scale * torch.randn(*batch_shape, dim, dtype=torch.float64)


# -- copying parameters from a Pyro module into the matching pyroflows module ------------------


@torch.no_grad()
def copy_planar(source: pyro_transforms.Planar, target: Planar) -> None:
    """Pyro: ``u`` (D,), ``w`` (D,), ``bias`` (1,); pyroflows: ``params.u/w`` and 0-d ``bias``."""
    target.params.u.copy_(source.u)
    target.params.w.copy_(source.w)
    target.params.bias.copy_(source.bias.reshape(()))


@torch.no_grad()
def copy_radial(source: pyro_transforms.Radial, target: Radial) -> None:
    """Pyro: ``x0`` (D,), ``alpha_prime`` (1,), ``beta_prime`` (1,); pyroflows: 0-d raws."""
    target.params.center.copy_(source.x0)
    target.params.alpha_raw.copy_(source.alpha_prime.reshape(()))
    target.params.beta_raw.copy_(source.beta_prime.reshape(()))


@torch.no_grad()
def copy_householder(source: pyro_transforms.Householder, target: Householder) -> None:
    """Pyro: ``u_unnormed`` (K, D); pyroflows: ``vectors`` (K, D), same row order."""
    assert target.vectors.shape == source.u_unnormed.shape
    target.vectors.copy_(source.u_unnormed)


# -- building matched pairs ---------------------------------------------------------------------


def planar_pair(dim: int, regime: str) -> tuple[pyro_transforms.Planar, Planar]:
    reference = pyro_transforms.Planar(dim).double()
    with torch.no_grad():
        w = torch.randn(dim, dtype=torch.float64)
        u = torch.randn(dim, dtype=torch.float64)
        if regime == "wu_below_minus_one":
            # Force w^T u < -1, where the u -> u_hat correction is active.
            u = u - (2.5 + (w @ u)) * w / (w @ w)
        reference.w.copy_(w)
        reference.u.copy_(u)
        reference.bias.copy_(torch.randn(1, dtype=torch.float64))
    if regime == "wu_below_minus_one":
        assert float(reference.w.detach() @ reference.u.detach()) < -1
    flow = Planar(dim).double()
    copy_planar(reference, flow)
    return reference, flow


RADIAL_RAWS = {
    # (alpha_raw, beta_raw) -> beta = softplus(beta_raw) - softplus(alpha_raw)
    "contracting": (0.3, -1.2),  # beta ~ -0.59 < 0
    "expanding": (-0.5, 1.5),  # beta ~ +1.23 > 0
}


def radial_pair(dim: int, regime: str) -> tuple[pyro_transforms.Radial, Radial]:
    reference = pyro_transforms.Radial(dim).double()
    alpha_raw, beta_raw = RADIAL_RAWS[regime]
    with torch.no_grad():
        reference.x0.copy_(torch.randn(dim, dtype=torch.float64))
        reference.alpha_prime.fill_(alpha_raw)
        reference.beta_prime.fill_(beta_raw)
    beta = F.softplus(reference.beta_prime) - F.softplus(reference.alpha_prime)
    assert (float(beta.detach()) < 0) == (regime == "contracting")
    flow = Radial(dim).double()
    copy_radial(reference, flow)
    return reference, flow


def check_against_reference(
    reference: torch.distributions.Transform,
    flow: torch.distributions.Transform,
    x: torch.Tensor,
    inverse_tol: dict[str, float],
) -> None:
    """Forward, log-det (cached and recomputed) and inverse of ``flow`` against ``reference``."""
    y_ref = reference(x)
    log_det_ref = reference.log_abs_det_jacobian(x, y_ref)
    assert log_det_ref.shape == x.shape[:-1]

    y = flow(x)
    assert y.shape == x.shape
    assert_close(y, y_ref, TIGHT)
    # Cached log-det of the pair just computed, and the log-det recomputed for another pair.
    assert_close(flow.log_abs_det_jacobian(x, y), log_det_ref, TIGHT)
    assert_close(flow.log_abs_det_jacobian(x.clone(), y_ref), log_det_ref, TIGHT)

    # Inverse of Pyro's output (cloned so that no cache can answer).
    y_fresh = y_ref.clone()
    x_back = flow.inv(y_fresh)
    assert_close(x_back, x, inverse_tol)
    # The log-det from the inverse pass, and the inverse's own log-det (its negative).
    assert_close(flow.log_abs_det_jacobian(x_back, y_fresh), log_det_ref, inverse_tol)
    assert_close(flow.inv.log_abs_det_jacobian(y_fresh, x_back), -log_det_ref, inverse_tol)


# -- unconditional flows ------------------------------------------------------------------------


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("regime", ["random", "wu_below_minus_one"])
@pytest.mark.parametrize("dim", DIMS)
def test_planar_matches_pyro(dim: int, regime: str, batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("planar", dim, regime, batch_shape))
    reference, flow = planar_pair(dim, regime)
    x = inputs(batch_shape, dim)
    assert (reference(x) - x).abs().max() > 1e-3  # not (close to) the identity map
    check_against_reference(reference, flow, x, INVERSE)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("regime", list(RADIAL_RAWS))
@pytest.mark.parametrize("dim", DIMS)
def test_radial_matches_pyro(dim: int, regime: str, batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("radial", dim, regime, batch_shape))
    reference, flow = radial_pair(dim, regime)
    x = inputs(batch_shape, dim)
    if batch_shape:  # one input exactly at the centre (r = 0)
        x.reshape(-1, dim)[0] = reference.x0.detach()
    assert (reference(x) - x).abs().max() > 1e-3
    check_against_reference(reference, flow, x, INVERSE)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("dim", DIMS)
def test_householder_matches_pyro(dim: int, batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("householder", dim, batch_shape))
    for count in sorted({1, max(1, dim // 2), dim}):
        reference = pyro_transforms.Householder(dim, count_transforms=count).double()
        with torch.no_grad():
            reference.u_unnormed.normal_()
        flow = Householder(dim, num_reflections=count).double()
        copy_householder(reference, flow)
        x = inputs(batch_shape, dim)
        assert (reference(x) - x).abs().max() > 1e-3
        check_against_reference(reference, flow, x, TIGHT)
        # Pyro's Householder has an inverse too: both must agree on an arbitrary point.
        y = inputs(batch_shape, dim)
        assert_close(flow.inv(y.clone()), reference.inv(y.clone()), TIGHT)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
@pytest.mark.parametrize("dim", DIMS)
def test_permutation_matches_pyro(dim: int, batch_shape: tuple[int, ...]) -> None:
    torch.manual_seed(seed_for("permutation", dim, batch_shape))
    perm = torch.randperm(dim)
    if dim > 1 and torch.equal(perm, torch.arange(dim)):
        perm = perm.flip(0)
    reference = pyro_transforms.Permute(perm)
    flow = Permutation(perm)
    x = inputs(batch_shape, dim)
    check_against_reference(reference, flow, x, TIGHT)
    y = inputs(batch_shape, dim)
    assert torch.equal(flow.inv(y.clone()), reference.inv(y.clone()))


def test_permutation_is_not_inverted_by_mistake() -> None:
    # A non-involutive permutation: y_i = x_{perm[i]} differs from y_{perm[i]} = x_i.
    perm = torch.tensor([1, 2, 0])
    x = torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64)
    expected = torch.tensor([20.0, 30.0, 10.0], dtype=torch.float64)
    assert torch.equal(pyro_transforms.Permute(perm)(x), expected)
    assert torch.equal(Permutation(perm)(x), expected)


# -- conditional flows --------------------------------------------------------------------------

CONTEXT_DIM = 3
NUM_CONTEXTS = 6


@torch.no_grad()
def spread_hypernet(flow: Planar | Radial, scale: float) -> None:
    """Make the per-context parameters vary clearly with the context (init_scale is 1e-2)."""
    layer = flow.params.hypernet.output_layer
    layer.weight.normal_(0.0, scale)
    layer.bias.normal_(0.0, 0.5)


def assert_varies_with_context(values: torch.Tensor) -> None:
    flat = values.reshape(NUM_CONTEXTS, -1)
    assert (flat.max(0).values - flat.min(0).values).min() > 0.05


def check_conditioned(
    reference: torch.distributions.Transform,
    conditioned: torch.distributions.Transform,
    x: torch.Tensor,
) -> None:
    y_ref = reference(x)
    log_det_ref = reference.log_abs_det_jacobian(x, y_ref)
    assert log_det_ref.shape == x.shape[:-1]
    assert (y_ref - x).abs().max() > 0.1

    y = conditioned(x)
    assert_close(y, y_ref, TIGHT)
    assert_close(conditioned.log_abs_det_jacobian(x, y), log_det_ref, TIGHT)
    assert_close(conditioned.log_abs_det_jacobian(x.clone(), y_ref), log_det_ref, TIGHT)

    y_fresh = y_ref.clone()
    x_back = conditioned.inv(y_fresh)
    assert_close(x_back, x, INVERSE)
    assert_close(conditioned.log_abs_det_jacobian(x_back, y_fresh), log_det_ref, INVERSE)


# Inputs of shape (B, D) with contexts (B, C), and (S, B, D): S samples per context.
SAMPLE_SHAPES = [(), (2,)]


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
@pytest.mark.parametrize("dim", DIMS)
def test_conditional_planar_matches_pyro_conditioned_planar(
    dim: int, sample_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(seed_for("conditional planar", dim, sample_shape))
    flow = Planar(dim, context_dim=CONTEXT_DIM, hidden_dims=[16]).double()
    spread_hypernet(flow, scale=0.5)
    context = torch.randn(NUM_CONTEXTS, CONTEXT_DIM, dtype=torch.float64)
    with torch.no_grad():
        params = flow.params(context)
    assert params["u"].shape == params["w"].shape == (NUM_CONTEXTS, dim)
    assert params["bias"].shape == (NUM_CONTEXTS,)
    for value in params.values():
        assert_varies_with_context(value)
    # ConditionedPlanar unpacks (bias, u, w); its bias carries a trailing size-1 dimension.
    reference = ConditionedPlanar((params["bias"].unsqueeze(-1), params["u"], params["w"]))
    x = inputs((*sample_shape, NUM_CONTEXTS), dim)
    with torch.no_grad():
        check_conditioned(reference, flow.condition(context), x)


# Offsets of (alpha_raw, beta_raw) far enough apart that every context keeps the sign of beta.
CONDITIONAL_RADIAL_RAWS = {"contracting": (1.5, -2.0), "expanding": (-1.5, 2.0)}


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
@pytest.mark.parametrize("regime", list(CONDITIONAL_RADIAL_RAWS))
@pytest.mark.parametrize("dim", DIMS)
def test_conditional_radial_matches_pyro_conditioned_radial(
    dim: int, regime: str, sample_shape: tuple[int, ...]
) -> None:
    torch.manual_seed(seed_for("conditional radial", dim, regime, sample_shape))
    flow = Radial(dim, context_dim=CONTEXT_DIM, hidden_dims=[16]).double()
    spread_hypernet(flow, scale=0.3)
    with torch.no_grad():  # output layout (center, alpha_raw, beta_raw): set the raws' offsets
        flow.params.hypernet.output_layer.bias[-2:] = torch.tensor(CONDITIONAL_RADIAL_RAWS[regime])
    context = torch.randn(NUM_CONTEXTS, CONTEXT_DIM, dtype=torch.float64)
    with torch.no_grad():
        params = flow.params(context)
    assert params["center"].shape == (NUM_CONTEXTS, dim)
    assert params["alpha_raw"].shape == params["beta_raw"].shape == (NUM_CONTEXTS,)
    for value in params.values():
        assert_varies_with_context(value)
    beta = F.softplus(params["beta_raw"]) - F.softplus(params["alpha_raw"])
    assert ((beta < 0) if regime == "contracting" else (beta > 0)).all()
    # ConditionedRadial unpacks (x0, alpha_prime, beta_prime), scalars with a trailing 1.
    reference = ConditionedRadial(
        (params["center"], params["alpha_raw"].unsqueeze(-1), params["beta_raw"].unsqueeze(-1))
    )
    x = inputs((*sample_shape, NUM_CONTEXTS), dim)
    with torch.no_grad():
        check_conditioned(reference, flow.condition(context), x)
