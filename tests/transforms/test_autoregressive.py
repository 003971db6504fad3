"""Autoregressive layers (``transforms/autoregressive.py``)."""

from __future__ import annotations

import torch

from pyroflows.transforms import maf


def test_autoregressive_inverse_is_the_sequential_one_for_maf():
    """maf's density direction is one parallel pass per layer: no layer runs its inverse."""
    flow = maf(4, num_layers=2, hidden_dims=[16])
    calls = []
    for layer in flow.layers:
        original = layer.flow._inverse_pass
        layer.flow._inverse_pass = lambda *a, original=original: calls.append(1) or original(*a)
    flow.inv(torch.randn(8, 4))
    assert not calls
