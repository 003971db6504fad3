"""Eager against ``torch.compile``: one training step of MAF and RealNVP, interleaved.

The step is what :func:`pyroflows.train.fit` takes, with and without ``compile=True``:
``-model.log_prob(data).mean()``, backward, an Adam step (``lr=1e-3``, fused, as ``fit``
uses). The compiled side is ``torch.compile(model)`` with inductor (``model``'s ``forward`` is
``log_prob``), so the log-likelihood's forward and backward graphs are compiled; the optimizer
stays eager on both sides. Two models built from the same seed, each with its own optimizer;
MAF is ``Flow.build("maf", D, num_layers=5, hidden_dims=[256, 256])`` (parallel density
direction), RealNVP the same with ``"realnvp"``; data ``N(0, I)``, D = 64, batch 512.

The first compiled call (tracing and code generation) is timed separately and printed as
``compile s``; the steps are then timed round-robin after warm-up, medians.

Usage: python benchmarks/bench_compile.py [--threads N] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from _timing import interleaved_medians, machine_line

from pyroflows.distributions import Flow


def training_step(model: Flow, data: torch.Tensor, compiled: bool) -> Callable[[], None]:
    """One step of ``-log_prob(data).mean()``, backward and eager Adam."""
    log_prob = torch.compile(model) if compiled else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = -log_prob(data).mean()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="default 30 (3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.quick:
        repeats = args.repeats or 3
        dim, batch, layers, hidden = 8, 128, 2, [32, 32]
    else:
        repeats = args.repeats or 30
        dim, batch, layers, hidden = 64, 512, 5, [256, 256]
    hid = "x".join(map(str, hidden))
    print(
        f"# {machine_line()}; D={dim}, batch {batch}, {layers} layers of {hid}, "
        f"inductor, {repeats} repeats"
    )
    header = f"{'case':<28} {'eager ms':>9} {'compiled ms':>12} {'speed-up':>9} {'compile s':>10}"
    print(header)
    print("-" * len(header))

    data = torch.randn(batch, dim, generator=torch.Generator().manual_seed(0))
    for name in ("maf", "realnvp"):
        steps = {}
        for compiled in (False, True):
            torch.manual_seed(0)
            model = Flow.build(name, dim, num_layers=layers, hidden_dims=hidden)
            steps["compiled" if compiled else "eager"] = training_step(model, data, compiled)
        start = time.perf_counter()
        steps["compiled"]()  # traces and generates code
        compile_seconds = time.perf_counter() - start
        medians = interleaved_medians(steps, repeats=repeats)
        eager, fast = 1e3 * medians["eager"], 1e3 * medians["compiled"]
        print(
            f"{f'{name} train step':<28} {eager:>9.2f} {fast:>12.2f} {eager / fast:>8.2f}x "
            f"{compile_seconds:>10.1f}",
            flush=True,
        )
        torch._dynamo.reset()


if __name__ == "__main__":
    main()
