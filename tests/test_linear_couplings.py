"""pyroflows.experiments.linear_couplings: the stack's algebra, the exact construction, the
trend of the fitted error with the number of factors (Koehler, Mehta & Risteski, 2021)."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from pyroflows.experiments.linear_couplings import (
    LinearCouplings,
    error_table,
    exact_couplings,
    fit_linear_map,
    random_linear_map,
)
from pyroflows.transforms import Coupling

F64 = torch.float64


def _random_stack(dim, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = dim // 2
    return LinearCouplings.from_factors(
        torch.randn(k, d, d, generator=g, dtype=F64), torch.randn(k, d, generator=g, dtype=F64)
    )


def _block(a, b, c, d):
    return torch.cat([torch.cat([a, b], 1), torch.cat([c, d], 1)], 0)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_matrix_is_the_product_formula(k):
    stack = _random_stack(6, k)
    eye, zero = torch.eye(3, dtype=F64), torch.zeros(3, 3, dtype=F64)
    expected = torch.eye(6, dtype=F64)
    for j in range(k):
        shear, scale = stack.shears[j].detach(), torch.diag(stack.scales[j].detach())
        if j % 2 == 0:  # L(A, B) = [[I, 0], [A, B]]
            factor = _block(eye, zero, shear, scale)
        else:  # U(C, D) = [[C, D], [0, I]]
            factor = _block(scale, shear, zero, eye)
        expected = expected @ factor
    with torch.no_grad():
        assert torch.allclose(stack.matrix(), expected, atol=1e-12)
        x = torch.randn(2, 3, 6, dtype=F64)
        assert torch.allclose(stack(x), x @ expected.T, atol=1e-12)
        assert torch.allclose(stack.inverse(stack(x)), x, atol=1e-10)
        _, logdet = torch.linalg.slogdet(expected)
        assert torch.allclose(stack.log_abs_det(), logdet)


def test_jacobian_of_the_product_matches_autograd():
    stack = _random_stack(4, 3, seed=1)
    theta = torch.cat([stack.shears.detach().flatten(), stack.scales.detach().flatten()])

    def _matrix_from(values):
        probe = LinearCouplings(4, 3)
        del probe.shears, probe.scales
        probe.shears, probe.scales = values[:12].view(3, 2, 2), values[12:].view(3, 2)
        return probe.matrix().flatten()

    expected = torch.autograd.functional.jacobian(_matrix_from, theta)
    assert torch.allclose(stack._jacobian(), expected, atol=1e-12)


def test_a_positive_scale_factor_is_a_library_coupling_with_a_linear_conditioner():
    """L(A, B) with B > 0 is pyroflows' Coupling(Affine) whose conditioner gives the shift A x_a
    and a constant log-scale log B (the log-scale weight rows held at zero)."""
    d = 3
    g = torch.Generator().manual_seed(2)
    shear = torch.randn(d, d, generator=g, dtype=F64)
    scale = torch.rand(d, generator=g, dtype=F64) + 0.5
    linear = nn.Linear(d, 2 * d).double()
    with torch.no_grad():  # dense layout, coordinate-major: (mean_i, log_scale_i) pairs
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[0::2] = shear
        linear.bias[1::2] = scale.log()
    layer = Coupling(2 * d, conditioner=linear).double()
    stack = LinearCouplings.from_factors(shear[None], scale[None])
    x = torch.randn(5, 2 * d, generator=g, dtype=F64)
    with torch.no_grad():
        assert torch.allclose(layer(x), stack(x), atol=1e-12)


@pytest.mark.parametrize("dim,seed", [(2, 0), (4, 1), (8, 0), (8, 3)])
def test_exact_construction_reproduces_its_target(dim, seed):
    target = random_linear_map(dim, seed)
    stack = exact_couplings(target)
    assert stack.num_factors == 14
    with torch.no_grad():
        assert (stack.matrix() - target).norm() / target.norm() < 1e-10


def test_exact_construction_says_when_the_leading_block_is_singular():
    target = random_linear_map(4, 0)
    target[:2, :2] = torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=F64)
    with pytest.raises(ValueError, match="leading block P"):
        exact_couplings(target)


def test_error_falls_with_the_number_of_factors_for_a_random_map():
    """2d = 8: two factors are far off, five are exact (the paper: 5 suffice for this ensemble,
    fewer than its 47-factor bound); the error never rises with K beyond noise."""
    rows = error_table([8], [1, 2, 3, 4, 5, 6], [0], steps=200, restarts=2)
    errors = [row.error for row in rows]
    assert errors[1] > 0.05
    assert errors[4] < 1e-3 and errors[5] < 1e-3
    for smaller, larger in itertools.pairwise(errors):
        assert larger <= smaller + 1e-6


def test_fit_reports_the_best_restart():
    fit = fit_linear_map(random_linear_map(4, 2), 3, restarts=3, seed=1, steps=100)
    assert fit.error == min(fit.restart_errors)
    with torch.no_grad():
        target = random_linear_map(4, 2)
        error = (fit.module.matrix() - target).norm() / target.norm()
    assert abs(float(error) - fit.error) < 1e-9


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: fit_linear_map(torch.zeros(4, 6), 2), r"square matrix .* got shape \(4, 6\)"),
        (lambda: fit_linear_map(torch.eye(5), 2), r"even size 2d .* got shape \(5, 5\)"),
        (lambda: fit_linear_map(torch.eye(4), 0), r"num_factors must be an integer >= 1, got 0"),
        (lambda: LinearCouplings(3, 2), r"dim must be an even integer >= 2 .* got 3"),
        (lambda: exact_couplings(torch.eye(3)), r"even size 2d .* got shape \(3, 3\)"),
        (lambda: error_table([4], [0], [0]), r"num_factors must be an integer >= 1, got 0"),
        (lambda: random_linear_map(7), r"dim must be an even integer >= 2 .* got 7"),
    ],
)
def test_bad_input_says_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
