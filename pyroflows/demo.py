"""A one-minute tour: fit a small flow to a 2-D toy dataset by maximum likelihood and plot it.

``pyroflows demo`` (or ``python -m pyroflows demo``) calls :func:`run_demo`, which trains

.. code-block:: text

    TransformedDistribution(Normal(0, I), [LULinear, Planar.inv, Radial] * 8 + [ActNorm])

with a plain :class:`torch.optim.Adam` loop on 80 % of the points, reports the test negative
log-likelihood next to that of a full-covariance Gaussian, and draws the data, the learned
density and samples. Set ``smoke=True`` (or the environment variable ``PYROFLOWS_SMOKE=1``)
for a run of a few seconds that only checks that everything works.

Why this stack: a density model scores data through the *inverse* of every layer. The planar
map has only a numerical inverse (a root finder), while its forward map is analytic and cheap,
so the stack uses ``Planar(2).inv``: training and density evaluation run the analytic planar
map from data to latent, and only sampling needs the root finder. Radial and LU layers have
closed-form inverses either way; the LU layers rotate and shear between the one-directional
planar bends, and the ActNorm at the data end standardises the data on the first batch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.distributions import Transform

from ._outputs import check_output, json_text
from .data import make_toy, train_test_split
from .train import resolve_device
from .transforms import ActNorm, LULinear, Planar, Radial

__all__ = ["run_demo"]

DEFAULT_STEPS = 1000
SMOKE_STEPS = 30
_NUM_POINTS = 4000
_SMOKE_NUM_POINTS = 400
_NUM_BLOCKS = 8
_LEARNING_RATE = 1e-2
_MAX_GRAD_NORM = 10.0


def _build_layers(input_dim: int, num_blocks: int) -> list[Transform]:
    """The stack, listed from the base (latent) side to the data side."""
    layers: list[Transform] = []
    for _ in range(num_blocks):
        layers += [LULinear(input_dim), Planar(input_dim).inv, Radial(input_dim)]
    layers.append(ActNorm(input_dim))
    return layers


def _gaussian_nll(train: Tensor, test: Tensor) -> float:
    """Mean test NLL of the full-covariance Gaussian fitted to ``train`` by maximum likelihood."""
    mean = train.mean(0)
    covariance = torch.cov(train.T, correction=0)
    gaussian = torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance)
    return -float(gaussian.log_prob(test).mean())


def _grid(data: Tensor, resolution: int) -> tuple[Tensor, Tensor, tuple[float, ...]]:
    """A square grid around ``data``: points ``(resolution**2, 2)``, shape and plot extent."""
    low, high = data.min(0).values, data.max(0).values
    center, half = (low + high) / 2, float((high - low).max()) * 0.6
    xs = torch.linspace(float(center[0]) - half, float(center[0]) + half, resolution)
    ys = torch.linspace(float(center[1]) - half, float(center[1]) + half, resolution)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)
    extent = (float(xs[0]), float(xs[-1]), float(ys[0]), float(ys[-1]))
    return points.to(device=data.device, dtype=data.dtype), grid_x, extent


def _image_suffixes() -> tuple[str, ...] | None:
    """The image extensions matplotlib writes (``None`` without matplotlib: no image)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return None
    names = sorted(FigureCanvasBase.get_supported_filetypes(), key=lambda name: name != "png")
    return tuple(f".{name}" for name in names)


def _plot(
    path: Path,
    dataset: str,
    train: Tensor,
    density: Tensor,
    samples: Tensor,
    extent: tuple[float, ...],
    nll: tuple[float, float],
) -> bool:
    """Write the three-panel figure; ``False`` when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print(
            "matplotlib is not installed, so no image was written "
            "(pip install matplotlib, or pyroflows[dev])",
            file=sys.stderr,
        )
        return False
    figure = Figure(figsize=(12, 4), layout="constrained")
    FigureCanvasAgg(figure)  # Agg, without touching pyplot's global backend
    panels = figure.subplots(1, 3, sharex=True, sharey=True)
    scatter = {"s": 2, "alpha": 0.5, "linewidths": 0}
    panels[0].scatter(*train.T.numpy(), **scatter)
    panels[0].set_title(f"training data ({len(train)} points)")
    panels[1].imshow(density.numpy(), origin="lower", extent=extent, cmap="viridis", aspect="auto")
    panels[1].set_title("learned density")
    panels[2].scatter(*samples.T.numpy(), color="tab:orange", **scatter)
    panels[2].set_title("samples from the flow")
    figure.suptitle(
        f"{dataset}: test NLL {nll[0]:.3f} nats (full-covariance Gaussian: {nll[1]:.3f})"
    )
    for panel in panels:
        panel.set_xlim(extent[0], extent[1])
        panel.set_ylim(extent[2], extent[3])
        panel.set_aspect("equal")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return True


def run_demo(
    dataset: str = "moons",
    steps: int | None = None,
    output: str | os.PathLike[str] | None = "demo.png",
    seed: int = 0,
    smoke: bool = False,
    quiet: bool = False,
    device: str | torch.device = "auto",
    metrics: str | os.PathLike[str] | None = "demo.json",
) -> dict[str, Any]:
    """Fit a small flow to a 2-D toy dataset by maximum likelihood, report and plot it.

    The model is ``TransformedDistribution(Normal(0, I), [LULinear, Planar.inv, Radial] * 8 +
    [ActNorm])`` (see the module docstring for why), trained full-batch with Adam (learning
    rate 1e-2, cosine decay, gradient norm clipped at 10) on 80 % of 4000 points. The test NLL
    is compared with that of a full-covariance Gaussian fitted to the same training points.

    Args:
        dataset: one of :data:`pyroflows.data.TOY_DATASETS`.
        steps: optimisation steps (default 1000; 30 in smoke mode, which also caps it).
        output: path of the PNG to write (data, learned density, samples); ``None`` for no
            image. Without matplotlib the image is skipped with a message.
        seed: seeds the data, the initial parameters and the samples.
        smoke: a run of a few seconds (30 steps on 400 points, coarse grid) that only checks
            that everything works; also switched on by the environment variable
            ``PYROFLOWS_SMOKE=1``.
        quiet: print nothing (except a note when matplotlib is missing).
        device: ``"auto"`` (CUDA when available, else the CPU), or any torch device.
        metrics: path of a JSON file to write the returned dict to; ``None`` for none.

    Returns:
        A dict with ``"test_nll"`` and ``"gaussian_test_nll"`` (mean negative log-likelihood of
        the test points in nats), ``"steps"``, ``"seconds"`` (wall-clock time of the whole
        run), ``"image"`` (the path written, or ``None``), ``"dataset"`` and ``"device"``.

    Raises:
        ValueError: for an unknown dataset or a non-positive ``steps``.
        OptionError: for an ``output`` that is not an image file matplotlib writes, or
            ``metrics`` that is not a ``.json`` file (checked before training).
        RunFolderError: for an ``output`` or ``metrics`` path that is a directory or cannot be
            written (checked before training).
        RuntimeError: if the training loss stops being finite.

    Example:
        >>> result = run_demo("moons", smoke=True, quiet=True, output=None, metrics=None)
        >>> sorted(result)[:4], result["steps"]
        (['dataset', 'device', 'gaussian_test_nll', 'image'], 30)
    """
    start = time.perf_counter()
    smoke = smoke or os.environ.get("PYROFLOWS_SMOKE", "") not in ("", "0")
    num_steps = DEFAULT_STEPS if steps is None else int(steps)
    if num_steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if smoke:
        num_steps = min(num_steps, SMOKE_STEPS)

    def report(message: str) -> None:
        if not quiet:
            print(message, flush=True)

    target = resolve_device(device)
    if output is not None and (suffixes := _image_suffixes()) is not None:
        check_output(output, suffixes, what="the image")
    if metrics is not None:
        check_output(metrics, (".json",), what="the metrics")
    dtype = torch.float32

    torch.manual_seed(seed)
    data = make_toy(dataset, _SMOKE_NUM_POINTS if smoke else _NUM_POINTS, seed=seed, dtype=dtype)
    train, test = (part.to(target) for part in train_test_split(data, 0.2, seed=seed))
    dim = data.shape[-1]
    layers = _build_layers(dim, _NUM_BLOCKS)
    modules = nn.ModuleList(layers).to(target)
    base = dist.Normal(
        torch.zeros(dim, device=target, dtype=dtype), torch.ones(dim, device=target, dtype=dtype)
    ).to_event(1)
    model = dist.TransformedDistribution(base, layers)

    optimizer = torch.optim.Adam(modules.parameters(), lr=_LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_steps)
    report_every = max(1, num_steps // 10)
    report(
        f"fitting {sum(p.numel() for p in modules.parameters())} parameters to {len(train)} "
        f"{dataset} points for {num_steps} steps on {target}"
    )
    for step in range(1, num_steps + 1):
        loss = -model.log_prob(train).mean()  # flows' caches follow the parameter updates
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(modules.parameters(), _MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        if step % report_every == 0 or step == num_steps:
            value = float(loss.detach())
            if not math.isfinite(value):
                raise RuntimeError(f"training loss became {value} at step {step}")
            elapsed = time.perf_counter() - start
            report(f"step {step:5d}/{num_steps}  train NLL {value:.4f}  ({elapsed:.1f} s)")

    with torch.no_grad():
        test_nll = -float(model.log_prob(test).mean())
        gaussian_nll = _gaussian_nll(train, test)
        report(
            f"test NLL (nats per point): flow {test_nll:.4f}, "
            f"full-covariance Gaussian {gaussian_nll:.4f}"
        )
        image = None
        if output is not None:
            points, grid_x, extent = _grid(train, 60 if smoke else 200)
            density = model.log_prob(points).exp().reshape(grid_x.shape).cpu()
            samples = model.sample((len(train),)).cpu()
            if _plot(
                Path(output),
                dataset,
                train.cpu(),
                density,
                samples,
                extent,
                (test_nll, gaussian_nll),
            ):
                image = str(output)
                report(f"wrote {image}")
    seconds = time.perf_counter() - start
    report(f"done in {seconds:.1f} s")
    result = {
        "test_nll": test_nll,
        "gaussian_test_nll": gaussian_nll,
        "steps": num_steps,
        "seconds": seconds,
        "image": image,
        "dataset": dataset,
        "device": str(target),
    }
    if metrics is not None:
        Path(metrics).parent.mkdir(parents=True, exist_ok=True)
        Path(metrics).write_text(json_text(result))
        report(f"wrote {metrics}")
    return result
