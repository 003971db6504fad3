r"""Built-in 2-D toy datasets for density estimation, generated from a seed.

The datasets follow the conventions of FFJORD (Grathwohl et al. 2019, arXiv:1810.01367) and
most flow papers since, so that numbers and pictures are comparable:

* ``"moons"``: two interleaving half circles, Gaussian noise 0.1, times 2, shifted by
  ``(-1, -0.2)``;
* ``"circles"``: two concentric circles (inner radius factor 0.5), noise 0.08, times 3;
* ``"eight_gaussians"``: a mixture of 8 Gaussians (std 0.5) centred on the circle of radius 4,
  all divided by 1.414;
* ``"pinwheel"``: 5 curved arms;
* ``"two_spirals"``: two interleaved spirals;
* ``"checkerboard"``: uniform on the black squares of a 4 x 4 checkerboard on
  :math:`[-4, 4]^2`;
* ``"swiss_roll"``: the roll :math:`t\,(\cos t, \sin t)`, :math:`t \sim
  \mathcal{U}[1.5\pi, 4.5\pi]`, plus standard normal noise, all divided by 5 (as
  ``sklearn.datasets.make_swiss_roll(noise=1.0)`` keeping coordinates 0 and 2).

Everything is generated with torch and numpy only, from a local
:func:`numpy.random.default_rng` (the global random state is never touched), so the same
``seed`` gives the same points on every machine.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import OptionError

__all__ = ["TOY_DATASETS", "make_toy"]

_Generator = Callable[[int, np.random.Generator], np.ndarray]


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    # As sklearn.datasets.make_moons(n, noise=0.1), then FFJORD's "* 2 + (-1, -0.2)".
    n_outer = n // 2
    n_inner = n - n_outer
    outer = np.linspace(0.0, np.pi, n_outer)
    inner = np.linspace(0.0, np.pi, n_inner)
    points = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], axis=1),
            np.stack([1.0 - np.cos(inner), 0.5 - np.sin(inner)], axis=1),
        ]
    )
    points = rng.permutation(points) + rng.normal(scale=0.1, size=(n, 2))
    return points * 2.0 + np.array([-1.0, -0.2])


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    # As sklearn.datasets.make_circles(n, factor=0.5, noise=0.08), then FFJORD's "* 3".
    n_outer = n // 2
    n_inner = n - n_outer
    outer = np.linspace(0.0, 2.0 * np.pi, n_outer, endpoint=False)
    inner = np.linspace(0.0, 2.0 * np.pi, n_inner, endpoint=False)
    points = np.concatenate(
        [
            np.stack([np.cos(outer), np.sin(outer)], axis=1),
            0.5 * np.stack([np.cos(inner), np.sin(inner)], axis=1),
        ]
    )
    points = rng.permutation(points) + rng.normal(scale=0.08, size=(n, 2))
    return points * 3.0


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angles = np.arange(8) * (np.pi / 4.0)
    centers = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    points = centers[rng.integers(0, 8, size=n)] + rng.normal(scale=0.5, size=(n, 2))
    return points / 1.414


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    radial_std, tangential_std, num_arms, rate = 0.3, 0.1, 5, 0.25
    arms = rng.permutation(np.arange(n) % num_arms)
    features = rng.normal(size=(n, 2)) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    angles = arms * (2.0 * np.pi / num_arms) + rate * np.exp(features[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    # Row vector times the rotation [[cos, -sin], [sin, cos]], as in FFJORD.
    rotated = np.stack(
        [features[:, 0] * cos + features[:, 1] * sin, -features[:, 0] * sin + features[:, 1] * cos],
        axis=1,
    )
    return 2.0 * rotated


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    n_first = (n + 1) // 2
    turn = np.sqrt(rng.uniform(size=(n, 1))) * 540.0 * (2.0 * np.pi) / 360.0
    arm = np.concatenate([-np.cos(turn) * turn, np.sin(turn) * turn], axis=1)
    arm = arm + rng.uniform(size=(n, 2)) * 0.5
    sign = np.where(np.arange(n) < n_first, 1.0, -1.0)[:, None]
    points = rng.permutation(sign * arm) / 3.0
    return points + rng.normal(scale=0.1, size=(n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.uniform(size=n) * 4.0 - 2.0
    x2 = rng.uniform(size=n) - rng.integers(0, 2, size=n) * 2.0 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * 2.0


def _swiss_roll(n: int, rng: np.random.Generator) -> np.ndarray:
    # As sklearn.datasets.make_swiss_roll(n, noise=1.0)[0][:, [0, 2]] / 5 (FFJORD's "swissroll"):
    # the dropped height coordinate and its noise do not affect the two kept columns.
    turn = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    roll = np.stack([turn * np.cos(turn), turn * np.sin(turn)], axis=1)
    return (roll + rng.normal(size=(n, 2))) / 5.0


_GENERATORS: dict[str, _Generator] = {
    "moons": _moons,
    "circles": _circles,
    "eight_gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "two_spirals": _two_spirals,
    "checkerboard": _checkerboard,
    "swiss_roll": _swiss_roll,
}

#: Names accepted by :func:`make_toy`.
TOY_DATASETS: tuple[str, ...] = tuple(_GENERATORS)

# FFJORD's spellings, accepted as well.
_ALIASES = {"8gaussians": "eight_gaussians", "2spirals": "two_spirals"}


def make_toy(
    name: str,
    num_samples: int,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``num_samples`` points of the 2-D toy dataset ``name``.

    Args:
        name: one of :data:`TOY_DATASETS` (FFJORD's ``"8gaussians"`` and ``"2spirals"`` are
            accepted too).
        num_samples: number of points, at least 1.
        seed: seed of the local :func:`numpy.random.default_rng`; the same seed gives the
            same points.
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        A tensor of shape ``(num_samples, 2)``.

    Raises:
        OptionError: (a ``ValueError``) for an unknown ``name`` (the message lists the known
            ones) or ``num_samples < 1``.

    Example:
        >>> x = make_toy("moons", 500, seed=0)
        >>> x.shape, x.dtype
        (torch.Size([500, 2]), torch.float32)
        >>> bool(torch.equal(x, make_toy("moons", 500, seed=0)))
        True
    """
    key = _ALIASES.get(name, name)
    if key not in _GENERATORS:
        known = ", ".join(TOY_DATASETS)
        raise OptionError(f"unknown toy dataset {name!r}; known datasets: {known}")
    count = operator.index(num_samples)
    if count < 1:
        raise OptionError(f"num_samples must be at least 1, got {num_samples}")
    points = _GENERATORS[key](count, np.random.default_rng(seed))
    return torch.as_tensor(points, dtype=dtype, device=device)
