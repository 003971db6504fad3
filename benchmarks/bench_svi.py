"""SVI step time: pyroflows' IAF guide against Pyro's AutoIAFNormal, same architecture.

Model: Bayesian logistic regression, 50 weights with N(0, 1) priors, 1,000 data points.
Guide: 5 affine autoregressive (IAF) layers with MADE hidden sizes ``--hidden`` (default one
hidden layer of width 256), plain (not gated) affine update and alternating orderings on both
sides, with a diagonal-Gaussian base: Pyro's ``AutoIAFNormal`` and ``AutoFlow(model, "iaf",
stable=False)``. The parameter counts are printed (they are equal).

Rows (each one SVI step: sample, ELBO, backward, Adam update; Trace_ELBO with 1 particle
or 16 vectorized particles):

* ``SVI loop``: both guides in ``pyro.infer.SVI`` with ``pyro.optim.Adam``, the usual Pyro
  loop (one torch optimizer per parameter tensor);
* ``train_guide``: the same steps through :func:`pyroflows.infer.svi.train_guide`'s step
  (one fused Adam over all parameters), for both guides;
* ``each its own``: Pyro's guide in Pyro's loop against ours in ours, i.e. what a user of
  each library runs;
* ``plain torch``: the same guide and model written directly in torch (no Pyro tracing),
  as the floor.

Contenders are interleaved in one process and reported as medians; the speed-up is Pyro's
time over ours. ``--quick`` runs a handful of steps (a smoke test).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from _timing import interleaved_medians, machine_line
from pyro.distributions.transforms import affine_autoregressive
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal

from pyroflows.infer import AutoFlow
from pyroflows.infer.svi import train_guide

NUM_DATA, DIM, NUM_LAYERS = 1000, 50, 5
STEPS_PER_CALL = 10


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(NUM_DATA, DIM, generator=generator)
    weights = torch.randn(DIM, generator=generator)
    labels = torch.bernoulli(torch.sigmoid(features @ weights), generator=generator)
    return features, labels


def model(features: torch.Tensor, labels: torch.Tensor) -> None:
    prior = dist.Normal(features.new_zeros(DIM), features.new_ones(DIM)).to_event(1)
    weights = pyro.sample("w", prior)
    # weights: (D,), or (particles, 1, D) with vectorized particles, whose size-1 dim is the
    # data plate's; the logits must be (N,) or (particles, N), so that dim gives way to N
    # (a plain `weights @ features.T` would be (particles, 1, N), which the plates broadcast
    # to (particles, particles, N): every particle scored against every other's logits)
    logits = (weights @ features.T).reshape(*weights.shape[:-2], NUM_DATA)
    with pyro.plate("data", NUM_DATA):
        pyro.sample("y", dist.Bernoulli(logits=logits), obs=labels)


def pyro_guide(hidden: list[int]) -> AutoIAFNormal:
    return AutoIAFNormal(model, hidden_dim=hidden, num_transforms=NUM_LAYERS)


def our_guide(hidden: list[int]) -> AutoFlow:
    return AutoFlow(model, "iaf", num_layers=NUM_LAYERS, hidden_dims=hidden, stable=False)


def plain_torch_step(hidden: list[int], particles: int, data):
    """The same guide and model without Pyro's tracing (the floor)."""
    features, labels = data
    layers = torch.nn.ModuleList(
        [affine_autoregressive(DIM, hidden_dims=hidden) for _ in range(NUM_LAYERS)]
    )
    loc = torch.zeros(DIM, requires_grad=True)
    log_scale = torch.full((DIM,), -2.3, requires_grad=True)
    params = [*layers.parameters(), loc, log_scale]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    standard = torch.distributions.Normal(0.0, 1.0)

    def step() -> None:
        for _ in range(STEPS_PER_CALL):
            one_step()

    def one_step() -> None:
        eps = torch.randn(particles, DIM)
        log_q = standard.log_prob(eps).sum(-1) - log_scale.sum()
        z = eps
        for layer in layers:
            out = layer(z)
            log_q = log_q - layer.log_abs_det_jacobian(z, out)
            z = out
        z = loc + log_scale.exp() * z
        log_joint = standard.log_prob(z).sum(-1)
        logits = z @ features.T
        log_joint = log_joint - torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels.expand(particles, NUM_DATA), reduction="none"
        ).sum(-1)
        loss = (log_q - log_joint).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in params)


def elbo(particles: int) -> Trace_ELBO:
    return Trace_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
    )


def pyro_svi_steps(guide, particles: int, data):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), elbo(particles))

    def run() -> None:
        for _ in range(STEPS_PER_CALL):
            svi.step(*data)

    return run


class TrainGuideSteps:
    """Calls ``train_guide`` for a few steps at a time; keeps the step-to-step intervals.

    Each call sets up again (parameter collection, a new optimizer), so the set-up is
    excluded: a step's time is the interval between consecutive step callbacks.
    """

    def __init__(self, guide, particles: int, data) -> None:
        self.guide, self.particles, self.data = guide, particles, data
        self.intervals: list[float] = []

    def __call__(self) -> None:
        stamps: list[float] = []
        train_guide(
            model,
            self.guide,
            *self.data,
            num_steps=STEPS_PER_CALL,
            lr=1e-3,
            loss=elbo(self.particles),
            progress=False,
            callback=lambda step, loss: stamps.append(time.perf_counter()),
        )
        self.intervals += [b - a for a, b in itertools.pairwise(stamps)]

    def median(self) -> float:
        return statistics.median(self.intervals)


def parameter_count(guide, data) -> int:
    guide(*data)
    return sum(p.numel() for p in guide.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[256])
    parser.add_argument("--particles", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds of 10 steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few steps (smoke test)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds, warmup = (2, 1) if args.quick else (args.rounds, 3)
    hidden = [64] if args.quick else args.hidden  # Pyro needs hidden >= D = 50
    data = make_data()
    print(f"# machine: {machine_line()}")
    print(
        f"# model: logistic regression, D={DIM}, N={NUM_DATA}; guide: {NUM_LAYERS} IAF layers, "
        f"MADE hidden {hidden}; medians over {rounds} interleaved rounds of "
        f"{STEPS_PER_CALL} steps"
    )
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    counts = {
        "pyro": parameter_count(pyro_guide(hidden), data),
        "ours": parameter_count(our_guide(hidden), data),
    }
    print(f"# parameters: pyro {counts['pyro']:,}, ours {counts['ours']:,}")
    rows = []
    header = f"{'loop':<13}{'particles':>10}{'pyro ms':>10}{'ours ms':>10}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    for particles in args.particles:
        pyro.clear_param_store()
        guides = {"pyro": pyro_guide(hidden), "ours": our_guide(hidden)}
        contenders = {}
        for side, guide in guides.items():
            contenders[f"svi {side}"] = pyro_svi_steps(guide, particles, data)
        steppers = {side: TrainGuideSteps(guide, particles, data) for side, guide in guides.items()}
        for side, stepper in steppers.items():
            contenders[f"stepper {side}"] = stepper
        contenders["plain torch"], _ = plain_torch_step(hidden, particles, data)
        medians = interleaved_medians(contenders, repeats=rounds, warmup=warmup)
        for key in ("svi pyro", "svi ours", "plain torch"):
            medians[key] /= STEPS_PER_CALL
        for side, stepper in steppers.items():
            medians[f"stepper {side}"] = stepper.median()
        for loop, key in (("SVI loop", "svi"), ("train_guide", "stepper")):
            pyro_ms, ours_ms = 1e3 * medians[f"{key} pyro"], 1e3 * medians[f"{key} ours"]
            rows.append(
                {"loop": loop, "particles": particles, "pyro_ms": pyro_ms, "ours_ms": ours_ms}
            )
            print(
                f"{loop:<13}{particles:>10}{pyro_ms:>10.2f}{ours_ms:>10.2f}"
                f"{pyro_ms / ours_ms:>9.2f}x"
            )
        each_own_loop = medians["svi pyro"] / medians["stepper ours"]
        print(
            f"{'each its own':<13}{particles:>10}{1e3 * medians['svi pyro']:>10.2f}"
            f"{1e3 * medians['stepper ours']:>10.2f}{each_own_loop:>9.2f}x  "
            "(AutoIAFNormal in SVI, AutoFlow in train_guide)"
        )
        rows.append(
            {
                "loop": "each its own",
                "particles": particles,
                "pyro_ms": 1e3 * medians["svi pyro"],
                "ours_ms": 1e3 * medians["stepper ours"],
            }
        )
        plain_ms = 1e3 * medians["plain torch"]
        rows.append({"loop": "plain torch", "particles": particles, "ours_ms": plain_ms})
        print(f"{'plain torch':<13}{particles:>10}{'':>10}{plain_ms:>10.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine_line(), "hidden": hidden, "rows": rows}, handle)


if __name__ == "__main__":
    main()
