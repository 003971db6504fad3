"""pyroflows vs Pyro: planar, radial and Householder stacks, as a guide and as a density.

Same architecture on both sides (same layer count, same parameter count, printed). Two tasks:

* guide step: sample a batch from the flow, score it (log_prob), backward — what SVI does;
* density step: log_prob of data + backward + Adam (pyroflows only for planar and radial,
  whose inverses Pyro lacks; Householder on both sides).

Usage: python benchmarks/bench_planar_radial.py [--threads N] [--repeats R]
"""

from __future__ import annotations

import argparse

import pyro.distributions as dist
import pyro.distributions.transforms as pyro_t
import torch
from _timing import interleaved_medians, machine_line

import pyroflows.transforms as pf

PAIRS = {
    "planar": (pf.planar, pyro_t.planar),
    "radial": (pf.radial, pyro_t.radial),
    "householder": (
        lambda dim: pf.householder(dim, count_transforms=dim // 2),
        lambda dim: pyro_t.householder(dim, count_transforms=dim // 2),
    ),
}


def _guide_step(layers: torch.nn.ModuleList, dim: int, batch: int):
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)

    def step() -> None:
        flow = dist.TransformedDistribution(base, list(layers))
        z = flow.rsample((batch,))
        loss = flow.log_prob(z).mean() + z.pow(2).mean()
        loss.backward()
        for layer in layers:
            layer.clear_cache()  # Pyro needs this between steps; harmless for pyroflows

    return step


def _density_step(layers: torch.nn.ModuleList, dim: int, data: torch.Tensor):
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    optimizer = torch.optim.Adam(layers.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        loss = -dist.TransformedDistribution(base, list(layers)).log_prob(data).mean()
        loss.backward()
        optimizer.step()
        for layer in layers:
            layer.clear_cache()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="3 repeats (smoke)")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# {machine_line()}; D={args.dim}, {args.layers} layers, batch {args.batch}")
    header = (
        f"{'flow':<12} {'task':<14} {'params':>7} {'pyro ms':>9} {'ours ms':>9} {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    data = torch.randn(args.batch, args.dim)
    for name, (ours_builder, pyro_builder) in PAIRS.items():
        ours = torch.nn.ModuleList([ours_builder(args.dim) for _ in range(args.layers)])
        theirs = torch.nn.ModuleList([pyro_builder(args.dim) for _ in range(args.layers)])
        n_ours = sum(p.numel() for p in ours.parameters())
        n_theirs = sum(p.numel() for p in theirs.parameters())
        assert n_ours == n_theirs, (name, n_ours, n_theirs)
        tasks = {"guide step": (_guide_step, args.batch)}
        if name == "householder":
            tasks["density step"] = (_density_step, data)
        for task, (make, arg) in tasks.items():
            medians = interleaved_medians(
                {"pyro": make(theirs, args.dim, arg), "ours": make(ours, args.dim, arg)},
                repeats=args.repeats,
            )
            ratio = medians["pyro"] / medians["ours"]
            print(
                f"{name:<12} {task:<14} {n_ours:>7} {1e3 * medians['pyro']:>9.2f} "
                f"{1e3 * medians['ours']:>9.2f} {ratio:>8.2f}x"
            )
    # Density estimation with planar/radial: only pyroflows can (Pyro has no inverse).
    for name in ("planar", "radial"):
        ours = torch.nn.ModuleList([PAIRS[name][0](args.dim) for _ in range(args.layers)])
        median = interleaved_medians({"ours": _density_step(ours, args.dim, data)}, args.repeats)
        print(f"{name:<12} {'density step':<14} {'':>7} {'n/a':>9} {1e3 * median['ours']:>9.2f}")


if __name__ == "__main__":
    main()
