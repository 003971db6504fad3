"""Squeeze, multi-scale factor-out levels and the glow / realnvp_image builders (issue 16)."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.conditional import ConditionalTransformedDistribution

from pyroflows import Flow
from pyroflows.transforms import (
    ActNorm,
    ConvCoupling,
    ElementwiseAffine,
    FlowSequence,
    InvertibleConv1x1,
    MultiScale,
    Spline,
    Squeeze,
    build,
    glow,
    realnvp_image,
)

from ..helpers import jacobian_log_det, perturbed

F64 = torch.float64


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
def _two_levels(context_dim=0, channels=1):
    """(C, 4, 4) -> squeeze (4C, 2, 2), keep 2C -> (2C, 2, 2) -> squeeze (8C, 1, 1), final."""
    torch.manual_seed(0)
    c = channels
    final = MultiScale((2 * c, 2, 2), steps=Spline((8 * c, 1, 1), context_dim=context_dim))
    flow = MultiScale(
        (c, 4, 4),
        steps=ElementwiseAffine((4 * c, 2, 2)),
        inner=final,
        outer_steps=Spline((c, 4, 4), context_dim=context_dim),
    )
    return perturbed(flow.double(), 0.3, seed=1)


@pytest.mark.parametrize("channels", [1, 2])
def test_multiscale_log_det_matches_autograd_and_round_trips(channels):
    flow = _two_levels(channels=channels)
    z = torch.randn(4, channels, 4, 4, dtype=F64)
    x, log_det = flow.forward_and_log_det(z)
    assert x.shape == z.shape and log_det.shape == (4,)
    for k in range(4):
        expected = jacobian_log_det(lambda v: flow.forward_and_log_det(v)[0], z[k])
        torch.testing.assert_close(log_det[k], expected, atol=1e-10, rtol=1e-10)
    back, inverse_log_det = flow.inverse_and_log_det(x)
    torch.testing.assert_close(back, z, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-10, rtol=1e-10)


def test_factored_channels_pass_later_levels_unchanged():
    # Only the inner flow acts: the factored half of the squeezed latent is the data's.
    inner = perturbed(ElementwiseAffine((2, 2, 2)).double(), 0.3, seed=1)
    flow = MultiScale((1, 4, 4), inner=inner)
    z = torch.randn(3, 1, 4, 4, dtype=F64)
    x = flow(z)
    u, v = Squeeze((1, 4, 4))(z), Squeeze((1, 4, 4))(x)
    assert torch.equal(v[:, 2:], u[:, 2:])  # factored out: odd rows of z
    assert torch.equal(z[:, :, 1::2], x[:, :, 1::2])
    torch.testing.assert_close(v[:, :2], inner(u[:, :2]))
    # keep=1: only the first sub-pixel of each block goes deeper
    flow = MultiScale(
        (1, 4, 4), inner=perturbed(ElementwiseAffine((1, 2, 2)).double(), 0.3, seed=1), keep=1
    )
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
        expected = jacobian_log_det(lambda v, c=context[k]: flow.forward_and_log_det(v, c)[0], z[k])
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


# -- glow and realnvp_image ----------------------------------------------------------------------
def _small(name, shape, context_dim=0, **options):
    torch.manual_seed(0)
    defaults = {"levels": 2, "hidden_channels": 8, "num_blocks": 1}
    if name == "glow":
        defaults["steps_per_level"] = 2
    flow = build(name, shape, context_dim=context_dim, **{**defaults, **options}).double()
    with torch.no_grad():  # data-dependent ActNorm initialisation, then away from the identity
        context = torch.randn(64, context_dim, dtype=F64) if context_dim else None
        flow.inverse_and_log_det(torch.randn(64, *shape, dtype=F64) * 2 + 1, context)
    return perturbed(flow, 0.05, seed=1)


STACKS = [
    ("glow", (1, 4, 4), {"steps_per_level": 1}),
    ("glow", (2, 4, 4), {}),
    ("realnvp_image", (1, 4, 4), {}),
    ("realnvp_image", (2, 4, 4), {}),
    ("glow", (1, 4, 4), {"steps_per_level": 1, "coupling": "spline", "count_bins": 4}),
    ("realnvp_image", (1, 4, 4), {"coupling": "spline"}),
]


@pytest.mark.parametrize(("name", "shape", "options"), STACKS)
def test_stack_log_det_matches_autograd_and_round_trips(name, shape, options):
    flow = _small(name, shape, **options)
    z = torch.randn(3, *shape, dtype=F64)
    x, log_det = flow.forward_and_log_det(z)
    assert x.shape == z.shape and log_det.shape == (3,)
    assert not torch.allclose(x, z)
    for k in range(3):
        expected = jacobian_log_det(lambda v: flow.forward_and_log_det(v)[0], z[k])
        torch.testing.assert_close(log_det[k], expected, atol=1e-9, rtol=1e-9)
    back, inverse_log_det = flow.inverse_and_log_det(x.clone())
    torch.testing.assert_close(back, z, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-10, rtol=1e-10)


def test_glow_layout_levels_and_step_order():
    flow = glow((1, 8, 8), levels=3, steps_per_level=2, hidden_channels=8)
    shapes, level = [], flow
    while level is not None:
        shapes.append((level.event_shape, level.steps.event_shape))
        # data side first: ActNorm, 1x1 convolution, coupling; listed from the latent side
        kinds = [type(layer) for layer in level.steps.layers]
        assert kinds == [ConvCoupling, InvertibleConv1x1, ActNorm] * 2
        assert all(layer.mask_kind == "channel" for layer in level.steps.layers[::3])
        level = level.inner
    assert shapes == [
        ((1, 8, 8), (4, 4, 4)),
        ((2, 4, 4), (8, 2, 2)),
        ((4, 2, 2), (16, 1, 1)),
    ]


def test_realnvp_image_layout():
    flow = realnvp_image((1, 8, 8), levels=3, hidden_channels=8, num_blocks=1, actnorm=False)
    level = flow
    for shape in ((1, 8, 8), (2, 4, 4)):
        assert isinstance(level, MultiScale) and level.event_shape == shape
        assert [layer.mask_kind for layer in level.outer_steps.layers] == ["checkerboard"] * 3
        assert [layer.flip for layer in level.outer_steps.layers] == [False, True, False][::-1]
        assert [layer.mask_kind for layer in level.steps.layers] == ["channel"] * 3
        level = level.inner
    assert isinstance(level, FlowSequence) and level.event_shape == (4, 2, 2)
    assert [layer.mask_kind for layer in level.layers] == ["checkerboard"] * 4
    single = realnvp_image((1, 3, 5), levels=1, hidden_channels=8)
    assert isinstance(single, FlowSequence) and len(single) == 8  # 4 couplings, 4 ActNorms


def test_actnorm_initialises_on_the_data_through_the_inverse():
    flow = glow((1, 4, 4), levels=1, steps_per_level=1, hidden_channels=8)
    data = 3.0 + 2.0 * torch.randn(256, 1, 4, 4)
    base = dist.Normal(torch.zeros(1, 4, 4), 1.0).to_event(3)
    dist.TransformedDistribution(base, [flow]).log_prob(data)
    actnorm = flow.steps.layers[-1]  # the data side
    assert actnorm.initialized
    standardised = actnorm.inv(Squeeze((1, 4, 4))(data))
    torch.testing.assert_close(standardised.mean((0, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)


def test_flow_build_glow_on_images():
    torch.manual_seed(0)
    model = Flow.build("glow", (1, 8, 8), steps_per_level=2, hidden_channels=8)
    assert model.event_shape == (1, 8, 8)
    data = torch.rand(16, 1, 8, 8)
    log_prob = model.log_prob(data)
    assert log_prob.shape == (16,) and torch.isfinite(log_prob).all()
    log_prob.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    draws = model.sample((4,))
    assert draws.shape == (4, 1, 8, 8) and torch.isfinite(draws).all()
    draws, draw_log_prob = model.rsample_and_log_prob((3,))
    torch.testing.assert_close(draw_log_prob, model.log_prob(draws), atol=1e-4, rtol=1e-4)
    assert model.config["options"]["levels"] == 2


@pytest.mark.parametrize("name", ["glow", "realnvp_image"])
def test_conditional_stacks_read_the_context(name):
    flow = _small(name, (1, 4, 4), context_dim=3)
    labels = torch.eye(3, dtype=F64)
    z = torch.randn(3, 1, 4, 4, dtype=F64)
    x, log_det = flow.forward_and_log_det(z, labels)
    expected = jacobian_log_det(lambda v: flow.forward_and_log_det(v, labels[1])[0], z[1])
    torch.testing.assert_close(log_det[1], expected, atol=1e-9, rtol=1e-9)
    moved = flow.forward_and_log_det(z, labels.roll(1, 0))[0]
    assert not torch.allclose(moved, x)
    model = ConditionalTransformedDistribution(_standard_normal((1, 4, 4)), [flow])
    torch.testing.assert_close(
        model.condition(labels).log_prob(x),
        _standard_normal((1, 4, 4)).log_prob(z) - log_det,
        atol=1e-9,
        rtol=1e-9,
    )


def test_stack_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"multiples of 4.*\(1, 6, 8\)"):
        glow((1, 6, 8), levels=2)
    with pytest.raises(ValueError, match=r"multiples of 2.*\(1, 3, 4\)"):
        realnvp_image((1, 3, 4), levels=2)
    with pytest.raises(ValueError, match="levels must be at least 1"):
        glow((1, 4, 4), levels=0)
    with pytest.raises(ValueError, match="'affine', 'additive' or 'spline', got 'cubic'"):
        realnvp_image((1, 4, 4), coupling="cubic")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        glow((16,))
    with pytest.raises(ValueError, match="rank"):
        build("glow", 16)


def test_additive_glow_preserves_volume_at_the_couplings():
    flow = _small("glow", (1, 4, 4), coupling="additive")
    couplings = [m for m in flow.modules() if isinstance(m, ConvCoupling)]
    z = torch.randn(2, 4, 2, 2, dtype=F64)
    assert torch.all(couplings[0].forward_and_log_det(z)[1] == 0)


def test_flow_recipe_and_weights_rebuild_a_conditional_glow():
    torch.manual_seed(0)
    model = Flow.build("glow", (1, 8, 8), 3, steps_per_level=1, hidden_channels=8)
    labels = torch.eye(3)[torch.tensor([0, 1, 2, 1])]
    data = torch.rand(4, 1, 8, 8)
    model.log_prob(data, labels)  # ActNorm's data-dependent initialisation
    perturbed(model, 0.05, seed=1)
    fresh = Flow.from_config(model.config)
    fresh.load_state_dict(model.state_dict())
    expected = model.log_prob(data, labels)
    assert expected.shape == (4,) and torch.isfinite(expected).all()
    torch.testing.assert_close(fresh.log_prob(data, labels), expected)
    moved = fresh.log_prob(data, labels.roll(1, 0))
    assert not torch.allclose(moved, expected)
    draws, log_prob = fresh.rsample_and_log_prob((), labels)
    assert draws.shape == (4, 1, 8, 8) and torch.isfinite(draws).all()
    torch.testing.assert_close(log_prob, fresh.log_prob(draws, labels), atol=1e-3, rtol=1e-4)
