"""Planar flows: the numerical inverse at and near its limits (``transforms/planar.py``)."""

from __future__ import annotations

import pytest
import torch

from pyroflows.transforms import InverseNotConvergedError, Planar, RootFinder

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
