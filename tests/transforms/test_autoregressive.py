"""Autoregressive layers (``transforms/autoregressive.py``)."""

from __future__ import annotations

import torch

from pyroflows.transforms import (
    Autoregressive,
    affine_autoregressive,
    maf,
    neural_autoregressive,
    spline_autoregressive,
)


def test_autoregressive_inverse_is_the_sequential_one_for_maf():
    """maf's density direction is one parallel pass per layer: no layer runs its inverse."""
    flow = maf(4, num_layers=2, hidden_dims=[16])
    calls = []
    for layer in flow.layers:
        original = layer.flow._inverse_pass
        layer.flow._inverse_pass = lambda *a, original=original: calls.append(1) or original(*a)
    flow.inv(torch.randn(8, 4))
    assert not calls


def test_random_orderings_of_the_helpers_differ_and_a_seed_fixes_them():
    """Issue 12: ``[affine_autoregressive(6, ordering="random") for _ in range(3)]`` repeated one
    order; a saved random-ordered layer still loads into a fresh one and inverts."""
    torch.manual_seed(0)
    layers = [affine_autoregressive(6, ordering="random") for _ in range(3)]
    assert len({tuple(layer.made.degrees.tolist()) for layer in layers}) == 3
    for helper in (affine_autoregressive, spline_autoregressive, neural_autoregressive):
        a, b = (helper(6, hidden_dims=[12], ordering="random", seed=5) for _ in range(2))
        assert torch.equal(a.made.degrees, b.made.degrees), helper.__name__
    a, b = (Autoregressive(6, ordering="random", seed=5) for _ in range(2))
    assert torch.equal(a.made.degrees, b.made.degrees)
    with torch.no_grad():  # off the identity, where any order inverts
        for p in layers[0].parameters():
            p.add_(0.3 * torch.randn_like(p))
    fresh = affine_autoregressive(6, ordering="random")
    fresh.load_state_dict(layers[0].state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(fresh.inv(layers[0](x)), x, atol=1e-5, rtol=0)
