"""Glow training steps: pyroflows' ``glow`` against normflows' ``MultiscaleFlow`` Glow.

The same architecture on both sides: ``levels`` levels of squeeze, ``steps`` Glow steps
(ActNorm, invertible 1x1 convolution, affine coupling with a channel mask) and a split; the
coupling network is normflows' ``GlowBlock`` network (3x3 conv, ReLU, 1x1 conv, ReLU,
zero-initialised 3x3 conv) and pyroflows' :class:`~pyroflows.nn.ConvResNet` with
``num_blocks=0`` (3x3 conv, ReLU, zero-initialised 3x3 conv) at a hidden width chosen so that
the two parameter counts are as close as the widths allow (printed). normflows' base is a
learnable diagonal Gaussian per level, pyroflows' a standard normal: a few hundred parameters.

One training step = the mean NLL of a batch of uniform noise images in [0, 1) (timing only;
the data do not change the cost), backward, an Adam step. The contenders run interleaved in
one process; medians and the ratio are printed, and the peak memory of training: on CUDA
the allocator's peak over one step; on the CPU the growth of the process's peak resident set
over three steps, each contender in a fresh process.
normflows is not a dependency: put it on ``PYTHONPATH`` (``pip install normflows``).

Usage::

    python benchmarks/bench_glow.py                  # 1x8x8 and 1x28x28, 2 threads
    python benchmarks/bench_glow.py --device cuda --batch 256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _timing import machine_line

from pyroflows import Flow


def normflows_glow(shape: tuple[int, int, int], levels: int, steps: int, hidden: int):
    """normflows' Glow, as in its README's multi-scale example (no class conditioning)."""
    import normflows as nf

    channels, height, width = shape
    q0, merges, flows = [], [], []
    for i in range(levels):
        block = channels * 2 ** (levels + 1 - i)
        blocks = [
            nf.flows.GlowBlock(block, hidden, split_mode="channel", scale=True)
            for _ in range(steps)
        ]
        flows.append([*blocks, nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            factor = 2 ** (levels - i)
            latent = (channels * factor, height // factor, width // factor)
        else:
            factor = 2**levels
            latent = (channels * factor * 2, height // factor, width // factor)
        q0.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _our_glow(shape, levels: int, steps: int, hidden: int) -> Flow:
    """pyroflows' glow with normflows' coupling network shape (no residual block)."""
    return Flow.build(
        "glow", shape, levels=levels, steps_per_level=steps, hidden_channels=hidden, num_blocks=0
    )


def pyroflows_glow(shape, levels: int, steps: int, target_params: int) -> Flow:
    """pyroflows' glow with the hidden width whose parameter count is nearest the target."""
    best = None
    for hidden in range(16, 257, 4):
        model = _our_glow(shape, levels, steps, hidden)
        gap = abs(_count(model) - target_params)
        if best is None or gap < best[0]:
            best = (gap, model, hidden)
    return best[1], best[2]


def _step_fn(model, loss_fn, x):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, x)
        loss.backward()
        optimizer.step()

    return step


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _peak_memory(fn, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def _cpu_peak_child(name: str, shape, levels: int, steps: int, hidden: int, batch: int) -> None:
    """In a fresh process: the growth of the peak resident memory over three training steps.

    The baseline is the peak after building the model and the batch and one step on two
    images (which loads the convolution libraries, tens of MiB);
    the growth is what training adds: activations kept for the backward pass, gradients and
    Adam's two moments. CPU torch has no allocator statistics, so the process's maximum
    resident set size (``getrusage``, as in ``bench_memory.py``) is the measure.
    """
    from bench_memory import _peak_mib

    torch.manual_seed(0)
    if name == "normflows":
        model = normflows_glow(shape, levels, steps, hidden)
        loss = lambda m, data: m.forward_kld(data)  # noqa: E731
    else:
        model = _our_glow(shape, levels, steps, hidden)
        loss = lambda m, data: -m.log_prob(data).mean()  # noqa: E731
    x = torch.rand(batch, *shape)
    _step_fn(model, loss, x[:2])()  # loads the kernels' libraries, at a negligible batch
    before = _peak_mib()
    step = _step_fn(model, loss, x)
    for _ in range(3):
        step()
    print(f"PEAK_MIB {_peak_mib() - before:.1f}")


def _cpu_peak(name: str, shape, hidden: int, args) -> float | None:
    """:func:`_cpu_peak_child` of one contender in a subprocess (MiB), or ``None``."""
    import subprocess
    import sys

    command = [
        sys.executable,
        __file__,
        "--memory-child",
        name,
        "--shapes",
        "x".join(map(str, shape)),
        "--levels",
        str(args.levels),
        "--steps",
        str(args.steps),
        "--hidden",
        str(hidden),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("PEAK_MIB"):
            return float(line.split()[1])
    return None


def _normflows_missing() -> str | None:
    try:
        import normflows  # noqa: F401
    except ImportError:
        return "normflows is not installed (pip install normflows, or put it on PYTHONPATH)"
    return None


def run(shape, levels, steps, hidden, batch, repeats, device) -> dict:
    """Time the contenders on one image shape; normflows is left out when it is missing."""
    torch.manual_seed(0)
    with_peer = _normflows_missing() is None
    models = {}
    if with_peer:
        theirs = normflows_glow(shape, levels, steps, hidden).to(device)
        ours, our_hidden = pyroflows_glow(shape, levels, steps, _count(theirs))
        models["normflows"] = (theirs, lambda m, data: m.forward_kld(data))
    else:
        our_hidden = hidden
        ours = _our_glow(shape, levels, steps, hidden)
    models = {"pyroflows": (ours.to(device), lambda m, data: -m.log_prob(data).mean()), **models}
    x = torch.rand(batch, *shape, device=device)
    steps_by_name = {name: _step_fn(model, loss, x) for name, (model, loss) in models.items()}
    for fn in steps_by_name.values():  # warm-up, and ActNorm's data-dependent start
        for _ in range(3):
            _timed(fn, device)
    times = {name: [] for name in steps_by_name}
    for _ in range(repeats):
        for name, fn in steps_by_name.items():
            times[name].append(_timed(fn, device))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "shape": "x".join(map(str, shape)),
        "params": {name: _count(model) for name, (model, _) in models.items()},
        "hidden": {"pyroflows": our_hidden, "normflows": hidden},
        "ms": {name: 1000 * value for name, value in medians.items()},
        "ratio": medians["normflows"] / medians["pyroflows"] if with_peer else None,
        "peak_mib": {name: _peak_memory(fn, device) for name, fn in steps_by_name.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shapes", default="1x8x8,1x28x28")
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes = [tuple(int(n) for n in text.split("x")) for text in args.shapes.split(",")]
    if args.memory_child:
        _cpu_peak_child(args.memory_child, shapes[0], args.levels, args.steps, args.hidden,
                        args.batch)  # fmt: skip
        return
    if args.quick:
        shapes, args.repeats, args.steps, args.hidden, args.batch = [(1, 8, 8)], 3, 2, 16, 8
    print(
        f"# {machine_line()}; {device}; batch {args.batch}; levels {args.levels}, "
        f"{args.steps} steps; median of {args.repeats} interleaved training steps"
    )
    print(
        f"{'shape':>8} | {'params ours / theirs':>22} | {'hidden':>9} | "
        f"{'ms ours':>8} {'ms theirs':>9} | {'speed-up':>8} | peak MiB ours / theirs"
    )
    missing = _normflows_missing()
    if missing:
        print(f"#   skipped normflows: {missing}")
    for shape in shapes:
        row = run(shape, args.levels, args.steps, args.hidden, args.batch, args.repeats, device)
        params, ms, memory = row["params"], row["ms"], row["peak_mib"]

        def cell(values, name, form):
            value = values.get(name)
            return "-" if value is None else format(value, form)

        if device.type != "cuda":  # the growth of the peak resident memory, one process each
            memory = {name: _cpu_peak(name, shape, row["hidden"][name], args) for name in params}
        peak = f"{cell(memory, 'pyroflows', '.0f')} / {cell(memory, 'normflows', '.0f')}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        print(
            f"{row['shape']:>8} | {cell(params, 'pyroflows', ',d'):>10} / "
            f"{cell(params, 'normflows', ',d'):>9} | {row['hidden']['pyroflows']:>3} / "
            f"{row['hidden']['normflows']:>3} | {cell(ms, 'pyroflows', '.1f'):>8} "
            f"{cell(ms, 'normflows', '.1f'):>9} | {ratio:>8} | {peak}"
        )


if __name__ == "__main__":
    main()
