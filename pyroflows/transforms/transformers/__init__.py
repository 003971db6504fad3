"""Every element-wise transformer, in one place (see :mod:`.base` for the interface).

A transformer combines with any of the three structures: ``Elementwise(transformer=...)``,
``Coupling(transformer=...)`` and ``Autoregressive(transformer=...)``.
"""

from .affine import Additive, Affine, PReLU
from .base import ElementwiseTransformer
from .sigmoid import DeepSigmoid
from .spline import RationalQuadraticSpline

__all__ = [
    "Additive",
    "Affine",
    "DeepSigmoid",
    "ElementwiseTransformer",
    "PReLU",
    "RationalQuadraticSpline",
]
