"""Every pyroflows transform, the structures and transformers they are made of, and the registry.

A flow is a :class:`~pyro.distributions.torch_transform.TransformModule` with the public passes
``forward_and_log_det`` and ``inverse_and_log_det``; the ones built with ``context_dim > 0`` are
also conditional (``flow.condition(context)``). Three structures (:class:`Elementwise`,
:class:`Coupling`, :class:`Autoregressive`) take any element-wise transformer
(:class:`Affine`, :class:`Additive`, :class:`PReLU`, :class:`RationalQuadraticSpline`,
:class:`DeepSigmoid`). Two fixed maps, :class:`FixedAffine` and :class:`LogitTransform`, carry a
model's data to the flow's space. See :data:`REGISTRY` for the catalogue.
"""

import warnings
from typing import Any

from torch.distributions.transforms import identity_transform

from ._auxiliary import auxiliary_loss, has_auxiliary_loss
from ._base import (
    ConditionedFlow,
    FlowModule,
    FlowView,
    InverseFlow,
    InverseNotConvergedError,
    InverseNotConvergedWarning,
    RootFinder,
)
from .autoregressive import Autoregressive
from .compose import FlowSequence
from .continuous import ContinuousFlow, SolverError
from .convolution import InvertibleConv1x1
from .coupling import Coupling, coupling_mask
from .elementwise import Elementwise, ElementwiseAffine, LeakyReLU, Spline
from .emerging import EmergingConv, PeriodicConv
from .helpers import (
    affine_autoregressive,
    affine_coupling,
    conditional_affine_autoregressive,
    conditional_affine_coupling,
    conditional_neural_autoregressive,
    conditional_planar,
    conditional_radial,
    conditional_spline,
    conditional_spline_autoregressive,
    householder,
    iterated,
    neural_autoregressive,
    permute,
    planar,
    radial,
    spline,
    spline_autoregressive,
    spline_coupling,
)
from .image_coupling import ConvCoupling
from .image_stacks import glow, realnvp_image
from .linear import (
    ActNorm,
    Householder,
    LULinear,
    Permutation,
    QRLinear,
    TriangularLinear,
    permutation,
)
from .multiscale import MultiScale, Squeeze
from .planar import Planar
from .preprocessing import FixedAffine, LogitTransform
from .pyro_compat import (
    MISSING_HELPERS,
    PYRO_MISSING,
    AffineAutoregressive,
    AffineCoupling,
    ConditionalAffineAutoregressive,
    ConditionalAffineCoupling,
    ConditionalSplineAutoregressive,
    SplineAutoregressive,
    elu,
    leaky_relu,
    tanh,
)
from .radial import Radial
from .registry import REGISTRY, FlowSpec, build, register, spec_of
from .residual import Residual, exact_log_det, iresnet, residual, set_log_det
from .stacks import autoregressive_stack, coupling_stack, iaf, maf, naf, nice, nsf, realnvp
from .transformers import (
    Additive,
    Affine,
    DeepSigmoid,
    ElementwiseTransformer,
    PReLU,
    RationalQuadraticSpline,
    SplineTails,
    spline_tails,
)

__all__ = [
    "PYRO_MISSING",
    "REGISTRY",
    "ActNorm",
    "Additive",
    "Affine",
    "AffineAutoregressive",
    "AffineCoupling",
    "Autoregressive",
    "ConditionalAffineAutoregressive",
    "ConditionalAffineCoupling",
    "ConditionalSplineAutoregressive",
    "ConditionedFlow",
    "ContinuousFlow",
    "ConvCoupling",
    "Coupling",
    "DeepSigmoid",
    "Elementwise",
    "ElementwiseAffine",
    "ElementwiseTransformer",
    "EmergingConv",
    "FixedAffine",
    "FlowModule",
    "FlowSequence",
    "FlowSpec",
    "FlowView",
    "Householder",
    "InverseFlow",
    "InverseNotConvergedError",
    "InverseNotConvergedWarning",
    "InvertibleConv1x1",
    "LULinear",
    "LeakyReLU",
    "LogitTransform",
    "MultiScale",
    "PReLU",
    "PeriodicConv",
    "Permutation",
    "Planar",
    "QRLinear",
    "Radial",
    "RationalQuadraticSpline",
    "Residual",
    "RootFinder",
    "SolverError",
    "Spline",
    "SplineAutoregressive",
    "SplineTails",
    "Squeeze",
    "TriangularLinear",
    "affine_autoregressive",
    "affine_coupling",
    "autoregressive_stack",
    "auxiliary_loss",
    "build",
    "conditional_affine_autoregressive",
    "conditional_affine_coupling",
    "conditional_neural_autoregressive",
    "conditional_planar",
    "conditional_radial",
    "conditional_spline",
    "conditional_spline_autoregressive",
    "coupling_mask",
    "coupling_stack",
    "elu",
    "exact_log_det",
    "glow",
    "has_auxiliary_loss",
    "householder",
    "iaf",
    "iresnet",
    "iterated",
    "leaky_relu",
    "maf",
    "naf",
    "neural_autoregressive",
    "nice",
    "nsf",
    "permutation",
    "permute",
    "planar",
    "radial",
    "realnvp",
    "realnvp_image",
    "register",
    "residual",
    "set_log_det",
    "spec_of",
    "spline",
    "spline_autoregressive",
    "spline_coupling",
    "spline_tails",
    "tanh",
]


def _additive_coupling(input_dim, hidden_dims=None, mask=None, *, context_dim=0) -> Coupling:
    return Coupling(input_dim, hidden_dims, Additive(), mask, context_dim=context_dim)


# Names that were one-line aliases of a class: they still work, with a DeprecationWarning that
# names the replacement (same arguments), until the next minor release.
_DEPRECATED: dict[str, tuple[Any, str]] = {
    "PermutationTransform": (Permutation, "Permutation"),
    "actnorm": (ActNorm, "ActNorm"),
    "additive_coupling": (_additive_coupling, "Coupling(..., transformer=Additive())"),
    "elementwise_affine": (ElementwiseAffine, "ElementwiseAffine"),
    "lu_linear": (LULinear, "LULinear"),
    "qr_linear": (QRLinear, "QRLinear"),
    "triangular": (TriangularLinear, "TriangularLinear"),
}


def __getattr__(name: str) -> Any:
    # Pyro's helpers of families pyroflows does not have: they exist, and raise when called.
    if name in MISSING_HELPERS:
        return MISSING_HELPERS[name]
    if name == "identity_transform":  # Pyro re-exports torch's
        return identity_transform
    if name in _DEPRECATED:
        target, replacement = _DEPRECATED[name]
        warnings.warn(
            f"pyroflows.transforms.{name} is deprecated; use {replacement} (same arguments)",
            DeprecationWarning,
            stacklevel=2,
        )
        return target
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
