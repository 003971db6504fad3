"""Squeeze, multi-scale factor-out levels and the glow / realnvp_image builders (issue 16)."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.conditional import ConditionalTransformedDistribution

from pyroflows import Flow
from pyroflows.transforms import ElementwiseAffine, MultiScale, Spline, Squeeze

F64 = torch.float64


def _perturb(module, scale=0.3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(scale * noise)
    return module


def _jacobian_log_det(fn, x):
    """log|det| of the Jacobian of ``fn`` at one event ``x`` (any shape), by autograd."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v).reshape(-1), x)
    return torch.linalg.slogdet(jac.reshape(x.numel(), x.numel())).logabsdet


def _standard_normal(shape):
    return dist.Normal(torch.zeros(shape, dtype=F64), 1.0).to_event(len(shape))


# -- Squeeze -----------------------------------------------------------------------------------
def test_squeeze_moves_each_2x2_block_into_four_channels():
    x = torch.arange(2 * 4 * 6, dtype=F64).reshape(2, 4, 6)
    y = Squeeze((2, 4, 6))(x)
    assert y.shape == (8, 2, 3)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                torch.testing.assert_close(y[4 * c + 2 * i + j], x[c, i::2, j::2])


def test_squeeze_round_trip_log_det_and_shapes():
    squeeze = Squeeze((3, 4, 2))
    x = torch.randn(5, 7, 3, 4, 2)
    y, log_det = squeeze.forward_and_log_det(x)
    assert y.shape == (5, 7, 12, 2, 1) and log_det.shape == (5, 7)
    assert torch.all(log_det == 0)
    back, inverse_log_det = squeeze.inverse_and_log_det(y)
    assert torch.equal(back, x) and torch.all(inverse_log_det == 0)
    assert torch.equal(squeeze.inv(y.clone()), x)
    assert squeeze.forward_shape(x.shape) == y.shape
    assert squeeze.inverse_shape(y.shape) == x.shape
    assert squeeze.inv.forward_shape(y.shape) == x.shape
    assert squeeze.log_abs_det_jacobian(x, y).shape == (5, 7)


def test_squeeze_in_a_pyro_distribution():
    base = _standard_normal((2, 4, 4))
    model = dist.TransformedDistribution(base, [Squeeze((2, 4, 4))])
    assert model.event_shape == (8, 2, 2)
    draws = model.sample((3,))
    assert draws.shape == (3, 8, 2, 2)
    torch.testing.assert_close(
        model.log_prob(draws), base.log_prob(Squeeze((2, 4, 4)).inv(draws.clone()))
    )


def test_squeeze_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"even.*\(1, 3, 4\)"):
        Squeeze((1, 3, 4))
    with pytest.raises(ValueError, match=r"even.*\(2, 4, 5\)"):
        Squeeze((2, 4, 5))
    with pytest.raises(ValueError, match="event shape"):
        Squeeze((4, 4))
    squeeze = Squeeze((1, 4, 4))
    with pytest.raises(ValueError, match=r"\(4, 2, 2\).*\(3, 1, 4, 4\)"):
        squeeze.inverse_and_log_det(torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        squeeze(torch.zeros(3, 4, 2, 2))


# -- MultiScale with stand-in flows ------------------------------------------------------------
def _two_levels(context_dim=0):
    """(1, 4, 4) -> squeeze (4, 2, 2), keep 2 -> (2, 2, 2) -> squeeze (8, 1, 1), final level."""
    torch.manual_seed(0)
    final = MultiScale((2, 2, 2), steps=Spline((8, 1, 1), context_dim=context_dim))
    flow = MultiScale(
        (1, 4, 4),
        steps=ElementwiseAffine((4, 2, 2)),
        inner=final,
        outer_steps=Spline((1, 4, 4), context_dim=context_dim),
    )
    return _perturb(flow.double())


def test_multiscale_log_det_matches_autograd_and_round_trips():
    flow = _two_levels()
    z = torch.randn(4, 1, 4, 4, dtype=F64)
    x, log_det = flow.forward_and_log_det(z)
    assert x.shape == z.shape and log_det.shape == (4,)
    for k in range(4):
        expected = _jacobian_log_det(lambda v: flow.forward_and_log_det(v)[0], z[k])
        torch.testing.assert_close(log_det[k], expected, atol=1e-10, rtol=1e-10)
    back, inverse_log_det = flow.inverse_and_log_det(x)
    torch.testing.assert_close(back, z, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-10, rtol=1e-10)


def test_factored_channels_pass_later_levels_unchanged():
    # Only the inner flow acts: the factored half of the squeezed latent is the data's.
    inner = _perturb(ElementwiseAffine((2, 2, 2)).double())
    flow = MultiScale((1, 4, 4), inner=inner)
    z = torch.randn(3, 1, 4, 4, dtype=F64)
    x = flow(z)
    u, v = Squeeze((1, 4, 4))(z), Squeeze((1, 4, 4))(x)
    assert torch.equal(v[:, 2:], u[:, 2:])  # factored out: odd rows of z
    assert torch.equal(z[:, :, 1::2], x[:, :, 1::2])
    torch.testing.assert_close(v[:, :2], inner(u[:, :2]))
    # keep=1: only the first sub-pixel of each block goes deeper
    flow = MultiScale((1, 4, 4), inner=_perturb(ElementwiseAffine((1, 2, 2)).double()), keep=1)
    x = flow(z)
    assert torch.equal(Squeeze((1, 4, 4))(x)[:, 1:], u[:, 1:])


def test_multiscale_is_a_pyro_and_pyroflows_distribution():
    flow = _two_levels()
    base = _standard_normal((1, 4, 4))
    model = dist.TransformedDistribution(base, [flow])
    data = torch.randn(6, 1, 4, 4, dtype=F64)
    z, log_det = flow.inverse_and_log_det(data)
    torch.testing.assert_close(model.log_prob(data), base.log_prob(z) + log_det)
    draws = model.rsample((5,))
    assert draws.shape == (5, 1, 4, 4) and draws.requires_grad
    density = Flow(flow).double()
    torch.testing.assert_close(density.log_prob(data), model.log_prob(data))
    draws, log_prob = density.rsample_and_log_prob((7,))
    assert draws.shape == (7, 1, 4, 4)
    torch.testing.assert_close(log_prob, density.log_prob(draws), atol=1e-9, rtol=1e-9)
    assert density.sample((2,)).shape == (2, 1, 4, 4)


def test_multiscale_passes_the_context_to_its_conditional_parts():
    flow = _two_levels(context_dim=3)
    assert flow.context_dim == 3 and flow.is_conditional
    context = torch.randn(4, 3, dtype=F64)
    z = torch.randn(4, 1, 4, 4, dtype=F64)
    x, log_det = flow.forward_and_log_det(z, context)
    for k in range(4):
        expected = _jacobian_log_det(
            lambda v, c=context[k]: flow.forward_and_log_det(v, c)[0], z[k]
        )
        torch.testing.assert_close(log_det[k], expected, atol=1e-10, rtol=1e-10)
    other = flow.forward_and_log_det(z, torch.randn(4, 3, dtype=F64))[0]
    assert not torch.allclose(other, x)
    torch.testing.assert_close(flow.condition(context).inv(x.clone()), z)
    torch.testing.assert_close(flow.inv.condition(context)(x.clone()), z)
    base = _standard_normal((1, 4, 4))
    model = ConditionalTransformedDistribution(base, [flow]).condition(context)
    assert model.log_prob(x).shape == (4,)
    with pytest.raises(ValueError, match="needs a context"):
        flow(z)


def test_multiscale_errors():
    with pytest.raises(ValueError, match=r"even.*\(1, 4, 3\)"):
        MultiScale((1, 4, 3))
    with pytest.raises(ValueError, match=r"steps must have the event shape \(4, 2, 2\)"):
        MultiScale((1, 4, 4), steps=ElementwiseAffine((1, 4, 4)))
    with pytest.raises(ValueError, match=r"inner must have the event shape \(2, 2, 2\)"):
        MultiScale((1, 4, 4), inner=ElementwiseAffine((4, 2, 2)))
    with pytest.raises(ValueError, match=r"outer_steps must have the event shape \(1, 4, 4\)"):
        MultiScale((1, 4, 4), outer_steps=ElementwiseAffine((4, 2, 2)))
    with pytest.raises(ValueError, match="keep must be between 1 and 3"):
        MultiScale((1, 4, 4), keep=4)
    with pytest.raises(ValueError, match="one context_dim"):
        MultiScale(
            (1, 4, 4),
            steps=ElementwiseAffine((4, 2, 2), context_dim=2),
            inner=ElementwiseAffine((2, 2, 2), context_dim=3),
        )
    with pytest.raises(ValueError, match=r"event shape \(1, 4, 4\)"):
        MultiScale((1, 4, 4))(torch.zeros(2, 2, 4, 4))
