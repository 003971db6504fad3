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


def test_stacks_take_a_random_order_per_layer_that_state_dict_restores():
    """``orders="random"``: every layer its own MADE order (issue 14: the density defaults),
    drawn from torch's RNG; a fresh stack loading the state_dict scores and inverts alike."""
    from pyroflows.transforms import nsf

    torch.manual_seed(0)
    flow = maf(6, num_layers=4, hidden_dims=[24], orders="random")
    orders = {tuple(layer.flow.made.degrees.tolist()) for layer in flow.layers}
    assert len(orders) == 4
    alternate = maf(6, num_layers=4, hidden_dims=[24])
    assert [layer.flow.made.degrees.tolist() for layer in alternate.layers][:2] == [
        [1, 2, 3, 4, 5, 6],
        [6, 5, 4, 3, 2, 1],
    ]
    spline = nsf(6, num_layers=3, hidden_dims=[24], autoregressive=True, orders="random")
    with torch.no_grad():
        for p in spline.parameters():
            p.add_(0.2 * torch.randn_like(p))
    fresh = nsf(6, num_layers=3, hidden_dims=[24], autoregressive=True, orders="random")
    x = torch.randn(5, 6)
    assert not torch.allclose(fresh.inv(x), spline.inv(x))
    fresh.load_state_dict(spline.state_dict())
    torch.testing.assert_close(fresh.inv(x), spline.inv(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(spline(spline.inv(x)), x, atol=1e-4, rtol=0)


def test_stack_orders_refuse_unknown_values_and_the_coupling_form():
    import pytest

    from pyroflows.transforms import nsf

    with pytest.raises(ValueError, match="orders must be 'alternate' or 'random', got 'rand'"):
        maf(3, orders="rand")
    with pytest.raises(ValueError, match="autoregressive form"):
        nsf(4, orders="random")
