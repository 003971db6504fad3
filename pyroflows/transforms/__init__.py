"""Every pyroflows transform, the lowercase helpers that build them, and the registry.

A flow is a :class:`~pyro.distributions.torch_transform.TransformModule`; the ones built with
``context_dim > 0`` are also conditional (``flow.condition(context)``). See
:data:`REGISTRY` for the catalogue.
"""

from ._base import (
    ConditionedFlow,
    FlowModule,
    InverseFlow,
    InverseNotConvergedError,
    InverseNotConvergedWarning,
    RootFinder,
)
from .elementwise import ElementwiseAffine, LeakyReLU, elementwise_affine, leaky_relu
from .linear import (
    ActNorm,
    Householder,
    LULinear,
    PermutationTransform,
    QRLinear,
    TriangularLinear,
    actnorm,
    householder,
    lu_linear,
    permutation,
    qr_linear,
    triangular,
)
from .planar import Planar, planar
from .radial import Radial, radial
from .registry import REGISTRY, FlowSpec, build, register

__all__ = [
    "REGISTRY",
    "ActNorm",
    "ConditionedFlow",
    "ElementwiseAffine",
    "FlowModule",
    "FlowSpec",
    "Householder",
    "InverseFlow",
    "InverseNotConvergedError",
    "InverseNotConvergedWarning",
    "LULinear",
    "LeakyReLU",
    "PermutationTransform",
    "Planar",
    "QRLinear",
    "Radial",
    "RootFinder",
    "TriangularLinear",
    "actnorm",
    "build",
    "elementwise_affine",
    "householder",
    "leaky_relu",
    "lu_linear",
    "permutation",
    "planar",
    "qr_linear",
    "radial",
    "register",
    "triangular",
]
