"""AutoFlow's Pyro posterior interface (base, transform, posterior) and NeuTra HMC with it.

``get_base_dist()`` and ``get_transform()`` must describe the same distribution as the one-pass
``get_posterior()`` (same map, same density), for pyroflows flows and Pyro's own, so that
:class:`~pyro.infer.reparam.NeuTraReparam` can warp a model's geometry with a fitted AutoFlow.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.reparam import NeuTraReparam
from scipy import stats

from pyroflows.infer import AutoFlow, FlowPosterior, train_guide


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()


def float64_model():
    """Three latents, one of them positive: a 4-dimensional unconstrained vector."""
    loc = torch.zeros(3, dtype=torch.float64)
    pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
    pyro.sample("s", dist.LogNormal(torch.tensor(0.0, dtype=torch.float64), 1.0))


FLOWS = {
    "iaf": dict(flow="iaf", num_layers=2, hidden_dims=[8]),
    "spline_autoregressive": dict(flow="spline_autoregressive", hidden_dims=[8]),
    "realnvp": dict(flow="realnvp", num_layers=2, hidden_dims=[8]),
    "nsf": dict(flow="nsf", num_layers=2, hidden_dims=[8]),
    # Pyro's own flows, through the callable form (not Pyro's affine_autoregressive: its
    # inverse starts from float32 zeros, so it cannot score float64 values; a Pyro bug)
    "pyro_affine_coupling": dict(flow=lambda d: dist.transforms.affine_coupling(d)),
    "pyro_spline_coupling": dict(flow=lambda d: dist.transforms.spline_coupling(d)),
}


def perturbed_guide(options) -> AutoFlow:
    """A float64 guide whose every parameter is moved off its (near-identity) start."""
    options = dict(options)
    guide = AutoFlow(float64_model, options.pop("flow"), init_scale=0.5, **options)
    guide()  # set up, with the plates
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in guide.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.3 * noise)
    return guide


@pytest.mark.parametrize("name", list(FLOWS))
def test_base_and_transform_are_the_one_pass_posterior(name):
    guide = perturbed_guide(FLOWS[name])
    base, transform, posterior = guide.get_base_dist(), guide.get_transform(), guide.get_posterior()
    assert isinstance(posterior, FlowPosterior)
    assert base.event_shape == posterior.event_shape == (guide.latent_dim,) == (4,)
    assert base.sample().dtype == torch.float64
    assert transform.domain.event_dim == transform.codomain.event_dim == 1

    # the same map: the posterior's one pass equals the transform at the same noise
    eps = base.sample((64,))
    z_one_pass, log_q_one_pass = posterior.from_noise(eps)
    z = transform(eps)
    torch.testing.assert_close(z, z_one_pass, rtol=0, atol=1e-10)

    # the same density: TransformedDistribution scores through transform.inv and the log-det
    composed = dist.TransformedDistribution(base, transform)
    points = z.detach().clone()  # a fresh tensor: no cache can answer, the inverse runs
    # (through an inverse pass: 1e-10 relative as well, a spline's inverse solves a quadratic)
    exact = dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(composed.log_prob(points), log_q_one_pass, **exact)
    torch.testing.assert_close(posterior.log_prob(points), log_q_one_pass, **exact)
    # and the inverse of the transform recovers the noise
    torch.testing.assert_close(transform.inv(points), eps, rtol=0, atol=1e-8)
    log_det = transform.log_abs_det_jacobian(eps, z)
    torch.testing.assert_close(base.log_prob(eps) - log_det, log_q_one_pass, rtol=0, atol=1e-10)


def test_draws_of_the_composed_and_one_pass_posteriors_agree_in_distribution():
    guide = perturbed_guide(FLOWS["iaf"])
    composed = dist.TransformedDistribution(guide.get_base_dist(), guide.get_transform())
    with torch.no_grad():
        torch.manual_seed(0)
        a = composed.sample((4000,))
        b = guide.get_posterior().sample((4000,))
    assert a.mean(0).abs().max() > 0.1  # not a trivial posterior
    for i in range(guide.latent_dim):  # two-sample KS per coordinate, fixed seed
        assert stats.ks_2samp(a[:, i].numpy(), b[:, i].numpy()).pvalue > 1e-3


def test_each_transform_uses_the_current_parameters():
    guide = perturbed_guide(FLOWS["iaf"])
    eps = guide.get_base_dist().sample((8,))
    before = guide.get_transform()(eps)
    with torch.no_grad():  # what an optimizer step does: in place
        guide.loc.add_(1.0)
        for parameter in guide.flow.parameters():
            parameter.mul_(1.1)
    after = guide.get_transform()(eps)  # the same eps tensor: the flow's cache must not answer
    expected, _ = guide.get_posterior().from_noise(eps.clone())
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-10)
    assert not torch.allclose(after, before)


# -- the error NeuTra users hit before ----------------------------------------------------------
def test_neutra_reparam_accepts_an_autoflow():
    """``NeuTraReparam(AutoFlow(...))`` used to fail with Pyro's generic ValueError."""

    def model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    y = torch.randn(5)
    guide = AutoFlow(model, "iaf", num_layers=1, hidden_dims=[8])
    guide(y)
    neutra = NeuTraReparam(guide)
    trace = poutine.trace(neutra.reparam(model)).get_trace(y)  # raised ValueError before
    assert "mu_shared_latent" in trace.nodes
    assert trace.nodes["scale"]["value"] > 0
    assert torch.isfinite(trace.log_prob_sum())
    samples = neutra.transform_sample(torch.randn(7, guide.latent_dim))
    assert samples["mu"].shape == samples["scale"].shape == (7,)


def test_get_transform_sets_the_guide_up_and_get_base_dist_says_when_it_is_not():
    def model(y):
        pyro.sample("mu", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    guide = AutoFlow(model, "planar")
    with pytest.raises(RuntimeError, match="set up"):
        guide.get_base_dist()
    transform = guide.get_transform(torch.zeros(3))  # the model's args set it up
    assert transform(guide.get_base_dist().sample()).shape == (2,)
    assert guide.plates == {}


# -- NeuTra HMC on a banana ---------------------------------------------------------------------
# x1 ~ N(0, 1), x2 | x1 ~ N((x1^2 - 1) / 2, 1), s ~ LogNormal(0, 0.5), independent of the others.
# Moments: E x1 = 0, sd 1; E x2 = 0, Var x2 = Var(x1^2) / 4 + 1 = 1.5;
# E s = exp(0.125), Var s = (exp(0.25) - 1) exp(0.25).
def banana():
    x1 = pyro.sample("x1", dist.Normal(0.0, 1.0))
    pyro.sample("x2", dist.Normal(0.5 * (x1**2 - 1.0), 1.0))
    pyro.sample("s", dist.LogNormal(0.0, 0.5))


_S_VAR = (torch.tensor(0.25).exp() - 1) * torch.tensor(0.25).exp()
BANANA_MOMENTS = {
    "x1": (0.0, 1.0),
    "x2": (0.0, 1.5**0.5),
    "s": (torch.tensor(0.125).exp().item(), _S_VAR.sqrt().item()),
}


@pytest.mark.slow
def test_neutra_nuts_with_a_fitted_autoflow_recovers_the_banana():
    pyro.set_rng_seed(0)
    guide = AutoFlow(banana, "iaf", num_layers=2, hidden_dims=[16])
    # a short, rough fit: NeuTra only needs the geometry roughly straightened
    train_guide(
        banana,
        guide,
        num_steps=300,
        lr=0.02,
        num_particles=4,
        vectorize_particles=True,
        progress=False,
        seed=0,
    )
    neutra = NeuTraReparam(guide)
    warped = poutine.reparam(banana, config=lambda _: neutra)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(warped), num_samples=300, warmup_steps=150, disable_progbar=True)
    mcmc.run()
    latent = mcmc.get_samples()["x1_shared_latent"]
    assert latent.shape == (300, 3) and torch.isfinite(latent).all()
    with torch.no_grad():
        samples = neutra.transform_sample(latent)
    for name, (mean, sd) in BANANA_MOMENTS.items():
        draws = samples[name]
        assert torch.isfinite(draws).all()
        # Monte Carlo error of the mean about sd / sqrt(ESS); ESS in the hundreds here
        assert abs(draws.mean().item() - mean) < 0.3 * sd, name
        assert abs(draws.std().item() / sd - 1) < 0.25, name
