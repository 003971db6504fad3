"""Image layers: ActNorm per channel, the invertible 1x1 convolution, convolutional couplings.

The contract (round trips, log-det against the autograd Jacobian, shapes, persistence, ...) is
checked on every registry entry by test_conformance.py; these tests check what is particular
to the image layers.
"""

from __future__ import annotations

import io

import pytest
import torch

from pyroflows.nn import ConvResNet
from pyroflows.transforms import (
    ActNorm,
    Additive,
    Affine,
    ConvCoupling,
    InvertibleConv1x1,
    RationalQuadraticSpline,
    build,
)

from ..helpers import jacobian_log_det, perturbed

F64 = torch.float64


# -- ActNorm on images --------------------------------------------------------------------------
@pytest.mark.parametrize("side", ["input", "output"])
def test_actnorm_image_init_standardises_each_channel(side):
    torch.manual_seed(0)
    loc = torch.tensor([3.0, -1.0, 0.0])[:, None, None]
    scale = torch.tensor([2.0, 0.1, 5.0])[:, None, None]
    data = loc + scale * torch.randn(200, 3, 4, 5)
    data[7, 1, 2, 3] = float("nan")  # ignored by the statistics
    flow = ActNorm((3, 4, 5))
    out = flow(data) if side == "input" else flow.inv(data)
    assert flow.params.shift.shape == flow.params.log_scale.shape == (3, 1, 1)
    per_channel = out.detach().transpose(0, 1).reshape(3, -1)
    finite = torch.isfinite(per_channel)
    for c in range(3):
        values = per_channel[c][finite[c]]
        assert abs(float(values.mean())) < 1e-5
        assert float(values.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    assert finite.sum() == per_channel.numel() - 1  # the NaN stays in its element only


def test_actnorm_image_log_det_is_pixels_times_the_channel_log_scales():
    flow = ActNorm((3, 4, 5)).double()
    flow.initialized = True  # keep the parameters set below
    with torch.no_grad():
        flow.params.log_scale.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=F64)[:, None, None])
        flow.params.shift.copy_(torch.tensor([1.0, 2.0, 3.0], dtype=F64)[:, None, None])
    x = torch.randn(2, 6, 3, 4, 5, dtype=F64)
    y, log_det = flow.forward_and_log_det(x)
    assert log_det.shape == (2, 6)
    torch.testing.assert_close(log_det, torch.full((2, 6), 20 * 1.5, dtype=F64))
    expected = jacobian_log_det(flow.with_cache(0), x[0, 0])
    torch.testing.assert_close(log_det[0, 0], expected)
    torch.testing.assert_close(y[0, 0, 2], 3.0 + x[0, 0, 2] * torch.tensor(2.0, dtype=F64).exp())


def test_actnorm_vectors_keep_their_state_dict_and_image_state_round_trips():
    vector = ActNorm(4)
    assert set(vector.state_dict()) == {"params.shift", "params.log_scale", "_extra_state"}
    assert vector.params.shift.shape == (4,)
    image = ActNorm((2, 3, 3))
    image.inv(torch.randn(10, 2, 3, 3) * 3 + 1)
    buffer = io.BytesIO()
    torch.save(image.state_dict(), buffer)
    buffer.seek(0)
    restored = ActNorm((2, 3, 3))
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.initialized
    probe = torch.randn(5, 2, 3, 3) * 100  # would move the parameters if it initialised them
    torch.testing.assert_close(restored.inv(probe), image.inv(probe))


def test_actnorm_refuses_other_ranks_and_wrong_images():
    with pytest.raises(ValueError, match=r"vectors \(D,\) or images \(C, H, W\).*\(2, 4\)"):
        ActNorm((2, 4))
    flow = ActNorm((3, 4, 4))
    with pytest.raises(ValueError, match=r"event shape \(3, 4, 4\).*got shape \(5, 2, 4, 4\)"):
        flow(torch.randn(5, 2, 4, 4))
    assert build("actnorm", (3, 4, 4)).params.shift.shape == (3, 1, 1)


# -- the invertible 1x1 convolution -----------------------------------------------------------
def test_conv1x1_log_det_is_pixels_times_log_abs_det_w():
    torch.manual_seed(0)
    flow = perturbed(InvertibleConv1x1((4, 3, 5)), 0.3).double()
    x = torch.randn(7, 4, 3, 5, dtype=F64)
    y, log_det = flow.forward_and_log_det(x)
    expected = 15 * torch.linalg.slogdet(flow.matrix()).logabsdet
    torch.testing.assert_close(log_det, expected.expand(7))
    torch.testing.assert_close(log_det[0], jacobian_log_det(flow.with_cache(0), x[0]))
    # each pixel's channel vector is multiplied by W
    torch.testing.assert_close(y[3, :, 1, 2], flow.matrix() @ x[3, :, 1, 2])
    eye = torch.eye(4, dtype=F64)
    torch.testing.assert_close(flow.inverse_matrix() @ flow.matrix(), eye)
    x_back, inverse_log_det = flow.inverse_and_log_det(y.clone())
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_det, -log_det)


def test_conv1x1_starts_as_a_rotation_drawn_from_the_global_rng():
    torch.manual_seed(5)
    first = InvertibleConv1x1((3, 2, 2)).double()
    torch.manual_seed(5)
    again = InvertibleConv1x1((3, 2, 2)).double()
    other = InvertibleConv1x1((3, 2, 2)).double()
    w = first.matrix()
    torch.testing.assert_close(w @ w.T, torch.eye(3, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(again.matrix(), w)
    assert not torch.allclose(other.matrix(), w)
    assert float(first.log_diag.detach().sum().abs()) < 1e-6  # |det| = 1 at the start


def test_conv1x1_refuses_non_images():
    with pytest.raises(ValueError, match=r"InvertibleConv1x1 takes images .*\(C, H, W\); got 3"):
        InvertibleConv1x1(3)
    flow = InvertibleConv1x1((3, 4, 4))
    with pytest.raises(ValueError, match=r"event shape \(3, 4, 4\).*got shape \(2, 4, 4, 4\)"):
        flow(torch.randn(2, 4, 4, 4))
    with pytest.raises(ValueError, match="takes events of rank"):
        build("conv1x1", 3)


# -- convolutional couplings -------------------------------------------------------------------
TRANSFORMERS = [Affine(), Additive(), RationalQuadraticSpline(count_bins=4)]
MASKS = [("checkerboard", False), ("checkerboard", True), ("channel", False), ("channel", True)]


@pytest.mark.parametrize("mask,flip", MASKS)
@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=repr)
def test_conv_coupling_starts_at_the_identity(mask, flip, transformer):
    torch.manual_seed(0)
    flow = ConvCoupling((3, 4, 4), 8, transformer, mask, flip, num_blocks=1)
    x = torch.randn(5, 3, 4, 4)
    y, log_det = flow.forward_and_log_det(x)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros(5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask,flip", MASKS)
@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=repr)
def test_conv_coupling_passes_one_part_through_and_matches_its_jacobian(mask, flip, transformer):
    torch.manual_seed(0)
    flow = perturbed(ConvCoupling((3, 4, 4), 8, transformer, mask, flip, num_blocks=1), 0.2)
    flow = flow.double()
    x = torch.randn(4, 3, 4, 4, dtype=F64)
    y, log_det = flow.forward_and_log_det(x)
    passed = flow.mask.expand_as(x)
    if mask == "checkerboard":  # (h + w) even pixels pass (odd when flipped), every channel
        parity = (torch.arange(4)[:, None] + torch.arange(4)) % 2 == (1 if flip else 0)
        assert torch.equal(flow.mask, parity.expand(3, 4, 4))
    else:  # the first C // 2 = 1 channel passes (the last two when flipped)
        assert flow.mask[:, 0, 0].tolist() == (
            [False, True, True] if flip else [True, False, False]
        )
    assert torch.equal(y[passed], x[passed])
    assert (y[~passed] - x[~passed]).abs().max() > 1e-3  # the other part did change
    torch.testing.assert_close(log_det[1], jacobian_log_det(flow.with_cache(0), x[1]))
    torch.testing.assert_close(flow.inv(y.clone()), x)


@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_conditional_conv_coupling_depends_on_the_context(mask):
    torch.manual_seed(0)
    flow = perturbed(ConvCoupling((2, 4, 4), 8, mask=mask, context_dim=3, num_blocks=1), 0.2)
    x = torch.randn(3, 2, 4, 4).expand(2, 3, 2, 4, 4)
    labels = torch.eye(3)[torch.tensor([[0, 1, 2], [2, 2, 0]])]  # one-hot, batch (2, 3)
    y, log_det = flow.forward_and_log_det(x, labels)
    assert y.shape == x.shape and log_det.shape == (2, 3)
    passed = flow.mask.expand_as(y[0, 0])
    assert torch.equal(y[0, 2][passed], x[0, 2][passed])
    # the same image under labels 2 and 0 (column 2), and under 1 and 2 (column 1): different
    for column in (1, 2):
        changed = (y[0, column] - y[1, column])[~passed].abs().max()
        assert changed > 1e-3, f"the label did not change the output (column {column})"
    torch.testing.assert_close(y[0, 0], flow.condition(labels[0, 0])(x[0, 0]))  # same label
    torch.testing.assert_close(flow.condition(labels).inv(y.clone()), x, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs a context"):
        flow(x)


def test_conv_coupling_errors_are_clear():
    with pytest.raises(ValueError, match=r"checkerboard mask needs .*H \* W >= 2.*\(2, 1, 1\)"):
        ConvCoupling((2, 1, 1))
    with pytest.raises(ValueError, match=r"channel mask needs .*C >= 2.*\(1, 4, 4\)"):
        ConvCoupling((1, 4, 4), mask="channel")
    with pytest.raises(ValueError, match="mask must be 'checkerboard' or 'channel', got 'half'"):
        ConvCoupling((2, 4, 4), mask="half")
    with pytest.raises(ValueError, match=r"ConvCoupling takes images .*got 8"):
        ConvCoupling(8)
    flow = ConvCoupling((2, 4, 4), 8)
    with pytest.raises(ValueError, match=r"event shape \(2, 4, 4\).*got shape \(5, 3, 4, 4\)"):
        flow(torch.randn(5, 3, 4, 4))
    ConvCoupling((2, 1, 2))  # two pixels of one row: a checkerboard works
    ConvCoupling((2, 1, 1), mask="channel")  # one pixel, two channels: a channel mask works


def test_registry_builds_the_couplings_with_their_masks():
    affine = build("conv_affine_coupling", (2, 4, 4), mask="channel", flip=True, hidden_channels=8)
    additive = build("conv_additive_coupling", (2, 4, 4), context_dim=2, num_blocks=0)
    assert isinstance(affine.transformer, Affine) and affine.mask_kind == "channel" and affine.flip
    assert isinstance(additive.transformer, Additive) and additive.context_dim == 2
    x = torch.randn(3, 2, 4, 4)
    _, log_det = perturbed(additive, 0.1).forward_and_log_det(x, torch.randn(3, 2))
    torch.testing.assert_close(log_det, torch.zeros(3))  # volume preserving


# -- the conditioner --------------------------------------------------------------------------
def test_conv_resnet_shapes_errors_and_sample_independence():
    torch.manual_seed(0)
    for norm in (None, "group", "batch"):
        net = ConvResNet(3, 5, hidden_channels=8, num_blocks=2, norm=norm)
        assert net(torch.randn(2, 4, 3, 6, 7)).shape == (2, 4, 5, 6, 7)
        assert net(torch.randn(3, 6, 7)).shape == (5, 6, 7)
    net = ConvResNet(3, 5, hidden_channels=8, norm="group")
    x = torch.randn(4, 3, 5, 5)
    moved = x.clone()
    moved[2] = 100.0
    torch.testing.assert_close(net(moved)[[0, 1, 3]], net(x)[[0, 1, 3]])
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\); got shape \(2, 4, 5, 5\)"):
        net(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer, got 2"):
        ConvResNet(3, 5, kernel_size=2)
    with pytest.raises(ValueError, match="block_kernel_size must be a positive odd integer"):
        ConvResNet(3, 5, block_kernel_size=4)
    glow_like = ConvResNet(3, 5, hidden_channels=8, num_blocks=1, block_kernel_size=1)
    assert glow_like.blocks[0].net[2].weight.shape == (8, 8, 1, 1)
    assert glow_like.input_layer.weight.shape == (8, 3, 3, 3)
    with pytest.raises(ValueError, match="norm must be None, 'group' or 'batch', got 'layer'"):
        ConvResNet(3, 5, norm="layer")
    with pytest.raises(ValueError, match="hidden_channels must be a positive integer"):
        ConvResNet(3, 5, hidden_channels=0)


# -- image contexts ---------------------------------------------------------------------------
@pytest.mark.parametrize("mask", ["checkerboard", "channel"])
def test_image_context_is_read_as_planes_and_keeps_the_contract(mask):
    """A context image of shape (C_c, H, W) = (2, 8, 8), passed flattened (context_dim 128)."""
    torch.manual_seed(0)
    flow = ConvCoupling((2, 8, 8), 8, mask=mask, context_dim=128, image_context=True, num_blocks=1)
    flow = perturbed(flow, 0.2).double()
    x = torch.randn(5, 2, 8, 8, dtype=F64)
    context = torch.randn(5, 2, 8, 8, dtype=F64)
    t = flow.condition(context.flatten(-3))
    y = t(x)
    log_det = t.log_abs_det_jacobian(x, y)
    torch.testing.assert_close(t.inv(y.clone()), x)
    sample = flow.condition(context[2].flatten()).with_cache(0)
    torch.testing.assert_close(log_det[2], jacobian_log_det(sample, x[2]))
    torch.testing.assert_close(flow.inv.condition(context.flatten(-3))(y), t.inv(y))
    # a change of the context image at one pixel changes the output near that pixel only
    moved = context.clone()
    moved[:, :, 0, 0] += 3.0
    changed = (flow.condition(moved.flatten(-3))(x) - y).abs().amax(dim=(0, 1))
    # three 3x3 convolutions (in, block, out) reach 3 pixels away, and no further
    assert changed[0, :2].max() > 1e-3 and changed[4:, 4:].max() == 0
    # the context broadcasts: one context image for a batch of inputs
    torch.testing.assert_close(flow.condition(context[0].flatten())(x)[0], y[0])


def test_image_context_size_must_be_whole_planes():
    with pytest.raises(ValueError, match=r"multiple of H \* W = 16, got 10"):
        ConvCoupling((2, 4, 4), context_dim=10, image_context=True)
    with pytest.raises(ValueError, match=r"multiple of H \* W = 16, got 0"):
        ConvCoupling((2, 4, 4), image_context=True)


def test_batch_normalised_conditioner_is_a_bijection_in_eval_mode():
    torch.manual_seed(0)
    flow = perturbed(ConvCoupling((2, 4, 4), 8, norm="batch"), 0.2)
    flow(torch.randn(64, 2, 4, 4))  # training mode: updates the running statistics
    flow.eval()
    x = torch.randn(3, 2, 4, 4)
    y, log_det = flow.forward_and_log_det(x)
    x_back, inverse_log_det = flow.inverse_and_log_det(y.clone())
    torch.testing.assert_close(x_back, x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inverse_log_det, -log_det, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flow.forward_and_log_det(x[:1])[0], y[:1])  # batch independent


# -- the three layers together: a Glow step as a Pyro distribution ---------------------------
def test_a_glow_step_is_a_conditional_pyro_distribution_over_images():
    import pyro.distributions as dist
    from pyro.distributions.conditional import ConditionalTransformedDistribution

    from pyroflows.transforms import FlowSequence

    torch.manual_seed(0)
    shape = (4, 4, 4)
    step = FlowSequence(
        [
            ActNorm(shape),
            InvertibleConv1x1(shape),
            ConvCoupling(shape, 8, mask="channel", num_blocks=1, context_dim=3),
            ConvCoupling(shape, 8, Additive(), flip=True, num_blocks=1, context_dim=3),
        ]
    ).double()
    perturbed(step, 0.1)
    base = dist.Normal(torch.zeros(shape, dtype=F64), 1.0).to_event(3)
    model = ConditionalTransformedDistribution(base, [step])  # base -> data; density by .inv
    labels = torch.eye(3, dtype=F64)[torch.tensor([0, 1, 2, 1, 0])]
    data = torch.randn(5, *shape, dtype=F64) * 2 + 1
    log_prob = model.condition(labels).log_prob(data)  # ActNorm initialises on these data
    assert log_prob.shape == (5,) and torch.isfinite(log_prob).all()
    assert step.layers[0].initialized
    z, log_det = step.inverse_and_log_det(data, labels)
    torch.testing.assert_close(log_prob, base.log_prob(z) + log_det)
    draws = model.condition(labels).rsample()
    assert draws.shape == (5, *shape)
    torch.testing.assert_close(step.forward_and_log_det(z, labels)[0], data)
