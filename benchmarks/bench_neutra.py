"""NeuTra HMC with a flow guide: NUTS against NUTS on a flow-reparameterised model.

Three samplers on two posteriors with a funnel (the models of ``bench_vi_quality.py``):

* **NUTS** on the model as written;
* **NUTS + NeuTra(AutoIAFNormal)**: Pyro's IAF autoguide (its defaults), fitted by SVI, then
  :class:`~pyro.infer.reparam.NeuTraReparam` and NUTS on the reparameterised model;
* **NUTS + NeuTra(AutoFlow)**: the same with ``pyroflows.infer.AutoFlow(model)``: its default
  flow, started as ``N(init, I)`` like Pyro's IAF guide (whose base is ``N(0, I)``).

NeuTra (Hoffman et al. 2019, arXiv:1903.03704) runs HMC in the base space of the fitted guide
``z = T(e)``, on the target ``log p(T(e)) + log|det J_T(e)|``; when ``T`` has straightened the
posterior into something close to ``N(0, I)``, one step size fits everywhere. The draws are
mapped back with ``neutra.transform_sample``.

Both guides get the same budget: SVI with ``Trace_ELBO`` (8 vectorized particles) and
``ClippedAdam``, learning rate 1e-2 decaying geometrically to 1e-3 over ``--steps`` steps
(default 10,000: at 3,000 the funnel's AutoFlow guide left 54 divergences to NUTS, at
10,000 13). NUTS (default settings, ``jit_compile=True``) then runs ``--chains`` chains
one after the other (seeds ``seed + chain``), each ``--warmup`` warm-up and ``--draws`` kept
draws. Per sampler the table gives the bulk ESS of ``v`` (funnel) / ``tau`` (eight schools)
over all chains (``arviz.ess(..., method="bulk")``) per second of sampling, the sampling and
guide-fit wall times (reported apart), divergent transitions, the largest R-hat over every
scalar latent, and the posterior mean and sd of ``v`` (exact: 0 and 3) / ``tau`` (reference:
NUTS on the non-centered model, ``benchmarks/data/eight_schools_nuts.json``).

Targets (pyroflows issue 12), reported as met or missed: on the funnel, the bulk ESS/s of ``v``
with NeuTra + AutoFlow is at least 3x plain NUTS's, with zero divergences, and at least NeuTra
+ AutoIAFNormal's at the same guide budget.

Usage: python benchmarks/bench_neutra.py [--steps N] [--chains C] [--warmup W] [--draws S]
       [--models funnel,eight_schools] [--seed S] [--json PATH] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pyro
import torch
from _timing import machine_line
from bench_vi_quality import FUNNEL_DIM, FUNNEL_SD, REFERENCE_PATH, SIGMA, Y, eight_schools, funnel
from posterior_suite import nuts_mcmc
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal
from pyro.infer.reparam import NeuTraReparam

from pyroflows.infer import AutoFlow

TARGET_SPEEDUP = 3.0  # NeuTra + AutoFlow against plain NUTS, bulk ESS/s of v on the funnel


@dataclass
class Settings:
    """The guide budget and the NUTS runs, shared by every sampler."""

    num_steps: int = 10_000
    num_particles: int = 8
    lr: float = 1e-2
    final_lr: float = 1e-3
    num_chains: int = 4
    warmup_steps: int = 500
    num_samples: int = 1000
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    jit_compile: bool = True
    seed: int = 0


@dataclass
class Problem:
    """A model, its arguments, the site the ESS is measured on and its known answer."""

    name: str
    model: Callable
    args: tuple
    site: str
    truth: str


GUIDES: dict[str, Callable[[Callable], Any] | None] = {
    "NUTS": None,
    "NeuTra(AutoIAFNormal)": AutoIAFNormal,
    "NeuTra(AutoFlow)": AutoFlow,
}


def fit_guide(problem: Problem, make_guide: Callable, settings: Settings) -> tuple[Any, float]:
    """SVI with the shared budget; the guide (frozen) and the fit's wall time in seconds."""
    pyro.clear_param_store()
    pyro.set_rng_seed(settings.seed)
    guide = make_guide(problem.model)
    decay = (settings.final_lr / settings.lr) ** (1 / settings.num_steps)
    optimizer = pyro.optim.ClippedAdam({"lr": settings.lr, "lrd": decay})
    loss = Trace_ELBO(
        num_particles=settings.num_particles, vectorize_particles=True, max_plate_nesting=1
    )
    svi = SVI(problem.model, guide, optimizer, loss)
    start = time.perf_counter()
    for _ in range(settings.num_steps):
        svi.step(*problem.args)
    seconds = time.perf_counter() - start
    return guide.requires_grad_(False), seconds


def run_chains(
    problem: Problem, settings: Settings, guide: Any | None
) -> tuple[dict[str, np.ndarray], int, float]:
    """NUTS chains one after the other: ``(draws {site: (chain, draw, ...)}, divergences, s)``.

    With a guide, NUTS samples the NeuTra-reparameterised model (the guide's base space) and
    the draws are mapped back to the model's sites with ``neutra.transform_sample``.
    """
    neutra = None if guide is None else NeuTraReparam(guide)
    model = problem.model if neutra is None else poutine.reparam(problem.model, lambda _: neutra)
    chains, divergences, seconds = [], 0, 0.0
    for chain in range(settings.num_chains):
        pyro.set_rng_seed(settings.seed + chain)
        mcmc = nuts_mcmc(model, settings)
        start = time.perf_counter()
        mcmc.run(*problem.args)
        seconds += time.perf_counter() - start
        divergences += len(mcmc.diagnostics()["divergences"]["chain 0"])
        samples = mcmc.get_samples()
        if neutra is not None:
            (latent,) = (v for k, v in samples.items() if k.endswith("_shared_latent"))
            samples = transform_draws(neutra, latent)
        chains.append({name: value.double().numpy() for name, value in samples.items()})
    draws = {name: np.stack([chain[name] for chain in chains]) for name in chains[0]}
    return draws, divergences, seconds


def transform_draws(neutra: NeuTraReparam, latent: torch.Tensor) -> dict[str, torch.Tensor]:
    """Map NUTS's base-space draws ``(S, D)`` back to the model's sites, ``(S, *site shape)``.

    ``transform_sample`` needs the draws' batch dimension left of the models' plate dimension
    (``max_plate_nesting = 1`` here): a site inside a plate of size 9 would otherwise try to
    broadcast its 9 values against the S draws.
    """
    with torch.no_grad():
        values = neutra.transform_sample(latent.unsqueeze(-2))
    prototype = neutra.guide.prototype_trace
    shapes = {name: site["value"].shape for name, site in prototype.iter_stochastic_nodes()}
    return {name: value.reshape(latent.shape[:1] + shapes[name]) for name, value in values.items()}


def summarise(problem: Problem, draws: dict[str, np.ndarray]) -> dict[str, float]:
    """Bulk ESS of the problem's site, max R-hat over every scalar latent, mean and sd."""
    scalars = {}
    for name, value in draws.items():
        flat = value.reshape(value.shape[0], value.shape[1], -1)
        for index in range(flat.shape[-1]):
            scalars[f"{name}[{index}]" if flat.shape[-1] > 1 else name] = flat[..., index]
    site = draws[problem.site]
    return {
        "ess_bulk": float(az.ess(site, method="bulk")),
        "r_hat_max": max(float(az.rhat(value)) for value in scalars.values()),
        "mean": float(site.mean()),
        "sd": float(site.std(ddof=1)),
    }


def run_problem(problem: Problem, settings: Settings) -> dict[str, dict[str, Any]]:
    """Every sampler on one problem; a row of numbers per sampler."""
    rows = {}
    for label, make_guide in GUIDES.items():
        guide, fit_seconds = (
            (None, 0.0) if make_guide is None else fit_guide(problem, make_guide, settings)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit tracer warnings of jit_compile
            draws, divergences, seconds = run_chains(problem, settings, guide)
        row = summarise(problem, draws)
        row.update(
            fit_seconds=fit_seconds,
            sample_seconds=seconds,
            ess_per_second=row["ess_bulk"] / seconds,
            ess_per_second_with_fit=row["ess_bulk"] / (seconds + fit_seconds),
            divergences=divergences,
        )
        rows[label] = row
        print(
            f"{label:<22} {row['ess_bulk']:>8.0f} {row['ess_per_second']:>7.2f} "
            f"{row['ess_per_second_with_fit']:>9.2f} {seconds:>8.1f} {fit_seconds:>6.1f} "
            f"{divergences:>5d} {row['r_hat_max']:>6.3f} {row['mean']:>7.2f} {row['sd']:>6.2f}",
            flush=True,
        )
    return rows


def targets(funnel_rows: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """The issue's three targets on the funnel, each met or not."""
    nuts, iaf, flow = (funnel_rows[label]["ess_per_second"] for label in GUIDES)
    return {
        f"ESS/s >= {TARGET_SPEEDUP:g}x NUTS": flow >= TARGET_SPEEDUP * nuts,
        "zero divergences": funnel_rows["NeuTra(AutoFlow)"]["divergences"] == 0,
        ">= NeuTra(AutoIAFNormal)": flow >= iaf,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="SVI steps (default 10000)")
    parser.add_argument("--chains", type=int, default=None, help="NUTS chains (default 4)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up per chain (500)")
    parser.add_argument("--draws", type=int, default=None, help="kept draws per chain (1000)")
    parser.add_argument("--models", default="funnel,eight_schools")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument("--quick", action="store_true", help="tiny budget and chains (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = Settings(
        num_steps=30, num_chains=2, warmup_steps=30, num_samples=30, max_tree_depth=5,
        jit_compile=False,
    )  # fmt: skip
    settings = quick if args.quick else Settings()
    for field, value in (
        ("num_steps", args.steps),
        ("num_chains", args.chains),
        ("warmup_steps", args.warmup),
        ("num_samples", args.draws),
    ):
        if value is not None:
            setattr(settings, field, value)
    settings.seed = args.seed

    reference = json.loads(REFERENCE_PATH.read_text()) if REFERENCE_PATH.exists() else None
    tau_truth = (
        "reference tau {mean:.2f} (sd {sd:.2f}), NUTS on the non-centered model".format(
            **reference[reference["reference"]]["sites"]["tau"]
        )
        if reference
        else "published tau 3.60 (sd 3.20)"
    )
    problems = {
        "funnel": Problem(
            f"Neal's funnel (d = {FUNNEL_DIM})", funnel, (), "v", f"exact v: 0 (sd {FUNNEL_SD:g})"
        ),
        "eight_schools": Problem(
            "Eight schools, centered", eight_schools, (Y, SIGMA), "tau", tau_truth
        ),
    }
    names = args.models.split(",")
    unknown = set(names) - set(problems)
    if unknown:
        raise SystemExit(f"unknown model(s) {sorted(unknown)}; known: {sorted(problems)}")

    print(
        f"# {machine_line()}; guides: {settings.num_steps} SVI steps, Trace_ELBO with "
        f"{settings.num_particles} vectorized particles, ClippedAdam lr {settings.lr:g} -> "
        f"{settings.final_lr:g}; NUTS: {settings.num_chains} chains x {settings.warmup_steps} "
        f"warm-up + {settings.num_samples} draws, target_accept_prob "
        f"{settings.target_accept_prob}, max_tree_depth {settings.max_tree_depth}, jit_compile "
        f"{settings.jit_compile}, seed {settings.seed}; pyro {pyro.__version__}"
    )
    results: dict[str, Any] = {"machine": machine_line(), "settings": asdict(settings)}
    for name in names:
        problem = problems[name]
        print(f"\n{problem.name}: bulk ESS of {problem.site}; {problem.truth}")
        header = (
            f"{'sampler':<22} {'ESS':>8} {'ESS/s':>7} {'(w/ fit)':>9} {'sample s':>8} "
            f"{'fit s':>6} {'div':>5} {'R-hat':>6} {'mean':>7} {'sd':>6}"
        )
        print(header)
        print("-" * len(header))
        results[name] = run_problem(problem, settings)
    if "funnel" in results:
        met = targets(results["funnel"])
        results["funnel_targets"] = met
        speedup = (
            results["funnel"]["NeuTra(AutoFlow)"]["ess_per_second"]
            / results["funnel"]["NUTS"]["ess_per_second"]
        )
        print(
            f"\nfunnel targets for NeuTra(AutoFlow) (ESS/s {speedup:.1f}x NUTS's): "
            + "; ".join(f"{k}: {'met' if v else 'missed'}" for k, v in met.items())
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\n# wrote {args.json}")


if __name__ == "__main__":
    main()
