"""The fixed maps of ``transforms/preprocessing.py`` beyond the conformance suite: the logit's
range check, its exactness where the sigmoid saturates, the affine map's buffers and signs."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from pyroflows.data import inverse_logit_transform, logit_transform
from pyroflows.transforms import REGISTRY, FixedAffine, LogitTransform
from pyroflows.transforms.preprocessing import affine_and_log_det, inverse_affine_and_log_det

F64 = torch.float64


# -- LogitTransform -----------------------------------------------------------------------------
def test_range_check_names_the_rows_and_follows_pyro_validation():
    logit = LogitTransform(2, alpha=0.05)
    low, high = logit.bounds
    assert (low, high) == pytest.approx((-0.05 / 0.9, 0.95 / 0.9))
    bad = torch.tensor([[0.5, 0.5], [high + 1e-3, 0.2], [0.1, float("nan")], [low, 0.5]])
    with pytest.raises(ValueError, match=r"rows \[1, 2, 3\] have values outside"):
        logit.forward_and_log_det(bad)
    with pytest.raises(ValueError, match=r"alpha=0.05"):
        logit(bad)
    # the ends of the (open) domain are outside; just inside them is fine
    inside = torch.tensor([[low + 1e-6, high - 1e-6]], dtype=F64)
    assert torch.isfinite(logit.double().forward_and_log_det(inside)[0]).all()
    with pyro.validation_enabled(False):  # the check (a host read) is validation's
        y, log_det = logit.forward_and_log_det(bad)
    assert y.shape == (4, 2) and not torch.isfinite(log_det[1:]).any()
    # image events: one row per event, and the inverse direction has nothing to check
    image = LogitTransform((1, 2, 2))
    values = torch.full((3, 1, 2, 2), 0.5)
    values[2, 0, 1, 1] = 2.0
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        image.forward_and_log_det(values)
    assert image.inverse_and_log_det(torch.full((3, 1, 2, 2), 1e4))[0].shape == (3, 1, 2, 2)


def test_meta_tensors_are_not_range_checked():
    logit = LogitTransform(3).to("meta")
    y, log_det = logit.forward_and_log_det(torch.empty(4, 3, device="meta"))
    assert y.device.type == "meta" and log_det.shape == (4,)


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
def test_inverse_log_det_is_exact_where_the_sigmoid_saturates(dtype):
    # sigmoid(y) rounds to 1 for y > 17 (float32) or 37 (float64): a log-det computed from the
    # rounded x would be infinite; the log-sigmoid form stays exact,
    # log|dy/dx| = log(1 - 2 alpha) - log sigmoid(y) - log sigmoid(-y) ~ log(1 - 2 alpha) + |y|.
    alpha = 1e-3
    logit = LogitTransform(1, alpha).to(dtype)
    y = torch.tensor([[-60.0], [-20.0], [0.0], [20.0], [60.0]], dtype=dtype)
    x, inverse_log_det = logit.inverse_and_log_det(y)
    yy = y.double().squeeze(-1)
    exact = math.log1p(-2 * alpha) + yy.abs() + 2 * torch.log1p(torch.exp(-yy.abs()))
    torch.testing.assert_close(-inverse_log_det.double(), exact, rtol=1e-6, atol=0)
    assert torch.isfinite(x).all()
    sat = x.squeeze(-1)
    assert float(sat[0]) == pytest.approx(-alpha / (1 - 2 * alpha))
    assert float(sat[-1]) == pytest.approx((1 - alpha) / (1 - 2 * alpha))


def test_forward_and_inverse_log_dets_agree_in_the_interior():
    logit = LogitTransform(4, alpha=0.05).double()
    x = torch.rand(6, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    y, log_det = logit.forward_and_log_det(x)
    x_back, inverse_log_det = logit.inverse_and_log_det(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=1e-12, atol=1e-12)


def test_data_helpers_are_the_transforms_passes():
    """``data.logit_transform`` is LogitTransform's forward pass (one formula), to the bit."""
    x = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(1))
    y, log_det = logit_transform(x, 0.01)
    expected_y, expected_log_det = LogitTransform(4, 0.01).forward_and_log_det(x)
    assert torch.equal(y, expected_y) and torch.equal(log_det, expected_log_det)
    back = inverse_logit_transform(y, 0.01)
    assert torch.equal(back, LogitTransform(4, 0.01).inverse_and_log_det(y)[0])
    assert inverse_logit_transform(torch.tensor(0.0), 0.01).shape == ()  # any shape
    with pytest.raises(ValueError, match="alpha must be in"):
        LogitTransform(2, alpha=0.5)


def test_logit_domain_and_repr():
    logit = LogitTransform((1, 2, 2), alpha=0.1)
    assert logit.domain.event_dim == 3 and logit.codomain.event_dim == 3
    assert logit.domain.check(torch.full((1, 2, 2), 0.5)).all()
    assert not logit.domain.check(torch.full((1, 2, 2), 1.5)).any()
    assert logit.inv.codomain is not None and logit.inv.codomain.event_dim == 3
    assert "alpha=0.1" in repr(logit)


# -- FixedAffine --------------------------------------------------------------------------------
def test_fixed_affine_holds_buffers_and_handles_negative_scales():
    affine = FixedAffine(3, loc=torch.tensor([1.0, 2.0, 3.0], dtype=F64), scale=[2.0, -0.5, 1.0])
    assert affine.loc.dtype == F64 and affine.scale.dtype == F64  # the given dtype is kept
    assert list(affine.parameters()) == []
    assert set(affine.state_dict()) == {"loc", "scale"}
    x = torch.randn(4, 3, dtype=F64)
    y, log_det = affine.forward_and_log_det(x)
    torch.testing.assert_close(y, affine.loc + affine.scale * x)
    torch.testing.assert_close(log_det, torch.full((4,), math.log(2.0 * 0.5), dtype=F64))
    x_back, inverse_log_det = affine.inverse_and_log_det(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_det, -log_det)
    assert FixedAffine((2, 2, 2), scale=3.0).scale.shape == (2, 2, 2)  # broadcast to the event
    with pytest.raises(ValueError, match="non-zero"):
        FixedAffine(2, scale=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="broadcast"):
        FixedAffine(2, loc=torch.zeros(3))


def test_affine_functions_take_batched_loc_and_scale():
    loc, scale = torch.randn(5, 2), torch.rand(5, 2) + 0.5  # per-data-point, as an encoder's
    x = torch.randn(7, 5, 2)
    y, log_det = affine_and_log_det(x, loc, scale)
    assert y.shape == (7, 5, 2) and log_det.shape == (7, 5)
    torch.testing.assert_close(log_det[3], scale.log().sum(-1))
    x_back, inverse_log_det = inverse_affine_and_log_det(y, loc, scale)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_det, -log_det)
    image = torch.randn(4, 2, 3, 3)
    _, image_log_det = affine_and_log_det(image, 0.0, torch.full((2, 3, 3), 2.0), event_dim=3)
    torch.testing.assert_close(image_log_det, torch.full((4,), 18 * math.log(2.0)))


def test_fixed_maps_are_registered_as_fixed():
    for name in ("fixed_affine", "logit"):
        spec = REGISTRY[name]
        assert spec.fixed and not spec.conditional and spec.family == "preprocessing"
    assert not any(spec.fixed for name, spec in REGISTRY.items() if spec.family != "preprocessing")
