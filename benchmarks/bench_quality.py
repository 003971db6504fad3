"""Test NLL within a fixed wall-time budget: pyroflows' flows against Pyro's, same loop.

For each architecture both sides are trained by the *same* loop (below: standardised data,
minibatches in one seeded order, ``Adam(lr)``, gradient-norm clipping at 5, no early stopping)
until the wall-time budget is spent; the table prints steps taken and the test NLL (nats per
example; for the digits also bits/dim on the 17-level data) of the parameters at the end.
Architectures, identical on both sides (parameter counts printed):

* MAF: 5 affine autoregressive layers, MADE hidden ``[H, H]``, inverted (parallel density);
* RealNVP: 8 affine couplings with the halves swapped between layers;
* NSF (coupling): 5 rational-quadratic spline couplings (8 bins on [-3, 3]), halves swapped.

Datasets: two moons (20,000 training and 5,000 test points, H = 64) and the scikit-learn
digits (80/20 split with ``random_state=0``, uniform dequantisation to [0, 1), modelled in
logit space with :math:`\alpha = 10^{-3}` on both sides, H = 256; NLL and bits/dim are of the
[0, 1) data, the logit map's log-determinant included).

Usage: python benchmarks/bench_quality.py [--threads N] [--budget SECONDS] [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _timing import machine_line
from bench_autoregressive_coupling import (
    Side,
    ours_single,
    ours_spline_coupling,
    pyro_maf,
    pyro_realnvp,
    pyro_spline_coupling,
)

from pyroflows.data import bits_per_dim, dataset, logit_transform
from pyroflows.transforms import REGISTRY

LOGIT_ALPHA = 1e-3


def train_for(side: Side, train: torch.Tensor, budget: float, batch: int, lr: float) -> int:
    """The shared loop: minibatch Adam steps on ``train`` until ``budget`` seconds pass."""
    model = side.distribution(train.shape[1])
    parameters = list(side.modules.parameters())
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        order = torch.randperm(len(train), generator=generator)
        for rows in order.split(batch):
            optimizer.zero_grad()
            loss = -model.log_prob(train[rows]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            side.clear_cache()
            steps += 1
            if time.perf_counter() - start >= budget:
                break
    return steps


@torch.no_grad()
def test_nll(side: Side, test: torch.Tensor) -> float:
    side.clear_cache()
    values = side.distribution(test.shape[1]).log_prob(test)
    return -float(values.double().mean())


def contenders(dim: int, hidden: list[int]) -> dict[str, tuple[Side, Side]]:
    return {
        "MAF": (
            ours_single(REGISTRY["maf"].build(dim, num_layers=5, hidden_dims=hidden)),
            pyro_maf(dim, hidden, 5),
        ),
        "RealNVP": (
            ours_single(REGISTRY["realnvp"].build(dim, num_layers=8, hidden_dims=hidden)),
            pyro_realnvp(dim, hidden, 8),
        ),
        "NSF (coupling)": (
            ours_spline_coupling(dim, hidden, 5, 8),
            pyro_spline_coupling(dim, hidden, 5, 8),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=None, help="seconds (default 30)")
    parser.add_argument("--quick", action="store_true", help="tiny budget and data (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budget = args.budget or (1.0 if args.quick else 30.0)
    print(f"# {machine_line()}; {budget:g} s of training per model")
    header = (
        f"{'data':<7} {'flow':<15} {'params':>8} {'steps ours':>10} {'steps pyro':>10} "
        f"{'NLL ours':>9} {'NLL pyro':>9}  note"
    )
    print(header)
    print("-" * len(header))
    moons_rows = (2000, 500) if args.quick else (20_000, 5_000)
    cases = [
        ("moons", [64, 64], dataset("moons", moons_rows[0], seed=0),
         dataset("moons", moons_rows[1], seed=1), 256, 1e-3, None),
        ("digits", [64, 64] if args.quick else [256, 256], dataset("digits", split="train"),
         dataset("digits", split="test", seed=1), 128, 1e-3, 64),
    ]  # fmt: skip
    for name, hidden, train, test, batch, lr, digits_dim in cases:
        test_log_det = 0.0
        if digits_dim:  # model the digits in logit space, as Flow(logit_alpha=1e-3) does
            train = logit_transform(train, LOGIT_ALPHA)[0]
            test, log_det = logit_transform(test, LOGIT_ALPHA)
            test_log_det = float(log_det.double().mean())
        loc, scale = train.mean(0), train.std(0)
        train_std, test_std = (train - loc) / scale, (test - loc) / scale
        log_scale = float(scale.log().sum())  # NLL in data units = NLL standardised + this
        for flow, (ours, theirs) in contenders(train.shape[1], hidden).items():
            result = {}
            for label, side in (("ours", ours), ("pyro", theirs)):
                torch.manual_seed(0)
                steps = train_for(side, train_std, budget, batch, lr)
                result[label] = (steps, test_nll(side, test_std) + log_scale - test_log_det)
            note = ""
            if digits_dim:
                bits = {k: float(bits_per_dim(v[1], digits_dim)) for k, v in result.items()}
                note = f"bits/dim ours {bits['ours']:.3f}, pyro {bits['pyro']:.3f}"
            if not all(math.isfinite(v[1]) for v in result.values()):
                note += " (a run diverged)"
            print(
                f"{name:<7} {flow:<15} {ours.num_params:>8} {result['ours'][0]:>10} "
                f"{result['pyro'][0]:>10} {result['ours'][1]:>9.3f} {result['pyro'][1]:>9.3f}"
                f"  {note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
