"""pyroflows vs Pyro: MAF, IAF, RealNVP and spline stacks, same architecture, interleaved.

Both sides build the same network (layer count, hidden sizes, parameter count printed per
row; they match exactly) and run inside the same ``pyro.distributions.TransformedDistribution``
over a standard normal base, built once before timing. Cases:

* MAF training step: ``-log_prob(data).mean()``, backward, ``Adam(lr=1e-3)`` step (same
  optimizer settings on both sides). 5 layers, MADE hidden ``[256, 256]``. Ours:
  ``REGISTRY["maf"].build(D, num_layers=5, hidden_dims=[256, 256])`` (one ``FlowSequence`` of
  ``affine_autoregressive(...).inv`` layers, MADE orderings alternating natural/reversed).
  Pyro: ``[T.affine_autoregressive(D, hidden_dims=[256, 256]).inv] * 5`` (separate layers),
  the parallel-density MAF; each AutoRegressiveNN draws its own random input permutation,
  which plays the role of our alternating orderings, so no ``Permute`` layers are added.
* IAF guide step: ``rsample`` a batch, ``log_prob`` of that sample, backward, as an SVI guide
  does. Ours ``REGISTRY["iaf"].build(D, num_layers=5, hidden_dims=[256, 256], stable=s)``,
  Pyro ``T.affine_autoregressive(D, hidden_dims=[256, 256], stable=s)`` x 5, with the same
  ``s`` on both sides: one row with ``stable=False`` (Pyro's default) and one with
  ``stable=True`` (ours; our gate's log is also clamped below at -5, Pyro's is not).
* MAF sampling: ``sample((n,))`` under ``torch.no_grad()`` from the MAF models above
  (sequential: D conditioner passes per layer on both sides); samples per second are printed.
  Fewer repeats (``max(3, repeats // 10)``, no warm-up): one call takes seconds.
* RealNVP training step: 8 affine couplings, hidden ``[256, 256]``, same loss and optimizer as
  the MAF step. Ours ``REGISTRY["realnvp"].build(D, num_layers=8, hidden_dims=[256, 256])``
  flips the coupling mask from one layer to the next; Pyro ``T.affine_coupling(D, ...)``
  layers with a reversing ``T.Permute`` between consecutive couplings (7 permutations, no
  parameters) so that both halves get transformed.

* Spline training steps (D = 8, batch 1024, 5 layers, hidden ``[256, 256]``, 8 bins on
  ``[-3, 3]``, same loss and optimizer as the MAF step), rational-quadratic splines on both
  sides (Pyro's ``order="quadratic"``, with conditioners emitting exactly the 3K - 1
  parameters per coordinate it uses). Autoregressive: ours
  ``REGISTRY["nsf_autoregressive"].build(8, num_layers=5, ...)`` (inverted layers, parallel
  density, alternating orderings), Pyro ``SplineAutoregressive(...).inv`` x 5. Coupling: ours
  ``spline_coupling`` layers with the halves swapped from layer to layer, Pyro
  ``SplineCoupling(..., identity=True)`` (the conditioning half passes unchanged, as in ours;
  its unused element-wise ``lower_spline`` is removed) with a reversing ``Permute`` between
  layers.

Pyro's transforms cache passes by input identity, so ``clear_cache()`` is called on every
Pyro module after each step (as Pyro's tutorials do); it is called on ours too (harmless:
our cache is keyed on parameter versions as well). Initialisations are each library's own.

Usage: python benchmarks/bench_autoregressive_coupling.py [--threads N] [--repeats R] [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import pyro.distributions as dist
import pyro.distributions.transforms as pyro_t
import torch
from _timing import interleaved_medians, machine_line
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import nn

from pyroflows.transforms import REGISTRY, FlowSequence, coupling_mask, spline_coupling


def _is_inverse(transform) -> bool:
    return isinstance(transform, torch.distributions.transforms._InverseTransform)


@dataclass
class Side:
    """One contender: the modules that own its parameters and the transforms to stack."""

    modules: nn.ModuleList
    transforms: list

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.modules.parameters())

    def __post_init__(self) -> None:
        # Pyro's `.inv` wrappers keep no cache of their own: clear the modules behind them.
        unique = {id(t): t for t in [*self.modules, *self.transforms] if not _is_inverse(t)}
        self._cached = list(unique.values())

    def clear_cache(self) -> None:
        for transform in self._cached:
            transform.clear_cache()

    def distribution(self, dim: int) -> dist.TransformedDistribution:
        base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
        return dist.TransformedDistribution(base, self.transforms)


def ours_single(flow) -> Side:
    return Side(nn.ModuleList([flow]), [flow])


def pyro_maf(dim: int, hidden: list[int], layers: int) -> Side:
    modules = nn.ModuleList(
        [pyro_t.affine_autoregressive(dim, hidden_dims=hidden) for _ in range(layers)]
    )
    return Side(modules, [module.inv for module in modules])


def pyro_iaf(dim: int, hidden: list[int], layers: int, stable: bool) -> Side:
    modules = nn.ModuleList(
        [
            pyro_t.affine_autoregressive(dim, hidden_dims=hidden, stable=stable)
            for _ in range(layers)
        ]
    )
    return Side(modules, list(modules))


def pyro_couplings_with_reversals(modules: nn.ModuleList, dim: int) -> Side:
    """Pyro coupling layers with a reversing ``Permute`` between consecutive ones."""
    transforms: list = []
    for index, module in enumerate(modules):
        if index:
            transforms.append(pyro_t.Permute(torch.arange(dim - 1, -1, -1)))
        transforms.append(module)
    return Side(modules, transforms)


def pyro_realnvp(dim: int, hidden: list[int], layers: int) -> Side:
    modules = nn.ModuleList(
        [pyro_t.affine_coupling(dim, hidden_dims=hidden) for _ in range(layers)]
    )
    return pyro_couplings_with_reversals(modules, dim)


def _pyro_spline_params(count: int, bins: int) -> list[int]:
    """Conditioner outputs of Pyro's quadratic spline: widths, heights, inner derivatives."""
    return [count * bins, count * bins, count * (bins - 1)]


def pyro_spline_autoregressive(dim: int, hidden: list[int], layers: int, bins: int) -> Side:
    modules = nn.ModuleList(
        [
            pyro_t.SplineAutoregressive(
                dim,
                AutoRegressiveNN(dim, hidden, param_dims=_pyro_spline_params(1, bins)),
                count_bins=bins,
                bound=3.0,
                order="quadratic",
            )
            for _ in range(layers)
        ]
    )
    return Side(modules, [module.inv for module in modules])


def pyro_spline_coupling(dim: int, hidden: list[int], layers: int, bins: int) -> Side:
    split = dim // 2
    modules = nn.ModuleList(
        [
            pyro_t.SplineCoupling(
                dim,
                split,
                DenseNN(split, hidden, param_dims=_pyro_spline_params(dim - split, bins)),
                count_bins=bins,
                bound=3.0,
                order="quadratic",
                identity=True,  # leave x_a unchanged, as the coupling layers of ours do
            )
            for _ in range(layers)
        ]
    )
    for module in modules:
        module.lower_spline = None  # unused with identity=True: drop its parameters
    return pyro_couplings_with_reversals(modules, dim)


def ours_spline_coupling(dim: int, hidden: list[int], layers: int, bins: int) -> Side:
    flow = FlowSequence(
        [
            spline_coupling(
                dim,
                hidden_dims=hidden,
                count_bins=bins,
                bound=3.0,
                mask=coupling_mask(dim, "half", flip=k % 2 == 1),
                identity=True,  # x_a unchanged, as the Pyro side (identity=True) above
            )
            for k in range(layers)
        ]
    )
    return ours_single(flow)


def density_step(side: Side, dim: int, data: torch.Tensor) -> Callable[[], None]:
    model = side.distribution(dim)
    optimizer = torch.optim.Adam(side.modules.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        loss = -model.log_prob(data).mean()
        loss.backward()
        optimizer.step()
        side.clear_cache()

    return step


def guide_step(side: Side, dim: int, batch: int) -> Callable[[], None]:
    guide = side.distribution(dim)

    def step() -> None:
        side.modules.zero_grad()
        z = guide.rsample((batch,))
        loss = guide.log_prob(z).mean() + z.pow(2).mean()
        loss.backward()
        side.clear_cache()

    return step


def sample_step(side: Side, dim: int, count: int) -> Callable[[], None]:
    model = side.distribution(dim)

    def step() -> None:
        with torch.no_grad():
            model.sample((count,))
        side.clear_cache()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None, help="default 30 (3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.quick:
        repeats = args.repeats or 3
        hidden, small, large, batch, small_batch, samples = [64, 64], 4, 16, 128, 256, 500
    else:
        repeats = args.repeats or 30
        hidden, small, large, batch, small_batch, samples = [256, 256], 8, 64, 512, 1024, 10_000
    sample_repeats = max(3, repeats // 10) if not args.quick else repeats
    hid = "x".join(map(str, hidden))

    print(f"# {machine_line()}; hidden {hid}, {repeats} repeats (sampling: {sample_repeats})")
    header = (
        f"{'case':<34} {'params ours':>11} {'params pyro':>11} {'pyro ms':>9} {'ours ms':>9} "
        f"{'speed-up':>9}  note"
    )
    print(header)
    print("-" * len(header))

    def report(case: str, ours: Side, theirs: Side, medians: dict[str, float], note: str = ""):
        n_ours, n_theirs = ours.num_params, theirs.num_params
        if n_ours != n_theirs:
            note = f"PARAMS DIFFER by {n_ours - n_theirs}; {note}"
        ratio = medians["pyro"] / medians["ours"]
        print(
            f"{case:<34} {n_ours:>11} {n_theirs:>11} {1e3 * medians['pyro']:>9.2f} "
            f"{1e3 * medians['ours']:>9.2f} {ratio:>8.2f}x  {note}",
            flush=True,
        )

    # 1. MAF training step; 3. MAF sampling (same models, D = large).
    for dim, n in ((small, small_batch), (large, batch)):
        ours = ours_single(REGISTRY["maf"].build(dim, num_layers=5, hidden_dims=hidden))
        theirs = pyro_maf(dim, hidden, 5)
        data = torch.randn(n, dim)
        medians = interleaved_medians(
            {"pyro": density_step(theirs, dim, data), "ours": density_step(ours, dim, data)},
            repeats=repeats,
        )
        report(f"MAF train step D={dim} B={n}", ours, theirs, medians)
        if dim == large:
            medians = interleaved_medians(
                {
                    "pyro": sample_step(theirs, dim, samples),
                    "ours": sample_step(ours, dim, samples),
                },
                repeats=sample_repeats,
                warmup=0,  # one call takes seconds: warm-up effects are negligible
            )
            rates = {side: samples / seconds for side, seconds in medians.items()}
            note = f"samples/s: pyro {rates['pyro']:,.0f}, ours {rates['ours']:,.0f}"
            report(f"MAF sample D={dim} n={samples}", ours, theirs, medians, note)

    # 2. IAF guide step (rsample + log_prob of the sample + backward), same `stable` per row.
    for stable in (False, True):
        ours = ours_single(
            REGISTRY["iaf"].build(large, num_layers=5, hidden_dims=hidden, stable=stable)
        )
        theirs = pyro_iaf(large, hidden, 5, stable)
        medians = interleaved_medians(
            {"pyro": guide_step(theirs, large, batch), "ours": guide_step(ours, large, batch)},
            repeats=repeats,
        )
        note = "ours clamps log-gate, Pyro does not" if stable else ""
        report(f"IAF guide step D={large} B={batch} st={stable}", ours, theirs, medians, note)

    # 4. RealNVP training step.
    ours = ours_single(REGISTRY["realnvp"].build(large, num_layers=8, hidden_dims=hidden))
    theirs = pyro_realnvp(large, hidden, 8)
    data = torch.randn(batch, large)
    medians = interleaved_medians(
        {"pyro": density_step(theirs, large, data), "ours": density_step(ours, large, data)},
        repeats=repeats,
    )
    report(
        f"RealNVP train step D={large} B={batch}",
        ours,
        theirs,
        medians,
        "Pyro: 7 reversing Permutes (no params)",
    )

    # 5. Spline training steps, autoregressive and coupling.
    bins = 8
    data = torch.randn(small_batch, small)
    contenders = {
        "spline AR": (
            ours_single(
                REGISTRY["nsf_autoregressive"].build(
                    small, num_layers=5, hidden_dims=hidden, count_bins=bins, bound=3.0
                )
            ),
            pyro_spline_autoregressive(small, hidden, 5, bins),
            "",
        ),
        "spline coupling": (
            ours_spline_coupling(small, hidden, 5, bins),
            pyro_spline_coupling(small, hidden, 5, bins),
            "Pyro: 4 reversing Permutes (no params)",
        ),
    }
    for label, (ours, theirs, note) in contenders.items():
        medians = interleaved_medians(
            {
                "pyro": density_step(theirs, small, data),
                "ours": density_step(ours, small, data),
            },
            repeats=repeats,
        )
        report(f"{label} train step D={small} B={small_batch}", ours, theirs, medians, note)


if __name__ == "__main__":
    main()
