"""Element-wise flows (``transforms/elementwise.py``)."""

from __future__ import annotations

import pytest

from pyroflows.transforms import LeakyReLU


def test_leaky_relu_rejects_non_positive_slope():
    with pytest.raises(ValueError, match="init_slope"):
        LeakyReLU(2, init_slope=0.0)
