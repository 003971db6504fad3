"""One entry point from a dataset's name, or a file's path, to a tensor of examples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import OptionError
from .digits import DIGITS_LEVELS, dequantize, load_digits
from .files import SUPPORTED_SUFFIXES, load_array
from .images import IMAGE_DATASETS, MNIST5K_LEVELS, load_digits_images, load_mnist5k
from .sphere import sphere_mixture
from .toy import _ALIASES, TOY_DATASETS, make_toy

__all__ = ["dataset"]


def dataset(
    source: str | os.PathLike[str],
    num_samples: int | None = None,
    *,
    seed: int = 0,
    split: Literal["train", "test", "all"] = "train",
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    **options: Any,
) -> Tensor:
    """Get a dataset as an ``(N, D)`` tensor from its name or its file: the CLI's entry point.

    ``source`` is resolved in this order:

    * a :class:`os.PathLike`, or a string ending in ``.npy``, ``.npz`` or ``.csv`` or
      containing a path separator: a file, read by :func:`load_array` (``options`` go to it:
      ``expected_dim``, ``key``, ``header``, ``allow_constant_columns``);
    * a name in :data:`TOY_DATASETS` (or FFJORD's ``"8gaussians"``, ``"2spirals"``):
      ``make_toy(source, num_samples, seed)``;
    * ``"digits"``: :func:`load_digits` for ``split`` (80/20 with ``random_state=0``;
      ``options`` may set ``test_fraction`` and ``random_state``), then :func:`dequantize`
      with 17 levels and noise seed ``seed``, so values are in :math:`[0, 1)`; report results
      with :func:`bits_per_dim`. With the option ``raw=True`` the integers themselves, one
      row per image, to be dequantised every epoch by :func:`~pyroflows.train.fit`'s
      ``augment=Dequantize(levels=17)`` (:class:`~pyroflows.data.Dequantize`);
    * ``"digits-images"`` and ``"mnist5k"`` (:data:`~pyroflows.data.images.IMAGE_DATASETS`):
      the same for images ``(N, C, H, W)``: :func:`~pyroflows.data.images.load_digits_images`
      (17 levels) or :func:`~pyroflows.data.images.load_mnist5k` (256 levels, optional extra
      ``pyroflows[images]``) for ``split``, dequantised with noise seed ``seed`` unless
      ``raw=True``;
    * ``"sphere_mixture"``: :func:`sphere_mixture` with ``num_samples`` and ``seed``;
      ``options`` must give ``dim`` and may set ``num_components``, ``radius``, ``std`` and
      ``means_seed``.

    Args:
        source: a dataset name or a file path, as above.
        num_samples: number of points to generate; required for the toys and the sphere
            mixture, not accepted for files and the digits (their size is fixed).
        seed: seed of the generated points, or of the digits' dequantisation noise; unused
            for files.
        split: the digits' part, ``"train"``, ``"test"`` or ``"all"``; ignored otherwise.
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).
        **options: passed on to the loader named above.

    Returns:
        A tensor of shape ``(N, D)``.

    Raises:
        OptionError: for an unknown name (the message lists the known ones), a missing or
            unexpected ``num_samples``, or options the source does not take
            (:class:`~pyroflows.errors.OptionError`, a :class:`ValueError`).
        DataError: for bad file contents (see :func:`load_array`).
        FileNotFoundError: for a path that does not exist.
        ImportError: for ``"digits"`` without scikit-learn.

    Example:
        >>> dataset("moons", 256, seed=1).shape
        torch.Size([256, 2])
        >>> test = dataset("digits", split="test", seed=0)
        >>> test.shape, bool(((test >= 0) & (test < 1)).all())
        (torch.Size([360, 64]), True)
        >>> float(dataset("digits", raw=True).max())  # the 17 levels, 0 to 16
        16.0
        >>> dataset("sphere_mixture", 100, dim=16).shape
        torch.Size([100, 16])
    """
    if isinstance(source, os.PathLike) or _looks_like_path(source):
        _forbid_num_samples(num_samples, "a file")
        return load_array(source, dtype=dtype, device=device, **options)
    if not isinstance(source, str):
        raise TypeError(f"source must be a dataset name or a path, got {type(source).__name__}")
    if source in TOY_DATASETS or source in _ALIASES:
        _forbid_options(options, source)
        return make_toy(source, _require_num_samples(num_samples, source), seed, dtype, device)
    if source == "digits":
        _forbid_num_samples(num_samples, "'digits'")
        _forbid_options(options, source, allowed=("test_fraction", "random_state", "raw"))
        raw = options.pop("raw", False)
        images = load_digits(split, dtype=dtype, device=device, **options)
        return images if raw else dequantize(images, levels=DIGITS_LEVELS, seed=seed)
    if source in IMAGE_DATASETS:
        _forbid_num_samples(num_samples, repr(source))
        allowed = ("random_state", "raw") + (
            ("test_fraction",) if source == "digits-images" else ()
        )
        _forbid_options(options, source, allowed=allowed)
        raw = options.pop("raw", False)
        if source == "digits-images":
            images, levels = load_digits_images(split, dtype=dtype, device=device, **options), 17
        else:
            images = load_mnist5k(split, dtype=dtype, device=device, **options)
            levels = MNIST5K_LEVELS
        return images if raw else dequantize(images, levels=levels, seed=seed)
    if source == "sphere_mixture":
        _forbid_options(
            options, source, allowed=("dim", "num_components", "radius", "std", "means_seed")
        )
        if "dim" not in options:
            raise OptionError("'sphere_mixture' needs its dimension: pass dim=D")
        count = _require_num_samples(num_samples, source)
        return sphere_mixture(count, seed=seed, dtype=dtype, device=device, **options)
    names = ", ".join((*TOY_DATASETS, "digits", *IMAGE_DATASETS, "sphere_mixture"))
    raise OptionError(
        f"unknown dataset {source!r}; known datasets: {names}; "
        f"or a path to a {', '.join(SUPPORTED_SUFFIXES)} file"
    )


def _looks_like_path(source: object) -> bool:
    if not isinstance(source, str):
        return False
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return Path(source).suffix.lower() in SUPPORTED_SUFFIXES or any(
        separator in source for separator in separators
    )


def _require_num_samples(num_samples: int | None, name: str) -> int:
    if num_samples is None:
        raise OptionError(f"{name!r} is generated: pass num_samples")
    return num_samples


def _forbid_num_samples(num_samples: int | None, what: str) -> None:
    if num_samples is not None:
        raise OptionError(f"num_samples does not apply to {what}, whose size is fixed")


def _forbid_options(options: dict[str, Any], name: str, allowed: tuple[str, ...] = ()) -> None:
    unexpected = sorted(set(options) - set(allowed))
    if unexpected:
        takes = f"it takes: {', '.join(allowed)}" if allowed else "it takes none"
        raise OptionError(f"options {', '.join(unexpected)} do not apply to {name!r}; {takes}")
