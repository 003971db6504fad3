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
from .autoregressive import Autoregressive, affine_autoregressive
from .compose import FlowSequence
from .coupling import Coupling, additive_coupling, affine_coupling, coupling_mask
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
from .neural import DeepSigmoid, neural_autoregressive
from .planar import Planar, planar
from .radial import Radial, radial
from .registry import REGISTRY, FlowSpec, build, register
from .splines import (
    RationalQuadraticSpline,
    Spline,
    spline,
    spline_autoregressive,
    spline_coupling,
)
from .stacks import iaf, maf, naf, nice, nsf, realnvp
from .transformers import Additive, Affine, ElementwiseTransformer

__all__ = [
    "REGISTRY",
    "ActNorm",
    "Additive",
    "Affine",
    "Autoregressive",
    "ConditionedFlow",
    "Coupling",
    "DeepSigmoid",
    "ElementwiseAffine",
    "ElementwiseTransformer",
    "FlowModule",
    "FlowSequence",
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
    "RationalQuadraticSpline",
    "RootFinder",
    "Spline",
    "TriangularLinear",
    "actnorm",
    "additive_coupling",
    "affine_autoregressive",
    "affine_coupling",
    "build",
    "coupling_mask",
    "elementwise_affine",
    "householder",
    "iaf",
    "leaky_relu",
    "lu_linear",
    "maf",
    "naf",
    "neural_autoregressive",
    "nice",
    "nsf",
    "permutation",
    "planar",
    "qr_linear",
    "radial",
    "realnvp",
    "register",
    "spline",
    "spline_autoregressive",
    "spline_coupling",
    "triangular",
]
