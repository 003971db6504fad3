"""Emerging 3x3 convolution vs an LU 1x1 convolution of the same channels: time per call.

For a batch of images of each shape, interleaved medians of

* ``forward``: the map (two masked convolutions for the emerging one, one 1x1 for LU);
* ``inverse``: the inverse (H row-by-row triangular solves per emerging convolution; for the
  1x1 convolution, W^-1 by two triangular solves, then one 1x1 convolution);
* ``inverse+grad``: the inverse, then a backward pass to the parameters (what a density step
  costs when the data enter the layer through its inverse).

Parameters are perturbed from the identity start, so nothing is trivially cheap. The 1x1
convolution is written inline (P L U with a positive diagonal, as Glow's).

Usage: python benchmarks/bench_emerging.py [--threads N] [--repeats R] [--batch B] [--quick]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _timing import interleaved_medians, machine_line
from torch import nn

from pyroflows.transforms import EmergingConv

SHAPES = ((1, 8, 8), (4, 8, 8), (1, 28, 28), (4, 14, 14))


class _LUConv1x1(nn.Module):
    """Glow's 1x1 convolution, W = P L U (L unit lower, U upper with diagonal e^s)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        rotation, _ = torch.linalg.qr(torch.randn(channels, channels))
        perm, lower, upper = torch.linalg.lu(rotation)
        self.register_buffer("perm", perm)
        self.lower = nn.Parameter(lower.tril(-1))
        self.upper = nn.Parameter(upper.triu(1))
        self.log_diag = nn.Parameter(upper.diagonal().abs().log())
        self.register_buffer("sign", upper.diagonal().sign())

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.log_diag.numel(), dtype=self.log_diag.dtype)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * self.log_diag.exp())
        return lower, upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        return F.conv2d(x, (self.perm @ lower @ upper)[..., None, None])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        eye = torch.eye(lower.shape[0], dtype=lower.dtype)
        inv_lower = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        inv_upper = torch.linalg.solve_triangular(upper, inv_lower, upper=True)
        return F.conv2d(y, (inv_upper @ self.perm.T)[..., None, None])


def _contenders(shape: tuple[int, ...], batch: int) -> dict[str, object]:
    torch.manual_seed(0)
    emerging = EmergingConv(shape)
    with torch.no_grad():
        for param in emerging.parameters():
            param.add_(0.05 * torch.randn_like(param))
    lu = _LUConv1x1(shape[0])
    x = torch.randn(batch, *shape)

    def forward_emerging():
        with torch.no_grad():
            emerging.forward_and_log_det(x)

    def inverse_emerging():
        with torch.no_grad():
            emerging.inverse_and_log_det(x)

    def inverse_grad_emerging():
        value, log_det = emerging.inverse_and_log_det(x)
        (value.pow(2).sum() - log_det.sum()).backward()

    def forward_lu():
        with torch.no_grad():
            lu(x)

    def inverse_lu():
        with torch.no_grad():
            lu.inverse(x)

    def inverse_grad_lu():
        lu.inverse(x).pow(2).sum().backward()

    return {
        "emerging forward": forward_emerging,
        "emerging inverse": inverse_emerging,
        "emerging inverse+grad": inverse_grad_emerging,
        "1x1 forward": forward_lu,
        "1x1 inverse": inverse_lu,
        "1x1 inverse+grad": inverse_grad_lu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="3 repeats (smoke)")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    torch.set_num_threads(args.threads)
    print(f"# {machine_line()}; batch {args.batch}; median of {repeats} interleaved calls, ms")
    header = (
        f"{'shape':>10} | {'emerg fwd':>9} {'emerg inv':>9} {'emerg inv+g':>11} | "
        f"{'1x1 fwd':>8} {'1x1 inv':>8} {'1x1 inv+g':>9} | {'fwd x':>6} {'inv x':>6}"
    )
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        times = interleaved_medians(_contenders(shape, args.batch), repeats=repeats)
        ms = {name: 1e3 * seconds for name, seconds in times.items()}
        print(
            f"{'x'.join(map(str, shape)):>10} | {ms['emerging forward']:9.3f} "
            f"{ms['emerging inverse']:9.3f} {ms['emerging inverse+grad']:11.3f} | "
            f"{ms['1x1 forward']:8.3f} {ms['1x1 inverse']:8.3f} {ms['1x1 inverse+grad']:9.3f} | "
            f"{ms['emerging forward'] / ms['1x1 forward']:6.1f} "
            f"{ms['emerging inverse'] / ms['1x1 inverse']:6.1f}"
        )


if __name__ == "__main__":
    main()
