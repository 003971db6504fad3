"""importance_diagnostics, posterior_samples and the ArviZ conversion, on known posteriors.

Conjugate model mu ~ N(0, I_d), y_i ~ N(mu, I_d), i = 1..20: the posterior is
N(sum(y) / 21, I_d / 21), and in one dimension the evidence is y ~ N(0, I + 11^T). With the
exact posterior as the guide every importance weight equals p(y).
"""

from __future__ import annotations

import math
import sys

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

from pyroflows.infer import (
    ImportanceDiagnostics,
    importance_diagnostics,
    posterior_samples,
    samples_to_inference_data,
    to_inference_data,
)
from pyroflows.infer.svi import train_guide

N = 20


def _data(dim: int | None = None, dtype=torch.float32) -> torch.Tensor:
    shape = (N,) if dim is None else (N, dim)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype) + 1.0


def model(y):
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def log_evidence(y) -> float:
    eye, ones = torch.eye(N, dtype=y.dtype), torch.ones(N, N, dtype=y.dtype)
    return float(dist.MultivariateNormal(torch.zeros_like(y), eye + ones).log_prob(y))


def model_5d_with_scale(y):
    """5-D conjugate mean, and a positive site the data do not inform (posterior = prior)."""
    mu = pyro.sample("mu", dist.Normal(y.new_zeros(5), 1.0).to_event(1))
    pyro.sample("sigma", dist.LogNormal(0.3, 0.5))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def test_exact_posterior_gives_constant_weights_equal_to_the_evidence():
    y = _data(dtype=torch.float64)
    loc, sd = y.sum() / (N + 1), (1.0 / (N + 1)) ** 0.5

    def exact(y):
        pyro.sample("mu", dist.Normal(loc, sd))

    result = importance_diagnostics(model, exact, y, num_samples=1000)
    expected = log_evidence(y)
    assert result.log_weights.shape == (1000,)
    torch.testing.assert_close(
        result.log_weights, torch.full_like(result.log_weights, expected), rtol=0, atol=1e-10
    )
    assert result.log_marginal == pytest.approx(expected, abs=1e-10)
    assert result.elbo == pytest.approx(expected, abs=1e-10)
    assert result.ess == pytest.approx(1000, rel=1e-12) and result.ess_fraction == pytest.approx(1)
    # the largest weights are all equal: bounded weights, k = -inf (Pyro's psis_diagnostic
    # and arviz.psislw report inf here, for lack of distinct tail values)
    assert result.pareto_k == -math.inf and result.verdict == "good"


@pytest.mark.parametrize("guide_class", [AutoDiagonalNormal, AutoMultivariateNormal])
def test_auxiliary_latent_of_autocontinuous_guides_is_counted_exactly_once(guide_class):
    """Set the joint Gaussian to the exact posterior in unconstrained space: constant weights.

    The guide samples its auxiliary joint latent, then each site as a Delta whose log density
    is the log-Jacobian of the unpacking (here exp for sigma). log q must include the
    auxiliary site; without it the weights would not be constant.
    """
    y = _data(5)
    guide = guide_class(model_5d_with_scale)
    guide(y)  # builds the parameters
    loc = torch.cat([y.sum(0) / (N + 1), torch.tensor([0.3])])
    scale = torch.tensor([(1.0 / (N + 1)) ** 0.5] * 5 + [0.5])
    with torch.no_grad():
        guide.loc.copy_(loc)
        guide.scale = scale
        if guide_class is AutoMultivariateNormal:
            guide.scale_tril = torch.eye(6)
    pyro.set_rng_seed(1)
    result = importance_diagnostics(model_5d_with_scale, guide, y, num_samples=500)
    # 5-D evidence: each coordinate is an independent 1-D conjugate problem
    expected = sum(log_evidence(y[:, j]) for j in range(5))
    weights = result.log_weights
    # float32 rounding of log densities near -140 (measured spread 6e-5, error 1e-6)
    assert float(weights.max() - weights.min()) < 5e-4
    assert result.log_marginal == pytest.approx(expected, abs=5e-4)
    assert result.ess == pytest.approx(500, rel=1e-4)

    auxiliary = f"_{guide_class.__name__}_latent"
    without_auxiliary = []
    with torch.no_grad():
        for _ in range(20):
            guide_trace = poutine.trace(guide).get_trace(y)
            model_trace = poutine.trace(poutine.replay(model_5d_with_scale, guide_trace)).get_trace(
                y
            )
            assert guide_trace.nodes[auxiliary]["infer"]["is_auxiliary"]
            log_q = guide_trace.log_prob_sum(lambda name, site: name != auxiliary)
            without_auxiliary.append(float(model_trace.log_prob_sum() - log_q))
    # leaving the auxiliary site out of log q leaves -log q(u) in the weights: they vary
    # like half a chi-square with 6 degrees of freedom
    assert max(without_auxiliary) - min(without_auxiliary) > 1.0


def test_too_narrow_guide_is_flagged_unreliable():
    y = _data(5)
    loc, sd = y.sum(0) / (N + 1), (1.0 / (N + 1)) ** 0.5

    def narrow(y):  # 0.3 of the posterior sd in each of 5 dims: true k = 1 - 0.3^2 = 0.91
        pyro.sample("mu", dist.Normal(loc, 0.3 * sd).to_event(1))
        pyro.sample("sigma", dist.LogNormal(0.3, 0.5))

    result = importance_diagnostics(model_5d_with_scale, narrow, y, num_samples=1000)
    # measured over 12 seeds: k in [0.96, 1.47], ESS fraction <= 0.033
    assert result.pareto_k > 0.7 and result.verdict == "unreliable"
    assert result.ess_fraction < 0.1
    assert result.log_marginal < sum(log_evidence(y[:, j]) for j in range(5))
    text = str(result)
    assert "unreliable" in text and "k < 0.5 good, 0.5-0.7 ok, k > 0.7 unreliable" in text


def test_trained_guide_estimates_the_log_evidence():
    y = _data()
    guide = AutoNormal(model)
    train_guide(
        model,
        guide,
        y,
        num_steps=200,
        lr=0.08,
        schedule="cosine",
        num_particles=4,
        vectorize_particles=True,
        seed=0,
        progress=False,
    )
    result = importance_diagnostics(model, guide, y, num_samples=1000)
    # measured over 5 seeds: |log_marginal error| <= 0.005, k <= 0.29, ESS fraction >= 0.99
    assert abs(result.log_marginal - log_evidence(y)) < 0.02
    assert result.elbo <= result.log_marginal
    assert result.pareto_k < 0.5 and result.ess_fraction > 0.9
    assert result.to_dict()["verdict"] == "good"


def test_chunks_and_the_python_loop_give_the_same_weights_for_the_exact_guide():
    y = _data(dtype=torch.float64)
    loc, sd = y.sum() / (N + 1), (1.0 / (N + 1)) ** 0.5

    def exact(y):
        pyro.sample("mu", dist.Normal(loc, sd))

    expected = log_evidence(y)
    for options in ({"chunk_size": 30}, {"chunk_size": 1}, {"vectorize": False}):
        result = importance_diagnostics(model, exact, y, num_samples=70, **options)
        assert result.log_weights.shape == (70,)
        assert result.log_weights.sub(expected).abs().max() < 1e-10, options


def test_unvectorizable_model_falls_back_to_a_loop_with_a_warning():
    y = _data(dtype=torch.float64)

    def unplated(y):  # no plate: an outer particle plate cannot broadcast against y
        mu = pyro.sample("mu", dist.Normal(y.new_zeros(()), 1.0))
        pyro.sample("y", dist.Normal(mu * torch.ones_like(y), 1.0).to_event(1), obs=y)

    def exact(y):
        pyro.sample("mu", dist.Normal(y.sum() / (N + 1), (1.0 / (N + 1)) ** 0.5))

    with pytest.warns(UserWarning, match="falling back to a Python loop"):
        result = importance_diagnostics(unplated, exact, y, num_samples=50)
    assert result.log_weights.sub(log_evidence(y)).abs().max() < 1e-10
    with pytest.raises((ValueError, RuntimeError)):
        importance_diagnostics(unplated, exact, y, num_samples=50, vectorize=True)


def test_pareto_k_matches_arviz_psislw():
    arviz = pytest.importorskip("arviz")
    generator = torch.Generator().manual_seed(0)
    for k in (0.3, 0.9):
        log_weights = -k * torch.rand(2000, generator=generator, dtype=torch.float64).log()
        _, arviz_k = arviz.psislw(log_weights.numpy().copy())
        ours = ImportanceDiagnostics.from_log_weights(log_weights).pareto_k
        assert ours == pytest.approx(float(arviz_k), abs=1e-9)
        assert abs(ours - k) < 0.25  # one draw of a noisy estimate (sd about 0.1 here)


def test_from_log_weights_edge_cases():
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        ImportanceDiagnostics.from_log_weights(torch.tensor([0.0, math.nan] * 50))
    with pytest.raises(ValueError, match="all importance weights are zero"):
        ImportanceDiagnostics.from_log_weights(torch.full((100,), -math.inf))
    some_zero = ImportanceDiagnostics.from_log_weights(torch.tensor([0.0, -math.inf] * 50))
    assert some_zero.ess == pytest.approx(50) and some_zero.elbo == -math.inf
    assert some_zero.log_marginal == pytest.approx(math.log(0.5))
    few = ImportanceDiagnostics.from_log_weights(torch.randn(10))
    assert math.isnan(few.pareto_k) and few.verdict == "undetermined"
    dominated = torch.cat([torch.zeros(999), torch.tensor([100.0])])  # one weight e^100 larger
    assert ImportanceDiagnostics.from_log_weights(dominated).pareto_k == math.inf


def model_with_shapes(y):
    w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.LogNormal(0.0, 0.5))
    with pyro.plate("data", len(y)):
        z = pyro.sample("z", dist.Normal(w.sum(-1, keepdim=True), 1.0))
        pyro.sample("y", dist.Normal(z, sigma.unsqueeze(-1)), obs=y)


@pytest.mark.parametrize("vectorize", [None, False])
def test_posterior_samples_keep_site_shapes_and_supports(vectorize):
    y = _data()[:6]
    guide = AutoDiagonalNormal(model_with_shapes)
    draws = posterior_samples(guide, y, num_samples=200, vectorize=vectorize)
    assert {k: tuple(v.shape) for k, v in draws.items()} == {
        "w": (200, 3),
        "sigma": (200,),
        "z": (200, 6),
    }
    assert bool((draws["sigma"] > 0).all()) and not draws["w"].requires_grad
    # the returned draws follow the guide: its median is exp(loc) for sigma
    median = guide.median(y)["sigma"]
    assert abs(float(draws["sigma"].median() / median) - 1) < 0.2


def test_posterior_samples_follow_the_guide_and_take_explicit_sites():
    y = _data()
    loc, sd = float(y.sum()) / (N + 1), (1.0 / (N + 1)) ** 0.5
    guide = AutoNormal(model)
    guide(y)
    with torch.no_grad():
        guide.locs.mu.fill_(loc)
        guide.scales.mu = torch.tensor(sd)
    draws = posterior_samples(guide, y, num_samples=4000)
    assert list(draws) == ["mu"]
    # 4000 draws: the standard error of the mean is sd / 63 = 0.0035
    assert abs(float(draws["mu"].mean()) - loc) < 4 * sd / 4000**0.5
    assert abs(float(draws["mu"].std()) / sd - 1) < 0.05
    predictive = posterior_samples(guide, y, num_samples=50, sites=["mu", "y"])
    assert predictive["y"].shape == (50, N) and predictive["mu"].shape == (50,)
    with pytest.raises(ValueError, match="no site"):
        posterior_samples(guide, y, num_samples=5, sites=["nope"])


def test_posterior_samples_need_a_model_for_a_plain_guide():
    def guide(y):
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    y = _data()
    with pytest.raises(ValueError, match="model="):
        posterior_samples(guide, y, num_samples=5)
    assert posterior_samples(guide, y, num_samples=5, model=model)["mu"].shape == (5,)


def test_to_inference_data_from_a_guide():
    pytest.importorskip("arviz")
    y = _data()[:6]
    idata = to_inference_data(AutoNormal(model_with_shapes), y, num_samples=40)
    posterior = idata.posterior
    assert set(posterior.data_vars) == {"w", "sigma", "z"}
    assert dict(posterior["w"].sizes) == {"chain": 1, "draw": 40, "w_dim_0": 3}
    assert dict(posterior["sigma"].sizes) == {"chain": 1, "draw": 40}
    assert dict(posterior["z"].sizes) == {"chain": 1, "draw": 40, "z_dim_0": 6}
    assert bool((posterior["sigma"] > 0).all())


def test_inference_data_from_nuts_shaped_samples():
    pytest.importorskip("arviz")
    chains = {"mu": torch.randn(2, 30), "w": torch.randn(2, 30, 3)}
    idata = samples_to_inference_data(chains, group_by_chain=True)
    assert dict(idata.posterior["w"].sizes) == {"chain": 2, "draw": 30, "w_dim_0": 3}
    assert idata.posterior["mu"].values.tolist() == chains["mu"].tolist()
    same = to_inference_data(chains, group_by_chain=True)
    assert dict(same.posterior["mu"].sizes) == {"chain": 2, "draw": 30}
    flat = to_inference_data({"mu": torch.randn(30), "w": torch.randn(30, 3)})
    assert dict(flat.posterior["w"].sizes) == {"chain": 1, "draw": 30, "w_dim_0": 3}
    with pytest.raises(ValueError, match="disagree"):
        samples_to_inference_data({"mu": torch.randn(30), "w": torch.randn(31, 3)})


def test_missing_arviz_raises_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "arviz", None)
    with pytest.raises(ImportError, match="pip install arviz"):
        samples_to_inference_data({"mu": torch.randn(10)})
