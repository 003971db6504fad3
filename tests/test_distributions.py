"""The Flow density model: log-density, sampling, standardisation, devices, rebuilding."""

from __future__ import annotations

import io
from pathlib import Path

import pyro
import pytest
import torch
from torch.distributions import ExpTransform

from pyroflows.checkpoint import load_checkpoint, load_model
from pyroflows.distributions import Flow, FlowDistribution
from pyroflows.transforms import InverseFlow, LogitTransform

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


# -- the one distribution, and checkpoints of earlier versions ------------------------------------
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name", ["logit", "conditional"])
def test_checkpoints_written_before_the_flow_distribution_load_and_score_the_same(name):
    """``model.pt`` files written by main at 082736b (``Flow`` with its own log-density code;
    tests/fixtures/make_flow_checkpoints.py) load strictly and give the log-densities that
    version computed, to float64 rounding (the terms are now summed in another order)."""
    payload = load_checkpoint(FIXTURES / f"flow_{name}_082736b.pt")
    expected = load_checkpoint(FIXTURES / f"flow_{name}_082736b_expected.pt")
    assert {"base_loc", "base_scale", "data_loc", "data_scale"} <= set(payload["model"])
    model = Flow.from_config(payload["config"]).double()
    model.load_state_dict(payload["model"], strict=True)
    log_prob = model.log_prob(expected["x"], expected.get("context"))
    torch.testing.assert_close(log_prob, expected["log_prob"], rtol=1e-13, atol=1e-13)
    # the checkpoint loader (float32 model) reads the same files
    single = load_model(FIXTURES / f"flow_{name}_082736b.pt")
    context = expected.get("context")
    log_prob32 = single.log_prob(
        expected["x"].float(), None if context is None else context.float()
    )
    torch.testing.assert_close(log_prob32.double(), expected["log_prob"], rtol=1e-5, atol=1e-4)
    assert set(model.state_dict()) == set(payload["model"])  # and new files keep the keys


def test_distribution_chain_is_flow_standardisation_logit(model):
    q = model.distribution()
    assert isinstance(q, FlowDistribution) and q.flow is model.flow
    assert q.loc is model.data_loc and q.scale is model.data_scale and q.transforms == ()
    logit_model = Flow.build("realnvp", 2, num_layers=2, logit_alpha=0.05)
    (last,) = logit_model.distribution().transforms
    assert isinstance(last, InverseFlow) and isinstance(last.inv, LogitTransform)
    assert last.inv.alpha == 0.05
    assert logit_model.distribution().support.check(torch.tensor([0.0, 1.0])).all()


def test_sampling_a_logit_model_is_one_forward_pass_of_each_map(monkeypatch):
    model = Flow.build("realnvp", 2, num_layers=2, logit_alpha=0.05)
    calls = []
    for name, module in (("flow", model.flow), ("logit", model.logit)):
        for hook in ("_forward_pass", "_inverse_pass"):
            original = getattr(module, hook)

            def counted(*args, _original=original, _key=(name, hook)):
                calls.append(_key)
                return _original(*args)

            monkeypatch.setattr(module, hook, counted)
    q = model.distribution()
    x = q.rsample((3,))
    log_prob = q.log_prob(x)  # the draw's own pass
    assert sorted(calls) == [("flow", "_forward_pass"), ("logit", "_inverse_pass")]
    assert log_prob.shape == (3,)
    calls.clear()
    model.log_prob(x.detach().clone())  # scoring data: one inverse pass of each map
    assert sorted(calls) == [("flow", "_inverse_pass"), ("logit", "_forward_pass")]


def test_flow_takes_image_shaped_events():
    torch.manual_seed(0)
    model = _perturbed(Flow.build("spline", (2, 3, 3), logit_alpha=0.05).double(), 0.1)
    assert model.event_shape == (2, 3, 3) and model.input_dim == 18
    assert model.config["input_dim"] == [2, 3, 3]
    assert model.data_loc.shape == (2, 3, 3)
    data = torch.rand(50, 2, 3, 3, dtype=F64) * 0.8 + 0.1
    model.standardize_with(data)
    x, log_prob = model.rsample_and_log_prob((4,))
    assert x.shape == (4, 2, 3, 3) and log_prob.shape == (4,)
    torch.testing.assert_close(log_prob, model.log_prob(x.detach().clone()))
    rebuilt = Flow.from_config(model.config).double()
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.log_prob(data[:3]), model.log_prob(data[:3]))
    with pytest.raises(ValueError, match=r"event shape \(2, 3, 3\)"):
        model.log_prob(torch.rand(4, 18, dtype=F64))
    with pytest.raises(ValueError, match=r"shape \(N >= 2, 2, 3, 3\)"):
        model.standardize_with(torch.rand(5, 18))


def test_flow_distribution_checks_its_transforms_and_expands():
    flow = Flow.build("realnvp", 2, num_layers=1).flow
    with pytest.raises(TypeError, match="unconditional pyroflows flows"):
        FlowDistribution(flow, torch.zeros(2), torch.ones(2), transforms=[ExpTransform()])
    with pytest.raises(ValueError, match="event shape"):
        FlowDistribution(flow, torch.zeros(2), torch.ones(2), transforms=[LogitTransform(3)])
    q = FlowDistribution(flow, torch.zeros(2), torch.ones(2), transforms=[LogitTransform(2).inv])
    expanded = q.expand((4,))
    assert expanded.batch_shape == (4,) and expanded.transforms == q.transforms
    x, log_prob = expanded.rsample_and_log_prob((3,))
    assert x.shape == (3, 4, 2) and log_prob.shape == (3, 4)
    torch.testing.assert_close(expanded.log_prob(x.clone()), log_prob, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot expand"):
        expanded.expand((3,))


def test_fixed_maps_are_not_models():
    with pytest.raises(ValueError, match="fixed preprocessing map"):
        Flow.build("logit", 2)


def test_flow_build_rejects_an_unknown_option_before_the_config_is_checked():
    """Issue 12: even a non-JSON value of a misspelt option names the option first."""
    with pytest.raises(TypeError, match=r"unknown option 'hidden_dim'.*'hidden_dims'"):
        Flow.build("maf", 2, hidden_dim=object())
