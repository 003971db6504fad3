r"""The scikit-learn digits and the helpers of image density estimation.

The digits are 1,797 grey-scale 8 x 8 images with integer values :math:`0, \dots, 16`
(:math:`L = 17` levels), shipped with scikit-learn (nothing is downloaded). The protocol of our
targets (steps 2 to 4 are those of RealNVP, Glow and MAF on images) is:

1. split 80/20 with ``random_state=0`` (:func:`load_digits`): 1,437 training and 360 test
   images of 64 pixels;
2. dequantise uniformly to :math:`[0, 1)` (:func:`dequantize`): :math:`x = (k + u) / L`;
3. optionally fit in logit space (:func:`logit_transform`, whose log-determinant converts the
   density back to :math:`[0, 1)^D`);
4. report bits per dimension of the discrete data (:func:`bits_per_dim`).

scikit-learn is an optional dependency: ``pip install "pyroflows[digits]"``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..transforms import LogitTransform

__all__ = [
    "DIGITS_DIM",
    "DIGITS_LEVELS",
    "Dequantize",
    "bits_per_dim",
    "dequantize",
    "inverse_logit_transform",
    "load_digits",
    "logit_transform",
]

DIGITS_DIM = 64
"""Pixels of one 8 x 8 digit image."""
DIGITS_LEVELS = 17
"""Grey levels of the digits, 0 to 16."""


def load_digits(
    split: Literal["train", "test", "all"] = "train",
    test_fraction: float = 0.2,
    random_state: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""The scikit-learn 8 x 8 digits, flattened to 64 dimensions, with the standard split.

    The split is ``sklearn.model_selection.train_test_split(images, test_size=test_fraction,
    random_state=random_state)`` on the 1,797 images in scikit-learn's order, without
    stratification; the defaults give 1,437 training and 360 test images (the test set has
    :math:`\lceil 1797 \cdot 0.2 \rceil = 360` rows). The values are the raw integers
    :math:`0, \dots, 16`; pass them through :func:`dequantize` before fitting a density.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the 1,797 images in scikit-learn's order).
        test_fraction: share of the images in the test set, strictly between 0 and 1.
        random_state: scikit-learn's seed of the split; 0 is the protocol's.
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        A tensor of shape ``(N, 64)`` with integer values in ``[0, 16]``.

    Raises:
        ImportError: if scikit-learn is not installed (the message says what to install).
        ValueError: for an unknown ``split`` or a ``test_fraction`` outside ``(0, 1)``.

    References:
        Alpaydin, E., Kaynak, C. "Optical recognition of handwritten digits", UCI Machine
        Learning Repository, 1998 (the 8 x 8 version distributed with scikit-learn).

    Example:
        >>> train, test = load_digits("train"), load_digits("test")
        >>> train.shape, test.shape
        (torch.Size([1437, 64]), torch.Size([360, 64]))
        >>> float(train.min()), float(train.max())
        (0.0, 16.0)
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split as sklearn_split
    except ImportError as error:
        raise ImportError(
            "the digits dataset comes with scikit-learn, which is not installed; "
            'install it with: pip install "pyroflows[digits]"'
        ) from error
    images = sklearn_load_digits().data
    if split != "all":
        train, test = sklearn_split(images, test_size=test_fraction, random_state=random_state)
        images = train if split == "train" else test
    return torch.as_tensor(images, dtype=dtype, device=device)


def dequantize(x: Tensor, levels: int = DIGITS_LEVELS, seed: int | torch.Generator = 0) -> Tensor:
    r"""Uniform dequantisation of integer data to :math:`[0, 1)`.

    .. math::

        x_{\text{cont}} = \frac{k + u}{L}, \qquad u \sim \mathcal{U}[0, 1)^D \text{ i.i.d.},

    for integer values :math:`k \in \{0, \dots, L - 1\}`. A density :math:`p` on
    :math:`[0, 1)^D` then gives a lower bound on the log-probability of the discrete data
    (see :func:`bits_per_dim`). The noise is drawn in float64 by a local generator (an integer
    ``seed``: NumPy's ``default_rng(seed)``; a :class:`torch.Generator`: ``torch.rand`` with
    it, on its device); the result is rounded to ``x``'s dtype and kept strictly below 1.
    :class:`Dequantize` redraws it every epoch of :func:`~pyroflows.train.fit`.

    Args:
        x: tensor of any shape holding integer values in ``[0, levels - 1]`` (any dtype).
        levels: number of levels :math:`L` (17 for the digits, 256 for 8-bit images).
        seed: seed of the noise, or a :class:`torch.Generator` (it is advanced; the noise is
            drawn on its device). Global random states are untouched either way.

    Returns:
        A floating tensor of the shape of ``x`` (``x``'s dtype if floating, else float32), on
        its device, with values in ``[0, 1)``.

    Raises:
        ValueError: if ``x`` holds values that are not integers in ``[0, levels - 1]``.

    References:
        Uria, B., Murray, I., Larochelle, H. "RNADE: the real-valued neural autoregressive
        density-estimator", NeurIPS 2013, arXiv:1306.0186; Theis, L., van den Oord, A.,
        Bethge, M. "A note on the evaluation of generative models", ICLR 2016,
        arXiv:1511.01844.

    Example:
        >>> k = torch.tensor([[0.0, 16.0], [3.0, 7.0]])
        >>> x = dequantize(k, seed=0)
        >>> bool(((x >= 0) & (x < 1)).all()), bool(torch.equal(torch.floor(17 * x), k))
        (True, True)
        >>> y = dequantize(k, seed=torch.Generator().manual_seed(0))
        >>> bool(torch.equal(torch.floor(17 * y), k)), bool(torch.equal(x, y))
        (True, False)
    """
    levels = operator.index(levels)
    if levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    # The noise's device: the generator's, or the CPU for NumPy's (also for devices, such as
    # MPS, without float64); the result goes to x's device.
    device = seed.device if isinstance(seed, torch.Generator) else torch.device("cpu")
    values = x.detach().to(device, torch.float64)
    if values.numel():
        off = (values != values.round()) | (values < 0) | (values > levels - 1)
        if bool(off.any()):
            raise ValueError(
                f"dequantize expects integer values in [0, {levels - 1}], got values in "
                f"[{float(values.min())}, {float(values.max())}]"
            )
    if isinstance(seed, torch.Generator):
        noise = torch.rand(values.shape, generator=seed, dtype=torch.float64, device=device)
    else:
        noise = torch.as_tensor(np.random.default_rng(seed).uniform(size=tuple(values.shape)))
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    result = ((values + noise) / levels).to(x.device, dtype)
    below_one = torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
    return torch.clamp(result, max=float(below_one))


@dataclass(frozen=True)
class Dequantize:
    r"""Uniform dequantisation redrawn every epoch: the ``augment`` of :func:`~pyroflows.train.fit`.

    Called as ``Dequantize(levels)(k, generator)``, it returns :func:`dequantize`'s

    .. math::

        x = \frac{k + u}{L}, \qquad u \sim \mathcal{U}[0, 1)^D \text{ i.i.d.},

    with the noise :math:`u` drawn by ``generator``. Fitting on the raw integers :math:`k`
    with ``fit(model, k, augment=Dequantize(levels=L))`` draws a new :math:`u` every epoch
    (the generator is seeded from the run's seed and the epoch), so that the model is fitted
    to the whole unit cell of each integer rather than to one fixed point in it, which a
    flexible flow memorises: the bound of :func:`bits_per_dim` is the expectation over
    :math:`u`, and each epoch estimates it afresh. ``pyroflows fit --data digits`` does this.

    Args:
        levels: number of levels :math:`L` of the discrete data (17 for the digits, 256 for
            8-bit images).

    References:
        Theis, L., van den Oord, A., Bethge, M. "A note on the evaluation of generative
        models", ICLR 2016, arXiv:1511.01844.

    Example:
        >>> augment = Dequantize(levels=17)
        >>> k = torch.tensor([[0.0, 16.0], [3.0, 7.0]])
        >>> x = augment(k, torch.Generator().manual_seed(0))
        >>> bool(torch.equal(torch.floor(17 * x), k)), augment
        (True, Dequantize(levels=17))
    """

    levels: int

    def __post_init__(self):
        if operator.index(self.levels) < 1:
            raise ValueError(f"levels must be at least 1, got {self.levels}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Rows ``x`` of integers in ``[0, levels - 1]``, dequantised with ``generator``."""
        return dequantize(x, self.levels, generator)


def logit_transform(x: Tensor, alpha: float = 0.05) -> tuple[Tensor, Tensor]:
    r"""Map data in :math:`[0, 1)^D` to logit space, with the exact log-determinant.

    .. math::

        s = \alpha + (1 - 2\alpha)\, x, \qquad y = \operatorname{logit}(s) = \log s - \log(1 - s),

        \log \left| \det \frac{\partial y}{\partial x} \right|
        = \sum_{j=1}^{D} \left[ \log(1 - 2\alpha) - \log s_j - \log(1 - s_j) \right].

    Squeezing into :math:`[\alpha, 1 - \alpha]` keeps :math:`y` finite at the borders. A
    density :math:`q` fitted to :math:`y` is a density on the :math:`[0, 1)` data by change
    of variables: :math:`\log p(x) = \log q(y) + \log|\det \partial y / \partial x|`; that is,
    ``nll_x = nll_y - log_det``, which then goes into :func:`bits_per_dim`. This is the
    forward pass of :class:`~pyroflows.transforms.LogitTransform` (the map a
    :class:`~pyroflows.distributions.Flow` built with ``logit_alpha`` applies itself).

    Args:
        x: tensor of shape ``(..., D)`` with values in ``[0, 1]``.
        alpha: squeeze :math:`\alpha \in [0, 1/2)`; 0.05 as in RealNVP (MAF uses
            :math:`10^{-6}` on MNIST). With 0, values 0 and 1 would map to infinities.

    Returns:
        ``(y, log_det)``: ``y`` of shape ``(..., D)`` and the log-determinant per example, of
        shape ``(...)``.

    Raises:
        ValueError: if ``alpha`` is not in ``[0, 1/2)``; while Pyro's validation is on (the
            default), also for values outside the open interval
            :math:`(-\alpha, 1 - \alpha) / (1 - 2\alpha)` (NaN included), naming the rows.

    References:
        Dinh, L., Sohl-Dickstein, J., Bengio, S. "Density estimation using Real NVP", ICLR
        2017, arXiv:1605.08803, Section 4.1; Papamakarios, G., Pavlakou, T., Murray, I.
        "Masked autoregressive flow for density estimation", NeurIPS 2017, arXiv:1705.07057.

    Example:
        >>> x = dequantize(load_digits("test"), seed=0)
        >>> y, log_det = logit_transform(x, alpha=0.05)
        >>> y.shape, log_det.shape
        (torch.Size([360, 64]), torch.Size([360]))
        >>> bool(torch.allclose(inverse_logit_transform(y, alpha=0.05), x, atol=1e-5))
        True
    """
    if x.dim() < 1:
        raise ValueError(f"logit_transform expects x of shape (..., D), got {tuple(x.shape)}")
    return LogitTransform(x.shape[-1], alpha, cache_size=0).forward_and_log_det(x)


def inverse_logit_transform(y: Tensor, alpha: float = 0.05) -> Tensor:
    r"""Map logit-space values back to the data scale: the inverse of :func:`logit_transform`.

    .. math::

        x = \frac{\sigma(y) - \alpha}{1 - 2\alpha}, \qquad \sigma(y) = \frac{1}{1 + e^{-y}}.

    The inverse pass of :class:`~pyroflows.transforms.LogitTransform`. Use it on samples of a
    model fitted in logit space; values land in
    :math:`(-\alpha / (1 - 2\alpha),\ (1 - \alpha) / (1 - 2\alpha))`, so clamp to
    :math:`[0, 1)` before multiplying by the number of levels and rounding down.

    Args:
        y: tensor of any shape.
        alpha: the squeeze used in :func:`logit_transform`, in ``[0, 1/2)``.

    Returns:
        A tensor of the shape of ``y``.

    Raises:
        ValueError: if ``alpha`` is not in ``[0, 1/2)``.

    References:
        Dinh, L., Sohl-Dickstein, J., Bengio, S. "Density estimation using Real NVP", ICLR
        2017, arXiv:1605.08803, Section 4.1.

    Example:
        >>> x = torch.tensor([0.0, 0.25, 0.999])
        >>> y, _ = logit_transform(x, alpha=0.01)
        >>> bool(torch.allclose(inverse_logit_transform(y, alpha=0.01), x, atol=1e-6))
        True
    """
    logit = LogitTransform(1, alpha, cache_size=0)
    return logit.inverse_and_log_det(y.unsqueeze(-1))[0].squeeze(-1)


def bits_per_dim(nll: float | Tensor, dim: int, levels: int = DIGITS_LEVELS) -> float | Tensor:
    r"""Convert the NLL of dequantised :math:`[0, 1)` data to bits per dimension.

    If :math:`x = (k + u) / L` (:func:`dequantize`), the same point on the integer scale is
    :math:`v = L x = k + u`, whose density is :math:`p_v(v) = L^{-D} p(x)`. Since every
    integer :math:`k` owns a unit cube of :math:`v`,
    :math:`\log P(k) \ge \mathbb{E}_u \log p_v(k + u)` (Jensen), so

    .. math::

        \text{bits/dim} = \frac{\text{nll} + D \log L}{D \log 2}

    is an upper bound on the bits per dimension of the discrete data. The uniform density
    on :math:`[0, 1)^D` (nll :math:`= 0`) scores :math:`\log_2 L` (4.087 for the digits). Use
    ``levels=1`` for an NLL already measured on the integer scale :math:`k + u`.

    Args:
        nll: negative log-likelihood in nats per example of the :math:`[0, 1)` data: a float,
            or a tensor of any shape (e.g. one value per example).
        dim: number of dimensions :math:`D` of an example (64 for the digits).
        levels: number of levels :math:`L` of the discrete data (17 for the digits).

    Returns:
        Bits per dimension, a float or a tensor like ``nll``.

    Raises:
        ValueError: if ``dim`` or ``levels`` is below 1.

    References:
        Theis, L., van den Oord, A., Bethge, M. "A note on the evaluation of generative
        models", ICLR 2016, arXiv:1511.01844; Dinh, L., Sohl-Dickstein, J., Bengio, S.
        "Density estimation using Real NVP", ICLR 2017, arXiv:1605.08803.

    Example:
        >>> round(bits_per_dim(0.0, dim=64), 3)  # the uniform density on [0, 1)^64
        4.087
        >>> bits_per_dim(torch.tensor([0.0, -64 * math.log(17)]), dim=64)
        tensor([4.0875, 0.0000])
    """
    dim = operator.index(dim)
    levels = operator.index(levels)
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    if levels < 1:
        raise ValueError(f"levels must be at least 1, got {levels}")
    return (nll + dim * math.log(levels)) / (dim * math.log(2.0))
