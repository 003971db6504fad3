"""Flow autoguides against Pyro's stock autoguides on a suite of posteriors, one fixed budget.

The problems are those of ``benchmarks/posterior_suite.py`` (13: Neal's funnel in 2, 10 and
50 dimensions, the banana of Pyro's NeuTra example, the energies U1-U4 of Rezende & Mohamed
2015, eight schools centered and non-centered, logistic regression on the breast-cancer
data, a correlated 100-D Gaussian, a bimodal mixture, a hierarchical logistic regression),
each with a reference: exact moments and log Z, quadrature on a grid, or a cached NUTS run.

**The budget** (the same for every guide, from pyroflows issue 12): Pyro ``SVI`` with
``Trace_ELBO(num_particles=8, vectorize_particles=True)`` and
``ClippedAdam({"lr": 1e-2, "lrd": 0.1 ** (1 / steps)})`` (the learning rate decays from
1e-2 to 1e-3 over the run; ``--lr`` changes the start, the decay stays a factor 10), 3,000
steps, float64, ``pyro.clear_param_store()`` and ``pyro.set_rng_seed(seed)`` before each run.

**The guides**: ``AutoNormal``, ``AutoMultivariateNormal``, ``AutoIAFNormal`` (Pyro's
defaults), ``NF-iaf4`` (``AutoNormalizingFlow`` with ``iterated(4, affine_autoregressive)``),
``NF-bnaf`` (``AutoNormalizingFlow`` with ``iterated(1, block_autoregressive)``, as Pyro's
``examples/neutra.py``), ``AutoFlow`` (pyroflows' defaults), and any AutoFlow configuration
``AutoFlow:{json}``: ``flow`` and ``init_scale`` go to AutoFlow, every other key to the flow
(``'AutoFlow:{"flow": "nsf", "num_layers": 4, "hidden_dims": [64]}'``). Prefix ``LABEL=`` to
name a guide in the output (``'nsf4=AutoFlow:{"flow": "nsf", "num_layers": 4}'``).

**The scores**, on the trained guide, from ``--draws`` (4,000) draws at a fixed seed:

* ``kl``: :math:`KL(q \\| p) = \\log Z - \\mathbb E_q[\\log \\tilde p(z) - \\log q(z)]`
  where log Z is known, with its Monte Carlo standard error ``kl_se`` (the sd of the log
  weights over sqrt(draws)); the log weights are those of
  ``pyroflows.infer.importance_diagnostics``, which also gives ``pareto_k`` and ``ess``.
* ``mean_error``: the worst over coordinates of ``|mean_q - mean_ref| / sd_ref``, and
  ``log_sd_error``: the worst ``|log(sd_q / sd_ref)|``, in the constrained space (the
  coordinates are named in the record); ``moment_error`` is the larger of the two.
* ``ms_per_step``: the median wall time of a step after the first 10; ``final_loss``: the
  mean training loss (-ELBO, 8 particles) over the last 5% of the steps; ``neg_elbo``: the
  -ELBO from the evaluation draws.
* ``status``: ``ok``, ``nonfinite`` (a loss or the evaluation went non-finite; ``failed_at``
  says at which step, or ``"evaluation"``) or ``error`` (an exception; ``error`` holds the
  message). A failed run never stops the suite.

Runs go seed by seed, and within a seed problem by problem with every guide in turn, so that
timings are interleaved. ``--json PATH`` appends one JSON line per (problem, guide, seed) as
it finishes; ``--resume`` skips the runs already in it (same budget). ``--table OUT`` renders
the file's runs as reStructuredText list-tables (``-`` for stdout) without running anything:
rows problems, columns guides; cells are the KL (or, where log Z is unknown, the worst moment
error), mean over seeds, +- its standard error (the Monte Carlo one for a single seed, the
seed-to-seed one otherwise), then the worst moment error, Pareto k and ms/step.

Usage: python benchmarks/bench_posteriors.py [--problems a,b] [--guides 'G1;G2'] [--seeds 0-4]
       [--steps N] [--particles P] [--lr LR] [--draws S] [--threads N] [--json PATH]
       [--resume] [--quick]
       python benchmarks/bench_posteriors.py --json PATH --table OUT_OR_-
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from _suite_runs import (
    append_record,
    finite,
    ordered,
    parse_seeds,
    read_records,
    record_failure,
    table_only,
)
from _timing import machine_line
from posterior_suite import Problem, flat_coordinates, problems
from pyro.distributions.transforms import affine_autoregressive, block_autoregressive, iterated
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)
from pyro.poutine.util import site_is_subsample

from pyroflows.infer import AutoFlow, importance_diagnostics

GUIDES: dict[str, Callable[[Callable], Any]] = {
    "AutoNormal": AutoNormal,
    "AutoMultivariateNormal": AutoMultivariateNormal,
    "AutoIAFNormal": AutoIAFNormal,
    "NF-iaf4": lambda model: AutoNormalizingFlow(
        model, partial(iterated, 4, affine_autoregressive)
    ),
    "NF-bnaf": lambda model: AutoNormalizingFlow(model, partial(iterated, 1, block_autoregressive)),
    "AutoFlow": AutoFlow,
}
AUTOFLOW_PREFIX = "AutoFlow:"
EVAL_SEED = 12345  # the evaluation draws of seed s use EVAL_SEED + s, for every guide
TIMING_WARMUP = 10
CHUNK = 500  # evaluation draws per vectorized pass (bounds memory)


# -- guides ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuideSpec:
    """A guide by label: its constructor ``model -> guide`` and a JSON-able description."""

    label: str
    make: Callable[[Callable], Any]
    config: dict[str, Any]


def parse_guide(text: str) -> GuideSpec:
    """``[LABEL=]NAME`` or ``[LABEL=]AutoFlow:{json}`` -> a :class:`GuideSpec`.

    AutoFlow options are checked here (a typo fails at once, not in every run).
    """
    match = re.fullmatch(r"([\w.+-]+)=(.+)", text.strip(), flags=re.DOTALL)
    label, spec = (match.group(1), match.group(2)) if match else (None, text.strip())
    if spec in GUIDES:
        return GuideSpec(label or spec, GUIDES[spec], {"guide": spec})
    if not spec.startswith(AUTOFLOW_PREFIX):
        raise ValueError(
            f"unknown guide {spec!r}: expected one of {', '.join(GUIDES)} or "
            f"{AUTOFLOW_PREFIX}{{json}}, optionally prefixed by LABEL="
        )
    try:
        options = json.loads(spec[len(AUTOFLOW_PREFIX) :])
    except json.JSONDecodeError as error:
        raise ValueError(f"guide {spec!r}: the options are not valid JSON ({error})") from None
    if not isinstance(options, dict):
        raise ValueError(f"guide {spec!r}: expected a JSON object of options, got {options!r}")
    flow_options = dict(options)
    flow = flow_options.pop("flow", "iaf")
    guide_options = {k: flow_options.pop(k) for k in ("init_scale", "linear") if k in flow_options}
    make = partial(AutoFlow, flow=flow, **guide_options, **flow_options)
    try:
        make(lambda: None)  # AutoFlow checks the flow name and options when constructed
    except (TypeError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error  # no repr quotes
        raise ValueError(f"guide {spec!r}: {message}") from None
    default_label = AUTOFLOW_PREFIX + json.dumps(options, separators=(",", ":"))
    return GuideSpec(label or default_label, make, {"guide": "AutoFlow", **options})


# -- one run -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """The training budget shared by every guide, and the evaluation draws."""

    steps: int = 3000
    particles: int = 8
    lr: float = 1e-2
    draws: int = 4000

    def optimizer(self) -> pyro.optim.PyroOptim:
        """ClippedAdam whose learning rate falls by a factor 10 over the run."""
        return pyro.optim.ClippedAdam({"lr": self.lr, "lrd": 0.1 ** (1 / self.steps)})

    def loss(self) -> Trace_ELBO:
        """``Trace_ELBO`` with vectorized particles (every problem nests at most one plate)."""
        return Trace_ELBO(
            num_particles=self.particles, vectorize_particles=True, max_plate_nesting=1
        )


def run_key(record: dict[str, Any]) -> tuple:
    """What identifies a run for ``--resume``: problem, guide, seed and budget."""
    return tuple(record[k] for k in ("problem", "guide", "seed", "steps", "particles", "lr"))


def run_one(problem: Problem, spec: GuideSpec, seed: int, budget: Budget) -> dict[str, Any]:
    """Train and score one guide on one problem; never raises (failures are recorded)."""
    reference = problem.reference
    record: dict[str, Any] = {
        "problem": problem.name,
        "guide": spec.label,
        "seed": seed,
        **{k: v for k, v in asdict(budget).items() if k != "draws"},
        "draws": budget.draws,
        "config": spec.config,
        "log_z": reference.log_z,
        "status": "ok",
        "failed_at": None,
        "error": None,
    }
    start = time.perf_counter()
    step = 0
    try:
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = spec.make(problem.model)
        svi = SVI(problem.model, guide, budget.optimizer(), budget.loss())
        losses, seconds = [], []
        for step in range(1, budget.steps + 1):
            tic = time.perf_counter()
            loss = svi.step()
            seconds.append(time.perf_counter() - tic)
            if not math.isfinite(loss):
                record.update(status="nonfinite", failed_at=step)
                break
            losses.append(loss)
        timed = seconds[TIMING_WARMUP:] or seconds
        record["ms_per_step"] = 1e3 * statistics.median(timed)
        tail = max(1, budget.steps // 20)
        record["final_loss"] = statistics.fmean(losses[-tail:]) if losses else None
        if record["status"] == "ok":
            step = "evaluation"
            record.update(score(problem, guide, seed, budget.draws))
    except Exception as error:
        record_failure(record, error, step, nonfinite=isinstance(error, NonFiniteDraws))
    record["seconds"] = time.perf_counter() - start
    return record


def speed_ratios(
    problem: Problem, specs: Sequence[GuideSpec], budget: Budget, steps: int, baseline: str
) -> dict[str, dict[str, float]]:
    """Milliseconds per SVI step of each guide, interleaved step by step, and the ratios.

    Each guide has its own ``SVI`` (the budget's optimizer and loss) and its own Pyro param
    store (``ParamStoreDict.scope``, entered outside the timed region); after 20 warm-up
    steps each, the guides step round-robin ``steps`` times, so that the load of a shared
    machine hits them alike. Returns ``{label: {"ms": median, "ratio": ms / baseline's}}``.
    """
    store = pyro.get_param_store()
    pyro.set_rng_seed(0)
    runs = []
    for spec in specs:
        with store.scope() as state:
            guide = spec.make(problem.model)
            runs.append(
                (spec.label, state, SVI(problem.model, guide, budget.optimizer(), budget.loss()))
            )
    times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    for round_ in range(20 + steps):
        for label, state, svi in runs:
            with store.scope(state):
                tic = time.perf_counter()
                svi.step()
                if round_ >= 20:
                    times[label].append(time.perf_counter() - tic)
    medians = {label: statistics.median(values) for label, values in times.items()}
    base = medians.get(baseline)
    return {
        label: {"ms": 1e3 * ms, "ratio": ms / base if base else float("nan")}
        for label, ms in medians.items()
    }


class NonFiniteDraws(ValueError):
    """The trained guide's draws or log weights are not all finite."""


@torch.no_grad()
def guide_draws(model: Callable, guide: Any, num: int) -> dict[str, torch.Tensor]:
    """``num`` joint draws of the model's latent sites from the guide, constrained space.

    The guide alone runs, in a plate at dim -2 (every problem nests at most one plate):
    ``pyroflows.infer.posterior_samples`` goes through ``Predictive``, which guesses the
    plate nesting from the guide and breaks on a model whose vector latent meets a data
    plate (the logistic regression with ``AutoNormal``).
    """
    trace = poutine.trace(model).get_trace()
    shapes = {
        name: site["value"].shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }
    with pyro.plate("_draws", num, dim=-2):
        values = guide()
    return {name: values[name].reshape(num, *shape) for name, shape in shapes.items()}


def score(problem: Problem, guide: Any, seed: int, draws: int) -> dict[str, Any]:
    """KL (where log Z is known), moment errors, Pareto k and ESS of a trained guide."""
    model, reference = problem.model, problem.reference
    pyro.set_rng_seed(EVAL_SEED + seed)
    try:
        diagnostics = importance_diagnostics(
            model, guide, num_samples=draws, max_plate_nesting=1, chunk_size=CHUNK, vectorize=True
        )
    except ValueError as error:  # NaN or +inf log weights
        raise NonFiniteDraws(str(error)) from None
    log_weights = diagnostics.log_weights.double()
    if not bool(torch.isfinite(log_weights).all()):
        raise NonFiniteDraws("some log importance weights are -inf (draws outside the support)")
    elbo = float(log_weights.mean())
    result: dict[str, Any] = {
        "neg_elbo": -elbo,
        "kl": None if reference.log_z is None else reference.log_z - elbo,
        "kl_se": float(log_weights.std()) / math.sqrt(draws),
        "pareto_k": diagnostics.pareto_k,
        "ess": diagnostics.ess,
        "ess_fraction": diagnostics.ess_fraction,
    }
    samples = [
        guide_draws(model, guide, min(CHUNK, draws - start)) for start in range(0, draws, CHUNK)
    ]
    coords = flat_coordinates({k: torch.cat([s[k] for s in samples]) for k in samples[0]})
    if set(coords) != set(reference.moments):
        raise KeyError(
            f"the guide's coordinates {sorted(coords)} differ from the reference's "
            f"{sorted(reference.moments)}"
        )
    mean_errors, sd_errors = {}, {}
    for name, value in coords.items():
        value = value.double()
        if not bool(torch.isfinite(value).all()):
            raise NonFiniteDraws(f"non-finite draws of {name}")
        ref_mean, ref_sd = reference.moments[name]
        mean_errors[name] = abs(float(value.mean()) - ref_mean) / ref_sd
        sd_errors[name] = abs(math.log(float(value.std()) / ref_sd))
    worst_mean = max(mean_errors, key=mean_errors.get)
    worst_sd = max(sd_errors, key=sd_errors.get)
    result.update(
        mean_error=mean_errors[worst_mean],
        mean_error_at=worst_mean,
        log_sd_error=sd_errors[worst_sd],
        log_sd_error_at=worst_sd,
        moment_error=max(mean_errors[worst_mean], sd_errors[worst_sd]),
    )
    return result


# -- output ------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_line(record: dict[str, Any]) -> str:
    """One printed line per finished run."""
    head = f"{record['problem']:<17} {record['guide']:<24} {record['seed']:>4}"
    if record["status"] != "ok":
        return f"{head}  {record['status']} at {record['failed_at']}: {record['error'] or ''}"
    kl = "" if record["kl"] is None else f"{record['kl']:.3f} +- {record['kl_se']:.3f}"
    return (
        f"{head} {kl:>16} {record['mean_error']:>8.3f} {record['log_sd_error']:>8.3f} "
        f"{_fmt(record['pareto_k'], 2):>7} {100 * record['ess_fraction']:>6.1f} "
        f"{record['ms_per_step']:>8.2f} {record['seconds']:>7.1f}"
    )


RUN_HEADER = (
    f"{'problem':<17} {'guide':<24} {'seed':>4} {'KL +- se':>16} {'mean err':>8} "
    f"{'log sd':>8} {'k':>7} {'ESS %':>6} {'ms/step':>8} {'s':>7}"
)


def _cell(records: list[dict[str, Any]], key: str, se_key: str | None, digits: int) -> str:
    """Mean over seeds +- standard error; failed runs counted."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = len(records) - len(ok)
    if not ok:
        return f"failed ({failed}/{len(records)})"
    defined = [r for r in ok if r.get(key) is not None]  # e.g. an infinite Pareto k
    if not defined:
        return "undefined"
    values = [r[key] for r in defined]
    mean = statistics.fmean(values)
    if len(values) > 1:
        se = statistics.stdev(values) / math.sqrt(len(values))
    else:
        se = defined[0].get(se_key) if se_key else None
    text = f"{mean:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")
    notes = [f"{len(ok) - len(defined)} undefined"] * (len(defined) < len(ok))
    notes += [f"{failed}/{len(records)} failed"] * bool(failed)
    return text + (f" ({', '.join(notes)})" if notes else "")


def render_tables(records: list[dict[str, Any]]) -> str:
    """reStructuredText list-tables of the runs: rows problems, columns guides."""
    suite_order = list(problems()) if records else []
    names = ordered([r["problem"] for r in records], suite_order)
    guides = ordered([r["guide"] for r in records])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["problem"], r["guide"]), []).append(r)
    known = {r["problem"] for r in records if r.get("log_z") is not None}
    budgets = sorted({(r["steps"], r["particles"], r["lr"]) for r in records})
    seeds = sorted({r["seed"] for r in records})
    budget_text = "; ".join(f"{s} steps, {p} particles, lr {lr}" for s, p, lr in budgets)

    def main_cell(name: str, guide: str) -> str:
        runs = groups.get((name, guide), [])
        if not runs:
            return ""
        text = _cell(runs, *(("kl", "kl_se") if name in known else ("moment_error", None)), 3)
        # a cell over fewer seeds than the table's says so (its ± is then not seed-to-seed)
        if len(runs) == len(seeds):
            return text
        return f"{text} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"

    tables = [
        (
            "KL(q || p) where log Z is known (*), else the worst standardized moment error; "
            "mean over seeds ± standard error (over seeds; Monte Carlo for one seed)",
            main_cell,
            lambda name: f"{name} (*)" if name in known else name,
        ),
        (
            "worst moment error: max over coordinates of abs(mean error) / sd_ref and "
            "abs(log(sd_q / sd_ref))",
            lambda n, g: _cell(groups[n, g], "moment_error", None, 3) if (n, g) in groups else "",
            str,
        ),
        (
            "Pareto k of the importance weights (< 0.5 good, 0.5-0.7 ok, > 0.7 unreliable)",
            lambda n, g: _cell(groups[n, g], "pareto_k", None, 2) if (n, g) in groups else "",
            str,
        ),
        (
            "milliseconds per SVI step (median after warm-up; mean over seeds)",
            lambda n, g: _cell(groups[n, g], "ms_per_step", None, 1) if (n, g) in groups else "",
            str,
        ),
    ]
    out = [f"Runs: {len(records)}; seeds {seeds}; {budget_text}.", ""]
    for title, cell, row_name in tables:
        out += [f".. list-table:: {title}", "   :header-rows: 1", ""]
        out += ["   * - problem", *(f"     - {g}" for g in guides)]
        for name in names:
            out += [f"   * - {row_name(name)}", *(f"     - {cell(name, g)}" for g in guides)]
        out.append("")
    return "\n".join(out)


# -- command line --------------------------------------------------------------------------------
SPEED_BASELINE = "AutoIAFNormal"


def speed_table(
    suite: dict[str, Problem],
    names: Sequence[str],
    specs: Sequence[GuideSpec],
    budget: Budget,
    steps: int,
) -> None:
    """Print the ``--speed`` table: ms per step and the ratio to ``AutoIAFNormal``, per problem."""
    labels = [spec.label for spec in specs]
    if SPEED_BASELINE not in labels:
        specs = [parse_guide(SPEED_BASELINE), *specs]
        labels = [SPEED_BASELINE, *labels]
    print(
        f"# {machine_line()}; ms per step (median of {steps} interleaved steps) and ratio "
        f"to {SPEED_BASELINE}\n" + "problem".ljust(18) + "".join(f"{x[:22]:>24}" for x in labels),
        flush=True,
    )
    for name in names:
        result = speed_ratios(suite[name], specs, budget, steps, SPEED_BASELINE)
        cells = [f"{result[label]['ms']:.2f} ({result[label]['ratio']:.2f}x)" for label in labels]
        print(name.ljust(18) + "".join(f"{cell:>24}" for cell in cells), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--guides", action="append", default=None, help="';'-separated, or repeat the flag"
    )
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-9")
    parser.add_argument("--steps", type=int, default=None, help="SVI steps (3000)")
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-2, help="initial learning rate")
    parser.add_argument("--draws", type=int, default=None, help="evaluation draws (4000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="append one line per run")
    parser.add_argument("--resume", action="store_true", help="skip runs already in --json")
    parser.add_argument("--quick", action="store_true", help="30 steps, 256 draws (smoke)")
    parser.add_argument("--table", default=None, help="render --json's runs to this file or -")
    parser.add_argument(
        "--speed",
        type=int,
        default=None,
        metavar="STEPS",
        help="only time the guides: STEPS interleaved steps each, ratios to AutoIAFNormal",
    )
    args = parser.parse_args(argv)

    if table_only(args, parser, render_tables):
        return

    torch.set_num_threads(args.threads)
    torch.set_default_dtype(torch.float64)
    suite = problems()
    names = args.problems.split(",") if args.problems else list(suite)
    unknown = [n for n in names if n not in suite]
    if unknown:
        parser.error(f"unknown problem(s) {unknown}; known: {', '.join(suite)}")
    try:
        texts = [g for flag in args.guides or [";".join(GUIDES)] for g in flag.split(";")]
        specs = [parse_guide(t) for t in texts if t.strip()]
        seeds = parse_seeds(args.seeds)
    except ValueError as error:
        parser.error(str(error))
    budget = Budget(
        steps=args.steps or (30 if args.quick else 3000),
        particles=args.particles,
        lr=args.lr,
        draws=args.draws or (256 if args.quick else 4000),
    )
    if args.speed is not None:
        speed_table(suite, names, specs, budget, args.speed)
        return
    done = {run_key(r) for r in read_records(args.json)} if args.resume and args.json else set()

    print(
        f"# {machine_line()}; float64; {budget.steps} steps of ClippedAdam (lr {budget.lr} "
        f"decaying 10x), Trace_ELBO with {budget.particles} vectorized particles; "
        f"{budget.draws} evaluation draws; seeds {seeds}",
        flush=True,
    )
    for spec in specs:
        print(f"#   {spec.label}: {json.dumps(spec.config)}")
    print(RUN_HEADER)
    print("-" * len(RUN_HEADER), flush=True)
    records, start = [], time.perf_counter()
    for seed in seeds:
        for name in names:
            for spec in specs:
                key = (name, spec.label, seed, budget.steps, budget.particles, budget.lr)
                if key in done:
                    continue
                record = finite(run_one(suite[name], spec, seed, budget))
                records.append(record)
                print(run_line(record), flush=True)
                append_record(args.json, record)
    print(f"\n# {len(records)} runs in {time.perf_counter() - start:.0f} s\n")
    print(render_tables(records))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
