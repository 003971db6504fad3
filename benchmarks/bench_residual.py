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
in one process; medians and the ratio are printed.
With ``--train-steps N`` both are then trained N more steps on fresh batches and their test
NLL on 1,000 fresh points is printed (ours with the exact 2-D log-det, normflows' with its
eval-mode estimate), with the distribution of our fixed-point inverse's iteration counts
per block when sampling 1,000 points (the cap raised tenfold to see the whole tail).

``--memory`` prints peak training memory against the number of power-series terms, for the
memory-saving backward and for plain backpropagation through the series (one block, batch
256, the truncated series with n terms). Method: CPU torch has no peak-memory counter, so
the bytes the forward pass saves for backward are counted with
``torch.autograd.graph.saved_tensors_hooks`` (distinct storages, by data pointer); that is
what a training step holds at its peak on top of the parameters and the batch, and what
grows with the number of terms when the graph runs through the series.

normflows is not a dependency: put it on ``PYTHONPATH`` (``pip install normflows``).

Usage::

    python benchmarks/bench_residual.py                    # timing, 1 thread
    python benchmarks/bench_residual.py --train-steps 1500 --memory
"""

from __future__ import annotations

import argparse

import torch
from _timing import interleaved_medians, machine_line

from pyroflows import Flow
from pyroflows.data import make_toy
from pyroflows.transforms import Residual, residual, set_log_det


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


def _moons(n: int, seed: int) -> torch.Tensor:
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


def run_timing(blocks, hidden, coeff, batch, repeats, train_steps) -> None:
    torch.manual_seed(0)
    models = {"pyroflows": pyroflows_residual(blocks, hidden, coeff)}
    missing = _normflows_missing()
    if missing is None:
        models["normflows"] = normflows_residual(blocks, hidden, coeff)
    else:
        print(f"#   skipped normflows: {missing}")
    losses = _losses()
    steps = {name: _trainer(m, losses[name], batch, 1000) for name, m in models.items()}
    medians = interleaved_medians(steps, repeats=repeats, warmup=3)
    params = " / ".join(f"{_count(m):,d}" for m in models.values())
    ms = "  ".join(f"{name} {1000 * value:.1f}" for name, value in medians.items())
    ratio = f"{medians['normflows'] / medians['pyroflows']:.2f}x" if "normflows" in medians else "-"
    print(f"params {' / '.join(models)}: {params}")
    print(f"ms per training step (median of {repeats}): {ms}  speed-up {ratio}")
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
        blocks = [module for module in ours.modules() if isinstance(module, Residual)]
        cap = blocks[0].max_iter
        for block in blocks:  # measure the whole distribution, past the default cap too
            block.max_iter = 10 * cap
        ours.sample((1000,))
    counts = torch.cat([block.last_inverse_iteration_counts for block in blocks])
    print(
        f"test NLL after {train_steps + repeats + 3} steps: "
        + "  ".join(f"{name} {value:.3f}" for name, value in nll.items())
    )
    quantiles = torch.quantile(counts.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.double))
    print(
        "fixed-point iterations per block when sampling 1,000 points: median "
        f"{quantiles[0]:.0f}, 90% {quantiles[1]:.0f}, 99% {quantiles[2]:.0f}, "
        f"max {int(counts.max())}; {int((counts > cap).sum())} of {counts.numel()} over the "
        f"default cap {cap}"
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    hidden = [int(size) for size in args.hidden.split(",")]
    if args.quick:
        args.blocks, hidden, args.repeats, args.batch = 2, [16], 3, 32
    print(
        f"# {machine_line()}; batch {args.batch}; {args.blocks} blocks of {hidden}, "
        f"c = {args.coeff}; interleaved training steps"
    )
    run_timing(args.blocks, hidden, args.coeff, args.batch, args.repeats, args.train_steps)
    if args.memory:
        run_memory(hidden, args.batch)


if __name__ == "__main__":
    main()
