r"""The depth a flow needs to fit a mixture of Gaussians on a sphere (Koehler, Mehta, Risteski).

Koehler, Mehta and Risteski prove that invertibility costs depth: a mixture of :math:`k`
Gaussians with means at random on a sphere is the push-forward of a Gaussian through a small,
shallow *non-invertible* generator, yet for :math:`k` up to :math:`e^{o(d)}` some such
mixtures are far (in KL and in :math:`W_1`) from every composition of few Lipschitz invertible
layers with few parameters each. Their theorem is an existence result with no constants to
measure; this experiment measures its practical shadow with the library's flows: the depth a
trained flow needs to get close to the mixture, as the number of components :math:`k` and the
dimension :math:`d` grow.

**Protocol.** The data are :func:`~pyroflows.data.sphere_mixture` draws (unit sphere,
component spread :math:`\sigma = 0.1`, means fixed by ``means_seed``), whose exact density
:func:`~pyroflows.data.sphere_mixture_distribution` gives the true NLL. A flow of depth
:math:`L` (``Flow.build(flow, d, num_layers=L, hidden_dims=...)``: affine couplings
``"realnvp"`` or spline couplings ``"nsf"``, each with MLP conditioners of the same widths) is
fitted by :func:`~pyroflows.train.fit` (Adam, cosine decay, early stopping on a validation
split). On fresh test points :math:`x_1, \dots, x_n` from :math:`p`,

.. math::
    \widehat{\mathrm{KL}}(p \,\|\, q) = \frac{1}{n} \sum_{i=1}^{n}
    \big(\log p(x_i) - \log q(x_i)\big), \qquad
    \widehat{\mathrm{se}} = \frac{\operatorname{sd}_i\big(\log p(x_i) - \log q(x_i)\big)}{\sqrt{n}},

is the model's test NLL minus the true one: an unbiased estimate of
:math:`\mathrm{KL}(p \,\|\, q) \ge 0` for the fitted :math:`q`, with its standard error from
the paired differences. The *depth needed* for a tolerance :math:`\varepsilon` is the smallest
depth of the grid whose estimate is at most :math:`\varepsilon` (:func:`depth_needed`).

**The non-invertible reference** (:func:`generator_run`): the generator
:math:`z = (c, \varepsilon) \mapsto \mu_c + s_c\,\varepsilon` with a discrete latent
:math:`c \in \{1, \dots, k\}` of learned weights, learned means :math:`\mu_c` and spreads
:math:`s_c`: depth one, :math:`k (d + 2) - 1` parameters, the architecture of the theorem's
generator. Its latent is discrete, so its likelihood is exact (a finite sum), and it is fitted
by expectation-maximisation (scikit-learn's ``GaussianMixture``) on the same rows; it shows
what the family reaches when invertibility is not required.

* :func:`depth_run`: one fit and its :class:`DepthResult`;
* :func:`generator_run`: the generator's fit, as a :class:`DepthResult` with depth 1;
* :func:`depth_table`: the grid of flows, dimensions, components, depths and seeds;
* :func:`depth_needed` and :func:`kl_table`: the summaries the tutorial prints.

References:
    Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
    normalizing flows", ICML 2021, arXiv:2010.01155 (Section 2.1, "Results about general
    architectures": the depth lower bound for invertible networks).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import sphere_mixture, sphere_mixture_distribution
from ..distributions import Flow
from ..train import fit
from .padding import _check_count

__all__ = [
    "DEPTH_FLOWS",
    "DepthResult",
    "depth_needed",
    "depth_run",
    "depth_table",
    "generator_run",
    "kl_table",
]

#: The flows of the experiment: affine couplings (RealNVP) and rational-quadratic spline
#: couplings (NSF, with its LU mixing layers), both registry stacks.
DEPTH_FLOWS: tuple[str, ...] = ("realnvp", "nsf")

_SPREAD = 0.1  # the components' standard deviation (the library's default for the mixture)
_TEST_SEED_OFFSET = 10_000  # test points are drawn with seed + this: fresh draws


@dataclass
class DepthResult:
    """One fit of the depth experiment.

    Attributes:
        flow: the registry name (``"realnvp"``, ``"nsf"``) or ``"generator"`` (the
            non-invertible reference of :func:`generator_run`).
        dim: dimension :math:`d`.
        num_components: number :math:`k` of mixture components.
        depth: number of flow layers :math:`L` (1 for the generator).
        seed: the run's seed (training data, initialisation, batches).
        num_params: trainable parameters.
        test_nll: the model's mean NLL on the test points, in nats.
        true_nll: the mixture's own mean NLL on the same points (the floor).
        kl: ``test_nll - true_nll``, the estimate of KL(p || q).
        kl_se: its standard error (paired differences over the test points).
        steps: optimiser steps taken (EM iterations for the generator).
        seconds: wall-clock time of the fit.

    Example:
        >>> row = DepthResult("nsf", 8, 32, 8, 0, 137_920, -3.5, -4.0, 0.5, 0.01, 3000, 74.0)
        >>> row.test_nll - row.true_nll == row.kl
        True
    """

    flow: str
    dim: int
    num_components: int
    depth: int
    seed: int
    num_params: int
    test_nll: float
    true_nll: float
    kl: float
    kl_se: float
    steps: int
    seconds: float


def _data(dim: int, num_components: int, train_rows: int, test_rows: int, seed: int, means_seed):
    options = {"num_components": num_components, "std": _SPREAD, "means_seed": means_seed}
    train = sphere_mixture(train_rows, dim, seed=seed, **options)
    test = sphere_mixture(test_rows, dim, seed=_TEST_SEED_OFFSET + seed, **options)
    mixture = sphere_mixture_distribution(dim, dtype=torch.float64, **options)
    return train, test, mixture


def _result(flow, dim, k, depth, seed, params, model_log_q: Tensor, true_log_p: Tensor, steps, t0):
    gap = (true_log_p - model_log_q).double()
    return DepthResult(
        flow=flow,
        dim=dim,
        num_components=k,
        depth=depth,
        seed=seed,
        num_params=params,
        test_nll=float(-model_log_q.double().mean()),
        true_nll=float(-true_log_p.mean()),
        kl=float(gap.mean()),
        kl_se=float(gap.std() / math.sqrt(len(gap))),
        steps=steps,
        seconds=time.perf_counter() - t0,
    )


def depth_run(
    flow: str,
    dim: int,
    num_components: int,
    depth: int,
    *,
    steps: int = 2000,
    seed: int = 0,
    train_rows: int = 5000,
    test_rows: int = 5000,
    hidden_dims: Sequence[int] = (64, 64),
    batch_size: int = 256,
    lr: float = 1e-3,
    patience: int = 20,
    means_seed: int = 0,
) -> DepthResult:
    r"""Fit a flow of depth ``depth`` to the sphere mixture and measure its KL to it.

    The training rows are ``sphere_mixture(train_rows, dim, seed=seed, ...)`` (10% of them
    the validation split of :func:`~pyroflows.train.fit`), the test rows a fresh draw with
    seed ``10_000 + seed``; the mixture (unit sphere, :math:`\sigma = 0.1`) is fixed by
    ``means_seed``. The fit runs about ``steps`` Adam steps (whole epochs, cosine decay,
    early stopping after ``patience`` epochs without improvement, best epoch restored) on
    one CPU thread's worth of work, whatever the machine.

    Args:
        flow: a registry stack taking ``num_layers`` and ``hidden_dims``; the experiment
            uses :data:`DEPTH_FLOWS`.
        dim: dimension :math:`d \ge 2` (a coupling needs two coordinates).
        num_components: number :math:`k \ge 1` of components.
        depth: number of layers :math:`L \ge 1`.
        steps: optimiser steps (rounded up to whole epochs).
        seed: seed of the data, the initialisation and the batches.
        train_rows: training rows, at least 20.
        test_rows: test rows.
        hidden_dims: conditioner hidden widths.
        batch_size: rows per step.
        lr: peak learning rate.
        patience: early-stopping patience in epochs.
        means_seed: seed of the component means (the distribution).

    Returns:
        A :class:`DepthResult`.

    Example:
        >>> result = depth_run("realnvp", 4, 2, 2, steps=20, train_rows=400, test_rows=200)
        >>> result.flow, result.depth, result.kl > -0.5  # an estimate, with its noise
        ('realnvp', 2, True)
    """
    _check_count("dim", dim, 2)
    _check_count("num_components", num_components)
    _check_count("depth", depth)
    _check_count("steps", steps)
    _check_count("train_rows", train_rows, 20)
    _check_count("test_rows", test_rows, 2)
    train, test, mixture = _data(dim, num_components, train_rows, test_rows, seed, means_seed)
    torch.manual_seed(seed)
    model = Flow.build(flow, dim, num_layers=depth, hidden_dims=list(hidden_dims))
    fit_rows = train_rows - round(0.1 * train_rows)
    steps_per_epoch = math.ceil(fit_rows / batch_size)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    t0 = time.perf_counter()
    history = fit(
        model,
        train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
        device="cpu",
        progress=False,
    )
    with torch.no_grad():
        log_q = model.log_prob(test)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return _result(
        flow,
        dim,
        num_components,
        depth,
        seed,
        params,
        log_q,
        mixture.log_prob(test.double()),
        len(history.epoch) * steps_per_epoch,
        t0,
    )


def generator_run(
    dim: int,
    num_components: int,
    *,
    restarts: int = 5,
    seed: int = 0,
    train_rows: int = 5000,
    test_rows: int = 5000,
    means_seed: int = 0,
) -> DepthResult:
    r"""Fit the non-invertible generator :math:`(c, \varepsilon) \mapsto \mu_c + s_c\,\varepsilon`.

    The model is :math:`q(x) = \sum_{c=1}^{k} w_c\, \mathcal{N}(x; \mu_c, s_c^2 I_d)`: the
    push-forward of a discrete latent :math:`c \sim w` and :math:`\varepsilon \sim
    \mathcal{N}(0, I_d)` through a depth-one map that is not invertible (it merges the
    :math:`k` copies of :math:`\mathbb{R}^d`), with :math:`k (d + 2) - 1` parameters. Its
    latent is discrete, so the likelihood is a finite sum, and it is fitted by
    expectation-maximisation: scikit-learn's ``GaussianMixture(covariance_type="spherical")``
    (k-means initialisation, ``restarts`` starts, the best kept) on the same training rows as
    :func:`depth_run` (all of them, no validation split). The number of components is the
    true one: this is the reference of what the generator family reaches, not a
    model-selection exercise.

    Args:
        dim: dimension :math:`d \ge 1`.
        num_components: number :math:`k \ge 1` of components (of the data and the model).
        restarts: EM starts; one start can merge two components into one.
        seed: seed of the data and of the starts.
        train_rows: training rows, at least ``num_components``.
        test_rows: test rows.
        means_seed: seed of the data's component means.

    Returns:
        A :class:`DepthResult` with ``flow="generator"``, ``depth=1`` and ``steps`` the EM
        iterations of the kept start.

    Raises:
        ImportError: without scikit-learn (``pip install pyroflows[digits]``).

    Example:
        >>> result = generator_run(4, 3, train_rows=600, test_rows=300)
        >>> abs(result.kl) < 0.1, result.num_params  # k (d + 2) - 1 parameters
        (True, 17)
    """
    try:
        from sklearn.mixture import GaussianMixture
    except ImportError as error:  # pragma: no cover - scikit-learn is in the dev extra
        raise ImportError(
            "generator_run fits with scikit-learn's GaussianMixture: "
            "pip install 'pyroflows[digits]' (scikit-learn)"
        ) from error
    _check_count("dim", dim)
    _check_count("num_components", num_components)
    _check_count("restarts", restarts)
    _check_count("train_rows", train_rows, num_components)
    _check_count("test_rows", test_rows, 2)
    train, test, mixture = _data(dim, num_components, train_rows, test_rows, seed, means_seed)
    t0 = time.perf_counter()
    model = GaussianMixture(
        num_components,
        covariance_type="spherical",
        n_init=restarts,
        max_iter=500,
        random_state=seed,
    ).fit(train.double().numpy())
    log_q = torch.as_tensor(model.score_samples(test.double().numpy()))
    log_p = mixture.log_prob(test.double())
    params = num_components * (dim + 2) - 1
    k = num_components
    return _result("generator", dim, k, 1, seed, params, log_q, log_p, int(model.n_iter_), t0)


def depth_table(
    flows: Iterable[str],
    dims: Iterable[int],
    components: Iterable[int],
    depths: Iterable[int],
    seeds: Iterable[int] = (0,),
    *,
    generator: bool = True,
    progress: bool = False,
    **run_options,
) -> list[DepthResult]:
    """The experiment's grid: one :func:`depth_run` per flow, dimension, components, depth, seed.

    With ``generator=True`` each (dimension, components, seed) also gets one
    :func:`generator_run` (its ``train_rows``, ``test_rows`` and ``means_seed`` follow
    ``run_options``), so the table holds the non-invertible reference beside the flows.

    Args:
        flows: registry names (:data:`DEPTH_FLOWS`).
        dims: dimensions :math:`d`.
        components: numbers of components :math:`k`.
        depths: numbers of layers :math:`L`.
        seeds: run seeds.
        generator: add the generator's rows.
        progress: show a tqdm bar.
        **run_options: passed to :func:`depth_run`.

    Returns:
        The :class:`DepthResult` rows, generator rows first within each (dimension,
        components, seed).

    Example:
        >>> rows = depth_table(["realnvp"], [4], [2], [1, 2], steps=10, train_rows=300,
        ...                    test_rows=100, hidden_dims=[8])
        >>> [(row.flow, row.depth) for row in rows]
        [('generator', 1), ('realnvp', 1), ('realnvp', 2)]
    """
    flows, depths, seeds = list(flows), list(depths), list(seeds)
    shared = {
        key: value
        for key, value in run_options.items()
        if key in ("train_rows", "test_rows", "means_seed")
    }
    cells = []
    for dim in dims:
        for k in components:
            for seed in seeds:
                if generator:
                    cells.append(("generator", dim, k, 1, seed))
                cells += [(flow, dim, k, depth, seed) for flow in flows for depth in depths]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="fits")
    rows = []
    for flow, dim, k, depth, seed in cells:
        if flow == "generator":
            rows.append(generator_run(dim, k, seed=seed, **shared))
        else:
            rows.append(depth_run(flow, dim, k, depth, seed=seed, **run_options))
    return rows


def _median_kl(rows: Sequence[DepthResult]) -> dict[tuple[str, int, int, int], float]:
    cells: dict[tuple[str, int, int, int], list[float]] = {}
    for row in rows:
        cells.setdefault((row.flow, row.dim, row.num_components, row.depth), []).append(row.kl)
    return {key: statistics.median(values) for key, values in cells.items()}


def depth_needed(
    rows: Sequence[DepthResult], tolerance: float = 0.1
) -> dict[tuple[str, int, int], int | None]:
    r"""The smallest depth whose median KL estimate is at most ``tolerance`` nats.

    Args:
        rows: results of :func:`depth_table` (several seeds per cell are summarised by
            their median).
        tolerance: :math:`\varepsilon` in nats.

    Returns:
        ``{(flow, dim, num_components): depth}``, with ``None`` where no depth of the grid
        reaches the tolerance (the flow needs more than the deepest one tried).

    Example:
        >>> row = DepthResult("nsf", 4, 2, 2, 0, 100, 0.0, 0.0, 0.05, 0.01, 10, 1.0)
        >>> depth_needed([row], tolerance=0.1)
        {('nsf', 4, 2): 2}
    """
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0 nats, got {tolerance!r}")
    needed: dict[tuple[str, int, int], int | None] = {}
    for (flow, dim, k, depth), kl in sorted(_median_kl(rows).items()):
        key = (flow, dim, k)
        needed.setdefault(key, None)
        if kl <= tolerance and needed[key] is None:
            needed[key] = depth
    return needed


def kl_table(rows: Sequence[DepthResult], tolerance: float = 0.1) -> str:
    """A text table: median KL per depth for each flow, dimension and number of components.

    One line per (flow, :math:`d`, :math:`k`), one column per depth, and the depth needed
    for ``tolerance`` (``>L`` when even the deepest misses it); the generator's line has its
    one value under its depth 1.

    Example:
        >>> rows = [DepthResult("nsf", 4, 2, L, 0, 100, 0.0, 0.0, kl, 0.01, 10, 1.0)
        ...         for L, kl in [(1, 0.9), (2, 0.05)]]
        >>> print(kl_table(rows))
        flow         d    k       L=1      L=2   needed
        nsf          4    2     0.900    0.050        2
    """
    medians = _median_kl(rows)
    depths = sorted({key[3] for key in medians})
    needed = depth_needed(rows, tolerance)
    header = f"{'flow':<10} {'d':>3} {'k':>4} " + "".join(f"{f'L={L}':>9}" for L in depths)
    lines = [header + f"{'needed':>9}"]
    for flow, dim, k in needed:
        cells = "".join(
            f"{medians[flow, dim, k, L]:>9.3f}" if (flow, dim, k, L) in medians else f"{'':>9}"
            for L in depths
        )
        depth = needed[flow, dim, k]
        tried = max(L for (f, d, kk, L) in medians if (f, d, kk) == (flow, dim, k))
        lines.append(f"{flow:<10} {dim:>3} {k:>4} {cells}{str(depth) if depth else f'>{tried}':>9}")
    return "\n".join(lines)
