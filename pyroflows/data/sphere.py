r"""A mixture of Gaussians with means on a sphere, with its exact density.

Koehler, Mehta and Risteski (2021) use this family to show that invertibility costs depth.
Their depth lower bound for flows (Section 2.1, "Results about general architectures") rests
on mixtures of :math:`k` equal-weight isotropic Gaussians whose means are drawn at random on a
sphere in :math:`\mathbb{R}^d`. In high dimension random points on a sphere are nearly
equidistant, so many of these mixtures are far apart from each other in Wasserstein distance. A
small non-invertible generator produces any of them, but a shallow composition of Lipschitz
invertible maps with few parameters per layer cannot get close to all of them (the proof
sketch is also in the authors' ML@CMU blog post). This makes the mixture a benchmark with a
known answer: its exact log-density gives the true negative log-likelihood, which no model
beats in expectation (cross-entropy is at least the entropy).
"""

from __future__ import annotations

import operator

import numpy as np
import pyro.distributions as dist
import torch
from torch import Tensor

from ..errors import OptionError

__all__ = ["sphere_mixture", "sphere_mixture_distribution"]


def _means(dim: int, num_components: int, radius: float, std: float, means_seed: int) -> np.ndarray:
    """Validate the parameters and draw the component means (float64, ``(k, dim)``)."""
    dim = operator.index(dim)
    num_components = operator.index(num_components)
    if dim < 1:
        raise OptionError(f"dim must be at least 1, got {dim}")
    if num_components < 1:
        raise OptionError(f"num_components must be at least 1, got {num_components}")
    if not radius > 0:
        raise OptionError(f"radius must be positive, got {radius}")
    if not std > 0:
        raise OptionError(f"std must be positive, got {std}")
    # A standard normal vector divided by its norm is uniform on the unit sphere.
    directions = np.random.default_rng(means_seed).normal(size=(num_components, dim))
    return radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)


def sphere_mixture_distribution(
    dim: int,
    num_components: int = 8,
    radius: float = 1.0,
    std: float = 0.1,
    means_seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dist.MixtureSameFamily:
    r"""The sphere mixture of Koehler, Mehta and Risteski as a distribution with exact log-density.

    .. math::

        p(x) = \frac{1}{k} \sum_{i=1}^{k} \mathcal{N}(x;\, \mu_i, \sigma^2 I_d),
        \qquad \mu_i = r\, \frac{g_i}{\lVert g_i \rVert}, \quad g_i \sim \mathcal{N}(0, I_d)
        \text{ i.i.d.},

    so the means are independent and uniform on the sphere of radius :math:`r` in
    :math:`\mathbb{R}^d`, every component has weight :math:`1/k` and covariance
    :math:`\sigma^2 I_d`. ``log_prob`` is the exact log-sum-exp of the component
    log-densities, so ``-log_prob(x).mean()`` on a test set is the true NLL, the floor a
    model can reach in expectation.

    Defaults: the paper works on the unit sphere (``radius=1``) and needs the spread small
    next to the typical distance :math:`\sqrt{2}\, r` between two random means; it states its
    result for any :math:`k` up to :math:`e^{o(d)}`. The default ``num_components=8`` and
    ``std=0.1`` are our choice of a moderate instance, not numbers from the paper; more
    components and a smaller ``std`` make the task harder.

    Args:
        dim: dimension :math:`d` of the space, at least 1 (for ``dim=1`` the "sphere" is
            :math:`\{-r, r\}`).
        num_components: number :math:`k` of components, at least 1.
        radius: radius :math:`r > 0` of the sphere the means lie on.
        std: standard deviation :math:`\sigma > 0` of every component in every direction.
        means_seed: seed of the local generator that draws the means. It fixes the
            distribution; :func:`sphere_mixture` takes the same argument, and its own ``seed``
            only changes which points are drawn.
        dtype: floating dtype of the parameters.
        device: device of the parameters (default: the CPU).

    Returns:
        A :class:`pyro.distributions.MixtureSameFamily` with event shape ``(dim,)``; its
        means are ``.component_distribution.base_dist.loc`` (shape ``(num_components, dim)``).
        ``sample`` uses torch's global generator; use :func:`sphere_mixture` for seeded data.

    Raises:
        OptionError: (a ``ValueError``) if an argument is out of range.

    References:
        Koehler, F., Mehta, V., Risteski, A. "Representational aspects of depth and
        conditioning in normalizing flows", ICML 2021, arXiv:2010.01155, Section 2.1
        ("Results about general architectures", the depth lower bound).

    Example:
        >>> mixture = sphere_mixture_distribution(dim=5, num_components=4)
        >>> means = mixture.component_distribution.base_dist.loc
        >>> means.shape, bool(torch.allclose(means.norm(dim=1), torch.ones(4)))
        (torch.Size([4, 5]), True)
        >>> x = sphere_mixture(1000, dim=5, num_components=4)
        >>> mixture.log_prob(x).shape
        torch.Size([1000])
    """
    means = _means(dim, num_components, radius, std, means_seed)
    loc = torch.as_tensor(means, dtype=dtype, device=device)
    scale = torch.full_like(loc, float(std))
    weights = dist.Categorical(logits=torch.zeros(loc.shape[0], dtype=dtype, device=device))
    return dist.MixtureSameFamily(weights, dist.Normal(loc, scale).to_event(1))


def sphere_mixture(
    num_samples: int,
    dim: int,
    num_components: int = 8,
    radius: float = 1.0,
    std: float = 0.1,
    seed: int = 0,
    means_seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Draw points from the mixture of Gaussians on a sphere, reproducibly from a seed.

    .. math::

        x = \mu_c + \sigma \varepsilon, \qquad c \sim \mathcal{U}\{1, \dots, k\},
        \quad \varepsilon \sim \mathcal{N}(0, I_d),

    with the means :math:`\mu_i` of :func:`sphere_mixture_distribution` (same ``dim``,
    ``num_components``, ``radius`` and ``means_seed``), whose ``log_prob`` is the exact
    density of these points. Drawing training and test sets with different ``seed`` and the
    same ``means_seed`` gives two samples of one distribution.

    Args:
        num_samples: number of points, at least 1.
        dim: dimension :math:`d`, at least 1.
        num_components: number :math:`k` of components (default 8).
        radius: radius :math:`r` of the sphere of means (default 1, the unit sphere).
        std: standard deviation :math:`\sigma` of each component (default 0.1).
        seed: seed of the local generator that picks components and noise.
        means_seed: seed that fixes the means, i.e. the distribution.
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        A tensor of shape ``(num_samples, dim)``.

    Raises:
        OptionError: (a ``ValueError``) if an argument is out of range.

    References:
        Koehler, F., Mehta, V., Risteski, A. "Representational aspects of depth and
        conditioning in normalizing flows", ICML 2021, arXiv:2010.01155, Section 2.1
        ("Results about general architectures", the depth lower bound).

    Example:
        >>> train = sphere_mixture(2000, dim=10, seed=0)
        >>> test = sphere_mixture(500, dim=10, seed=1)
        >>> true_nll = -sphere_mixture_distribution(dim=10).log_prob(test).mean()
        >>> train.shape, bool(torch.isfinite(true_nll))
        (torch.Size([2000, 10]), True)
    """
    means = _means(dim, num_components, radius, std, means_seed)
    count = operator.index(num_samples)
    if count < 1:
        raise OptionError(f"num_samples must be at least 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    components = rng.integers(0, means.shape[0], size=count)
    points = means[components] + std * rng.normal(size=(count, means.shape[1]))
    return torch.as_tensor(points, dtype=dtype, device=device)
