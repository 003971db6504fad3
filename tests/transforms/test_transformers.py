"""Element-wise transformers (``transforms/transformers.py``): inverse, slope, identity start."""

from __future__ import annotations

import pytest
import torch

from pyroflows.transforms import Additive, Affine, Autoregressive, Coupling

F64 = torch.float64


@pytest.mark.parametrize("transformer", [Affine(), Affine(stable=True), Additive()], ids=repr)
def test_transformer_inverse_and_log_det(transformer, device):
    x = torch.randn(6, 4, dtype=F64, device=device)
    params = torch.randn(6, transformer.params_per_dim, 4, dtype=F64, device=device)
    y, log_det = transformer.forward(x, params)
    x_back, log_det_back = transformer.inverse(y, params)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, log_det)
    slope = torch.func.vmap(torch.func.jacfwd(lambda v, p: transformer.forward(v, p)[0]))(
        x, params
    ).diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(slope.abs().log(), log_det)


def test_identity_at_initialisation(device, dtype):
    x = torch.randn(5, 4, device=device, dtype=dtype)
    for flow in (Autoregressive(4), Coupling(4), Coupling(4, transformer=Additive())):
        flow = flow.to(device, dtype)
        torch.testing.assert_close(flow(x), x)
        assert torch.all(flow.log_abs_det_jacobian(x, flow(x)) == 0)
