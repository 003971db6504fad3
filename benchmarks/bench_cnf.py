"""Continuous-flow training steps: pyroflows' ``ffjord`` against zuko's ``CNF``.

The protocol of issue 18: two moons (noise 0.05, centred, times 1.5), batch 256, a dynamics
network of three hidden layers of 64, Adam at 1e-3. One training step = the mean NLL of a
batch, backward, an Adam step. Contenders: pyroflows' ``ContinuousFlow`` with the Hutchinson
and the exact trace (dopri5, backpropagation through the solver's steps), and with the
Hutchinson trace and adjoint gradients; zuko's ``CNF(2, hidden_features=[64] * 3)`` with
``exact=False`` and ``exact=True`` (its adaptive solver, adjoint gradients). All at the same
tolerances. Each model first takes ``--pretrain`` steps (the NFE of an untrained flow says
little: ours starts at the identity map), then the contenders are timed interleaved in one
process; medians and the function evaluations (NFE) per step are printed. Ours are counted
by the flow (``nfe_total``: with the adjoint, the backward solve's too), zuko's by a hook on
its network (forward and adjoint solves). zuko is not a dependency: put it on
``PYTHONPATH`` (``pip install zuko``); it is skipped when missing.

Usage::

    PYTHONPATH=/path/to/zuko/parent python benchmarks/bench_cnf.py --threads 1
    python benchmarks/bench_cnf.py --quick
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from _timing import machine_line

from pyroflows import Flow
from pyroflows.transforms import ContinuousFlow


def moons(n: int, seed: int) -> torch.Tensor:
    """Two moons as ``sklearn.datasets.make_moons(n, noise=0.05)``, centred, times 1.5."""
    rng = np.random.default_rng(seed)
    half = n // 2
    angles = np.concatenate([np.linspace(0, np.pi, half), np.linspace(0, np.pi, n - half)])
    upper = np.stack([np.cos(angles[:half]), np.sin(angles[:half])], 1)
    lower = np.stack([1 - np.cos(angles[half:]), 0.5 - np.sin(angles[half:])], 1)
    points = np.concatenate([upper, lower]) + 0.05 * rng.standard_normal((n, 2))
    points = (points - points.mean(0)) * 1.5
    return torch.as_tensor(points[rng.permutation(n)], dtype=torch.float32)


def _zuko_missing() -> str | None:
    try:
        import zuko  # noqa: F401
    except ImportError:
        return "zuko is not installed (pip install zuko, or put it on PYTHONPATH)"
    return None


class _Contender:
    """A model, its loss, its optimizer and an NFE counter read before and after a step."""

    def __init__(self, model, loss, nfe) -> None:
        self.model, self.loss, self.nfe = model, loss, nfe
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(self, batch: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model, batch)
        loss.backward()
        self.optimizer.step()


def ours(trace: str, hidden: list[int], tol: float, adjoint: bool = False) -> _Contender:
    model = Flow.build(
        "ffjord", 2, hidden_dims=hidden, trace=trace, rtol=tol, atol=tol, adjoint=adjoint
    )
    (flow,) = [m for m in model.modules() if isinstance(m, ContinuousFlow)]
    return _Contender(model, lambda m, x: -m.log_prob(x).mean(), lambda: flow.nfe_total)


def zuko_cnf(exact: bool, hidden: list[int], tol: float) -> _Contender:
    import zuko

    model = zuko.flows.CNF(2, hidden_features=hidden, exact=exact, rtol=tol, atol=tol)
    calls = [0]
    model.transform.ode.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return _Contender(model, lambda m, x: -m().log_prob(x).mean(), lambda: calls[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="64,64,64")
    parser.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of every solver")
    parser.add_argument("--pretrain", type=int, default=100, help="steps before timing")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny network, few steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    if args.quick:
        hidden, args.pretrain, args.repeats, args.batch = [8], 2, 2, 16
    torch.manual_seed(0)
    contenders = {
        "pyroflows hutchinson": ours("hutchinson", hidden, args.tol),
        "pyroflows exact": ours("exact", hidden, args.tol),
        "pyroflows hutch. adjoint": ours("hutchinson", hidden, args.tol, adjoint=True),
    }
    missing = _zuko_missing()
    if missing is None:
        contenders["zuko hutchinson"] = zuko_cnf(False, hidden, args.tol)
        contenders["zuko exact"] = zuko_cnf(True, hidden, args.tol)
    data = moons(args.batch * (args.pretrain + args.repeats), seed=0)
    batches = data.split(args.batch)
    print(
        f"# {machine_line()}; moons batch {args.batch}; network {hidden}; rtol = atol = "
        f"{args.tol:g}; {args.pretrain} training steps each, then the median of "
        f"{args.repeats} interleaved steps"
    )
    if missing:
        print(f"#   skipped zuko: {missing}")
    pretrain_s = {}
    for name, contender in contenders.items():
        start = time.perf_counter()
        for batch in batches[: args.pretrain]:
            contender.step(batch)
        pretrain_s[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in contenders}
    nfe: dict[str, list[int]] = {name: [] for name in contenders}
    for batch in batches[args.pretrain :]:
        for name, contender in contenders.items():
            before = contender.nfe()
            start = time.perf_counter()
            contender.step(batch)
            times[name].append(time.perf_counter() - start)
            nfe[name].append(contender.nfe() - before)
    test = moons(1000, seed=1)
    print(f"{'contender':>24} | {'ms/step':>8} | {'NFE/step':>8} | {'pretrain s':>10} | test NLL")
    for name, contender in contenders.items():
        with torch.no_grad():
            model = contender.model
            log_prob = model().log_prob(test) if name.startswith("zuko") else model.log_prob(test)
        nll = -float(log_prob.mean())
        print(
            f"{name:>24} | {1000 * statistics.median(times[name]):>8.1f} | "
            f"{statistics.median(nfe[name]):>8.0f} | {pretrain_s[name]:>10.1f} | "
            f"{nll if math.isfinite(nll) else float('nan'):.3f}"
        )


if __name__ == "__main__":
    main()
