"""The references of benchmarks/posterior_suite.py are right where they are exact.

Each exact or quadrature reference is checked against an independent estimate: importance
sampling of the model's own log density (log Z and moments of the 2-D energies, the funnel's
log Z), exact draws (banana, Gaussian, mixture), and every problem's reference covers exactly
the coordinates of its model.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.poutine.util import site_is_subsample

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import posterior_suite as ps


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def model_log_density(model, values: dict[str, torch.Tensor], num: int) -> torch.Tensor:
    """The model's unnormalised log density at ``num`` points, shape ``(num,)``.

    ``values[site]`` has shape ``(num, 1, *site shape)``: the draws run in a plate at dim -2,
    outside the models' own plates (dim -1).
    """
    with pyro.plate("draws", num, dim=-2):
        trace = poutine.trace(poutine.condition(model, data=values)).get_trace()
    trace.compute_log_prob()
    return sum(
        site["log_prob"].reshape(num, -1).sum(-1)
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    )


def importance_estimates(model, site, proposal, num=50_000):
    """log Z, means and sds of a one-site model by importance sampling from ``proposal``."""
    torch.manual_seed(0)
    z = proposal.sample((num,))
    log_w = model_log_density(model, {site: z[:, None]}, num) - proposal.log_prob(z)
    log_z = float(torch.logsumexp(log_w, 0)) - math.log(num)
    w = torch.softmax(log_w, 0)[:, None]
    mean = (w * z).sum(0)
    sd = (w * (z - mean) ** 2).sum(0).sqrt()
    return log_z, mean, sd


@pytest.mark.parametrize("name", list(ps.ENERGIES))
def test_energy_grid_quadrature_matches_importance_sampling(name):
    problem = ps.problems()[name]
    proposal = dist.Normal(torch.zeros(2), torch.full((2,), 3.0)).to_event(1)
    log_z, mean, sd = importance_estimates(problem.model, "z", proposal)
    reference = problem.reference
    assert abs(reference.log_z - log_z) < 0.02
    for i in range(2):
        ref_mean, ref_sd = reference.moments[f"z_{i + 1}"]
        assert abs(ref_mean - float(mean[i])) < 0.03
        assert abs(ref_sd / float(sd[i]) - 1) < 0.02


def test_energy_grid_box_holds_the_mass():
    # the box's edges carry a negligible density, so the grid sees all the mass
    (x0, x1), (y0, y1) = ps.GRID_BOX
    t = torch.linspace(0, 1, 2001)
    edges = torch.cat(
        [torch.stack([x0 + (x1 - x0) * t, torch.full_like(t, y)], -1) for y in (y0, y1)]
        + [torch.stack([torch.full_like(t, x), y0 + (y1 - y0) * t], -1) for x in (x0, x1)]
    )
    for name, energy in ps.ENERGIES.items():
        log_z = ps.energy_reference(name).log_z
        assert float((-energy(edges)).max()) - log_z < math.log(1e-8), name


def test_banana_is_normalised_and_its_moments_are_exact():
    reference = ps.problems()["banana"].reference
    banana = ps.BananaShaped(**ps.BANANA)
    log_z, _, _ = ps.grid_quadrature(lambda x: -banana.log_prob(x), ((-6, 6), (-4, 30)), 500)
    assert abs(log_z - reference.log_z) < 1e-3
    torch.manual_seed(0)
    draws = banana.sample((100_000,))
    for i in range(2):
        ref_mean, ref_sd = reference.moments[f"x_{i + 1}"]
        assert abs(float(draws[:, i].mean()) - ref_mean) / ref_sd < 0.015
        assert abs(float(draws[:, i].std()) / ref_sd - 1) < 0.015


def test_funnel_log_z_by_importance_sampling():
    # proposal: the exact v-marginal, and x | v twice as wide as the model's (bounded weights)
    dim, num = 10, 50_000
    torch.manual_seed(0)
    v = 3.0 * torch.randn(num, 1)
    x = 2 * torch.exp(v / 2) * torch.randn(num, dim - 1)
    log_q = dist.Normal(0.0, 3.0).log_prob(v[:, 0]) + dist.Normal(
        0.0, 2 * torch.exp(v / 2)
    ).log_prob(x).sum(-1)
    log_p = model_log_density(ps.problems()["funnel10"].model, {"v": v, "x": x}, num)
    log_w = log_p - log_q
    estimate = float(torch.logsumexp(log_w, 0)) - math.log(num)
    assert abs(estimate - ps.problems()["funnel10"].reference.log_z) < 0.05


def test_funnel_x_sd_is_the_root_of_e_exp_v():
    v = torch.linspace(-40, 40, 200_001)
    density = dist.Normal(0.0, 3.0).log_prob(v).exp()
    e_exp_v = float((density * v.exp()).sum() * (v[1] - v[0]))
    _, x_sd = ps.problems()["funnel50"].reference.moments["x_49"]
    assert abs(x_sd / math.sqrt(e_exp_v) - 1) < 1e-6


@pytest.mark.parametrize("name", ["gaussian100", "bimodal5"])
def test_exact_moments_against_draws_from_the_model(name):
    problem = ps.problems()[name]
    pyro.set_rng_seed(0)
    with pyro.plate("draws", 20_000, dim=-1):
        z = poutine.trace(problem.model).get_trace().nodes["z"]["value"]
    for i in range(z.shape[-1]):
        ref_mean, ref_sd = problem.reference.moments[f"z_{i + 1}"]
        assert abs(float(z[:, i].mean()) - ref_mean) / ref_sd < 0.04
        assert abs(float(z[:, i].std()) / ref_sd - 1) < 0.04


@pytest.mark.parametrize("name", list(ps.problems()))
def test_reference_covers_the_model_coordinates(name):
    problem = ps.problems()[name]
    pyro.set_rng_seed(0)
    trace = poutine.trace(problem.model).get_trace()
    latent = {
        site_name: site["value"][None]
        for site_name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }
    assert set(ps.flat_coordinates(latent)) == set(problem.reference.moments)
    assert all(sd > 0 for _, sd in problem.reference.moments.values())
