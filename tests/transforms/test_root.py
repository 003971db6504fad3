"""The bracketed Newton root finder behind the numerical inverses (``transforms/_root.py``)."""

from __future__ import annotations

import warnings

import pytest
import torch

from pyroflows.transforms import InverseNotConvergedError, InverseNotConvergedWarning, RootFinder

F64 = torch.float64


def _tanh_map(x):
    return x + torch.tanh(x), 2 - torch.tanh(x) ** 2


# -- root finder ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_root_finder_solves_to_dtype_precision(dtype, device):
    target = torch.linspace(-50, 50, 101, dtype=dtype, device=device)
    x = RootFinder()(_tanh_map, target, target - 1, target + 1)
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(_tanh_map(x)[0], target, atol=tol, rtol=tol)


def test_root_finder_does_not_ping_pong_across_a_tanh_kink():
    # Found in training: plain bracketed Newton bounced between the two sides of the kink of
    # alpha + c tanh(alpha + b) for c >> 1, shrinking the bracket by ~1% per iteration.
    reach, bias = 13.327, -0.473  # reconstructed from the failing element's trace
    target = torch.tensor([12.438, -12.0, 0.5, 30.0])

    def func(alpha):
        tanh = torch.tanh(alpha + bias)
        return alpha + reach * tanh, 1 + reach * (1 - tanh**2)

    alpha = RootFinder(max_iter=40)(func, target, target - reach, target + reach)
    torch.testing.assert_close(func(alpha)[0], target, atol=1e-4, rtol=1e-5)


def test_root_finder_raises_when_it_does_not_converge():
    target = torch.linspace(-3, 3, 7, dtype=F64)
    with pytest.raises(InverseNotConvergedError, match=r"did not converge for .* after 1 iter"):
        RootFinder(max_iter=1)(_tanh_map, target, target - 100, target + 100)


def test_root_finder_warns_when_asked_to():
    target = torch.linspace(-3, 3, 7, dtype=F64)
    solve = RootFinder(max_iter=1, on_failure="warn")
    with pytest.warns(InverseNotConvergedWarning, match="did not converge"):
        x = solve(_tanh_map, target, target - 100, target + 100)
    assert x.shape == target.shape and torch.isfinite(x).all()


def test_root_finder_nan_targets_stay_nan_and_do_not_disturb_others(device):
    target = torch.tensor([0.3, float("nan"), -2.0, float("inf")], dtype=F64, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = RootFinder()(_tanh_map, target, target - 1, target + 1)
    assert torch.isnan(x[1]) and torch.isnan(x[3])
    clean = RootFinder()(_tanh_map, target[[0, 2]], target[[0, 2]] - 1, target[[0, 2]] + 1)
    torch.testing.assert_close(x[[0, 2]], clean, atol=0, rtol=0)


def test_root_finder_gives_implicit_function_gradients(device):
    scale = torch.tensor(0.7, dtype=F64, device=device, requires_grad=True)
    target = torch.tensor([0.5, 1.5], dtype=F64, device=device, requires_grad=True)

    def func(x):
        return x + scale * torch.tanh(x), 1 + scale * (1 - torch.tanh(x) ** 2)

    x = RootFinder()(func, target, target - 1, target + 1)
    x.sum().backward()
    slope = 1 + scale.detach() * (1 - torch.tanh(x.detach()) ** 2)
    torch.testing.assert_close(target.grad, 1 / slope)
    torch.testing.assert_close(scale.grad, (-torch.tanh(x.detach()) / slope).sum())


@pytest.mark.parametrize(
    "kwargs", [{"on_failure": "ignore"}, {"max_iter": 0}, {"xtol": 0.0}], ids=str
)
def test_root_finder_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RootFinder(**kwargs)
