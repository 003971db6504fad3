"""Pyro's normalizing-flow tutorial on the circles: one ``spline_coupling``, ours against Pyro's.

The setup of Pyro's introductory tutorial (``tutorial/source/normalizing_flows_i.ipynb``):
``make_circles(n_samples=1000, factor=0.5, noise=0.05)`` standardised, a base
``Normal(0, 1)`` on two coordinates, one ``T.spline_coupling(2, count_bins=16)`` layer,
full-batch ``Adam(lr=5e-3)`` on the mean negative log-likelihood for 5,000 steps, the
transformed distribution's cache cleared after every step. The same loop trains every
contender on the same data for each seed (the contenders take turns seed by seed); the test
NLL (nats per point, standardised units) is on 1,000 fresh points of the same distribution,
standardised with the training set's mean and scale. Contenders:

* ``pyro``: ``pyro.distributions.transforms.spline_coupling(2, count_bins=16)`` (linear
  rational splines, the pass-through coordinate through its own element-wise spline);
* ``ours``: ``pyroflows.transforms.spline_coupling(2, count_bins=16)`` (quadratic rational
  splines, the pass-through spline too);
* ``ours identity=True``: ours with the pass-through coordinate left unchanged (the helper's
  behaviour before issue 12: the first coordinate's marginal stays the base's).

Usage: python benchmarks/bench_circles.py [--seeds N] [--steps N] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import pyro.distributions as dist
import pyro.distributions.transforms as pyro_t
import torch
from _timing import machine_line
from sklearn.datasets import make_circles

import pyroflows.transforms as ours_t

CONTENDERS: dict[str, Callable[[], torch.nn.Module]] = {
    "pyro": lambda: pyro_t.spline_coupling(2, count_bins=16),
    "ours": lambda: ours_t.spline_coupling(2, count_bins=16),
    "ours identity=True": lambda: ours_t.spline_coupling(2, count_bins=16, identity=True),
}


def circles(size: int, seed: int) -> torch.Tensor:
    """The tutorial's data set: two noisy concentric circles, ``size`` points."""
    points, _ = make_circles(n_samples=size, factor=0.5, noise=0.05, random_state=seed)
    return torch.as_tensor(points, dtype=torch.float32)


def fit(make: Callable[[], torch.nn.Module], train: torch.Tensor, steps: int, seed: int):
    """The tutorial's loop; returns the fitted distribution and the seconds per step."""
    torch.manual_seed(seed)
    flow = make()
    base = dist.Normal(torch.zeros(2), torch.ones(2))
    model = dist.TransformedDistribution(base, [flow])
    optimizer = torch.optim.Adam(flow.parameters(), lr=5e-3)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -model.log_prob(train).mean()
        loss.backward()
        optimizer.step()
        model.clear_cache()
    return model, (time.perf_counter() - start) / steps


@torch.no_grad()
def test_nll(model: dist.TransformedDistribution, test: torch.Tensor) -> float:
    model.clear_cache()
    return -float(model.log_prob(test).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="default 5000 (30 with --quick)")
    parser.add_argument("--quick", action="store_true", help="few steps and points (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = args.seeds or (2 if args.quick else 3)
    steps = args.steps or (30 if args.quick else 5000)
    size = 200 if args.quick else 1000
    print(f"# {machine_line()}; {steps} full-batch steps, {size} points, {seeds} seeds")
    nll: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    per_step: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for seed in range(seeds):
        train, test = circles(size, 2 * seed), circles(size, 2 * seed + 1)
        loc, scale = train.mean(0), train.std(0, unbiased=False)  # StandardScaler
        train, test = (train - loc) / scale, (test - loc) / scale
        for name, make in CONTENDERS.items():
            model, seconds = fit(make, train, steps, seed)
            nll[name].append(test_nll(model, test))
            per_step[name].append(seconds)
    header = f"{'spline_coupling':<20} {'test NLL per seed':<26} {'mean':>7} {'ms/step':>8}"
    print(header)
    print("-" * len(header))
    for name in CONTENDERS:
        values = " ".join(f"{value:.3f}" for value in nll[name])
        print(
            f"{name:<20} {values:<26} {statistics.fmean(nll[name]):>7.3f} "
            f"{1e3 * statistics.median(per_step[name]):>8.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
