"""Peak memory of one training step: pyroflows against Pyro, same architectures.

Each measurement runs in a fresh process: build the model and optimizer, read the peak
resident set size (``ru_maxrss``), run three training steps (``-log_prob(data).mean()``,
backward, Adam), read it again; the difference is the step's peak extra memory (activations
kept for the backward pass, gradients, optimizer state). Architectures as in
``bench_autoregressive_coupling.py``.

Usage: python benchmarks/bench_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys

import torch

CASES = {
    "MAF D=64 B=512": "maf",
    "RealNVP D=64 B=512": "realnvp",
    "spline AR D=8 B=1024": "spline_ar",
    "spline coupling D=8 B=1024": "spline_coupling",
}


def _peak_mib() -> float:
    """The process's peak resident memory in MiB.

    Linux's ``VmHWM`` belongs to the address space, which ``exec`` replaces, so a child starts
    from its own; ``ru_maxrss`` (the fallback elsewhere) survives ``exec`` and starts a child
    at its parent's peak, which hid the growth of children of a large parent.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(case: str, side: str, quick: bool) -> None:
    """In a child process: print the peak memory of three training steps, in MiB."""
    import bench_autoregressive_coupling as bench

    from pyroflows.transforms import REGISTRY

    torch.set_num_threads(1)
    torch.manual_seed(0)
    hidden = [64, 64] if quick else [256, 256]
    dim, batch = (8, 1024) if case.startswith("spline") else (64, 512)
    if quick:
        dim, batch = min(dim, 8), 128
    builders = {
        ("maf", "ours"): lambda: bench.ours_single(
            REGISTRY["maf"].build(dim, num_layers=5, hidden_dims=hidden)
        ),
        ("maf", "pyro"): lambda: bench.pyro_maf(dim, hidden, 5),
        ("realnvp", "ours"): lambda: bench.ours_single(
            REGISTRY["realnvp"].build(dim, num_layers=8, hidden_dims=hidden)
        ),
        ("realnvp", "pyro"): lambda: bench.pyro_realnvp(dim, hidden, 8),
        ("spline_ar", "ours"): lambda: bench.ours_single(
            REGISTRY["nsf_autoregressive"].build(dim, num_layers=5, hidden_dims=hidden)
        ),
        ("spline_ar", "pyro"): lambda: bench.pyro_spline_autoregressive(dim, hidden, 5, 8),
        ("spline_coupling", "ours"): lambda: bench.ours_spline_coupling(dim, hidden, 5, 8),
        ("spline_coupling", "pyro"): lambda: bench.pyro_spline_coupling(dim, hidden, 5, 8),
    }
    step = bench.density_step(builders[case, side](), dim, torch.randn(batch, dim))
    before = _peak_mib()
    for _ in range(3):
        step()
    print(f"{_peak_mib() - before:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke)")
    parser.add_argument("--threads", type=int, default=1, help="(ignored: always 1)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(*args.child, quick=args.quick)
        return
    print("# peak extra resident memory of 3 training steps (MiB), one process per cell")
    header = f"{'case':<28} {'pyro MiB':>9} {'ours MiB':>9} {'ours/pyro':>10}"
    print(header)
    print("-" * len(header))
    for label, case in CASES.items():
        peaks = {}
        for side in ("pyro", "ours"):
            command = [sys.executable, __file__, "--child", case, side]
            if args.quick:
                command.append("--quick")
            output = subprocess.run(command, capture_output=True, text=True, check=True)
            peaks[side] = float(output.stdout.strip().splitlines()[-1])
        ratio = peaks["ours"] / max(peaks["pyro"], 1e-9)
        print(f"{label:<28} {peaks['pyro']:>9.1f} {peaks['ours']:>9.1f} {ratio:>9.2f}x", flush=True)


if __name__ == "__main__":
    main()
