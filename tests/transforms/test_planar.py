"""Planar and radial flows at and near their limits (``transforms/planar.py``, ``radial.py``)."""

from __future__ import annotations

import pytest
import torch

from pyroflows.distributions import Flow
from pyroflows.transforms import InverseNotConvergedError, Planar, Radial, RootFinder

F64 = torch.float64


def test_planar_inverse_reports_non_convergence():
    torch.manual_seed(0)
    flow = Planar(3, root_finder=RootFinder(max_iter=1)).double()
    with torch.no_grad():
        flow.params.u.fill_(3.0)
        flow.params.w.fill_(1.0)
    y = torch.randn(10, 3, dtype=F64) * 5
    with pytest.raises(InverseNotConvergedError):
        flow.inv(y)


def test_planar_inverse_near_the_invertibility_limit():
    # w.u_hat close to -1: the scalar equation is nearly flat at the hyperplane.
    flow = Planar(2).double()
    with torch.no_grad():
        flow.params.w.copy_(torch.tensor([1.0, 0.0]))
        flow.params.u.copy_(torch.tensor([-30.0, 0.0]))  # softplus keeps w.u_hat just above -1
        flow.params.bias.zero_()
    x = torch.linspace(-2, 2, 41, dtype=F64).unsqueeze(-1).expand(-1, 2).contiguous()
    y = flow(x)
    torch.testing.assert_close(flow.inv(y.clone()), x, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("beta_raw", [-3.0, 0.0, 3.0])  # contracting to expanding
def test_radial_far_from_the_centre_in_float32_row_60(beta_raw):
    """Row 60: radial in float32 at 1e30 (and up to float32's limit) gives -inf like every
    other flow, not NaN: the inverse's discriminant and log-det no longer overflow."""
    torch.manual_seed(0)
    flow = Radial(2)
    with torch.no_grad():
        flow.params.beta_raw.fill_(beta_raw)
    far = torch.tensor([[1e30, 1e30], [1e30, 0.0], [-1e30, 5.0], [3e38, -3e38], [1e20, 1e20]])
    x, log_det = flow.inv.forward_and_log_det(far)
    assert not torch.isnan(x).any() and not torch.isnan(log_det).any()
    model = Flow(flow)
    assert torch.equal(model.log_prob(far), torch.full((5,), -float("inf")))
    near = torch.randn(8, 2, dtype=F64) * 3
    double = Radial(2).double()
    y = double(near)
    torch.testing.assert_close(double.inv(y.clone()), near, atol=1e-10, rtol=1e-10)
