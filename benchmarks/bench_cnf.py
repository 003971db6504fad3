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

**Budget mode** (``--budget SECONDS --contender NAME``): one contender trains on fresh moons
batches (a new draw of 256 points every step) for a budget of training seconds, on the
``--clock``: ``wall`` (``time.perf_counter``) or ``cpu``, the CPU time of the training thread
(``time.thread_time``; with ``--threads 1`` a budget that other load on the machine cannot
shorten). Every ``--every`` training seconds (evaluations not counted) it records the test
NLL on 1,000 fresh points (the exact trace for every contender, so the figure is not noisy)
and the mean NFE per step since the last point (forward solve, and all solves); it prints the
first time the test NLL is at most ``--target`` (1.20). Run the contenders as parallel
processes of one thread each; ``--json`` writes the run.

**Memory mode** (``--memory``): peak training memory of the Hutchinson flow with adjoint and
with direct gradients against the number of steps of a fixed-grid ``rk4`` solver (4, 8, 16,
32 steps over [0, 1]), batch 256, each cell in a fresh process of one thread: the peak of the
live bytes saved for backward during the forward pass (``saved_tensors_hooks``, distinct
storages; transient graphs, as the vector-Jacobian products of a solve without gradients,
counted while alive) and the growth of the peak resident memory (``VmHWM``, as
``bench_memory.py``) over three training steps, the adjoint's backward solve included.

Usage::

    PYTHONPATH=/path/to/zuko/parent python benchmarks/bench_cnf.py --threads 1
    python benchmarks/bench_cnf.py --quick
    python benchmarks/bench_cnf.py --budget 240 --clock cpu --contender rnode --json run.json
    python benchmarks/bench_cnf.py --memory
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _timing import machine_line
from bench_memory import _peak_mib

from pyroflows import Flow
from pyroflows.transforms import ContinuousFlow, auxiliary_loss


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


def ours(
    trace: str, hidden: list[int], tol: float, adjoint: bool = False, rnode: float = 0.0
) -> _Contender:
    model = Flow.build(
        "ffjord",
        2,
        hidden_dims=hidden,
        trace=trace,
        rtol=tol,
        atol=tol,
        adjoint=adjoint,
        kinetic_energy=rnode,
        jacobian_norm=rnode,
    )
    (flow,) = [m for m in model.modules() if isinstance(m, ContinuousFlow)]

    def loss(m, x):
        nll = -m.log_prob(x).mean()
        aux = auxiliary_loss(m)
        return nll if aux is None else nll + aux

    contender = _Contender(model, loss, lambda: flow.nfe_total)
    contender.flow = flow
    return contender


def zuko_cnf(exact: bool, hidden: list[int], tol: float) -> _Contender:
    import zuko

    model = zuko.flows.CNF(2, hidden_features=hidden, exact=exact, rtol=tol, atol=tol)
    calls = [0]
    model.transform.ode.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    contender = _Contender(model, lambda m, x: -m().log_prob(x).mean(), lambda: calls[0])
    contender.forward_calls = calls
    return contender


BUDGET_CONTENDERS = ("hutchinson", "rnode", "zuko")


def _test_nll(contender: _Contender, test: torch.Tensor) -> float:
    """Mean test NLL with the exact trace (switched on for the evaluation only)."""
    zuko = not hasattr(contender, "flow")
    holder = contender.model.transform if zuko else contender.flow
    attribute = "exact" if zuko else "trace"
    saved = getattr(holder, attribute)
    setattr(holder, attribute, True if zuko else "exact")
    try:
        with torch.no_grad():
            model = contender.model
            log_prob = model().log_prob(test) if zuko else model.log_prob(test)
    finally:
        setattr(holder, attribute, saved)
    return -float(log_prob.double().mean())


MEMORY_STEPS = (4, 8, 16, 32)


class _LiveSaved:
    """Saved-tensor hooks counting the bytes saved for backward that are alive, and the peak.

    Distinct storages are counted once; a storage stops counting when the last graph node
    holding it is freed (transient graphs, as the vector-Jacobian products inside a solve run
    without gradients, come and go).
    """

    def __init__(self) -> None:
        self.holders: dict[int, int] = {}
        self.live = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> object:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if self.holders.get(key, 0) == 0:
            self.live += size
            self.peak = max(self.peak, self.live)
        self.holders[key] = self.holders.get(key, 0) + 1
        return _Held(self, tensor, key, size)

    @staticmethod
    def unpack(held: _Held) -> torch.Tensor:
        return held.tensor

    def release(self, key: int, size: int) -> None:
        self.holders[key] -= 1
        if self.holders[key] == 0:
            self.live -= size


class _Held:
    """A saved tensor; tells its counter when the graph lets it go."""

    def __init__(self, counter: _LiveSaved, tensor: torch.Tensor, key: int, size: int) -> None:
        self.counter, self.tensor, self.key, self.size = counter, tensor, key, size

    def __del__(self) -> None:
        self.counter.release(self.key, self.size)


def memory_child(adjoint: bool, steps: int, hidden: list[int], batch: int) -> dict:
    """In a fresh process: saved-for-backward bytes and peak-memory growth (MiB)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Flow.build(
        "ffjord", 2, hidden_dims=hidden, solver="rk4", step_size=1.0 / steps, adjoint=adjoint
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = moons(3 * batch, seed=0).split(batch)
    live = _LiveSaved()
    with torch.autograd.graph.saved_tensors_hooks(live.pack, live.unpack):
        loss = -model.log_prob(data[0]).mean()
    loss.backward()
    optimizer.zero_grad(set_to_none=True)
    before = _peak_mib()
    for batch_data in data:
        optimizer.zero_grad(set_to_none=True)
        (-model.log_prob(batch_data).mean()).backward()
        optimizer.step()
    return {"saved_mib": live.peak / 2**20, "peak_growth_mib": _peak_mib() - before}


def memory_table(hidden: list[int], batch: int) -> list[dict]:
    """Every (gradient, steps) cell in its own process; prints and returns the rows."""
    print(
        f"# {machine_line()}; ffjord Hutchinson, rk4, batch {batch}, network {hidden}; MiB: "
        "peak live bytes saved for backward in a forward pass / peak RSS growth of 3 steps"
    )
    print(
        f"{'steps':>5} | {'direct saved':>12} | {'direct peak':>11} | "
        f"{'adjoint saved':>13} | {'adjoint peak':>12}"
    )
    rows = []
    for steps in MEMORY_STEPS:
        row: dict = {"rk4_steps": steps}
        for mode in ("direct", "adjoint"):
            command = [
                sys.executable,
                __file__,
                "--child-memory",
                mode,
                str(steps),
                "--hidden",
                ",".join(map(str, hidden)),
                "--batch",
                str(batch),
            ]
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            cell = json.loads(output.stdout.strip().splitlines()[-1])
            row[f"{mode}_saved_mib"] = round(cell["saved_mib"], 2)
            row[f"{mode}_peak_growth_mib"] = round(cell["peak_growth_mib"], 1)
        rows.append(row)
        print(
            f"{steps:>5} | {row['direct_saved_mib']:>12.2f} | "
            f"{row['direct_peak_growth_mib']:>11.1f} | {row['adjoint_saved_mib']:>13.2f} | "
            f"{row['adjoint_peak_growth_mib']:>12.1f}",
            flush=True,
        )
    return rows


def budget_run(args: argparse.Namespace, hidden: list[int]) -> dict:
    """Train one contender for ``args.budget`` seconds; the test NLL and NFE curve."""
    torch.manual_seed(0)
    if args.contender == "zuko":
        contender = zuko_cnf(False, hidden, args.tol)
    else:
        rnode = args.rnode if args.contender == "rnode" else 0.0
        contender = ours("hutchinson", hidden, args.tol, rnode=rnode)
    zuko = args.contender == "zuko"
    test = moons(1000, seed=1)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    points, trained, steps, next_eval, reached = [], 0.0, 0, args.every, None
    nfe_all = nfe_forward = since = 0
    while trained < args.budget:
        batch = moons(args.batch, seed=10_000 + steps)
        before, forward_before = contender.nfe(), 0
        if zuko:
            forward_before = contender.forward_calls[0]
        start = clock()
        contender.optimizer.zero_grad(set_to_none=True)
        loss = contender.loss(contender.model, batch)
        if zuko:
            forward_after = contender.forward_calls[0]
        loss.backward()
        contender.optimizer.step()
        trained += clock() - start
        steps += 1
        since += 1
        nfe_all += contender.nfe() - before
        nfe_forward += forward_after - forward_before if zuko else contender.flow.nfe_forward
        if trained >= next_eval or trained >= args.budget:
            nll = _test_nll(contender, test)
            points.append(
                {
                    "seconds": round(trained, 1),
                    "steps": steps,
                    "test_nll": round(nll, 4),
                    "nfe_forward": round(nfe_forward / since, 1),
                    "nfe_total": round(nfe_all / since, 1),
                }
            )
            if reached is None and nll <= args.target:
                reached = {"seconds": round(trained, 1), "steps": steps}
            print(
                f"#   {trained:7.1f} s {steps:6d} steps  test NLL {nll:.4f}  NFE/step "
                f"{nfe_forward / since:.1f} forward, {nfe_all / since:.1f} all",
                flush=True,
            )
            nfe_all = nfe_forward = since = 0
            next_eval += args.every
    return {
        "contender": args.contender,
        "rnode_weight": args.rnode if args.contender == "rnode" else 0.0,
        "clock": args.clock,
        "budget_s": args.budget,
        "tol": args.tol,
        "batch": args.batch,
        "hidden": hidden,
        "steps": steps,
        "ms_per_step": round(1000 * trained / steps, 1),
        "final_test_nll": points[-1]["test_nll"],
        "target_nll": args.target,
        "time_to_target": reached,
        "curve": points,
        "machine": machine_line(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="64,64,64")
    parser.add_argument("--tol", type=float, default=1e-5, help="rtol = atol of every solver")
    parser.add_argument("--pretrain", type=int, default=100, help="steps before timing")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny network, few steps")
    parser.add_argument("--budget", type=float, help="budget mode: training seconds")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--contender", choices=BUDGET_CONTENDERS, default="hutchinson")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between test points")
    parser.add_argument("--target", type=float, default=1.20, help="test NLL to reach")
    parser.add_argument(
        "--rnode", type=float, default=0.01, help="RNODE weights (kinetic = Jacobian)"
    )
    parser.add_argument("--json", type=Path, help="budget or memory mode: write the result here")
    parser.add_argument("--memory", action="store_true", help="adjoint vs direct memory table")
    parser.add_argument("--child-memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(h) for h in args.hidden.split(",")]
    if args.child_memory:
        mode, steps = args.child_memory
        print(json.dumps(memory_child(mode == "adjoint", int(steps), hidden, args.batch)))
        return
    if args.memory:
        rows = memory_table(hidden, args.batch)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return
    if args.budget is not None:
        if args.contender == "zuko" and _zuko_missing():
            raise SystemExit(_zuko_missing())
        print(
            f"# {machine_line()}; budget {args.budget:g} s ({args.clock} clock), "
            f"{args.contender}, {args.threads} thread(s)",
            flush=True,
        )
        result = budget_run(args, hidden)
        reached = result["time_to_target"]
        print(
            f"{args.contender}: test NLL {result['final_test_nll']:.4f} after {result['steps']} "
            f"steps ({result['ms_per_step']:.0f} ms/step); NLL <= {args.target:g} "
            + (f"at {reached['seconds']} s" if reached else "not reached")
        )
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return
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
