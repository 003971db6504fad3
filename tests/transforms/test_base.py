"""The shared flow machinery (``transforms/_base.py``): conditioning, caching, Pyro interop."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch

from pyroflows.transforms import Radial, build


# -- conditioning ----------------------------------------------------------------------------------
def test_conditioned_flow_shares_parameters_and_follows_the_context(device, dtype):
    torch.manual_seed(0)
    flow = Radial(3, context_dim=2).to(device, dtype)
    c1, c2 = torch.zeros(2, device=device, dtype=dtype), torch.ones(2, device=device, dtype=dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3, device=device, dtype=dtype)
    assert not torch.allclose(flow.condition(c1)(x), flow.condition(c2)(x))
    assert set(flow.condition(c1).parameters()) == set(flow.parameters())


def test_conditional_flow_in_pyro_conditional_distribution_trains(device, dtype):
    like = {"device": device, "dtype": dtype}
    torch.manual_seed(0)
    flow = build("planar", 2, context_dim=1).to(**like)
    base = dist.Normal(torch.zeros(2, **like), torch.ones(2, **like)).to_event(1)
    model = dist.ConditionalTransformedDistribution(base, [flow])
    context = torch.randn(256, 1, **like)
    data = context * 2.0 + 0.1 * torch.randn(256, 2, **like)  # mean depends on the context
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = -model.condition(context).log_prob(data).mean()
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < first - 0.5


def test_unconditional_flow_works_as_pyro_guide_sample_and_score_in_one_pass(device, dtype):
    like = {"device": device, "dtype": dtype}
    torch.manual_seed(0)
    flow = Radial(4).to(**like)
    base = dist.Normal(torch.zeros(4, **like), torch.ones(4, **like)).to_event(1)
    guide = dist.TransformedDistribution(base, [flow])
    z = guide.rsample((8,))
    calls = []
    original = flow._inverse_pass
    flow._inverse_pass = lambda *args: calls.append(1) or original(*args)
    guide.log_prob(z)
    assert not calls, "scoring a fresh sample must reuse the forward pass, not invert"


@pytest.mark.parametrize("name", ["planar", "lu_linear", "radial"])
def test_training_on_the_same_tensor_needs_no_clear_cache(name, device, dtype):
    """Pyro's flows return the previous step's cached pass here (stale parameters, freed
    graph) unless clear_cache() is called after every step; ours key the cache on the
    parameters' versions."""
    torch.manual_seed(0)
    like = {"device": device, "dtype": dtype}
    flow = build(name, 2).to(**like)
    model = dist.TransformedDistribution(
        dist.Normal(torch.zeros(2, **like), 1.0).to_event(1), [flow]
    )
    data = torch.randn(64, 2, **like) * 2 + 1
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = -model.log_prob(data).mean()
        loss.backward()  # would raise "backward through the graph a second time" if stale
        optimizer.step()
        losses.append(float(loss.detach()))
    assert len(set(losses)) == 5, "the loss did not follow the parameter updates"
    with torch.no_grad():
        fresh = -model.log_prob(data.clone()).mean()
        torch.testing.assert_close(-model.log_prob(data).mean(), fresh)


def test_cache_is_reused_while_parameters_are_unchanged(device, dtype):
    flow = build("planar", 3).to(device, dtype)
    x = torch.randn(4, 3, device=device, dtype=dtype)
    y = flow(x)
    assert flow(x) is y and flow.inv(y) is x
    log_det = flow.log_abs_det_jacobian(x, y)
    assert flow.log_abs_det_jacobian(x, y) is log_det
    with torch.no_grad():
        flow.params.w.mul_(2.0)
    assert flow(x) is not y and flow.inv(y) is not x
    y = flow(x)
    flow.inv.clear_cache()  # reaches the flow: TransformedDistribution.clear_cache() relies on it
    assert flow.inv(y) is not x


# -- Pyro's own autoguide ----------------------------------------------------------------------
@pytest.mark.slow
def test_flows_drop_into_pyro_autonormalizingflow():
    import pyro
    from pyro.distributions.torch_transform import ComposeTransformModule
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormalizingFlow

    def model():
        pyro.sample("z", dist.Normal(torch.tensor([3.0, -1.0]), 0.5).to_event(1))

    pyro.clear_param_store()
    torch.manual_seed(0)
    guide = AutoNormalizingFlow(
        model,
        lambda dim: ComposeTransformModule(
            [build("elementwise_affine", dim), build("radial", dim), build("planar", dim)]
        ),
    )
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.995}), elbo)
    for _ in range(500):
        svi.step()
    with torch.no_grad():
        samples = guide.get_posterior().sample((4000,))
    torch.testing.assert_close(samples.mean(0), torch.tensor([3.0, -1.0]), atol=0.1, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.tensor([0.5, 0.5]), atol=0.05, rtol=0)


def test_hooks_under_their_old_names_still_work_with_a_deprecation_warning():
    from pyroflows.transforms import FlowModule

    with pytest.warns(DeprecationWarning) as record:

        class OldShift(FlowModule):
            def _forward(self, x, context):
                return x + 1, x.new_zeros(x.shape[:-1])

            def _backward(self, y, context):
                return y - 1, None

    messages = sorted(str(warning.message) for warning in record)
    assert messages == [
        "OldShift._backward is deprecated: name the hook _inverse_pass",
        "OldShift._forward is deprecated: name the hook _forward_pass",
    ]
    flow = OldShift(2)
    x = torch.zeros(3, 2)
    y, log_det = flow.forward_and_log_det(x)
    assert torch.equal(y, x + 1) and torch.equal(log_det, torch.zeros(3))
    x_back, inverse_log_det = flow.inverse_and_log_det(y)
    assert torch.equal(x_back, x) and torch.equal(inverse_log_det, torch.zeros(3))


def test_jit_trace_of_a_module_holding_a_flow_gives_the_eager_result():
    """Issue 12: tracing enumerates the module's attributes with ``hasattr``, which raised the
    ``NotImplementedError`` of the inherited ``Transform.sign``."""
    from pyroflows.distributions import Flow

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = Flow.build("maf", 2, num_layers=2)

        def forward(self, x):
            return self.flow.log_prob(x)

    torch.manual_seed(0)
    scorer, x = Scorer(), torch.randn(5, 2)
    with pytest.warns(torch.jit.TracerWarning):  # the event-shape checks become constants
        traced = torch.jit.trace_module(scorer, {"forward": (x,)}, check_trace=False)
    torch.testing.assert_close(traced(x), scorer(x))
    x2 = torch.randn(5, 2)
    torch.testing.assert_close(traced(x2), scorer(x2))


def test_sign_is_defined_only_for_elementwise_monotone_flows():
    """torch's contract: ``sign`` only where the map is element-wise monotone; elsewhere it is
    absent (``hasattr`` is ``False``), so attribute enumeration does not crash."""
    spline, stack = build("spline", 3), build("maf", 3)
    assert spline.sign == spline.inv.sign == spline.with_cache(0).sign == 1
    assert build("leaky_relu", 3).inv.sign == 1
    for flow in (stack, stack.inv, Radial(3), Radial(3, context_dim=2).condition(torch.zeros(2))):
        assert not hasattr(flow, "sign")
        with pytest.raises(AttributeError):
            _ = flow.sign
