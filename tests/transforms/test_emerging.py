"""EmergingConv and PeriodicConv (transforms/emerging.py): exact log-dets, triangular factors and
the k x k receptive field of their composition, the row-blocked and Fourier inverses,
gradients and errors."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyroflows.transforms import EmergingConv, PeriodicConv
from pyroflows.transforms.emerging import _conv_after, _conv_before

from ..helpers import jacobian_matrix


def _perturbed(shape, kernel_size=3, scale=0.3, dtype=torch.float64, seed=0, cls=EmergingConv):
    torch.manual_seed(seed)
    flow = cls(shape, kernel_size).to(dtype)
    with torch.no_grad():
        for param in flow.parameters():
            param.add_(scale * torch.randn_like(param))
    return flow


def _pixel_major(shape):
    """The permutation from (c, h, w) flattening to (h, w, c) flattening (raster order)."""
    return torch.arange(torch.Size(shape).numel()).reshape(shape).permute(1, 2, 0).reshape(-1)


@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5, 6)], ids=["2x4x4", "3x5x6"])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_log_det_matches_the_float64_autogradjacobian_matrix(shape, kernel_size):
    flow = _perturbed(shape, kernel_size)
    x = torch.randn(3, *shape, dtype=torch.float64)
    y, log_det = flow.forward_and_log_det(x)
    _, inverse_log_det = flow.inverse_and_log_det(y)
    for i in range(3):
        jac = jacobian_matrix(lambda v: flow.forward_and_log_det(v)[0], x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(log_det[i], expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=0, rtol=0)
    # H W sum(d1 + d2): not input-dependent
    expected = shape[1] * shape[2] * (flow.log_diag1.sum() + flow.log_diag2.sum())
    torch.testing.assert_close(log_det, expected.expand(3), atol=1e-12, rtol=1e-12)


def test_each_convolution_is_triangular_in_raster_order():
    shape = (3, 5, 6)
    flow = _perturbed(shape)
    first, second = flow.kernels()
    x = torch.randn(shape, dtype=torch.float64)
    order = _pixel_major(shape)
    after = jacobian_matrix(lambda v: _conv_after(v[None], first)[0], x)[order][:, order]
    before = jacobian_matrix(lambda v: _conv_before(v[None], second)[0], x)[order][:, order]
    torch.testing.assert_close(after, after.triu(), atol=0, rtol=0)  # reads later entries
    torch.testing.assert_close(before, before.tril(), atol=0, rtol=0)  # reads earlier ones
    pixels = shape[1] * shape[2]
    torch.testing.assert_close(after.diagonal(), flow.log_diag1.exp().repeat(pixels))
    # the second is applied mirrored: channel c has the diagonal entry e^{d_2[C - 1 - c]}
    torch.testing.assert_close(before.diagonal(), flow.log_diag2.flip(0).exp().repeat(pixels))


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_the_composition_reads_exactly_the_k_by_k_neighbourhood(kernel_size):
    shape = (2, 7, 8)
    flow = _perturbed(shape, kernel_size)
    x = torch.randn(shape, dtype=torch.float64)
    jac = jacobian_matrix(lambda v: flow.forward_and_log_det(v)[0], x).reshape(*shape, *shape)
    reads = jac.abs() > 1e-12
    radius = kernel_size // 2
    _, height, width = shape
    rows, cols = torch.arange(height), torch.arange(width)
    near_rows = (rows[:, None] - rows[None, :]).abs() <= radius  # (h, h')
    near_cols = (cols[:, None] - cols[None, :]).abs() <= radius  # (w, w')
    # every output channel reads every input channel at every pixel of its k x k window
    window = near_rows[:, None, :, None] & near_cols[None, :, None, :]  # (h, w, h', w')
    expected = window[None, :, :, None].expand(shape[0], height, width, shape[0], height, width)
    assert torch.equal(reads, expected)


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"]
)
@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5, 6), (1, 28, 28), (3, 64, 64)], ids=str)
def test_inverse_round_trip(dtype, tol, shape):
    # 3 x 64 x 64: the dense (C H W)^2 matrix would take 1.2 GB in float64; the row blocks
    # take 2 x 192^2 numbers
    flow = _perturbed(shape, scale=0.1, dtype=dtype)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, *shape, dtype=dtype, generator=generator)
    y, _ = flow.forward_and_log_det(x)
    x_back, _ = flow.inverse_and_log_det(y)
    torch.testing.assert_close(x_back, x, atol=tol, rtol=tol)
    y0 = torch.randn(5, *shape, dtype=dtype, generator=generator)
    torch.testing.assert_close(flow.forward_and_log_det(flow.inv(y0))[0], y0, atol=tol, rtol=tol)


def test_starts_as_the_identity():
    flow = EmergingConv((3, 4, 5))
    x = torch.randn(2, 3, 4, 5)
    y, log_det = flow.forward_and_log_det(x)
    torch.testing.assert_close(y, x, atol=0, rtol=0)
    assert torch.equal(log_det, torch.zeros(2))


def test_gradients_reach_every_parameter():
    shape = (2, 4, 4)
    flow = _perturbed(shape)
    x = torch.randn(5, *shape, dtype=torch.float64)
    base = dist.Normal(torch.zeros(shape, dtype=torch.float64), 1.0).to_event(3)
    model = dist.TransformedDistribution(base, [flow.with_cache(0)])
    loss = -model.log_prob(x).sum() + flow(x).pow(2).sum()  # through the inverse and forward
    loss.backward()
    for name, param in flow.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        # the masked entries get no gradient; every free entry does
        free = param.grad if name not in ("weight1", "weight2") else param.grad[flow.mask > 0]
        assert (free != 0).all(), f"a free entry of {name} gets no gradient"


def test_bad_shapes_and_kernel_sizes_are_refused():
    with pytest.raises(ValueError, match=r"event shape \(C, H, W\), got \(4, 4\)"):
        EmergingConv((4, 4))
    with pytest.raises(ValueError, match="event shape"):
        EmergingConv(16)
    for size in (2, 0, -1, 2.5):
        with pytest.raises(ValueError, match=f"odd positive integer, got {size}"):
            EmergingConv((2, 4, 4), kernel_size=size)
    flow = EmergingConv((2, 4, 4))
    with pytest.raises(ValueError, match=r"event shape \(2, 4, 4\).*got shape \(5, 3, 4, 4\)"):
        flow(torch.randn(5, 3, 4, 4))


# -- PeriodicConv --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5, 6)], ids=["2x4x4", "3x5x6"])
def test_periodic_forward_is_the_circular_convolution(shape):
    flow = _perturbed(shape, cls=PeriodicConv)
    x = torch.randn(4, *shape, dtype=torch.float64)
    padded = F.pad(x, (1, 1, 1, 1), mode="circular")
    expected = F.conv2d(padded, flow.weight) + flow.bias[:, None, None]
    torch.testing.assert_close(flow(x), expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5, 6)], ids=["2x4x4", "3x5x6"])
@pytest.mark.parametrize("kernel_size", [3, 5])  # 5 on 4 x 4 wraps onto itself
def test_periodic_log_det_matches_the_float64_autogradjacobian_matrix(shape, kernel_size):
    flow = _perturbed(shape, kernel_size, cls=PeriodicConv)
    x = torch.randn(3, *shape, dtype=torch.float64)
    y, log_det = flow.forward_and_log_det(x)
    for i in range(3):
        jac = jacobian_matrix(lambda v: flow.forward_and_log_det(v)[0], x[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(log_det[i], expected, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(flow.inverse_and_log_det(y)[1], -log_det, atol=0, rtol=0)


@pytest.mark.parametrize(
    "dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"]
)
@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 5, 6), (4, 14, 14)], ids=str)
def test_periodic_inverse_round_trip(dtype, tol, shape):
    flow = _perturbed(shape, scale=0.1, dtype=dtype, cls=PeriodicConv)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, *shape, dtype=dtype, generator=generator)
    y, _ = flow.forward_and_log_det(x)
    torch.testing.assert_close(flow.inverse_and_log_det(y)[0], x, atol=tol, rtol=tol)


def test_periodic_starts_as_the_identity_and_trains():
    flow = PeriodicConv((2, 4, 5))
    x = torch.randn(3, 2, 4, 5)
    y, log_det = flow.forward_and_log_det(x)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(3), atol=1e-6, rtol=0)
    flow = _perturbed((2, 4, 4), cls=PeriodicConv)
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    value, inverse_log_det = flow.inverse_and_log_det(x)
    (value.pow(2).sum() - inverse_log_det.sum()).backward()
    assert (flow.weight.grad != 0).all() and (flow.bias.grad != 0).all()


def test_periodic_bad_shapes_and_kernel_sizes_are_refused():
    with pytest.raises(ValueError, match=r"event shape \(C, H, W\), got \(4, 4\)"):
        PeriodicConv((4, 4))
    with pytest.raises(ValueError, match="odd positive integer, got 4"):
        PeriodicConv((2, 4, 4), kernel_size=4)
