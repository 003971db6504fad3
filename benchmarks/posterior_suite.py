"""A suite of posteriors for judging variational guides, each with a trusted reference.

Every problem is a :class:`Problem`: a name, a Pyro model without arguments (data bound with
``functools.partial``), a one-line statement of the maths, and a :class:`Reference`: the
per-coordinate posterior means and standard deviations in the model's *constrained* space,
and ``log Z`` (the log normalising constant of the unnormalised density the model scores)
where it is known. Coordinates are named by :func:`flat_coordinates` (``mu``, ``theta_1``..).

==========================  =====  =====================================================
problem                     dim    reference
==========================  =====  =====================================================
funnel2, funnel10, funnel50  d     exact; log Z = 0
banana                      2      exact (Pyro's examples/neutra.py); log Z = 0
u1 .. u4                    2      quadrature on a 1000 x 1000 grid (log Z and moments)
eight_schools               10     NUTS on the non-centered model (cached JSON)
eight_schools_nc            10     the same NUTS run, its own latents (mu, tau, eta)
logistic                    31     NUTS (cached JSON)
gaussian100                 100    exact; log Z = 0
bimodal5                    5      exact; log Z = 0
hier_logistic               24     NUTS on the non-centered model (cached JSON)
==========================  =====  =====================================================

U1 is used as published; U2-U4 are not normalisable in z1 (periodic in it), so each gets the
term ``(z1 / 4)^8`` added to its energy: a density factor ``exp(-(z1/4)^8)``, about 1 for
``|z1| < 3`` (the paper's plots span [-4, 4]) and below 1e-11 at ``|z1| = 6``, the grid's
edge. On ``bimodal5`` a guide that covers one mode exactly has KL = log 2 = 0.693.

The NUTS references live in ``benchmarks/data/`` with their settings, R-hat, ESS and
divergences; ``python benchmarks/posterior_suite.py --refresh NAME`` recomputes one
(``eight_schools``, ``logistic`` or ``hier_logistic``; a few minutes each on one thread).
``python benchmarks/posterior_suite.py`` prints the problems and their references.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

DATA = Path(__file__).resolve().parent / "data"
EIGHT_SCHOOLS_PATH = DATA / "eight_schools_nuts.json"
LOGISTIC_PATH = DATA / "logistic_breast_cancer_nuts.json"
HIER_PATH = DATA / "hier_logistic_nuts.json"

# eight schools (Rubin 1981; Gelman et al., BDA 5.5)
Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
PUBLISHED = {"mu": {"mean": 4.41, "sd": 3.31}, "tau": {"mean": 3.60, "sd": 3.20}}

FUNNEL_SD = 3.0
BANANA = {"a": 1.15, "b": 1.0, "rho": 0.9}  # the defaults of Pyro's examples/neutra.py
# the box and grid of the 2-D energies' quadrature: (z1 range, z2 range), cells per axis
GRID_BOX = ((-6.0, 6.0), (-7.0, 7.0))
GRID_CELLS = 1000
BIMODAL_DIM, BIMODAL_SHIFT = 5, 4.0
GAUSSIAN_DIM, GAUSSIAN_DECADES = 100, 3.0


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """What a guide is judged against, per coordinate, in the constrained space.

    ``moments[name] = (mean, sd)``; ``log_z`` is the log normalising constant of the density
    the model scores (``None`` when unknown: then the KL divergence cannot be computed, only
    the moment errors); ``source`` says where the numbers come from.
    """

    moments: dict[str, tuple[float, float]]
    log_z: float | None
    source: str


@dataclass(frozen=True)
class Problem:
    """A posterior of the suite: name, model (no arguments), maths, lazily built reference."""

    name: str
    model: Callable[[], None]
    maths: str
    make_reference: Callable[[], Reference] = field(repr=False)

    @cached_property
    def reference(self) -> Reference:
        """The reference (computed or loaded on first use)."""
        return self.make_reference()


def flat_coordinates(samples: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{site: (S, *shape)}`` -> one ``(S,)`` tensor per coordinate, row-major.

    A site with one element keeps its name; the others get 1-based suffixes: ``theta`` of
    shape ``(S, 8)`` becomes ``theta_1`` .. ``theta_8``.
    """
    out = {}
    for name, value in samples.items():
        value = value.reshape(value.shape[0], -1)
        if value.shape[1] == 1:
            out[name] = value[:, 0]
        else:
            out.update({f"{name}_{j + 1}": value[:, j] for j in range(value.shape[1])})
    return out


# -- Neal's funnel -------------------------------------------------------------------------------
def neals_funnel(dim: int) -> None:
    """Neal's funnel in ``dim`` dimensions: v ~ N(0, 3^2), x_i | v ~ N(0, exp(v / 2)^2)."""
    v = pyro.sample("v", dist.Normal(0.0, FUNNEL_SD))
    with pyro.plate("coordinates", dim - 1):
        pyro.sample("x", dist.Normal(0.0, torch.exp(v / 2)))


def funnel_reference(dim: int) -> Reference:
    """Exact: v has mean 0, sd 3; x_i has mean 0 and sd sqrt(E exp(v)) = exp(9 / 4)."""
    x_sd = math.exp(FUNNEL_SD**2 / 4)
    names = ["x"] if dim == 2 else [f"x_{i + 1}" for i in range(dim - 1)]
    moments = {"v": (0.0, FUNNEL_SD), **{name: (0.0, x_sd) for name in names}}
    return Reference(moments, 0.0, "exact")


# -- the banana of Pyro's examples/neutra.py --------------------------------------------------
class BananaShaped(dist.TorchDistribution):
    r"""The banana of Pyro's ``examples/neutra.py`` (Wang, Broccardo & Song 2018).

    With :math:`(u_0, u_1) \sim \mathcal N(0, [[1, \rho], [\rho, 1]])`, the point is
    :math:`x_1 = a u_0`, :math:`x_2 = u_1 / a + b (u_0^2 + a^2)`; the map has unit Jacobian,
    so :math:`\log p(x) = \log \mathcal N(u(x))` is normalised.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, a: float, b: float, rho: float = 0.9) -> None:
        self.a, self.b, self.rho = a, b, rho
        dtype = torch.get_default_dtype()
        cov = torch.tensor([[1.0, rho], [rho, 1.0]], dtype=dtype)
        self.mvn = dist.MultivariateNormal(torch.zeros(2, dtype=dtype), covariance_matrix=cov)
        super().__init__(event_shape=(2,))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Exact draws: Gaussian draws pushed through the banana map."""
        u = self.mvn.sample(sample_shape)
        x1 = self.a * u[..., 0]
        x2 = u[..., 1] / self.a + self.b * (u[..., 0] ** 2 + self.a**2)
        return torch.stack([x1, x2], -1)

    def log_prob(self, value: Tensor) -> Tensor:
        """The Gaussian density of the pulled-back point (unit Jacobian)."""
        u0 = value[..., 0] / self.a
        u1 = (value[..., 1] - self.b * (u0**2 + self.a**2)) * self.a
        return self.mvn.log_prob(torch.stack([u0, u1], -1))


def banana() -> None:
    """The banana of Pyro's NeuTra example, a = 1.15, b = 1, rho = 0.9 (one site ``x``)."""
    pyro.sample("x", BananaShaped(**BANANA))


def banana_reference() -> Reference:
    """Exact: x1 ~ a u0 has mean 0, sd a; x2 has mean b (1 + a^2), sd sqrt(1/a^2 + 2 b^2)."""
    a, b = BANANA["a"], BANANA["b"]
    moments = {"x_1": (0.0, a), "x_2": (b * (1 + a**2), math.sqrt(a**-2 + 2 * b**2))}
    return Reference(moments, 0.0, "exact")


# -- the 2-D energies of Rezende & Mohamed (2015), Table 1 ------------------------------------
def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _gauss(x: Tensor) -> Tensor:
    """``-x^2 / 2``, the log of an unnormalised Gaussian bump."""
    return -0.5 * x**2


def _confine(z: Tensor) -> Tensor:
    """The term ``(z1 / 4)^8`` added to U2-U4: flat on |z1| < 3, a wall beyond |z1| = 5."""
    return (z[..., 0] / 4) ** 8


def energy_u1(z: Tensor) -> Tensor:
    """U1 = ((|z| - 2) / 0.4)^2 / 2 - log(exp(-((z1 - 2)/0.6)^2/2) + exp(-((z1 + 2)/0.6)^2/2))."""
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    modes = torch.logaddexp(_gauss((z[..., 0] - 2) / 0.6), _gauss((z[..., 0] + 2) / 0.6))
    return ring - modes


def energy_u2(z: Tensor) -> Tensor:
    """U2 = ((z2 - w1) / 0.4)^2 / 2 + (z1/4)^8, w1 = sin(2 pi z1 / 4)."""
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2 + _confine(z)


def energy_u3(z: Tensor) -> Tensor:
    """U3 = -log(e^{-((z2 - w1)/0.35)^2/2} + e^{-((z2 - w1 + w2)/0.35)^2/2}) + (z1/4)^8."""
    w2 = 3 * torch.exp(_gauss((z[..., 0] - 1) / 0.6))
    d = z[..., 1] - _w1(z)
    return -torch.logaddexp(_gauss(d / 0.35), _gauss((d + w2) / 0.35)) + _confine(z)


def energy_u4(z: Tensor) -> Tensor:
    """U4 = -log(e^{-((z2 - w1)/0.4)^2/2} + e^{-((z2 - w1 + w3)/0.35)^2/2}) + (z1/4)^8."""
    w3 = 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)
    d = z[..., 1] - _w1(z)
    return -torch.logaddexp(_gauss(d / 0.4), _gauss((d + w3) / 0.35)) + _confine(z)


ENERGIES = {"u1": energy_u1, "u2": energy_u2, "u3": energy_u3, "u4": energy_u4}


class UnnormalizedDensity(dist.TorchDistribution):
    """A density on R^2 known up to a constant: ``log_prob(z) = -energy(z)``.

    It cannot be sampled; ``sample`` returns the origin, which only serves the autoguides'
    initialisation (``init_to_feasible``), never as a draw.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, energy: Callable[[Tensor], Tensor]) -> None:
        self.energy = energy
        super().__init__(event_shape=(2,))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """The origin (see the class docstring)."""
        return torch.zeros((*sample_shape, 2))

    def log_prob(self, value: Tensor) -> Tensor:
        """``-energy(value)``."""
        return -self.energy(value)


def energy_model(energy: Callable[[Tensor], Tensor]) -> None:
    """One 2-D site ``z`` with unnormalised density ``exp(-energy(z))``."""
    pyro.sample("z", UnnormalizedDensity(energy))


def grid_quadrature(
    energy: Callable[[Tensor], Tensor],
    box: Sequence[tuple[float, float]] = GRID_BOX,
    cells: int = GRID_CELLS,
) -> tuple[float, Tensor, Tensor]:
    """``log Z``, means and sds of ``exp(-energy)`` by the midpoint rule on a grid (float64).

    ``Z = sum_cells exp(-U(centre)) * cell area``; moments are the same weighted sums.
    """
    axes = [
        torch.linspace(lo, hi, cells + 1, dtype=torch.float64)[:-1] + (hi - lo) / (2 * cells)
        for lo, hi in box
    ]
    z = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    log_p = -energy(z)
    area = math.prod((hi - lo) / cells for lo, hi in box)
    log_z = float(torch.logsumexp(log_p, 0)) + math.log(area)
    weights = torch.softmax(log_p, 0)[:, None]
    mean = (weights * z).sum(0)
    sd = (weights * (z - mean) ** 2).sum(0).sqrt()
    return log_z, mean, sd


@functools.cache
def energy_reference(name: str) -> Reference:
    """The grid quadrature of energy ``name`` (a few tenths of a second)."""
    log_z, mean, sd = grid_quadrature(ENERGIES[name])
    moments = {f"z_{i + 1}": (float(mean[i]), float(sd[i])) for i in range(2)}
    (x0, x1), (y0, y1) = GRID_BOX
    source = f"midpoint quadrature, {GRID_CELLS}^2 cells on [{x0}, {x1}] x [{y0}, {y1}]"
    return Reference(moments, log_z, source)


# -- a correlated Gaussian and a bimodal mixture ------------------------------------------------
@functools.cache
def gaussian_scale_tril(dim: int = GAUSSIAN_DIM, seed: int = 0) -> Tensor:
    """Cholesky factor of ``Q diag(lambda) Q^T``: Q a random rotation (QR of a Gaussian
    matrix, seed 0), lambda log-spaced from 10^-2 to 10^1 (float64)."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a Haar-distributed rotation
    eigenvalues = torch.logspace(-2.0, -2.0 + GAUSSIAN_DECADES, dim, dtype=torch.float64)
    return torch.linalg.cholesky(q @ torch.diag(eigenvalues) @ q.T)


def correlated_gaussian() -> None:
    """z ~ N(0, Q diag(lambda) Q^T) in 100-D, eigenvalues over 3 decades (one site ``z``)."""
    scale_tril = gaussian_scale_tril().to(torch.get_default_dtype())
    pyro.sample(
        "z", dist.MultivariateNormal(torch.zeros_like(scale_tril[0]), scale_tril=scale_tril)
    )


def gaussian_reference() -> Reference:
    """Exact: means 0, sds the square roots of the covariance's diagonal."""
    sd = gaussian_scale_tril().pow(2).sum(-1).sqrt()
    return Reference({f"z_{i + 1}": (0.0, float(s)) for i, s in enumerate(sd)}, 0.0, "exact")


class RealMixture(dist.MixtureSameFamily):
    """A mixture of distributions on R^d, declared as such (Pyro cannot biject to the
    generic mixture support)."""

    support = constraints.real_vector


def bimodal() -> None:
    """z ~ 0.5 N(-4 e1, I) + 0.5 N(4 e1, I) in 5-D (one site ``z``)."""
    dtype = torch.get_default_dtype()
    locs = torch.zeros(2, BIMODAL_DIM, dtype=dtype)
    locs[:, 0] = torch.tensor([-BIMODAL_SHIFT, BIMODAL_SHIFT], dtype=dtype)
    components = dist.Normal(locs, torch.ones_like(locs)).to_event(1)
    mixing = dist.Categorical(torch.full((2,), 0.5, dtype=dtype))
    pyro.sample("z", RealMixture(mixing, components))


def bimodal_reference() -> Reference:
    """Exact: z1 has mean 0 and sd sqrt(1 + 4^2); the others mean 0, sd 1.

    A guide that covers one mode exactly has KL(q || p) = log 2 (about 0.693): reverse-KL
    training is content with that, so KL near 0.69 means one mode, near 0 both.
    """
    moments = {f"z_{i + 1}": (0.0, 1.0) for i in range(BIMODAL_DIM)}
    moments["z_1"] = (0.0, math.sqrt(1 + BIMODAL_SHIFT**2))
    return Reference(moments, 0.0, "exact")


# -- eight schools -------------------------------------------------------------------------------
def eight_schools(y: Tensor, sigma: Tensor) -> None:
    """Centered eight schools (Rubin 1981; Gelman et al., BDA 5.5)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_noncentered(y: Tensor, sigma: Tensor) -> None:
    """The same posterior with theta = mu + tau * eta, eta ~ N(0, 1): easy for NUTS."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", len(y)):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


# -- Bayesian logistic regression on the breast-cancer data ------------------------------------
@functools.cache
def breast_cancer() -> tuple[Tensor, Tensor]:
    """scikit-learn's breast-cancer data: standardised features (569, 30), labels (569,)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = torch.as_tensor(data.data, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    return x, torch.as_tensor(data.target, dtype=torch.float64)


def logistic_regression(x: Tensor, y: Tensor) -> None:
    """beta ~ N(0, I_31), y_n ~ Bernoulli(sigmoid(beta_1 + x_n . beta_2:31)) (beta_1: intercept)."""
    beta = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([x.shape[1] + 1]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        logits = beta[..., 0] + (x * beta[..., 1:]).sum(-1)
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=y)


# -- a hierarchical logistic regression ----------------------------------------------------------
HIER_GROUP_SIZES = (3, 4, 5, 6, 8, 10, 15, 20, 30, 50)
HIER_TRUTH = {"mu_a": -0.5, "mu_b": 1.0, "sigma_a": 1.0, "sigma_b": 0.5}


@functools.cache
def hier_data(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Synthetic groups (sizes HIER_GROUP_SIZES), x ~ N(0, 1), y from HIER_TRUTH (seed 0).

    Returns ``(group index, x, y)``, each of shape ``(N,)`` (N = 151), float64 / long.
    """
    generator = torch.Generator().manual_seed(seed)
    groups = len(HIER_GROUP_SIZES)
    a = HIER_TRUTH["mu_a"] + HIER_TRUTH["sigma_a"] * torch.randn(groups, generator=generator)
    b = HIER_TRUTH["mu_b"] + HIER_TRUTH["sigma_b"] * torch.randn(groups, generator=generator)
    g = torch.repeat_interleave(torch.arange(groups), torch.tensor(HIER_GROUP_SIZES))
    x = torch.randn(g.shape[0], generator=generator)
    y = torch.bernoulli(torch.sigmoid(a[g] + b[g] * x), generator=generator)
    return g, x.double(), y.double()


def _hier_hyper() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 2.0))
    mu_b = pyro.sample("mu_b", dist.Normal(0.0, 2.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(1.0))
    sigma_b = pyro.sample("sigma_b", dist.HalfNormal(1.0))
    return mu_a, mu_b, sigma_a, sigma_b


def _hier_likelihood(a: Tensor, b: Tensor, g: Tensor, x: Tensor, y: Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("obs", dist.Bernoulli(logits=a[..., g] + b[..., g] * x), obs=y)


def hier_logistic(g: Tensor, x: Tensor, y: Tensor) -> None:
    """mu_a, mu_b ~ N(0, 2^2); sigma_a, sigma_b ~ HalfNormal(1); a_j ~ N(mu_a, sigma_a^2),
    b_j ~ N(mu_b, sigma_b^2) (10 groups, centered); y_n ~ Bernoulli(sigmoid(a_g + b_g x_n))."""
    mu_a, mu_b, sigma_a, sigma_b = _hier_hyper()
    with pyro.plate("groups", len(HIER_GROUP_SIZES)):
        a = pyro.sample("a", dist.Normal(mu_a, sigma_a))
        b = pyro.sample("b", dist.Normal(mu_b, sigma_b))
    _hier_likelihood(a, b, g, x, y)


def hier_logistic_noncentered(g: Tensor, x: Tensor, y: Tensor) -> None:
    """The same posterior with a = mu_a + sigma_a * a_raw, b likewise: the NUTS reference."""
    mu_a, mu_b, sigma_a, sigma_b = _hier_hyper()
    with pyro.plate("groups", len(HIER_GROUP_SIZES)):
        a_raw = pyro.sample("a_raw", dist.Normal(0.0, 1.0))
        b_raw = pyro.sample("b_raw", dist.Normal(0.0, 1.0))
        a = pyro.deterministic("a", mu_a + sigma_a * a_raw)
        b = pyro.deterministic("b", mu_b + sigma_b * b_raw)
    _hier_likelihood(a, b, g, x, y)


# -- NUTS references -------------------------------------------------------------------------------
@dataclass
class NutsSettings:
    """What a cached NUTS reference was computed with."""

    num_chains: int = 4
    warmup_steps: int = 1000
    num_samples: int = 2000
    target_accept_prob: float = 0.95
    max_tree_depth: int = 10
    jit_compile: bool = True
    seed: int = 0


def nuts_mcmc(model: Callable, settings: NutsSettings) -> Any:
    """One chain's ``MCMC(NUTS(model))`` with the settings' tuning, no progress bar.

    ``settings`` is a :class:`NutsSettings` or anything with its fields.
    """
    from pyro.infer import MCMC, NUTS

    kernel = NUTS(
        model,
        target_accept_prob=settings.target_accept_prob,
        max_tree_depth=settings.max_tree_depth,
        jit_compile=settings.jit_compile,
        ignore_jit_warnings=True,
    )
    return MCMC(
        kernel,
        num_samples=settings.num_samples,
        warmup_steps=settings.warmup_steps,
        disable_progbar=True,
    )


def run_nuts(
    model: Callable, settings: NutsSettings, *args: Any, deterministic: Sequence[str] = ()
) -> dict[str, Any]:
    """NUTS chains one after the other (seeds ``seed + chain``); a summary per coordinate.

    Every latent site, and the ``deterministic`` sites, flattened by
    :func:`flat_coordinates`: mean, sd, split R-hat and ESS over all chains.
    """
    from pyro.ops.stats import effective_sample_size, split_gelman_rubin

    chains, divergences, start = [], [], time.perf_counter()
    for chain in range(settings.num_chains):
        pyro.set_rng_seed(settings.seed + chain)
        mcmc = nuts_mcmc(model, settings)
        mcmc.run(*args)
        divergences.append(len(mcmc.diagnostics()["divergences"]["chain 0"]))
        samples = mcmc.get_samples()
        if deterministic:
            predictive = pyro.infer.Predictive(model, samples, return_sites=list(deterministic))
            samples = {**samples, **predictive(*args)}
        chains.append(flat_coordinates(samples))
        print(f"  chain {chain}: {divergences[-1]} divergences", flush=True)
    sites = {}
    for name in chains[0]:
        grouped = torch.stack([chain[name] for chain in chains]).double()  # (chains, draws)
        sites[name] = {
            "mean": float(grouped.mean()),
            "sd": float(grouped.flatten().std()),
            "r_hat": float(split_gelman_rubin(grouped, chain_dim=0, sample_dim=1)),
            "ess": float(effective_sample_size(grouped, chain_dim=0, sample_dim=1)),
        }
    return {
        "divergences": sum(divergences),
        "divergences_per_chain": divergences,
        "seconds": round(time.perf_counter() - start, 1),
        "sites": sites,
    }


def _settings_record(settings: NutsSettings) -> dict[str, Any]:
    return {
        **settings.__dict__,
        "dtype": str(torch.get_default_dtype()).removeprefix("torch."),
        "pyro": pyro.__version__,
        "torch": torch.__version__,
    }


def refresh_eight_schools(
    path: Path = EIGHT_SCHOOLS_PATH, runs: Sequence[str] = ("noncentered", "centered")
) -> dict[str, Any]:
    """NUTS on the named parameterisations of eight schools; update the JSON summary.

    Runs not named keep their entries (they must have been made with the same settings).
    """
    settings = NutsSettings()
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result.update(
        {
            "description": "Eight schools posterior summaries from Pyro NUTS "
            "(benchmarks/posterior_suite.py --refresh eight_schools); 'reference' names the "
            "run the benchmarks compare the guides with.",
            "reference": "noncentered",
            "settings": _settings_record(settings),
            "published": PUBLISHED,
        }
    )
    models = {"noncentered": eight_schools_noncentered, "centered": eight_schools}
    for name in runs:
        print(f"# NUTS on the {name} model: {settings}", flush=True)
        extra = ("theta",) if name == "noncentered" else ()
        result[name] = run_nuts(models[name], settings, *_cast(Y, SIGMA), deterministic=extra)
    _write(path, result)
    return result


def _refresh_one(
    path: Path, description: str, model: Callable, args: tuple, settings: NutsSettings, **kw
) -> dict[str, Any]:
    print(f"# NUTS for {path.name}: {settings}", flush=True)
    result = {"description": description, "settings": _settings_record(settings)}
    result.update(run_nuts(model, settings, *args, **kw))
    _write(path, result)
    return result


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"# wrote {path}")


# eight schools keeps the default dtype of its first run (float32); the others run in float64
REFRESH: dict[str, Callable[[], Any]] = {
    "eight_schools": refresh_eight_schools,
    "logistic": lambda: _refresh_one(
        LOGISTIC_PATH,
        "Bayesian logistic regression on scikit-learn's breast-cancer data (standardised "
        "features, intercept beta_1, N(0, 1) prior on all 31 coefficients): Pyro NUTS "
        "(benchmarks/posterior_suite.py --refresh logistic)",
        logistic_regression,
        _cast(*breast_cancer()),
        NutsSettings(num_chains=4, warmup_steps=500, num_samples=1000, target_accept_prob=0.9),
    ),
    "hier_logistic": lambda: _refresh_one(
        HIER_PATH,
        "Hierarchical logistic regression (posterior_suite.hier_logistic, synthetic data, "
        "seed 0): Pyro NUTS on the non-centered model, a and b as deterministic sites "
        "(benchmarks/posterior_suite.py --refresh hier_logistic)",
        hier_logistic_noncentered,
        _cast(*hier_data()),
        NutsSettings(num_chains=4, warmup_steps=300, num_samples=700),
        deterministic=("a", "b"),
    ),
}


def nuts_reference(path: Path, names: Sequence[str] | None = None) -> Reference:
    """The cached NUTS summary at ``path`` (its ``reference`` run when it has several)."""
    if not path.exists():
        raise FileNotFoundError(f"no {path}: run posterior_suite.py --refresh first")
    data = json.loads(path.read_text())
    run = data[data["reference"]] if "reference" in data else data
    settings = data["settings"]
    sites = run["sites"] if names is None else {name: run["sites"][name] for name in names}
    source = (
        f"NUTS ({path.name}: {settings['num_chains']} chains x {settings['num_samples']} "
        f"draws after {settings['warmup_steps']} warm-up, {run['divergences']} divergences, "
        f"min ESS {min(s['ess'] for s in sites.values()):.0f}, max R-hat "
        f"{max(s['r_hat'] for s in sites.values()):.3f})"
    )
    return Reference({k: (s["mean"], s["sd"]) for k, s in sites.items()}, None, source)


def _schools(prefix: str) -> Reference:
    names = ["mu", "tau", *(f"{prefix}_{j + 1}" for j in range(len(Y)))]
    return nuts_reference(EIGHT_SCHOOLS_PATH, names)


_HIER_NAMES = [
    *HIER_TRUTH,
    *(f"{s}_{j + 1}" for s in "ab" for j in range(len(HIER_GROUP_SIZES))),
]


# -- the suite ------------------------------------------------------------------------------------
def _cast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Data in the current default dtype (integer tensors kept)."""
    dtype = torch.get_default_dtype()
    return tuple(t if not t.is_floating_point() else t.to(dtype) for t in tensors)


def problems() -> dict[str, Problem]:
    """The suite, in order; data tensors in the current default dtype."""
    suite = [
        *(
            Problem(
                f"funnel{d}",
                partial(neals_funnel, d),
                f"Neal's funnel, d = {d}: v ~ N(0, 3^2), x_i ~ N(0, exp(v/2)^2), i < {d}",
                partial(funnel_reference, d),
            )
            for d in (2, 10, 50)
        ),
        Problem(
            "banana",
            banana,
            "banana of Pyro's NeuTra example: x = (a u0, u1/a + b(u0^2 + a^2)), "
            "u ~ N(0, [[1, .9], [.9, 1]]), a = 1.15, b = 1",
            banana_reference,
        ),
        *(
            Problem(
                name,
                partial(energy_model, energy),
                f"Rezende & Mohamed (2015) {name.upper()}: {energy.__doc__.rstrip('.')}",
                partial(energy_reference, name),
            )
            for name, energy in ENERGIES.items()
        ),
        Problem(
            "eight_schools",
            partial(eight_schools, *_cast(Y, SIGMA)),
            "eight schools, centered: mu ~ N(0, 5^2), tau ~ HalfCauchy(5), "
            "theta_j ~ N(mu, tau^2), y_j ~ N(theta_j, sigma_j^2)",
            partial(_schools, "theta"),
        ),
        Problem(
            "eight_schools_nc",
            partial(eight_schools_noncentered, *_cast(Y, SIGMA)),
            "eight schools, non-centered: eta_j ~ N(0, 1), theta_j = mu + tau eta_j",
            partial(_schools, "eta"),
        ),
        Problem(
            "logistic",
            partial(logistic_regression, *_cast(*breast_cancer())),
            "logistic regression, breast cancer (569 x 30, standardised): "
            "beta ~ N(0, I_31), y ~ Bernoulli(sigmoid(beta_1 + x . beta_2:31))",
            partial(nuts_reference, LOGISTIC_PATH),
        ),
        Problem(
            "gaussian100",
            correlated_gaussian,
            "z ~ N(0, Q diag(lambda) Q^T), d = 100, Q a random rotation (seed 0), "
            "lambda log-spaced over 10^-2..10^1",
            gaussian_reference,
        ),
        Problem(
            "bimodal5",
            bimodal,
            "z ~ 0.5 N(-4 e1, I_5) + 0.5 N(4 e1, I_5); one mode exactly: KL = log 2",
            bimodal_reference,
        ),
        Problem(
            "hier_logistic",
            partial(hier_logistic, *_cast(*hier_data())),
            "hierarchical logistic regression, 10 groups (3..50 obs), centered: "
            "a_j ~ N(mu_a, sigma_a^2), b_j ~ N(mu_b, sigma_b^2), "
            "y ~ Bernoulli(sigmoid(a_g + b_g x))",
            partial(nuts_reference, HIER_PATH, _HIER_NAMES),
        ),
    ]
    return {problem.name: problem for problem in suite}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refresh", choices=sorted(REFRESH), action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    for name in args.refresh:
        REFRESH[name]()
    for problem in problems().values():
        ref = problem.reference
        log_z = "unknown" if ref.log_z is None else f"{ref.log_z:.4f}"
        print(f"{problem.name:<17} {len(ref.moments):>4} coords, log Z {log_z}; {ref.source}")
        print(f"  {problem.maths}")


if __name__ == "__main__":
    main()
