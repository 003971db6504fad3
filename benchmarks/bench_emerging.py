"""Emerging and periodic 3x3 convolutions vs an LU 1x1 convolution of the same channels.

For a batch of images of each shape, interleaved medians of

* ``forward``: the map (two masked convolutions for the emerging one, an FFT, C x C products
  per frequency and an inverse FFT for the periodic one, one 1x1 convolution for LU);
* ``inverse``: the inverse (H row-by-row triangular solves per emerging convolution; the
  periodic one as its forward with the inverted matrices; for the 1x1 convolution, W^-1 by
  two triangular solves, then one 1x1 convolution);
* ``inverse+grad``: the inverse, then a backward pass to the parameters (what a density step
  costs when the data enter the layer through its inverse).

Parameters are perturbed from the identity start, so nothing is trivially cheap. The 1x1
convolution is written inline (P L U as Glow's, applied as a channel matmul by einsum, as
pyroflows' ``InvertibleConv1x1``).

Usage: python benchmarks/bench_emerging.py [--threads N] [--repeats R] [--batch B]
[--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse

import torch
from _timing import interleaved_medians, machine_line
from torch import nn

from pyroflows.transforms import EmergingConv, PeriodicConv

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
        eye = torch.eye(self.log_diag.numel(), dtype=self.log_diag.dtype, device=self.lower.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign * self.log_diag.exp())
        return lower, upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        return torch.einsum("ij,bjhw->bihw", self.perm @ lower @ upper, x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        lower, upper = self._factors()
        eye = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device)
        inv_lower = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        inv_upper = torch.linalg.solve_triangular(upper, inv_lower, upper=True)
        return torch.einsum("ij,bjhw->bihw", inv_upper @ self.perm.T, y)


def _timed_calls(name: str, layer, x: torch.Tensor) -> dict[str, object]:
    forward = layer.forward_and_log_det if hasattr(layer, "forward_and_log_det") else layer
    inverse = layer.inverse_and_log_det if hasattr(layer, "inverse_and_log_det") else layer.inverse
    sync = torch.cuda.synchronize if x.is_cuda else lambda: None  # time the kernels, not queuing

    def forward_call():
        with torch.no_grad():
            forward(x)
        sync()

    def inverse_call():
        with torch.no_grad():
            inverse(x)
        sync()

    def inverse_grad_call():
        value = inverse(x)
        value = value[0] - value[1].sum() if isinstance(value, tuple) else value
        value.pow(2).sum().backward()
        sync()

    return {
        (name, "forward"): forward_call,
        (name, "inverse"): inverse_call,
        (name, "inverse+grad"): inverse_grad_call,
    }


def _contenders(
    shape: tuple[int, ...], batch: int, device: torch.device
) -> dict[tuple[str, str], object]:
    torch.manual_seed(0)
    layers = {"emerging 3x3": EmergingConv(shape), "periodic 3x3": PeriodicConv(shape)}
    for layer in layers.values():
        with torch.no_grad():
            for param in layer.parameters():
                param.add_(0.05 * torch.randn_like(param))
    layers["LU 1x1"] = _LUConv1x1(shape[0])
    x = torch.randn(batch, *shape, device=device)
    calls = {}
    for name, layer in layers.items():
        calls.update(_timed_calls(name, layer.to(device), x))
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--quick", action="store_true", help="3 repeats (smoke)")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"# {machine_line()}; {where}; batch {args.batch}; median of {repeats} interleaved "
        "calls, ms"
    )
    header = (
        f"{'shape':>8} | {'layer':<12} | {'forward':>8} {'inverse':>8} {'inv+grad':>8} | "
        f"{'fwd / 1x1':>9} {'inv / 1x1':>9}"
    )
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        times = interleaved_medians(_contenders(shape, args.batch, device), repeats=repeats)
        ms = {key: 1e3 * seconds for key, seconds in times.items()}
        for name in ("emerging 3x3", "periodic 3x3", "LU 1x1"):
            row = [ms[name, kind] for kind in ("forward", "inverse", "inverse+grad")]
            ratios = (row[0] / ms["LU 1x1", "forward"], row[1] / ms["LU 1x1", "inverse"])
            print(
                f"{'x'.join(map(str, shape)):>8} | {name:<12} | "
                + " ".join(f"{value:8.3f}" for value in row)
                + f" | {ratios[0]:9.1f} {ratios[1]:9.1f}"
            )


if __name__ == "__main__":
    main()
