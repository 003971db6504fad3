"""Throughput of ``fit()`` against a plain hand-written Pyro training loop, same flow.

Both train the same architecture on the same data, batch size and number of epochs, and
the table prints training samples per second (wall time of the whole run):

* ``fit``: ``pyroflows.train.fit(model, data, val_fraction=0, progress=False, ...)`` on a
  :class:`~pyroflows.distributions.Flow`: pre-shuffled index slicing on the data's device,
  fused Adam, loss read once per step (the non-finite guard) and no other host work.
* ``plain loop, same flow``: the loop of Pyro's normalizing-flow tutorial, written out: a
  ``DataLoader(TensorDataset(data), batch_size, shuffle=True)``, ``-dist.log_prob(x).mean()``,
  ``backward``, ``torch.optim.Adam`` (default settings), ``loss.item()`` logged every step,
  ``clear_cache()`` on the flow; the flow is the same pyroflows flow.
* ``plain loop, Pyro's flow``: the same loop on Pyro's own transforms of the same
  architecture (``T.affine_autoregressive(...).inv`` x L for MAF, ``T.affine_coupling`` with
  reversing permutations for RealNVP).

Runs are interleaved, ``--repeats`` times each, after one warm-up run; medians.

Usage: python benchmarks/bench_fit.py [--threads N] [--epochs E] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro.distributions as dist
import torch
from _timing import machine_line
from bench_autoregressive_coupling import pyro_maf, pyro_realnvp
from torch.utils.data import DataLoader, TensorDataset

from pyroflows.data import make_toy
from pyroflows.distributions import Flow
from pyroflows.train import fit


def plain_loop(modules, transforms, data: torch.Tensor, epochs: int, batch_size: int) -> float:
    """The textbook Pyro loop; returns the wall time in seconds."""
    dim = data.shape[1]
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    model = dist.TransformedDistribution(base, transforms)
    optimizer = torch.optim.Adam(modules.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data), batch_size=batch_size, shuffle=True)
    losses = []
    start = time.perf_counter()
    for _ in range(epochs):
        for (batch,) in loader:
            optimizer.zero_grad()
            loss = -model.log_prob(batch).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            for module in modules:
                module.clear_cache()
    return time.perf_counter() - start


def fit_time(model: Flow, data: torch.Tensor, epochs: int, batch_size: int) -> float:
    start = time.perf_counter()
    fit(
        model,
        data,
        val_fraction=0,
        epochs=epochs,
        batch_size=batch_size,
        lr=1e-3,
        patience=None,
        progress=False,
        device="cpu",
    )
    return time.perf_counter() - start


def contenders(name: str, layers: int, hidden: list[int], batch_size: int) -> dict:
    """Callables ``(data, epochs) -> seconds`` for the three ways of training."""

    def run_fit(data, epochs):
        torch.manual_seed(0)
        model = Flow.build(name, 2, num_layers=layers, hidden_dims=hidden)
        return fit_time(model, data, epochs, batch_size)

    def run_same(data, epochs):
        torch.manual_seed(0)
        flow = Flow.build(name, 2, num_layers=layers, hidden_dims=hidden).flow
        return plain_loop(torch.nn.ModuleList([flow]), [flow], data, epochs, batch_size)

    def run_pyro(data, epochs):
        torch.manual_seed(0)
        side = (pyro_maf if name == "maf" else pyro_realnvp)(2, hidden, layers)
        return plain_loop(side.modules, side.transforms, data, epochs, batch_size)

    return {"fit": run_fit, "same": run_same, "pyro": run_pyro}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="default 5 (1 with --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (1 if args.quick else 5)
    rows, hidden = (2048, [32, 32]) if args.quick else (20_000, [64, 64])
    print(f"# {machine_line()}; {rows} rows of 'moons' (2-D), {epochs} epochs, hidden {hidden}")
    header = (
        f"{'flow':<10} {'batch':>6} {'fit samples/s':>14} {'plain, same flow':>17} "
        f"{'ratio':>6} {'plain, Pyro flow':>17} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    data = make_toy("moons", rows, seed=0)
    for name, layers in (("maf", 5), ("realnvp", 8)):
        for batch_size in (128, 512):
            runs = contenders(name, layers, hidden, batch_size)
            for run in runs.values():  # warm-up: first calls of kernels, imports
                run(data[: 4 * batch_size], 1)
            seconds = {k: [] for k in runs}
            for _ in range(args.repeats):
                for key, run in runs.items():
                    seconds[key].append(run(data, epochs))
            rate = {k: epochs * rows / statistics.median(v) for k, v in seconds.items()}
            print(
                f"{name:<10} {batch_size:>6} {rate['fit']:>14,.0f} {rate['same']:>17,.0f} "
                f"{rate['fit'] / rate['same']:>5.2f}x {rate['pyro']:>17,.0f} "
                f"{rate['fit'] / rate['pyro']:>5.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
