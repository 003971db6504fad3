"""pyroflows: normalizing flows for Pyro, as density models and as variational posteriors.

The flows live in :mod:`pyroflows.transforms` (see :data:`pyroflows.transforms.REGISTRY`);
conditioner networks in :mod:`pyroflows.nn`; built-in toy data in :mod:`pyroflows.data`.
"""

from . import nn, transforms
from ._version import __version__
from .dequantization import DequantizedFlow, VariationalDequantizer
from .distributions import Flow
from .train import fit
from .transforms import REGISTRY, build

__all__ = [
    "REGISTRY",
    "DequantizedFlow",
    "Flow",
    "VariationalDequantizer",
    "__version__",
    "build",
    "fit",
    "nn",
    "transforms",
]
