"""The Flow density model: log-density, sampling, standardisation, devices, rebuilding."""

from __future__ import annotations

import io

import pyro
import pytest
import torch

from pyroflows.distributions import Flow

F64 = torch.float64


def _perturbed(model: Flow, scale: float = 0.3) -> Flow:
    with torch.no_grad():
        for param in model.parameters():
            param.add_(scale * torch.randn_like(param))
    return model


@pytest.fixture
def model() -> Flow:
    torch.manual_seed(0)
    model = Flow.build("maf", 2, num_layers=2, hidden_dims=[16]).double()
    _perturbed(model)
    data = torch.randn(200, 2, dtype=F64) * torch.tensor([3.0, 0.5], dtype=F64) + 2.0
    model.standardize_with(data)
    return model


def test_log_prob_matches_pyro_transformed_distribution(model):
    x = torch.randn(7, 2, dtype=F64)
    torch.testing.assert_close(model.log_prob(x), model.distribution().log_prob(x))


def test_standardisation_is_an_affine_change_of_variables(model):
    x = torch.randn(7, 2, dtype=F64)
    u = (x - model.data_loc) / model.data_scale
    unstandardised = Flow(model.flow).double()
    expected = unstandardised.log_prob(u) - model.data_scale.log().sum()
    torch.testing.assert_close(model.log_prob(x), expected)
    assert torch.allclose(model.data_scale, torch.tensor([3.0, 0.5], dtype=F64), rtol=0.2)


def test_density_integrates_to_one(model):
    # Midpoint rule on the box mean +- 8 standard deviations, 300 x 300 cells.
    cells = 300
    axes = []
    for loc, scale in zip(model.data_loc.tolist(), model.data_scale.tolist(), strict=True):
        width = 16 * scale / cells
        axes.append((loc - 8 * scale + width * (torch.arange(cells, dtype=F64) + 0.5), width))
    grid = torch.cartesian_prod(axes[0][0], axes[1][0])
    with torch.no_grad():
        mass = model.log_prob(grid).exp().sum() * axes[0][1] * axes[1][1]
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_rsample_and_log_prob_agree_with_log_prob(model):
    x, log_prob = model.rsample_and_log_prob((6,))
    assert x.shape == (6, 2) and log_prob.shape == (6,)
    torch.testing.assert_close(log_prob, model.log_prob(x.detach().clone()))
    log_prob.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_sample_statistics_follow_the_standardisation(model):
    model = Flow.build("maf", 2, num_layers=1, hidden_dims=[8]).double()  # the identity
    model.standardize_with(torch.tensor([[0.0, 10.0], [2.0, 14.0]], dtype=F64))
    samples = model.sample((20000,))
    assert not samples.requires_grad
    torch.testing.assert_close(samples.mean(0), model.data_loc, atol=0.1, rtol=0)
    torch.testing.assert_close(samples.std(0), model.data_scale, atol=0.1, rtol=0.05)


def test_buffers_move_with_the_module(model):
    names = {name for name, _ in model.named_buffers()}
    assert {"base_loc", "base_scale", "data_loc", "data_scale"} <= names
    meta = Flow.build("realnvp", 3, num_layers=2).to("meta")
    assert all(t.device.type == "meta" for t in [*meta.parameters(), *meta.buffers()])
    assert meta.log_prob(torch.zeros(4, 3, device="meta")).device.type == "meta"
    single = model.float()
    assert single.log_prob(torch.zeros(3, 2)).dtype == torch.float32


def test_rebuilt_from_config_and_weights_gives_the_same_density(model):
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = Flow.from_config(model.config).double()
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(5, 2, dtype=F64)
    torch.testing.assert_close(rebuilt.log_prob(x), model.log_prob(x), rtol=0, atol=0)


def test_conditional_model_shapes_and_context_errors():
    model = Flow.build("realnvp", 3, context_dim=2, num_layers=2)
    context = torch.randn(4, 2)
    assert model.log_prob(torch.randn(4, 3), context).shape == (4,)
    assert model.sample((), context).shape == (4, 3)
    assert model.sample((5,), context).shape == (5, 4, 3)
    x, log_prob = model.rsample_and_log_prob((5,), context)
    assert x.shape == (5, 4, 3) and log_prob.shape == (5, 4)
    with pytest.raises(ValueError, match="conditional"):
        model.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match="not conditional"):
        Flow.build("planar", 3).log_prob(torch.randn(4, 3), context)


def test_bad_inputs_give_clear_errors():
    model = Flow.build("planar", 3)
    with pytest.raises(ValueError, match="event size 3"):
        model.log_prob(torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"constant column\(s\) \[1\]"):
        model.standardize_with(torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 3.0]]))
    with pytest.raises(ValueError, match="NaN"):
        model.standardize_with(torch.tensor([[0.0, 1.0, 2.0], [1.0, float("nan"), 3.0]]))
    with pytest.raises(ValueError, match=r"shape \(N >= 2, 3\)"):
        model.standardize_with(torch.randn(5, 4))
    with pytest.raises(KeyError, match="no flow named"):
        Flow.build("nope", 3)
    with pytest.raises(TypeError, match="JSON"):
        Flow.build("maf", 3, hidden_dims=torch.tensor([8]))
    with pytest.raises(TypeError, match="pyroflows flow"):
        Flow(torch.distributions.transforms.ExpTransform())


def test_logit_preprocessing_models_data_in_the_unit_interval():
    torch.manual_seed(0)
    model = _perturbed(Flow.build("realnvp", 2, num_layers=2, logit_alpha=0.05).double())
    data = torch.rand(300, 2, dtype=F64) * torch.tensor([0.5, 1.0], dtype=F64)
    model.standardize_with(data)
    x = torch.rand(6, 2, dtype=F64) * 0.9 + 0.05
    torch.testing.assert_close(model.log_prob(x), model.distribution().log_prob(x))
    # The density's mass on an inner box (midpoint rule) equals the share of samples there;
    # samples stay in the support (-a, 1 - a) / (1 - 2a) of each coordinate.
    low, high, cells = 0.2, 0.8, 300
    width = (high - low) / cells
    axis = low + width * (torch.arange(cells, dtype=F64) + 0.5)
    with torch.no_grad():
        mass = model.log_prob(torch.cartesian_prod(axis, axis)).exp().sum() * width**2
    samples = model.sample((200_000,))
    share = ((samples > low) & (samples < high)).all(-1).double().mean()
    assert 0.05 < float(share) < 0.95
    assert float(mass) == pytest.approx(float(share), abs=0.01)
    assert samples.min() >= -0.05 / 0.9 - 1e-12 and samples.max() <= 0.95 / 0.9 + 1e-12
    x_new, log_prob = model.rsample_and_log_prob((5,))
    torch.testing.assert_close(log_prob, model.log_prob(x_new.detach().clone()))
    rebuilt = Flow.from_config(model.config).double()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"rows \[1\] have values outside"):
        model.log_prob(torch.tensor([[0.5, 0.5], [1.2, 0.2]], dtype=F64))
    with pyro.validation_enabled(False):  # the range check (a host read) is validation's
        assert model.log_prob(torch.tensor([[0.5, 0.5], [1.2, 0.2]], dtype=F64)).shape == (2,)
    with pytest.raises(ValueError, match="logit_alpha"):
        Flow.build("maf", 2, logit_alpha=0.7)
