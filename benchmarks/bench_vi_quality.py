"""Posterior quality of flow guides at a fixed step budget: Neal's funnel and eight schools.

Every guide is trained by the same loop (``pyroflows.infer.svi.train_guide``: ``Trace_ELBO``
with vectorized particles, Adam with a cosine decay of the learning rate, the same number of
steps and particles for all) and then judged against a known answer:

* **Neal's funnel** (d = 10): ``v ~ N(0, 3^2)``, ``x_i | v ~ N(0, exp(v/2)^2)``, i = 1..9.
  The marginal of ``v`` is exactly ``N(0, 3^2)``; the table gives the guide's mean and sd of
  ``v`` (target: sd within 15% of 3, i.e. 2.55..3.45).
* **Eight schools, centered**: ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
  ``theta_j ~ N(mu, tau)``, ``y_j ~ N(theta_j, sigma_j)``. The reference is NUTS on the
  *non-centered* form of the same model (no divergences, same posterior); the centered NUTS
  run, its divergences, and the published means (mu 4.41, sd 3.31; tau 3.60, sd 3.20) are
  recorded beside it. For every latent (mu, tau, theta_1..8) the table gives the worst
  standardized mean error ``|mean_guide - mean_ref| / sd_ref`` (target <= 0.1) and the range
  of ``sd_guide / sd_ref`` (target 0.8..1.2).

For both, the Pareto k of the importance weights ``p(x, z) / q(z)`` with the guide as the
proposal (k < 0.5 good, 0.5-0.7 ok, > 0.7 unreliable; Yao et al. 2018, arXiv:1802.02538;
Vehtari et al. 2024, arXiv:1507.02646) and the median wall time per step.

NUTS is slow, so its summary (means, sds, R-hat, ESS per site, divergences, settings, seed)
is cached in ``benchmarks/data/eight_schools_nuts.json``; ``--refresh-reference`` recomputes
it (about 10 minutes on one CPU thread). ``--quick`` is a smoke run: 50 steps, small flows.

Usage: python benchmarks/bench_vi_quality.py [--steps N] [--particles P] [--guides a,b]
       [--seed S] [--json PATH] [--refresh-reference] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from _timing import machine_line
from posterior_suite import (
    EIGHT_SCHOOLS_PATH,
    FUNNEL_SD,
    PUBLISHED,
    SIGMA,
    Y,
    eight_schools,
    flat_coordinates,
    neals_funnel,
    refresh_eight_schools,
)
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyroflows.transforms as pft
from pyroflows.infer import AutoFlow, importance_diagnostics, posterior_samples
from pyroflows.infer.svi import train_guide

REFERENCE_PATH = EIGHT_SCHOOLS_PATH
FUNNEL_DIM = 10
# targets
FUNNEL_SD_RANGE = (0.85 * FUNNEL_SD, 1.15 * FUNNEL_SD)
MAX_MEAN_ERROR = 0.1
SD_RATIO_RANGE = (0.8, 1.2)


funnel = partial(neals_funnel, FUNNEL_DIM)


# -- the NUTS reference --------------------------------------------------------------------------
def load_reference(path: Path, quick: bool) -> tuple[dict[str, dict[str, float]], str]:
    """The reference sites and a line describing them; the published values if no file."""
    if not path.exists():
        if not quick:
            raise SystemExit(f"no {path}: run with --refresh-reference first")
        return PUBLISHED, "published means/sds (mu, tau only; no cached NUTS file)"
    data = json.loads(path.read_text())
    run, settings = data[data["reference"]], data["settings"]
    centered = data["centered"]
    line = (
        f"NUTS on the {data['reference']} model, {settings['num_chains']} chains x "
        f"{settings['num_samples']} draws after {settings['warmup_steps']} warm-up, "
        f"target_accept_prob {settings['target_accept_prob']}, seed {settings['seed']}: "
        f"{run['divergences']} divergences, min ESS "
        f"{min(s['ess'] for s in run['sites'].values()):.0f}, max R-hat "
        f"{max(s['r_hat'] for s in run['sites'].values()):.3f}; the centered model: "
        f"{centered['divergences']} divergences, tau {centered['sites']['tau']['mean']:.2f} "
        f"(sd {centered['sites']['tau']['sd']:.2f}); "
        f"reference mu {run['sites']['mu']['mean']:.2f} (sd {run['sites']['mu']['sd']:.2f}), "
        f"tau {run['sites']['tau']['mean']:.2f} (sd {run['sites']['tau']['sd']:.2f}), "
        f"published mu 4.41 (3.31), tau 3.60 (3.20)"
    )
    return run["sites"], line


# -- guides ------------------------------------------------------------------------------------
@dataclass
class GuideSpec:
    """A guide factory and its learning rate (everything else is shared)."""

    label: str
    make: Callable[[Callable], Callable]
    lr: float
    options: dict[str, Any] = field(default_factory=dict)


def planar_stack(num_layers: int) -> Callable[[int], pft.FlowSequence]:
    """``dim -> num_layers`` planar layers (AutoFlow takes a callable for custom stacks)."""
    return lambda dim: pft.FlowSequence([pft.planar(dim) for _ in range(num_layers)])


def guide_specs(quick: bool) -> dict[str, GuideSpec]:
    """The contenders, full size or (``quick``) small; the settings the benchmark tuned.

    Every flow guide starts as ``N(init, 1)`` in unconstrained space (``init_scale=1``). The
    IAF is the plain affine one (``stable=False``): the gated IAF of the registry's default
    (``stable=True``, scale per layer at most 1) is kept as a row of its own because on the
    funnel it falls far short of the plain one at the same budget.
    """
    init_scale = 1.0
    planar_layers = 2 if quick else 8
    iaf = (
        {"num_layers": 2, "hidden_dims": [16]}
        if quick
        else {"num_layers": 6, "hidden_dims": [64, 64]}
    )
    nsf = (
        {"num_layers": 1, "hidden_dims": [16], "count_bins": 4, "bound": 5.0}
        if quick
        else {"num_layers": 6, "hidden_dims": [64, 64], "count_bins": 16, "bound": 8.0}
    )
    flow_lr = 0.01 if quick else 0.003
    return {
        "autonormal": GuideSpec("AutoNormal", lambda m: AutoNormal(m), lr=0.05),
        "planar": GuideSpec(
            f"planar x{planar_layers}",
            lambda m: AutoFlow(m, planar_stack(planar_layers), init_scale=init_scale),
            lr=0.01,
            options={"num_layers": planar_layers, "init_scale": init_scale},
        ),
        "iaf": GuideSpec(
            "iaf",
            lambda m: AutoFlow(m, "iaf", init_scale=init_scale, stable=False, **iaf),
            lr=flow_lr,
            options={**iaf, "stable": False, "init_scale": init_scale},
        ),
        "iaf_gated": GuideSpec(
            "iaf (gated)",
            lambda m: AutoFlow(m, "iaf", init_scale=init_scale, stable=True, **iaf),
            lr=flow_lr,
            options={**iaf, "stable": True, "init_scale": init_scale},
        ),
        "nsf": GuideSpec(
            "nsf",
            lambda m: AutoFlow(m, "nsf", init_scale=init_scale, **nsf),
            lr=flow_lr,
            options={**nsf, "init_scale": init_scale},
        ),
    }


# -- fitting and judging -----------------------------------------------------------------------
@dataclass
class Budget:
    """The shared training budget."""

    num_steps: int
    num_particles: int
    schedule: str = "cosine"
    num_draws: int = 10_000  # guide draws for the means and sds
    num_is_draws: int = 4000  # draws for the Pareto k


def fit(model: Callable, spec: GuideSpec, budget: Budget, seed: int, *args) -> tuple[Any, Any]:
    """Train a fresh guide; return it and its ElboTrace."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = spec.make(model)
    trace = train_guide(
        model,
        guide,
        *args,
        num_steps=budget.num_steps,
        lr=spec.lr,
        loss=Trace_ELBO(
            num_particles=budget.num_particles, vectorize_particles=True, max_plate_nesting=1
        ),
        schedule=budget.schedule,
        progress=False,
        seed=seed,
    )
    return guide, trace


def judge_funnel(spec: GuideSpec, budget: Budget, seed: int) -> dict[str, Any]:
    """Fit the funnel; mean and sd of v, Pareto k, time per step."""
    guide, trace = fit(funnel, spec, budget, seed)
    pyro.set_rng_seed(seed + 1)
    v = posterior_samples(guide, num_samples=budget.num_draws)["v"].double()
    diagnostics = importance_diagnostics(funnel, guide, num_samples=budget.num_is_draws)
    sd = float(v.std())
    return {
        "v_mean": float(v.mean()),
        "v_sd": sd,
        "pareto_k": diagnostics.pareto_k,
        "ess_fraction": diagnostics.ess_fraction,
        "elbo": diagnostics.elbo,
        "ms_per_step": 1e3 * trace.seconds_per_step,
        "meets": FUNNEL_SD_RANGE[0] <= sd <= FUNNEL_SD_RANGE[1],
    }


def judge_schools(
    spec: GuideSpec, budget: Budget, seed: int, reference: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Fit the centered eight schools; standardized errors against the reference."""
    guide, trace = fit(eight_schools, spec, budget, seed, Y, SIGMA)
    pyro.set_rng_seed(seed + 1)
    draws = flat_coordinates(posterior_samples(guide, Y, SIGMA, num_samples=budget.num_draws))
    diagnostics = importance_diagnostics(
        eight_schools, guide, Y, SIGMA, num_samples=budget.num_is_draws
    )
    errors, ratios = {}, {}
    for name in [name for name in draws if name in reference]:  # the reference also has eta
        ref, value = reference[name], draws[name].double()
        errors[name] = abs(float(value.mean()) - ref["mean"]) / ref["sd"]
        ratios[name] = float(value.std()) / ref["sd"]
    worst = max(errors, key=errors.get)
    result = {
        "max_mean_error": errors[worst],
        "worst_site": worst,
        "sd_ratio_min": min(ratios.values()),
        "sd_ratio_max": max(ratios.values()),
        "tau_mean": float(draws["tau"].mean()),
        "tau_sd": float(draws["tau"].std()),
        "pareto_k": diagnostics.pareto_k,
        "ess_fraction": diagnostics.ess_fraction,
        "elbo": diagnostics.elbo,
        "ms_per_step": 1e3 * trace.seconds_per_step,
        "mean_errors": errors,
        "sd_ratios": ratios,
    }
    result["meets"] = (
        result["max_mean_error"] <= MAX_MEAN_ERROR
        and SD_RATIO_RANGE[0] <= result["sd_ratio_min"]
        and result["sd_ratio_max"] <= SD_RATIO_RANGE[1]
    )
    return result


# -- the table ---------------------------------------------------------------------------------
def _options(spec: GuideSpec) -> str:
    return ", ".join(f"{k}={v}" for k, v in spec.options.items()) or "defaults"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=None, help="SVI steps (default 4000)")
    parser.add_argument("--particles", type=int, default=None, help="ELBO particles (16)")
    parser.add_argument("--guides", default=None, help="comma-separated subset of the guides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="save the results here")
    parser.add_argument("--reference", type=Path, default=REFERENCE_PATH)
    parser.add_argument(
        "--refresh-reference", action="store_true", help="recompute the NUTS reference first"
    )
    parser.add_argument("--quick", action="store_true", help="tiny budget, small flows (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.refresh_reference:
        refresh_eight_schools(args.reference)
    specs = guide_specs(args.quick)
    if args.guides:
        unknown = set(args.guides.split(",")) - set(specs)
        if unknown:
            raise SystemExit(f"unknown guide(s) {sorted(unknown)}; known: {sorted(specs)}")
        specs = {name: specs[name] for name in args.guides.split(",")}
    budget = Budget(
        num_steps=args.steps or (50 if args.quick else 4000),
        num_particles=args.particles or (4 if args.quick else 16),
        num_draws=1000 if args.quick else 10_000,
        num_is_draws=500 if args.quick else 4000,
    )
    reference, reference_line = load_reference(args.reference, args.quick)
    print(
        f"# {machine_line()}; {budget.num_steps} steps of Adam, {budget.schedule} decay, "
        f"Trace_ELBO with {budget.num_particles} vectorized particles, seed {args.seed}; "
        f"{budget.num_draws} guide draws for means/sds, {budget.num_is_draws} for Pareto k"
    )
    for spec in specs.values():
        print(f"#   {spec.label}: lr={spec.lr}, {_options(spec)}")
    results: dict[str, Any] = {
        "machine": machine_line(),
        "budget": budget.__dict__,
        "seed": args.seed,
        "guides": {name: {"lr": s.lr, **s.options} for name, s in specs.items()},
    }

    print(f"\nNeal's funnel (d = {FUNNEL_DIM}): exact v ~ N(0, 3^2); target sd of v in "
          f"{FUNNEL_SD_RANGE[0]:.2f}..{FUNNEL_SD_RANGE[1]:.2f}")  # fmt: skip
    header = (
        f"{'guide':<12} {'ms/step':>8} {'mean v':>7} {'sd v':>6} {'Pareto k':>9} "
        f"{'ESS %':>6} {'ELBO':>7}  target"
    )
    print(header)
    print("-" * len(header))
    results["funnel"] = {}
    for name, spec in specs.items():
        r = judge_funnel(spec, budget, args.seed)
        results["funnel"][name] = r
        print(
            f"{spec.label:<12} {r['ms_per_step']:>8.2f} {r['v_mean']:>7.2f} {r['v_sd']:>6.2f} "
            f"{r['pareto_k']:>9.2f} {100 * r['ess_fraction']:>6.1f} {r['elbo']:>7.3f}  "
            f"{'met' if r['meets'] else 'missed'}",
            flush=True,
        )

    print(
        f"\nEight schools, centered: the reference is {reference_line}. Targets: "
        f"|mean error| / sd_ref <= {MAX_MEAN_ERROR} and sd_guide / sd_ref in "
        f"{SD_RATIO_RANGE[0]}..{SD_RATIO_RANGE[1]} for every latent"
    )
    header = (
        f"{'guide':<12} {'ms/step':>8} {'max |err|/sd':>12} {'(site)':>8} {'sd ratios':>11} "
        f"{'tau mean':>8} {'tau sd':>6} {'Pareto k':>9} {'ESS %':>6}  target"
    )
    print(header)
    print("-" * len(header))
    results["eight_schools"] = {}
    for name, spec in specs.items():
        r = judge_schools(spec, budget, args.seed, reference)
        results["eight_schools"][name] = r
        ratios = f"{r['sd_ratio_min']:.2f}..{r['sd_ratio_max']:.2f}"
        print(
            f"{spec.label:<12} {r['ms_per_step']:>8.2f} {r['max_mean_error']:>12.3f} "
            f"{r['worst_site']:>8} {ratios:>11} {r['tau_mean']:>8.2f} {r['tau_sd']:>6.2f} "
            f"{r['pareto_k']:>9.2f} {100 * r['ess_fraction']:>6.1f}  "
            f"{'met' if r['meets'] else 'missed'}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\n# wrote {args.json}")


if __name__ == "__main__":
    main()
