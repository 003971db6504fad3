"""Residual Flow training steps: pyroflows' ``residual`` against normflows' ``Residual``.

The same architecture on both sides (the issue's anchor): 8 residual blocks whose ``g`` is a
Lipschitz MLP ``2 -> 64 -> 64 -> 2`` (``c = 0.9``), an ActNorm next to each block, the
unbiased Russian-roulette log-det (2 exact terms, geometric p = 0.5) with the Neumann-series
gradient and the memory-saving backward (normflows' ``reduce_memory=True``), a standard normal
base. The density direction is the cheap one on both sides: normflows' ``reverse=True``, and
``Flow(residual(...).inv)`` here. Two differences, printed with the parameter counts:
normflows' ``lipschitz_const`` bounds every layer (``g`` up to ``0.9^3``) while ours bounds
``g`` (each layer ``0.9^(1/3)``), and normflows' activation is Swish, ours LipSwish.

One training step = the mean NLL of a batch of two-moons points, backward, an Adam step
(lr 1e-3, torch's ``foreach`` implementation on both sides). The contenders run interleaved
in one process; medians and the ratio are printed (``--clock cpu``: each step timed by the
CPU time of the thread, for a loaded machine).
With ``--train-steps N`` both are then trained N more steps on fresh batches and their test
NLL on 1,000 fresh points is printed (exact on both sides: ours by ``set_log_det(flow,
"exact")``, normflows' eval mode computes the 2-D determinant by brute force), with the
distribution of our fixed-point inverse's iteration counts per block when sampling 1,000
points (the cap raised tenfold to see the whole tail).

``--memory`` prints peak training memory against the number of power-series terms, for the
memory-saving backward and for plain backpropagation through the series (one block, batch
256, the truncated series with n terms). Method: CPU torch has no peak-memory counter, so
the bytes the forward pass saves for backward are counted with
``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, by data pointer); that is
what a training step holds at its peak on top of the parameters and the batch, and what
grows with the number of terms when the graph runs through the series.

``--data issue`` uses the issue's protocol for every mode: scikit-learn's two moons with noise
0.05, centred (minus the noiseless moons' mean ``(0.5, 0.25)``) and scaled by 1.5, fresh
batches of 256, Adam 1e-3, test NLL on 1,000 fresh points; ``--data toy`` (the default) is
pyroflows' ``make_toy("moons")`` (noise 0.1, x2, FFJORD's shift).

``--budget SECONDS --contender NAME`` trains one contender (``pyroflows``: the residual
stack above; ``normflows``: its ``Residual``; ``realnvp``: pyroflows' ``realnvp`` with 8
couplings of ``[64, 64]``, about the same parameter count) for a training-time budget and
prints the test NLL every ``--every`` seconds of training (the evaluation is not counted).
``--clock cpu`` counts the CPU time of the training thread (``time.thread_time``) instead of
the wall clock: with ``--threads 1`` a budget that other load on the machine cannot shorten.
Run the contenders in parallel processes, one thread each; ``--json FILE`` writes the curve.

normflows is not a dependency: put it on ``PYTHONPATH`` (``pip install normflows``).

Usage::

    python benchmarks/bench_residual.py                    # timing, 1 thread
    python benchmarks/bench_residual.py --train-steps 1500 --memory
    python benchmarks/bench_residual.py --data issue --budget 240 --clock cpu --contender normflows
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from _timing import interleaved_medians, machine_line

from pyroflows import Flow
from pyroflows.data import make_toy
from pyroflows.transforms import Residual, realnvp, residual, set_log_det


def normflows_residual(blocks: int, hidden: list[int], coeff: float, dim: int = 2):
    """normflows' Residual flow as in its README's residual example (ActNorm after blocks)."""
    import normflows as nf

    flows = []
    for _ in range(blocks):
        net = nf.nets.LipschitzMLP([dim, *hidden, dim], init_zeros=True, lipschitz_const=coeff)
        flows += [nf.flows.Residual(net, reduce_memory=True), nf.flows.ActNorm(dim)]
    base = nf.distributions.DiagGaussian(dim, trainable=False)
    return nf.NormalizingFlow(q0=base, flows=flows)


def pyroflows_residual(blocks: int, hidden: list[int], coeff: float, dim: int = 2) -> Flow:
    """pyroflows' residual stack, used in its cheap direction for densities."""
    return Flow(residual(dim, hidden, num_layers=blocks, coeff=coeff).inv)


def _normflows_missing() -> str | None:
    try:
        import normflows  # noqa: F401
    except ImportError:
        return "normflows is not installed (pip install normflows, or put it on PYTHONPATH)"
    return None


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


_DATA = {"name": "toy"}


def _issue_moons(n: int, seed: int) -> torch.Tensor:
    """The issue's moons: ``make_moons(noise=0.05)``, minus ``(0.5, 0.25)``, times 1.5."""
    from sklearn.datasets import make_moons

    points, _ = make_moons(n, noise=0.05, random_state=seed)
    return 1.5 * (
        torch.as_tensor(points, dtype=torch.get_default_dtype()) - torch.tensor([0.5, 0.25])
    )


def _moons(n: int, seed: int) -> torch.Tensor:
    if _DATA["name"] == "issue":
        return _issue_moons(n, seed)
    return make_toy("moons", n, seed=seed)


def _trainer(model, loss_fn, batch: int, seed: int):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    state = {"seed": seed}

    def step():
        state["seed"] += 1
        x = _moons(batch, state["seed"])
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, x)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def _losses():
    return {
        "pyroflows": lambda m, x: -m.log_prob(x).mean(),
        "normflows": lambda m, x: m.forward_kld(x),
    }


def _cpu_clocked(steps: dict) -> dict:
    """Wrap each step so that it returns its CPU time; see :func:`_interleaved_cpu_medians`."""

    def clocked(step):
        def run():
            start = time.thread_time()
            step()
            return time.thread_time() - start

        return run

    return {name: clocked(step) for name, step in steps.items()}


def _interleaved_cpu_medians(steps: dict, repeats: int, warmup: int = 3) -> dict[str, float]:
    """As ``interleaved_medians``, timing each call by the CPU time of this thread."""
    clocked = _cpu_clocked(steps)
    for _ in range(warmup):
        for run in clocked.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in clocked}
    for _ in range(repeats):
        for name, run in clocked.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


def run_timing(blocks, hidden, coeff, batch, repeats, train_steps, clock="wall") -> None:
    torch.manual_seed(0)
    models = {"pyroflows": pyroflows_residual(blocks, hidden, coeff)}
    missing = _normflows_missing()
    if missing is None:
        models["normflows"] = normflows_residual(blocks, hidden, coeff)
    else:
        print(f"#   skipped normflows: {missing}")
    losses = _losses()
    steps = {name: _trainer(m, losses[name], batch, 1000) for name, m in models.items()}
    if clock == "cpu":
        medians = _interleaved_cpu_medians(steps, repeats=repeats, warmup=3)
    else:
        medians = interleaved_medians(steps, repeats=repeats, warmup=3)
    params = " / ".join(f"{_count(m):,d}" for m in models.values())
    ms = "  ".join(f"{name} {1000 * value:.1f}" for name, value in medians.items())
    ratio = f"{medians['normflows'] / medians['pyroflows']:.2f}x" if "normflows" in medians else "-"
    print(f"params {' / '.join(models)}: {params}")
    print(f"ms per training step (median of {repeats}, {clock} clock): {ms}  speed-up {ratio}")
    if not train_steps:
        return
    for _ in range(train_steps):
        for step in steps.values():
            step()
    test = _moons(1000, 7)
    ours = models["pyroflows"]
    set_log_det(ours, "exact")
    ours.eval()
    with torch.no_grad():
        nll = {"pyroflows": float(-ours.log_prob(test).mean())}
        if "normflows" in models:
            models["normflows"].eval()
            nll["normflows"] = float(-models["normflows"].log_prob(test).mean())
    counts, cap = _inverse_iterations(ours)
    print(
        f"test NLL after {train_steps + repeats + 3} steps: "
        + "  ".join(f"{name} {value:.3f}" for name, value in nll.items())
    )
    _print_iterations(_iteration_summary(counts, cap))


def _inverse_iterations(flow, anderson: int | None = None) -> tuple[torch.Tensor, int]:
    """Fixed-point iteration counts of every block when sampling 1,000 points (cap x10).

    ``anderson``: the acceleration's memory for this measurement (``0``: plain iteration;
    ``None``: the blocks' own setting, the default 5).
    """
    blocks = [module for module in flow.modules() if isinstance(module, Residual)]
    cap, memory = blocks[0].max_iter, blocks[0].anderson
    flow.eval()
    torch.manual_seed(1)  # the same 1,000 points for every setting
    with torch.no_grad():
        for block in blocks:  # measure the whole distribution, past the default cap too
            block.max_iter = 10 * cap
            block.anderson = memory if anderson is None else anderson
        flow.sample((1000,))
        for block in blocks:
            block.max_iter, block.anderson = cap, memory
    return torch.cat([block.last_inverse_iteration_counts for block in blocks]), cap


def _iteration_summary(counts: torch.Tensor, cap: int) -> dict:
    levels = torch.tensor([0.5, 0.9, 0.99], dtype=torch.double)
    quantiles = torch.quantile(counts.double(), levels).tolist()
    return {
        "median": quantiles[0],
        "q90": quantiles[1],
        "q99": quantiles[2],
        "max": int(counts.max()),
        "over_50": int((counts > 50).sum()),
        "over_cap": int((counts > cap).sum()),
        "cap": cap,
        "n": counts.numel(),
    }


def _print_iterations(summary: dict) -> None:
    print(
        "fixed-point iterations per block when sampling 1,000 points: median "
        f"{summary['median']:.0f}, 90% {summary['q90']:.0f}, 99% {summary['q99']:.0f}, "
        f"max {summary['max']}; {summary['over_50']} of {summary['n']} over 50, "
        f"{summary['over_cap']} over the default cap {summary['cap']}"
    )


def _saved_bytes(fn) -> int:
    """Bytes of the distinct storages that ``fn`` saves for backward."""
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(seen.values())


def _naive_series(block: Residual, x: torch.Tensor, n_terms: int) -> torch.Tensor:
    """The truncated series with the graph through every term (plain backpropagation)."""
    x = x.detach().requires_grad_(True)
    g_x = block._network()(x, None)
    probe = torch.randn_like(x)
    row, total = probe, torch.zeros(x.shape[0])
    for k in range(1, n_terms + 1):
        row = torch.autograd.grad(g_x, x, row, create_graph=True)[0]
        total = total + (-1) ** (k + 1) / k * (row * probe).sum(-1)
    return total


def run_memory(hidden, batch) -> None:
    torch.manual_seed(0)
    block = Residual(2, hidden, 0.9, log_det="series")
    x = _moons(batch, 3)
    print("peak saved-for-backward MiB vs number of power-series terms (one block, batch "
          f"{batch}): terms | memory-saving backward | backprop through the series")  # fmt: skip
    for n in (1, 2, 4, 8, 16, 32):
        block.n_terms = n
        ours = _saved_bytes(lambda: block.forward_and_log_det(x)[1].sum())
        naive = _saved_bytes(lambda n=n: _naive_series(block, x, n).sum())
        print(f"{n:>5} | {ours / 2**20:>8.2f} | {naive / 2**20:>8.2f}")


def _build(contender: str, blocks: int, hidden: list[int], coeff: float):
    if contender == "pyroflows":
        return pyroflows_residual(blocks, hidden, coeff)
    if contender == "normflows":
        return normflows_residual(blocks, hidden, coeff)
    return Flow(realnvp(2, hidden, num_layers=blocks))


def _test_nll(contender: str, model, test: torch.Tensor) -> float:
    model.eval()
    if contender == "pyroflows":
        set_log_det(model, "exact")
    with torch.no_grad():
        nll = float(-model.log_prob(test).mean())
    if contender == "pyroflows":
        set_log_det(model, "unbiased")
    model.train()
    return nll


def run_budget(args, hidden) -> dict:
    """Train one contender for ``args.budget`` seconds of ``args.clock``; test NLL curve."""
    torch.manual_seed(0)
    model = _build(args.contender, args.blocks, hidden, args.coeff)
    loss = _losses()["normflows" if args.contender == "normflows" else "pyroflows"]
    step = _trainer(model, loss, args.batch, 1000)
    test = _moons(1000, 7)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    points, trained, steps, next_eval = [], 0.0, 0, args.every
    wall = time.perf_counter()
    while trained < args.budget:
        start = clock()
        step()
        trained += clock() - start
        steps += 1
        if trained >= next_eval or trained >= args.budget:
            nll = _test_nll(args.contender, model, test)
            points.append({"seconds": round(trained, 1), "steps": steps, "test_nll": nll})
            print(f"#   {trained:7.1f} s  {steps:6d} steps  test NLL {nll:.4f}", flush=True)
            next_eval += args.every
    result = {
        "contender": args.contender,
        "data": args.data,
        "clock": args.clock,
        "threads": torch.get_num_threads(),
        "budget_s": args.budget,
        "params": _count(model),
        "curve": points,
        "final_test_nll": points[-1]["test_nll"],
        "best_test_nll": min(p["test_nll"] for p in points),
        "ms_per_step": 1000 * trained / steps,
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    if args.contender == "pyroflows":
        result["inverse_iterations"] = _iteration_summary(*_inverse_iterations(model))
        _print_iterations(result["inverse_iterations"])
        plain = _iteration_summary(*_inverse_iterations(model, anderson=0))
        result["inverse_iterations_plain"] = plain
        print("# without Anderson acceleration:", flush=True)
        _print_iterations(plain)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--hidden", default="64,64")
    parser.add_argument("--coeff", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--memory", action="store_true", help="memory vs number of terms")
    parser.add_argument("--quick", action="store_true", help="small model, few repeats")
    parser.add_argument("--data", default="toy", choices=["toy", "issue"])
    parser.add_argument("--budget", type=float, default=0.0, help="training seconds")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between test points")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    parser.add_argument(
        "--contender", default="pyroflows", choices=["pyroflows", "normflows", "realnvp"]
    )
    parser.add_argument("--json", default="", help="write the budget curve to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _DATA["name"] = args.data
    hidden = [int(size) for size in args.hidden.split(",")]
    if args.quick:
        args.blocks, hidden, args.repeats, args.batch = 2, [16], 3, 32
    print(
        f"# {machine_line()}; batch {args.batch}; {args.blocks} blocks of {hidden}, "
        f"c = {args.coeff}; {args.data} moons; "
        + (
            f"{args.contender}, budget {args.budget:.0f} s ({args.clock} clock)"
            if args.budget
            else "interleaved training steps"
        )
    )
    if args.budget:
        run_budget(args, hidden)
        return
    run_timing(
        args.blocks, hidden, args.coeff, args.batch, args.repeats, args.train_steps, args.clock
    )
    if args.memory:
        run_memory(hidden, args.batch)


if __name__ == "__main__":
    main()
