"""Coupling layers: masks and argument checks (``transforms/coupling.py``)."""

from __future__ import annotations

import pytest
import torch

from pyroflows.transforms import Coupling, RationalQuadraticSpline, coupling_mask, spline_coupling


def test_coupling_masks_and_validation():
    assert coupling_mask(4).tolist() == [True, True, False, False]
    assert coupling_mask(4, flip=True).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="no coordinate"):
        Coupling(3, mask=torch.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="kind"):
        coupling_mask(3, "checker")
    with pytest.raises(ValueError, match="needs input_dim >= 2"):
        Coupling(1)


def _perturbed_passthrough_pair(context_dim: int):
    """A coupling layer with a random pass-through spline and random conditioner, and the same
    layer without the pass-through map (same conditioner weights)."""
    torch.manual_seed(0)
    spline = RationalQuadraticSpline(count_bins=5, bound=2.0)
    mask = torch.tensor([True, False, True, False])
    options = dict(context_dim=context_dim)
    flow = Coupling(4, [16], spline, mask, passthrough_transformer=spline, **options).double()
    plain = Coupling(4, [16], spline, mask, **options).double()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    plain.conditioner.load_state_dict(flow.conditioner.state_dict())
    return flow, plain


@pytest.mark.parametrize("context_dim", [0, 2])
def test_passthrough_transformer_is_pyros_spline_coupling(context_dim):
    """y_a = sigma(x_a; phi), y_b as without the option (the conditioner reads x_a, as Pyro's
    SplineCoupling), log-det = both parts; the inverse undoes it."""
    flow, plain = _perturbed_passthrough_pair(context_dim)
    x = 1.5 * torch.randn(50, 4, dtype=torch.float64)
    context = torch.randn(50, context_dim, dtype=torch.float64) if context_dim else None
    y, log_det = flow.forward_and_log_det(x, context)
    y_plain, log_det_plain = plain.forward_and_log_det(x, context)
    y_a, log_slope_a = flow.passthrough_transformer.forward(x[:, ::2], flow.passthrough.params)
    torch.testing.assert_close(y[:, ::2], y_a)
    assert (y_a - x[:, ::2]).abs().max() > 0.1  # the pass-through coordinates do move
    torch.testing.assert_close(y[:, 1::2], y_plain[:, 1::2])
    torch.testing.assert_close(log_det, log_det_plain + log_slope_a.sum(-1))
    x_back, log_det_back = flow.inverse_and_log_det(y.clone(), context)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, -log_det)  # log|det dx/dy|


def test_passthrough_state_dict_and_helper_option():
    flow, _ = _perturbed_passthrough_pair(0)
    state = flow.state_dict()
    assert state["passthrough.params"].shape == (14, 2)  # 3 K - 1 rows, one column per x_a
    fresh = Coupling(
        4,
        [16],
        flow.transformer,
        flow.identity_index.new_tensor([True, False, True, False], dtype=bool),
        passthrough_transformer=flow.transformer,
    ).double()
    fresh.load_state_dict(state)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(fresh(x), flow(x))
    assert spline_coupling(4, identity=True).passthrough is None
    assert "passthrough.params" not in spline_coupling(4, identity=True).state_dict()
    assert spline_coupling(4, count_bins=3).passthrough.params.shape == (8, 2)


def test_pickled_coupling_without_passthrough_attribute_loads():
    """A Coupling pickled before the option existed has no passthrough attributes."""
    flow = Coupling(4, [8])
    state = flow.__dict__.copy()
    del state["passthrough_transformer"], state["passthrough"]
    restored = Coupling.__new__(Coupling)
    restored.__setstate__(state)
    x = torch.randn(3, 4)
    assert restored.passthrough is None
    torch.testing.assert_close(restored(x), flow(x))
