"""The shared machinery: root finder, conditioning, caching, checks, and flow specifics."""

from __future__ import annotations

import io
import warnings

import pyro.distributions as dist
import pytest
import torch

from pyroflows.transforms import (
    REGISTRY,
    ActNorm,
    InverseNotConvergedError,
    InverseNotConvergedWarning,
    LeakyReLU,
    Permutation,
    Planar,
    Radial,
    RootFinder,
    build,
    permutation,
)

F64 = torch.float64


def _tanh_map(x):
    return x + torch.tanh(x), 2 - torch.tanh(x) ** 2


# -- root finder ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_root_finder_solves_to_dtype_precision(dtype):
    target = torch.linspace(-50, 50, 101, dtype=dtype)
    x = RootFinder()(_tanh_map, target, target - 1, target + 1)
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(_tanh_map(x)[0], target, atol=tol, rtol=tol)


def test_root_finder_does_not_ping_pong_across_a_tanh_kink():
    # Found in training: plain bracketed Newton bounced between the two sides of the kink of
    # alpha + c tanh(alpha + b) for c >> 1, shrinking the bracket by ~1% per iteration.
    reach, bias = 13.327, -0.473  # reconstructed from the failing element's trace
    target = torch.tensor([12.438, -12.0, 0.5, 30.0])

    def func(alpha):
        tanh = torch.tanh(alpha + bias)
        return alpha + reach * tanh, 1 + reach * (1 - tanh**2)

    alpha = RootFinder(max_iter=40)(func, target, target - reach, target + reach)
    torch.testing.assert_close(func(alpha)[0], target, atol=1e-4, rtol=1e-5)


def test_root_finder_raises_when_it_does_not_converge():
    target = torch.linspace(-3, 3, 7, dtype=F64)
    with pytest.raises(InverseNotConvergedError, match=r"did not converge for .* after 1 iter"):
        RootFinder(max_iter=1)(_tanh_map, target, target - 100, target + 100)


def test_root_finder_warns_when_asked_to():
    target = torch.linspace(-3, 3, 7, dtype=F64)
    solve = RootFinder(max_iter=1, on_failure="warn")
    with pytest.warns(InverseNotConvergedWarning, match="did not converge"):
        x = solve(_tanh_map, target, target - 100, target + 100)
    assert x.shape == target.shape and torch.isfinite(x).all()


def test_root_finder_nan_targets_stay_nan_and_do_not_disturb_others():
    target = torch.tensor([0.3, float("nan"), -2.0, float("inf")], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = RootFinder()(_tanh_map, target, target - 1, target + 1)
    assert torch.isnan(x[1]) and torch.isnan(x[3])
    clean = RootFinder()(_tanh_map, target[[0, 2]], target[[0, 2]] - 1, target[[0, 2]] + 1)
    torch.testing.assert_close(x[[0, 2]], clean, atol=0, rtol=0)


def test_root_finder_gives_implicit_function_gradients():
    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)
    target = torch.tensor([0.5, 1.5], dtype=F64, requires_grad=True)

    def func(x):
        return x + scale * torch.tanh(x), 1 + scale * (1 - torch.tanh(x) ** 2)

    x = RootFinder()(func, target, target - 1, target + 1)
    x.sum().backward()
    slope = 1 + scale.detach() * (1 - torch.tanh(x.detach()) ** 2)
    torch.testing.assert_close(target.grad, 1 / slope)
    torch.testing.assert_close(scale.grad, (-torch.tanh(x.detach()) / slope).sum())


@pytest.mark.parametrize(
    "kwargs", [{"on_failure": "ignore"}, {"max_iter": 0}, {"xtol": 0.0}], ids=str
)
def test_root_finder_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        RootFinder(**kwargs)


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


# -- conditioning ----------------------------------------------------------------------------------
def test_conditioned_flow_shares_parameters_and_follows_the_context():
    torch.manual_seed(0)
    flow = Radial(3, context_dim=2)
    c1, c2 = torch.zeros(2), torch.ones(2)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(3)
    assert not torch.allclose(flow.condition(c1)(x), flow.condition(c2)(x))
    assert set(flow.condition(c1).parameters()) == set(flow.parameters())


def test_conditional_flow_in_pyro_conditional_distribution_trains():
    torch.manual_seed(0)
    flow = build("planar", 2, context_dim=1)
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    model = dist.ConditionalTransformedDistribution(base, [flow])
    context = torch.randn(256, 1)
    data = context * 2.0 + 0.1 * torch.randn(256, 2)  # mean depends on the context
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        loss = -model.condition(context).log_prob(data).mean()
        loss.backward()
        optimizer.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < first - 0.5


def test_unconditional_flow_works_as_pyro_guide_sample_and_score_in_one_pass():
    torch.manual_seed(0)
    flow = Radial(4)
    base = dist.Normal(torch.zeros(4), torch.ones(4)).to_event(1)
    guide = dist.TransformedDistribution(base, [flow])
    z = guide.rsample((8,))
    calls = []
    original = flow._inverse_pass
    flow._inverse_pass = lambda *args: calls.append(1) or original(*args)
    guide.log_prob(z)
    assert not calls, "scoring a fresh sample must reuse the forward pass, not invert"


@pytest.mark.parametrize("name", ["planar", "lu_linear", "radial"])
def test_training_on_the_same_tensor_needs_no_clear_cache(name):
    """Pyro's flows return the previous step's cached pass here (stale parameters, freed
    graph) unless clear_cache() is called after every step; ours key the cache on the
    parameters' versions."""
    torch.manual_seed(0)
    flow = build(name, 2)
    model = dist.TransformedDistribution(dist.Normal(torch.zeros(2), 1.0).to_event(1), [flow])
    data = torch.randn(64, 2) * 2 + 1
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


def test_cache_is_reused_while_parameters_are_unchanged():
    flow = build("planar", 3)
    x = torch.randn(4, 3)
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


# -- element-wise and linear specifics ----------------------------------------------------------
def test_leaky_relu_rejects_non_positive_slope():
    with pytest.raises(ValueError, match="init_slope"):
        LeakyReLU(2, init_slope=0.0)


@pytest.mark.parametrize("side", ["input", "output"])
def test_actnorm_standardises_its_first_batch(side):
    torch.manual_seed(0)
    data = 3.0 + torch.tensor([2.0, 0.5]) * torch.randn(500, 2)
    data[7, 1] = float("nan")  # ignored by the statistics
    flow = ActNorm(2)
    out = flow(data) if side == "input" else flow.inv(data)
    finite = torch.isfinite(out).all(-1)
    torch.testing.assert_close(out[finite].mean(0), torch.zeros(2), atol=1e-2, rtol=0)
    torch.testing.assert_close(out[finite].std(0), torch.ones(2), atol=1e-2, rtol=0)
    assert flow.initialized


def test_actnorm_is_not_reinitialised_after_loading():
    flow = ActNorm(2)
    flow.inv(torch.randn(100, 2) * 4 + 1)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    restored = ActNorm(2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.initialized
    probe = torch.randn(5, 2) * 100  # would move the parameters if it initialised them
    torch.testing.assert_close(restored.inv(probe), flow.inv(probe))


def test_permutation_validation_and_helpers():
    with pytest.raises(ValueError, match="not a permutation"):
        Permutation([0, 0, 1])
    assert permutation(4, "reverse").permutation.tolist() == [3, 2, 1, 0]
    assert torch.equal(permutation(6, seed=3).permutation, permutation(6, seed=3).permutation)
    with pytest.raises(ValueError, match="kind"):
        permutation(3, "sorted")


# -- registry -------------------------------------------------------------------------------------
def test_build_errors_are_helpful():
    with pytest.raises(KeyError, match="registered"):
        build("no_such_flow", 2)
    with pytest.raises(ValueError, match="no conditional form"):
        REGISTRY["lu_linear"].build(2, context_dim=3)
    with pytest.raises(ValueError, match="input_dim"):
        build("planar", 0)


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
