"""Every element-wise transformer, in one place.

The interface is :class:`~pyroflows.transforms.ElementwiseTransformer` (:mod:`.base`).

A transformer combines with any of the three structures: ``Elementwise(transformer=...)``,
``Coupling(transformer=...)`` and ``Autoregressive(transformer=...)``.
"""

from .affine import Additive, Affine, PReLU
from .base import ElementwiseTransformer
from .sigmoid import DeepSigmoid
from .spline import RationalQuadraticSpline, SplineTails, spline_tails

__all__ = [
    "Additive",
    "Affine",
    "DeepSigmoid",
    "ElementwiseTransformer",
    "PReLU",
    "RationalQuadraticSpline",
    "SplineTails",
    "spline_tails",
]
