"""Helpers shared by the cross-checks against Pyro."""

from __future__ import annotations

import torch
from torch import Tensor

# Same formulas in float64 on the same inputs: a few ulps apart at most.
TIGHT = {"atol": 1e-12, "rtol": 1e-12}


def assert_close(actual: Tensor, expected: Tensor, tol: dict[str, float] = TIGHT) -> None:
    """Float64 on both sides, same shape, and close within ``tol``."""
    assert actual.dtype == expected.dtype == torch.float64
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, **tol)


def seed_for(*values: object) -> int:
    """A fixed seed per test case (independent of test order and of ``PYTHONHASHSEED``)."""
    seed = 0
    for value in values:
        for char in repr(value):
            seed = (seed * 131 + ord(char)) % 2**31
    return seed
