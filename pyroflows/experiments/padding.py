r"""No padding, zero padding and Gaussian padding on 2-D data (Koehler, Mehta & Risteski, 2021).

A padded flow models 2-D data :math:`x` together with :math:`E` extra coordinates :math:`e`
through an invertible map :math:`f` of :math:`\mathbb{R}^{2 + E}` (see
:class:`~pyroflows.distributions.Padding`). With *zero* padding, :math:`e = 0`, affine
couplings become universal approximators, but the data lie on a 2-D slice of the padded
space: training :math:`\log p(x, 0)` rewards a flow whose generator :math:`f` squashes the
padding directions, so its Jacobian tends to singular. With *Gaussian* padding,
:math:`e \sim \mathcal{N}(0, s^2 I)`, the padded data have full dimension and nothing pushes
the Jacobian towards singular; the paper has no theory for it but finds it frequently better
conditioned, with better samples.

The experiment fits the same affine-coupling flow (``Flow.build("realnvp", ...)``: 8 layers,
alternating halves, MLP conditioners 64-64) with each padding and reports, at held-out data,

* the condition number :math:`\kappa = \sigma_{\max} / \sigma_{\min}` of the Jacobian of
  the flow on the standardised (padded) coordinates, at the points where ``log_prob``
  inverts it (:meth:`~pyroflows.distributions.Flow.flow_points`), its median and maximum;
* the smallest singular value :math:`\sigma_{\min}` of the generator's Jacobian
  :math:`\partial f / \partial z` there (the reciprocal of the data-to-noise map's largest);
* the test NLL: exact without padding, the importance-weighted bound
  :math:`-\mathcal{L}_K \ge -\log p(x)` with Gaussian padding, and for zero padding
  :math:`-\log p(x, 0)` under its own name (``slice_nll``), which is no NLL;
* the energy distance (:func:`energy_distance`) between the model's samples and the test
  data, a sample-quality score every model has;
* curves over training of the loss and of the conditioning.

* :func:`degenerate_line`: the noisy line :math:`y = x`, 2-D data with a nearly degenerate
  direction; :func:`make_dataset` names it ``"line"`` beside the library's toys;
* :func:`energy_distance`: the V-statistic;
* :func:`padding_run`: one fit and its :class:`PaddingResult`;
* :func:`padding_table`: the grid of datasets, paddings and seeds, and
  :func:`summary_table`, its medians over seeds.

References:
    Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
    normalizing flows", ICML 2021, arXiv:2010.01155 (section "Experiments", padding);
    Huang, Dinh & Courville, "Augmented Normalizing Flows", 2020, arXiv:2002.07101;
    Székely & Rizzo, "Energy statistics: a class of statistics based on distances", Journal
    of Statistical Planning and Inference 143 (2013).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..data import make_toy
from ..diagnostics import condition_numbers
from ..distributions import Flow, Padding

__all__ = [
    "PADDINGS",
    "PaddingResult",
    "degenerate_line",
    "energy_distance",
    "make_dataset",
    "make_padding",
    "padding_run",
    "padding_table",
    "summary_table",
]

#: The paddings by name: none, zeros, Gaussian with :math:`s = 0.5` fixed, and learned.
PADDINGS: tuple[str, ...] = ("none", "zero", "gaussian", "learned")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(name: str, value: object, least: int = 1) -> int:
    if not _is_int(value) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


def degenerate_line(n: int, noise: float = 0.05, seed: int = 0) -> Tensor:
    r"""``n`` points of the noisy line :math:`y = x`: 2-D data with a nearly degenerate direction.

    .. math::
        x_n = t_n (1, 1) + \sigma \varepsilon_n, \qquad
        t_n \sim \mathcal{N}(0, 1), \quad \varepsilon_n \sim \mathcal{N}(0, I_2),

    with :math:`\sigma =` ``noise``: the spread is :math:`\sqrt{2}` along the line and
    :math:`\sigma` across it, so a map to a standard normal needs a Jacobian of condition
    number about :math:`\sqrt{2} / \sigma` (28 for the default).

    Args:
        n: number of points, at least 1.
        noise: :math:`\sigma > 0`, the spread across the line.
        seed: seed of a local generator (the same seed gives the same points).

    Returns:
        A float32 tensor of shape ``(n, 2)``.

    Example:
        >>> x = degenerate_line(10_000, noise=0.05, seed=0)
        >>> x.shape
        torch.Size([10000, 2])
        >>> round(float((x[:, 1] - x[:, 0]).std() / 2**0.5), 2)  # the spread across the line
        0.05
    """
    _check_count("n", n)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise > 0:
        raise ValueError(f"noise must be a number > 0, got {noise!r}")
    if not math.isfinite(noise):
        raise ValueError(f"noise must be a finite number > 0, got {noise!r}")
    gen = torch.Generator().manual_seed(seed)
    t = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    points = t.expand(n, 2) + noise * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return points.float()


def make_dataset(name: str, n: int, seed: int = 0) -> Tensor:
    """``n`` points of ``"line"`` (:func:`degenerate_line`) or of a library toy (``"moons"``, ...).

    Example:
        >>> make_dataset("line", 5).shape, make_dataset("moons", 5).shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """
    if name == "line":
        return degenerate_line(n, seed=seed)
    return make_toy(name, n, seed=seed)


def make_padding(name: str, extra: int = 2, scale: float = 0.5) -> Padding | None:
    r"""The :class:`~pyroflows.distributions.Padding` called ``name`` in :data:`PADDINGS`.

    ``"none"``: ``None``; ``"zero"``: zeros; ``"gaussian"``: :math:`\mathcal{N}(0, s^2 I)`
    with :math:`s =` ``scale`` fixed; ``"learned"``: the same with :math:`s` learned from
    ``scale``.

    Example:
        >>> make_padding("learned")
        Padding(extra=2, kind='gaussian', scale=0.5, learn_scale=True, particles=1)
    """
    if name not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(map(repr, PADDINGS))}, got {name!r}")
    if name == "none":
        return None
    if name == "zero":
        return Padding(extra, "zero")
    return Padding(extra, scale=scale, learn_scale=name == "learned")


def _check_rows(name: str, x: Tensor) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 2 or len(x) < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must be rows of shape (N >= 1, D >= 1), got {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf values")
    return x


def energy_distance(a: Tensor, b: Tensor) -> float:
    r"""The energy distance between the samples ``a`` and ``b`` (the V-statistic).

    With :math:`a_1, \dots, a_n` and :math:`b_1, \dots, b_m` in :math:`\mathbb{R}^D`,

    .. math::
        \mathcal{E}(a, b) = \frac{2}{n m} \sum_{i, j} \|a_i - b_j\|
        - \frac{1}{n^2} \sum_{i, i'} \|a_i - a_{i'}\|
        - \frac{1}{m^2} \sum_{j, j'} \|b_j - b_{j'}\| \;\ge\; 0,

    the plug-in estimate of :math:`2\,\mathbb{E}\|A - B\| - \mathbb{E}\|A - A'\| -
    \mathbb{E}\|B - B'\|`, which is zero exactly when the two distributions are equal
    (Székely & Rizzo 2013). The V-statistic is non-negative, zero for identical samples, and
    biased upwards by :math:`O(1/n + 1/m)` for samples of the same distribution; compare
    values at equal sample sizes. Cost: :math:`O((n + m)^2 D)`, in float64.

    Args:
        a: samples ``(n, D)``.
        b: samples ``(m, D)``.

    Returns:
        :math:`\mathcal{E}(a, b)`, a float.

    Example:
        >>> a = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
        >>> energy_distance(a, a)
        0.0
        >>> energy_distance(a, a + 1.0) > energy_distance(a, a + 0.1) > 0
        True
    """
    a, b = _check_rows("a", a).double(), _check_rows("b", b).double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must have the same number of columns, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    cross = torch.cdist(a, b).mean()
    within = torch.cdist(a, a).mean() + torch.cdist(b, b).mean()
    return max(float(2.0 * cross - within), 0.0)


@dataclass
class PaddingResult:
    r"""One fit of :func:`padding_run`: conditioning, likelihood, samples and curves.

    Attributes:
        padding: the padding's name (see :data:`PADDINGS`) or ``repr`` of a custom one.
        seed: the run's seed.
        steps: the number of Adam steps.
        cond_median: the median over test rows of the condition number :math:`\kappa` of the
            flow's Jacobian (on standardised, padded coordinates).
        cond_max: its maximum over the test rows.
        sigma_min: the smallest singular value of the generator's Jacobian
            :math:`\partial f / \partial z` over the test rows.
        nll: test NLL in nats: exact (no padding), or the importance-weighted upper bound
            :math:`-\mathcal{L}_K` (Gaussian padding); NaN for zero padding, which has none.
        slice_nll: :math:`-\log p(x, 0)` averaged over the test rows (zero padding only,
            else NaN): the density on the slice :math:`e = 0`, not an NLL of :math:`x`.
        energy: :func:`energy_distance` between as many model samples as test rows (at most
            ``sample_rows``) and those test rows, in the data's units.
        scale: the padding scale :math:`s` at the end (Gaussian padding, else NaN).
        seconds: wall-clock time of the fit and the evaluation.
        dataset: the dataset's name (set by :func:`padding_table`; ``""`` otherwise).
        curve: ``{"step", "loss", "cond_median", "cond_max", "sigma_min"}``, lists with one
            entry per measurement during training (``loss``: the mean training loss since
            the previous one, :math:`-\log p(x, 0)` for zero padding; conditioning at fixed
            test rows and fixed padding draws).
        conditions: the condition number at each of the test rows behind ``cond_median``
            ``(eval_rows,)`` (for histograms).
        samples: the model's samples behind ``energy``, ``(n, D)`` (for plots).

    Example:
        >>> data = make_dataset("line", 300, seed=0)
        >>> result = padding_run(data, "zero", steps=5, num_layers=2, hidden_dims=[8])
        >>> result.padding, math.isnan(result.nll), result.cond_median > 1
        ('zero', True, True)
    """

    padding: str
    seed: int
    steps: int
    cond_median: float
    cond_max: float
    sigma_min: float
    nll: float
    slice_nll: float
    energy: float
    scale: float
    seconds: float
    dataset: str = ""
    curve: dict[str, list[float]] = field(default_factory=dict, repr=False)
    conditions: Tensor = field(default_factory=lambda: torch.empty(0), repr=False)
    samples: Tensor = field(default_factory=lambda: torch.empty(0, 2), repr=False)


def _conditioning(model: Flow, x: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Condition numbers and generator sigma_min at ``x``, with padding draws fixed by ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        points = model.flow_points(x)
    result = condition_numbers(model.flow.inv, points)
    return result.condition, 1.0 / result.sigma_max


def padding_run(
    data: Tensor,
    padding: str | Padding | None,
    steps: int = 3000,
    seed: int = 0,
    *,
    test_data: Tensor | None = None,
    num_layers: int = 8,
    hidden_dims: Sequence[int] = (64, 64),
    batch_size: int = 256,
    lr: float = 1e-3,
    every: int | None = None,
    eval_rows: int = 500,
    curve_rows: int = 200,
    sample_rows: int = 1000,
    particles: int = 64,
) -> PaddingResult:
    r"""Fit an affine-coupling flow with ``padding`` to ``data`` and measure it on held-out rows.

    The model is ``Flow.build("realnvp", D, num_layers, hidden_dims, padding=...)``,
    standardised with ``data``, trained by Adam (``lr``) for ``steps`` minibatch steps of
    ``batch_size`` rows drawn with replacement, on the loss ``-log_prob``: the exact NLL, the
    ELBO :math:`-\mathcal{L}_1` (Gaussian padding, one draw per row) or
    :math:`-\log p(x, 0)` (zero padding). Then, on the test rows:

    * conditioning (the first ``eval_rows`` test rows): :math:`\kappa` of ``model.flow.inv``
      at ``model.flow_points(x)`` (exact SVD; the inverse and the forward map have the same
      condition number), and the generator's smallest singular value
      :math:`\sigma_{\min}(\partial f / \partial z) = 1 / \sigma_{\max}(\partial f^{-1})`;
    * ``nll``: the exact NLL, or :math:`-\mathcal{L}_K` with :math:`K` = ``particles``
      (Gaussian padding, :meth:`~pyroflows.distributions.Flow.log_prob_bound`), and for zero
      padding ``slice_nll`` :math:`= -\log p(x, 0)` instead;
    * ``energy``: :func:`energy_distance` of ``min(len(test_data), sample_rows)`` samples
      against as many test rows.

    Every ``every`` steps (default ``steps // 20``, at least 1) the curves record the mean
    loss and the conditioning at the first ``curve_rows`` test rows, with padding draws fixed
    for the whole run. Everything is seeded by ``seed`` (the model's initialisation, the
    minibatches and the padding draws), so a run repeats exactly on the same machine.

    Args:
        data: training rows ``(N, D)``.
        padding: a name in :data:`PADDINGS` (``"gaussian"`` and ``"learned"`` start at
            :math:`s = 0.5`, two extra coordinates), a
            :class:`~pyroflows.distributions.Padding`, or ``None`` (no padding).
        steps: Adam steps, at least 1.
        seed: the run's seed.
        test_data: held-out rows ``(M, D)`` (default: the last fifth of ``data``, which is
            then left out of training).
        num_layers: affine couplings in the flow.
        hidden_dims: the conditioners' hidden sizes.
        batch_size: rows per step.
        lr: Adam's learning rate.
        every: steps between curve points.
        eval_rows: test rows for the conditioning.
        curve_rows: test rows for the curves.
        sample_rows: the most samples for the energy distance.
        particles: :math:`K` of the bound for Gaussian padding.

    Returns:
        A :class:`PaddingResult`.

    Raises:
        ValueError: for rows of the wrong shape, non-finite values, test rows of another
            width, an unknown padding name or a count below 1.

    Example:
        >>> data = make_toy("moons", 600, seed=0)
        >>> run = padding_run(data, "gaussian", steps=20, num_layers=2, hidden_dims=[16])
        >>> run.padding, run.steps, len(run.curve["step"])
        ('gaussian', 20, 20)
        >>> run.cond_median >= 1.0 and run.energy >= 0.0 and math.isnan(run.slice_nll)
        True
    """
    data = _check_rows("data", data)
    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("eval_rows", eval_rows),
        ("curve_rows", curve_rows),
        ("sample_rows", sample_rows),
        ("particles", particles),
    ):
        _check_count(name, value)
    every = max(steps // 20, 1) if every is None else _check_count("every", every)
    if isinstance(padding, str):
        label, spec = padding, make_padding(padding)
    elif padding is None or isinstance(padding, Padding):
        label, spec = ("none" if padding is None else repr(padding)), padding
    else:
        raise ValueError(
            f"padding must be a name in {PADDINGS}, a Padding or None, got {type(padding).__name__}"
        )
    if test_data is None:
        if len(data) < 10:
            raise ValueError(
                f"data must have at least 10 rows to hold out a fifth, got {len(data)}"
            )
        cut = len(data) - len(data) // 5
        data, test_data = data[:cut], data[cut:]
    else:
        test_data = _check_rows("test_data", test_data)
        if test_data.shape[1] != data.shape[1]:
            raise ValueError(
                f"test_data must have the data's {data.shape[1]} columns, got "
                f"{tuple(test_data.shape)}"
            )
    if len(data) < 2:
        raise ValueError(f"data must have at least 2 training rows, got {len(data)}")
    data, test_data = data.float(), test_data.float()
    start = time.perf_counter()

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # zero padding warns that log_prob is log p(x, 0)
        warnings.filterwarnings("ignore", "zero padding", UserWarning)
        model = Flow.build(
            "realnvp",
            data.shape[1],
            num_layers=num_layers,
            hidden_dims=list(hidden_dims),
            padding=spec,
        )
    model.standardize_with(data)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    probe = test_data[:curve_rows]
    curve: dict[str, list[float]] = {
        key: [] for key in ("step", "loss", "cond_median", "cond_max", "sigma_min")
    }
    losses: list[Tensor] = []  # kept on the device: one sync per curve point, not per step
    for step in range(1, steps + 1):
        rows = torch.randint(len(data), (batch_size,), generator=gen)
        loss = -model.log_prob(data[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if step % every == 0 or step == steps:
            condition, sigma = _conditioning(model, probe, seed)
            curve["step"].append(step)
            curve["loss"].append(float(torch.stack(losses).double().mean()))
            curve["cond_median"].append(float(condition.median()))
            curve["cond_max"].append(float(condition.max()))
            curve["sigma_min"].append(float(sigma.min()))
            losses = []

    model.eval()
    condition, sigma = _conditioning(model, test_data[:eval_rows], seed + 1)
    nll = slice_nll = scale = math.nan
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        if spec is not None and spec.kind == "zero":
            slice_nll = float(-model.log_prob(test_data).mean())
        else:
            nll = float(-model.log_prob_bound(test_data, particles=particles).mean())
        if spec is not None and spec.kind == "gaussian":
            scale = float(model.padding_log_scale.exp())
        count = min(len(test_data), sample_rows)
        samples = model.sample((count,))
        energy = energy_distance(samples, test_data[:count])
    return PaddingResult(
        padding=label,
        seed=seed,
        steps=steps,
        cond_median=float(condition.median()),
        cond_max=float(condition.max()),
        sigma_min=float(sigma.min()),
        nll=nll,
        slice_nll=slice_nll,
        energy=energy,
        scale=scale,
        seconds=time.perf_counter() - start,
        curve=curve,
        conditions=condition,
        samples=samples,
    )


def padding_table(
    datasets: Iterable[str],
    paddings: Iterable[str],
    seeds: Iterable[int],
    steps: int = 3000,
    *,
    train_rows: int = 2000,
    test_rows: int = 1000,
    progress: bool = False,
    **run_options,
) -> list[PaddingResult]:
    r"""The experiment's grid: every dataset, padding and seed, one :func:`padding_run` each.

    For dataset ``name`` and seed :math:`k` the training rows are
    ``make_dataset(name, train_rows, seed=k)`` and the test rows
    ``make_dataset(name, test_rows, seed=10_000 + k)`` (fresh draws), so the paddings of one
    seed see the same data.

    Args:
        datasets: names for :func:`make_dataset` (``"line"``, ``"moons"``, ...).
        paddings: names in :data:`PADDINGS`.
        seeds: run (and data) seeds.
        steps: Adam steps per run.
        train_rows: training rows per dataset.
        test_rows: test rows per dataset.
        progress: show a tqdm bar.
        **run_options: passed to :func:`padding_run`.

    Returns:
        One :class:`PaddingResult` per (dataset, padding, seed), in that order, with
        ``dataset`` set.

    Example:
        >>> rows = padding_table(["line"], ["none", "zero"], [0], steps=5, train_rows=300,
        ...                      test_rows=100, num_layers=2, hidden_dims=[8])
        >>> [(row.dataset, row.padding) for row in rows]
        [('line', 'none'), ('line', 'zero')]
    """
    datasets, paddings, seeds = list(datasets), list(paddings), list(seeds)
    for name in paddings:
        make_padding(name)
    _check_count("train_rows", train_rows, 2)
    _check_count("test_rows", test_rows)
    cells = [(name, pad, seed) for name in datasets for pad in paddings for seed in seeds]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="fits")
    cache: dict[tuple[str, int], tuple[Tensor, Tensor]] = {}
    rows = []
    for name, pad, seed in cells:
        if (name, seed) not in cache:
            train = make_dataset(name, train_rows, seed=seed)
            cache[name, seed] = (train, make_dataset(name, test_rows, seed=10_000 + seed))
        train, test = cache[name, seed]
        result = padding_run(train, pad, steps, seed, test_data=test, **run_options)
        result.dataset = name
        rows.append(result)
    return rows


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def summary_table(results: Iterable[PaddingResult]) -> str:
    r"""A Markdown table of the medians over seeds, one line per (dataset, padding).

    Columns: median :math:`\kappa`, maximum :math:`\kappa`, the generator's
    :math:`\sigma_{\min}`, the NLL (exact or bound; ``-`` for zero padding),
    :math:`-\log p(x, 0)` (zero padding only), the energy distance, the final scale
    :math:`s`, and the number of seeds.

    Example:
        >>> run = PaddingResult("zero", 0, 10, 900.0, 5e3, 1e-3, math.nan, -1.0, 0.05,
        ...                     math.nan, 1.0, "line")
        >>> table = summary_table([run]).splitlines()
        >>> table[0].split(" | ")[2:6]
        ['median cond', 'max cond', 'sigma_min', 'NLL']
        >>> table[2]
        '| line | zero | 900 | 5e+03 | 0.001 | - | -1.00 | 0.0500 | - | 1 |'
    """
    groups: dict[tuple[str, str], list[PaddingResult]] = {}
    for result in results:
        groups.setdefault((result.dataset, result.padding), []).append(result)

    def cell(value: float, form: str) -> str:
        return "-" if math.isnan(value) else format(value, form)

    lines = [
        "| data | padding | median cond | max cond | sigma_min | NLL | -log p(x, 0) | energy "
        "| s | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, pad), runs in groups.items():
        values = {
            key: _median([getattr(run, key) for run in runs])
            for key in ("cond_median", "cond_max", "sigma_min", "nll", "slice_nll", "energy")
        }
        scale = _median([run.scale for run in runs])
        lines.append(
            f"| {name} | {pad} | {cell(values['cond_median'], '.3g')} | "
            f"{cell(values['cond_max'], '.3g')} | {cell(values['sigma_min'], '.2g')} | "
            f"{cell(values['nll'], '.2f')} | {cell(values['slice_nll'], '.2f')} | "
            f"{cell(values['energy'], '.4f')} | {cell(scale, '.2f')} | {len(runs)} |"
        )
    return "\n".join(lines)
