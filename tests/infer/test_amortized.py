r"""AmortizedFlow: amortized posteriors of local latents, checked against known answers.

The known answer is the linear-Gaussian model :math:`z_n \sim N(0, I_L)`,
:math:`x_n \mid z_n \sim N(A z_n, s^2 I_D)`, whose posterior is Gaussian with the same
covariance :math:`C = (I + A^T A / s^2)^{-1}` for every data point and the mean
:math:`C A^T x_n / s^2`, linear in :math:`x_n`. A flow posterior can match it exactly; the
diagonal Gaussian encoder can only reach the mean-field optimum (exact mean, variances
:math:`1 / (C^{-1})_{ii}`). Then the Pyro interface (plates with subsampling, vectorized
particles, JIT, TraceGraph), the exact density of fresh values, errors and devices.
"""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceGraph_ELBO
from torch import nn

from pyroflows.infer import AmortizedFlow, FlowPosterior

F64 = torch.float64

# -- the linear-Gaussian model ------------------------------------------------------------------
# Two latents, four observations. The columns of A are nearly parallel, so the exact posterior
# is strongly correlated (correlation -0.79): covariance [[0.413, -0.336], [-0.336, 0.434]],
# while the mean-field optimum is diag(0.153, 0.161). A diagonal Gaussian cannot be mistaken
# for a flow that learned the correlation.
LATENT, DIM, NOISE = 2, 4, 0.5
A = torch.tensor([[1.0, 0.8], [0.5, 0.7], [-0.3, -0.1], [0.2, 0.4]])
PRECISION = torch.eye(LATENT) + A.T @ A / NOISE**2
COV = torch.linalg.inv(PRECISION)
MEAN_FIELD_COV = torch.diag(1.0 / PRECISION.diagonal())
NUM_TRAIN, BATCH, NUM_HELD_OUT = 2000, 256, 50


def exact_mean(x: torch.Tensor) -> torch.Tensor:
    return x @ A @ COV / NOISE**2  # (C A^T x / s^2)^T, C symmetric


def linear_gaussian_data(num: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(num, LATENT, generator=generator)
    return z @ A.T + NOISE * torch.randn(num, DIM, generator=generator)


def make_model(num: int, batch: int):
    def model(x):
        with pyro.plate("data", num, subsample_size=batch) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
            pyro.sample("x", dist.Normal(z @ A.to(z).T, NOISE).to_event(1), obs=x[idx])

    return model


def make_guide(posterior: AmortizedFlow, num: int, batch: int):
    def guide(x):
        pyro.module("posterior", posterior)
        with pyro.plate("data", num, subsample_size=batch) as idx:
            pyro.sample("z", posterior(x[idx]))

    return guide


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()  # pyro.module("posterior", ...) would find an earlier test's
    yield
    pyro.clear_param_store()


pytestmark = pytest.mark.usefixtures("one_thread")


def fit_linear_gaussian(
    posterior: AmortizedFlow, steps: int = 400, lr: float = 0.03, seed: int = 0
) -> None:
    """Pyro SVI: Trace_ELBO with 4 vectorized particles, minibatches of 256 of 2,000 points."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    x = linear_gaussian_data(NUM_TRAIN, seed=0)
    svi = SVI(
        make_model(NUM_TRAIN, BATCH),
        make_guide(posterior, NUM_TRAIN, BATCH),
        pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / steps)}),  # lr decays 100x
        Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1),
    )
    for _ in range(steps):
        svi.step(x)


def posterior_moments(posterior: AmortizedFlow, x: torch.Tensor, draws: int = 4000):
    """Monte Carlo mean (N, L) and covariance (N, L, L) of q(z | x_n) for each row of x."""
    with torch.no_grad():
        z, _ = posterior(x).rsample_and_log_prob((draws,))
    mean = z.mean(0)
    centred = z - mean
    return mean, torch.einsum("snl,snk->nlk", centred, centred) / draws


# Tolerances, measured over 10 seeds of the encoder's initialisation and of SVI (the data
# fixed), with exactly these settings (400 steps, 4 particles, 4,000 draws per held-out
# point); largest value seen over the 10 seeds for Gaussian / iaf / affine_coupling, and the
# tolerance, about twice the largest:
#   RMS over the 50 held-out points of |E_q[z|x] - exact mean| (posterior sd ~0.65; Monte
#     Carlo error of the estimate 0.65 / sqrt(4000) = 0.01): 0.024 / 0.021 / 0.019 -> 0.05;
#   largest entry of |(mean over held-out x of Cov_q[z|x]) - target| (target: the exact C
#     for the flows, the mean-field optimum for the Gaussian): 0.002 / 0.010 / 0.007 -> 0.025;
#   the same for the worst single held-out point: 0.015 / 0.047 / 0.048 -> 0.1.
# The two targets differ by 0.34 (the off-diagonal), far beyond these tolerances; the flows'
# covariance was 0.33 or more from the mean-field one on every seed.
MEAN_TOLERANCE, COV_TOLERANCE, WORST_POINT_COV_TOLERANCE = 0.05, 0.025, 0.1
CASES = {
    "gaussian": (None, {}),
    "iaf": ("iaf", {"num_layers": 2}),
    "affine_coupling": ("affine_coupling", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_linear_gaussian_posterior_matches_the_exact_one(case):
    flow, options = CASES[case]
    context_dim = 0 if flow is None else 4
    torch.manual_seed(0)
    # A linear encoder can express the exact answer (mean linear in x, constant scale).
    encoder = nn.Linear(DIM, 2 * LATENT + context_dim)
    posterior = AmortizedFlow(
        DIM, LATENT, flow, context_dim=context_dim, encoder=encoder, **options
    )
    fit_linear_gaussian(posterior)

    held_out = linear_gaussian_data(NUM_HELD_OUT, seed=1)
    mean, cov = posterior_moments(posterior, held_out)
    rms = (mean - exact_mean(held_out)).square().mean().sqrt()
    assert rms < MEAN_TOLERANCE, rms

    target = MEAN_FIELD_COV if flow is None else COV
    assert (cov.mean(0) - target).abs().max() < COV_TOLERANCE, cov.mean(0)
    assert (cov - target).abs().amax((1, 2)).max() < WORST_POINT_COV_TOLERANCE
    if flow is not None:  # the flow found the correlation the Gaussian cannot express
        assert (cov.mean(0) - MEAN_FIELD_COV).abs().max() > 0.3


# -- the Pyro interface ---------------------------------------------------------------------


def perturbed(posterior: AmortizedFlow, scale: float = 0.1) -> AmortizedFlow:
    """Move every parameter off its initial value (the encoder's last layer and the flow's
    output layers start at zero, where the context has no effect yet)."""
    with torch.no_grad():
        for param in posterior.parameters():
            param.add_(scale * torch.randn_like(param))
    return posterior


def small_posterior(flow="iaf", **options) -> AmortizedFlow:
    if flow == "iaf":
        options.setdefault("num_layers", 2)
    return perturbed(
        AmortizedFlow(DIM, LATENT, flow, context_dim=3, encoder_hidden_dims=(16,), **options)
    )


def test_plates_subsampling_and_vectorized_particles():
    num, batch, particles = 100, 10, 3
    x = linear_gaussian_data(num, seed=0)
    posterior = small_posterior()
    model, guide = make_model(num, batch), make_guide(posterior, num, batch)

    with pyro.plate("particles", particles, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    site = guide_trace.nodes["z"]
    assert site["fn"].batch_shape == (particles, batch)
    assert site["value"].shape == (particles, batch, LATENT)
    assert site["log_prob"].shape == (particles, batch)
    assert site["scale"] == num / batch
    assert model_trace.nodes["x"]["log_prob"].shape == (particles, batch)
    # the model saw the rows the guide encoded
    idx = guide_trace.nodes["data"]["value"]
    assert torch.equal(model_trace.nodes["data"]["value"], idx)

    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss_and_grads(model, guide, x)
    assert torch.isfinite(torch.tensor(loss))
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in posterior.parameters())


def _loss_and_grads(elbo, model, guide, posterior, x, seed):
    posterior.zero_grad()
    pyro.set_rng_seed(seed)
    loss = elbo.loss_and_grads(model, guide, x)
    return loss, [p.grad.clone() for p in posterior.parameters()]


def test_jit_trace_elbo_equals_trace_elbo():
    # After compilation the traced ELBO draws the same random numbers in the same order, so
    # with the same seed it returns Trace_ELBO's loss and gradients.
    num, batch = 100, 10
    x = linear_gaussian_data(num, seed=0)
    posterior = small_posterior()
    model, guide = make_model(num, batch), make_guide(posterior, num, batch)
    jit = JitTrace_ELBO(ignore_jit_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks
        _loss_and_grads(jit, model, guide, posterior, x, seed=0)  # compiles
        jit_loss, jit_grads = _loss_and_grads(jit, model, guide, posterior, x, seed=1)
    loss, grads = _loss_and_grads(Trace_ELBO(), model, guide, posterior, x, seed=1)
    assert jit_loss == pytest.approx(loss, rel=1e-5)
    for jit_grad, grad in zip(jit_grads, grads, strict=True):
        torch.testing.assert_close(jit_grad, grad, rtol=1e-4, atol=1e-4)

    # and it trains: a few SVI steps with the compiled loss lower the loss
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), JitTrace_ELBO(ignore_jit_warnings=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = [svi.step(x) for _ in range(100)]
    assert sum(losses[-20:]) < sum(losses[:20])


@pytest.mark.parametrize("particles", [1, 3])
def test_trace_graph_elbo_equals_trace_elbo(particles):
    # every site is reparameterised, so TraceGraph_ELBO's estimate is Trace_ELBO's
    num, batch = 100, 10
    x = linear_gaussian_data(num, seed=0)
    posterior = small_posterior()
    model, guide = make_model(num, batch), make_guide(posterior, num, batch)
    options = {"num_particles": particles, "vectorize_particles": particles > 1}
    graph = _loss_and_grads(TraceGraph_ELBO(**options), model, guide, posterior, x, seed=1)
    plain = _loss_and_grads(Trace_ELBO(**options), model, guide, posterior, x, seed=1)
    assert graph[0] == pytest.approx(plain[0], rel=1e-5)
    for graph_grad, grad in zip(graph[1], plain[1], strict=True):
        torch.testing.assert_close(graph_grad, grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flow", ["iaf", "affine_coupling", "spline_autoregressive"])
def test_the_flow_conditions_on_the_data(flow):
    posterior = small_posterior(flow)
    x = linear_gaussian_data(2, seed=0)
    _, _, context = posterior.encode(x)
    assert not torch.allclose(context[0], context[1])
    # the same noise through the flow under the two contexts: different standardised latents
    eps = torch.randn(LATENT).expand(2, LATENT)
    u = torch.stack([posterior.flow.condition(context[i])(eps[i]) for i in range(2)])
    assert (u[0] - u[1]).abs().max() > 1e-3
    # and a posterior draw moves with x through loc, scale and the flow's context
    torch.manual_seed(1)
    z_first = posterior(x[:1].expand(2, DIM)).rsample()
    torch.manual_seed(1)
    z_both = posterior(x).rsample()
    torch.testing.assert_close(z_first[0], z_both[0])
    assert not torch.allclose(z_first[1], z_both[1])

    # every parameter of the flow and the context rows of the encoder get gradients
    num, batch = 100, 10
    data = linear_gaussian_data(num, seed=0)
    model, guide = make_model(num, batch), make_guide(posterior, num, batch)
    posterior.zero_grad()
    Trace_ELBO().loss_and_grads(model, guide, data)
    for name, param in posterior.flow.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    context_rows = posterior.encoder[-1].weight.grad[2 * LATENT :]
    assert context_rows.abs().sum(-1).min() > 0


# -- the density of the posterior -----------------------------------------------------------


@pytest.mark.parametrize("flow", ["iaf", "affine_coupling", "spline_autoregressive"])
def test_log_prob_of_a_fresh_value_is_exact(flow):
    posterior = small_posterior(flow).double()
    x = linear_gaussian_data(5, seed=0).double()
    q = posterior(x)
    z, log_q = q.rsample_and_log_prob((3,))
    assert z.shape == (3, 5, LATENT) and log_q.shape == (3, 5)
    fresh = z.detach().clone()  # not the tensor just drawn: scored by the inverse pass
    torch.testing.assert_close(q.log_prob(fresh), log_q.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(posterior(x).log_prob(fresh), log_q.detach(), rtol=0, atol=1e-5)

    # against the change of variables with the Jacobian from autograd, per context
    loc, scale, context = posterior.encode(x)
    for n in range(5):
        transform = posterior.flow.condition(context[n].detach())

        def draw(eps, n=n, transform=transform):
            return loc[n].detach() + scale[n].detach() * transform(eps)

        eps = torch.randn(LATENT, dtype=F64)
        jacobian = torch.autograd.functional.jacobian(draw, eps)
        expected = dist.Normal(0.0, 1.0).log_prob(eps).sum() - torch.linalg.slogdet(jacobian)[1]
        value = draw(eps).detach().clone()
        torch.testing.assert_close(q.log_prob(value)[n], expected, rtol=0, atol=1e-5)


def test_gaussian_posterior_density_is_the_diagonal_normal():
    posterior = perturbed(AmortizedFlow(DIM, LATENT, None, encoder_hidden_dims=(16,))).double()
    x = linear_gaussian_data(5, seed=0).double()
    loc, scale, context = posterior.encode(x)
    assert context is None
    value = torch.randn(3, 5, LATENT, dtype=F64)
    expected = dist.Normal(loc, scale).log_prob(value).sum(-1)
    torch.testing.assert_close(posterior(x).log_prob(value), expected)


def test_expand_inside_a_plate():
    posterior = small_posterior().double()
    x = linear_gaussian_data(5, seed=0).double()
    q = posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (LATENT,)
    expanded = q.expand((4, 5))
    assert isinstance(expanded, FlowPosterior) and expanded.batch_shape == (4, 5)
    z, log_q = expanded.rsample_and_log_prob((2,))
    assert z.shape == (2, 4, 5, LATENT) and log_q.shape == (2, 4, 5)
    fresh = z.detach().clone()
    torch.testing.assert_close(expanded.log_prob(fresh), log_q.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(q.log_prob(fresh), log_q.detach(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="cannot expand"):
        q.expand((4, 3))  # incompatible with the batch of 5 contexts

    # inside a Pyro plate of particles, the site's distribution is expanded the same way
    def guide():
        with pyro.plate("particles", 4, dim=-2), pyro.plate("data", 5, dim=-1):
            pyro.sample("z", posterior(x))

    site = poutine.trace(guide).get_trace().nodes["z"]
    assert site["fn"].batch_shape == (4, 5)
    assert site["value"].shape == (4, 5, LATENT)


# -- errors --------------------------------------------------------------------------------


def test_wrong_data_size_names_expected_and_actual_shapes():
    posterior = AmortizedFlow(DIM, LATENT, "iaf", context_dim=3, encoder_hidden_dims=(16,))
    with pytest.raises(ValueError, match=r"expected data of shape \(\.\.\., 4\), got \(7, 5\)"):
        posterior(torch.randn(7, DIM + 1))


def test_wrong_event_size_for_log_prob():
    q = small_posterior()(torch.randn(3, DIM))
    with pytest.raises(ValueError, match=r"event size 2.*\(3, 3\)"):
        q.log_prob(torch.randn(3, LATENT + 1))


def test_unknown_flow_name():
    with pytest.raises(KeyError, match="no flow named 'not_a_flow'"):
        AmortizedFlow(DIM, LATENT, "not_a_flow")


def test_non_conditional_flow_with_a_context():
    with pytest.raises(ValueError, match="'lu_linear' has no conditional form"):
        AmortizedFlow(DIM, LATENT, "lu_linear", context_dim=3)
    # with context_dim=0 the flow is shared by all data points
    posterior = AmortizedFlow(DIM, LATENT, "lu_linear", context_dim=0, encoder_hidden_dims=(16,))
    z, log_q = posterior(torch.randn(6, DIM)).rsample_and_log_prob()
    assert z.shape == (6, LATENT) and log_q.shape == (6,)


def test_custom_encoder_with_the_wrong_output_size():
    posterior = AmortizedFlow(
        DIM, LATENT, "iaf", context_dim=3, encoder=nn.Linear(DIM, 2 * LATENT), num_layers=2
    )
    with pytest.raises(ValueError, match=r"2 \* latent_dim \+ context_dim = 7.*\(6, 4\)"):
        posterior(torch.randn(6, DIM))


def test_flow_options_without_a_flow_and_bad_scale():
    with pytest.raises(TypeError, match="num_layers"):
        AmortizedFlow(DIM, LATENT, None, num_layers=2)
    with pytest.raises(ValueError, match="init_scale"):
        AmortizedFlow(DIM, LATENT, None, init_scale=0.0)


def test_encoder_and_flow_sizes_are_set_separately():
    posterior = AmortizedFlow(
        DIM, LATENT, "iaf", context_dim=3, encoder_hidden_dims=(24,), hidden_dims=[40], num_layers=2
    )
    encoder_sizes = [m.out_features for m in posterior.encoder if isinstance(m, torch.nn.Linear)]
    assert encoder_sizes == [24, 2 * LATENT + 3]
    made = posterior.flow[0].made
    assert made.layers[0].weight.shape[0] == 40


def test_default_encoder_is_the_elu_mlp_with_a_zero_last_layer():
    """The encoder is pyroflows.nn.MLP(activation=ELU) with its last layer zeroed: the same
    layers, initial weights (same seed) and outputs as the hand-written builder it replaces."""

    def previous_builder(input_dim, hidden_dims, output_dim):  # the builder before nn.MLP
        layers, size = [], input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(size, hidden), nn.ELU()]
            size = hidden
        last = nn.Linear(size, output_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return nn.Sequential(*layers, last)

    torch.manual_seed(5)
    posterior = AmortizedFlow(DIM, LATENT, "iaf", context_dim=3, encoder_hidden_dims=(16, 8))
    torch.manual_seed(5)
    previous = previous_builder(DIM, [16, 8], 2 * LATENT + 3)
    assert [type(m) for m in posterior.encoder] == [type(m) for m in previous]
    current_state, previous_state = posterior.encoder.state_dict(), previous.state_dict()
    assert current_state.keys() == previous_state.keys()
    for key, value in previous_state.items():
        assert torch.equal(current_state[key], value), key
    x = torch.randn(5, DIM)
    assert torch.equal(posterior.encoder(x), previous(x))
    with torch.no_grad():  # past the zero last layer, the hidden layers agree too
        for module in (posterior.encoder[-1], previous[-1]):
            module.weight.fill_(0.1)
    assert torch.equal(posterior.encoder(x), previous(x))


def test_fixed_maps_are_not_posteriors():
    with pytest.raises(ValueError, match="fixed preprocessing map"):
        AmortizedFlow(DIM, LATENT, "logit", context_dim=0)


def test_initial_posterior_is_the_standard_normal_times_init_scale():
    posterior = AmortizedFlow(DIM, LATENT, None, init_scale=0.5)
    loc, scale, _ = posterior.encode(torch.randn(3, DIM))
    torch.testing.assert_close(loc, torch.zeros(3, LATENT))
    torch.testing.assert_close(scale, torch.full((3, LATENT), 0.5))


# -- devices -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flow, options",
    [
        (None, {}),
        ("iaf", {"num_layers": 2}),
        ("affine_coupling", {}),
        ("realnvp", {"num_layers": 2}),
    ],
)
def test_meta_device(flow, options):
    """A tensor created on the CPU by mistake would make these ops fail on ``meta``."""
    context_dim = 0 if flow is None else 3
    posterior = AmortizedFlow(
        DIM, LATENT, flow, context_dim=context_dim, encoder_hidden_dims=(16,), **options
    ).to("meta")
    assert {p.device.type for p in posterior.parameters()} == {"meta"}
    x = torch.randn(6, DIM, device="meta")
    with pyro.validation_enabled(False):  # validation reads values, meta tensors have none
        q = posterior(x)
        z, log_q = q.rsample_and_log_prob((2,))
        assert z.device.type == log_q.device.type == "meta"
        assert z.shape == (2, 6, LATENT) and log_q.shape == (2, 6)
        # the exact inverse pass (a fresh value) too
        log_p = q.log_prob(torch.randn(2, 6, LATENT, device="meta"))
        assert log_p.device.type == "meta" and log_p.shape == (2, 6)

        # and the guide in a subsampled plate
        def guide(x):
            with pyro.plate("data", 6, subsample_size=3, device="meta") as idx:
                pyro.sample("z", posterior(x[idx]))

        site = poutine.trace(guide).get_trace(x).nodes["z"]
        assert site["value"].device.type == "meta" and site["value"].shape == (3, LATENT)


def test_amortized_flow_rejects_an_unknown_flow_option():
    """Issue 12: a misspelt builder option names itself and the accepted ones."""
    with pytest.raises(
        TypeError, match=r"unknown option 'hidden_dim'.*accepts: hidden_dims, num_layers"
    ):
        AmortizedFlow(4, 2, "iaf", hidden_dim=[10])
