"""The catalogue of every flow: name -> how to build it, plus what the docs and tests read."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from torch.distributions import Transform

from .autoregressive import Autoregressive, affine_autoregressive
from .compose import FlowSequence
from .coupling import Coupling, additive_coupling, affine_coupling
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
from .neural import neural_autoregressive
from .planar import Planar, planar
from .radial import Radial, radial
from .splines import Spline, spline, spline_autoregressive, spline_coupling
from .stacks import iaf, maf, naf, nice, nsf, realnvp

__all__ = ["REGISTRY", "FlowSpec", "build", "register"]


@dataclass(frozen=True)
class FlowSpec:
    """How to build one flow on vectors, and the facts the catalogue and the tests read.

    Attributes:
        name: registry key (the lowercase helper's name).
        builder: the helper; called as ``builder(input_dim, **kwargs)``, with
            ``context_dim=...`` added for conditional flows.
        family: flow family (``"elementwise"``, ``"linear"``, ``"planar"``, ...).
        inverse: ``"analytic"``, ``"numerical"`` or ``"none"``.
        log_det: ``"exact"`` or ``"unbiased"`` (stochastic estimate).
        conditional: whether ``context_dim > 0`` is supported.
        fast_direction: ``"forward"``, ``"inverse"`` or ``"both"``.
        forward_cost: cost of the forward map per sample (for the catalogue).
        inverse_cost: cost of the inverse per sample.
        reference: the paper, with its arXiv number.
        classes: the transform classes this entry builds (checked for registry completeness).
        event_dim: 1 for flows on vectors.

    Example:
        >>> from pyroflows.transforms import REGISTRY
        >>> spec = REGISTRY["radial"]
        >>> spec.family, spec.inverse, spec.fast_direction, spec.conditional
        ('radial', 'analytic', 'both', True)
        >>> spec.build(4, context_dim=2).context_dim
        2
    """

    name: str
    builder: Callable[..., Transform]
    family: str
    inverse: Literal["analytic", "numerical", "none"]
    log_det: Literal["exact", "unbiased"]
    conditional: bool
    fast_direction: Literal["forward", "inverse", "both"]
    forward_cost: str
    inverse_cost: str
    reference: str
    classes: tuple[type, ...] = field(default=())
    event_dim: int = 1

    def build(self, input_dim: int, context_dim: int = 0, **kwargs: Any) -> Transform:
        """Build the flow for events of size ``input_dim`` (conditional if ``context_dim``)."""
        if context_dim:
            if not self.conditional:
                raise ValueError(f"flow {self.name!r} has no conditional form (context_dim=0)")
            kwargs["context_dim"] = context_dim
        return self.builder(input_dim, **kwargs)


REGISTRY: dict[str, FlowSpec] = {}


def register(spec: FlowSpec) -> FlowSpec:
    """Add ``spec`` to :data:`REGISTRY`; names must be unique.

    A registered flow is picked up by the conformance tests, the catalogue and ``build``.

    Example:
        >>> from pyroflows.transforms import REGISTRY, FlowSpec, register
        >>> register(REGISTRY["planar"])
        Traceback (most recent call last):
        ...
        ValueError: a flow named 'planar' is already registered
    """
    if spec.name in REGISTRY:
        raise ValueError(f"a flow named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec


def build(name: str, input_dim: int, context_dim: int = 0, **kwargs: Any) -> Transform:
    """Build the registered flow ``name``; see :class:`FlowSpec`.

    Example:
        >>> from pyroflows.transforms import build
        >>> flow = build("planar", 3, context_dim=2)
        >>> flow.input_dim, flow.context_dim, REGISTRY["planar"].inverse
        (3, 2, 'numerical')
    """
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise KeyError(f"no flow named {name!r}; registered: {sorted(REGISTRY)}") from None
    return spec.build(input_dim, context_dim, **kwargs)


_RM2015 = "Rezende & Mohamed 2015, Variational Inference with Normalizing Flows, arXiv:1505.05770"
_GLOW = "Kingma & Dhariwal 2018, Glow, arXiv:1807.03039"
_IAF = "Kingma et al. 2016, Inverse Autoregressive Flow, arXiv:1606.04934"
_REALNVP = "Dinh et al. 2017, Density estimation using Real NVP, arXiv:1605.08803"
_NICE = "Dinh et al. 2015, NICE, arXiv:1410.8516"
_NSF = "Durkan et al. 2019, Neural Spline Flows, arXiv:1906.04032"
_NAF = "Huang et al. 2018, Neural Autoregressive Flows, arXiv:1804.00779"
_ANALYTIC_EXACT = {"inverse": "analytic", "log_det": "exact"}

for _spec in (
    FlowSpec(
        name="elementwise_affine",
        builder=elementwise_affine,
        family="elementwise",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D)",
        inverse_cost="O(D)",
        reference=_RM2015,
        classes=(ElementwiseAffine,),
    ),
    FlowSpec(
        name="leaky_relu",
        builder=leaky_relu,
        family="elementwise",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D)",
        inverse_cost="O(D)",
        reference="He et al. 2015, Delving Deep into Rectifiers (PReLU), arXiv:1502.01852",
        classes=(LeakyReLU,),
    ),
    FlowSpec(
        name="permutation",
        builder=permutation,
        family="linear",
        **_ANALYTIC_EXACT,
        conditional=False,
        fast_direction="both",
        forward_cost="O(D)",
        inverse_cost="O(D)",
        reference="Dinh et al. 2017, Density estimation using Real NVP, arXiv:1605.08803",
        classes=(PermutationTransform,),
    ),
    FlowSpec(
        name="actnorm",
        builder=actnorm,
        family="linear",
        **_ANALYTIC_EXACT,
        conditional=False,
        fast_direction="both",
        forward_cost="O(D)",
        inverse_cost="O(D)",
        reference=_GLOW,
        classes=(ActNorm,),
    ),
    FlowSpec(
        name="triangular",
        builder=triangular,
        family="linear",
        **_ANALYTIC_EXACT,
        conditional=False,
        fast_direction="both",
        forward_cost="O(D^2)",
        inverse_cost="O(D^2), one triangular solve",
        reference="Papamakarios et al. 2021, Normalizing Flows for Probabilistic Modeling "
        "and Inference, arXiv:1912.02762",
        classes=(TriangularLinear,),
    ),
    FlowSpec(
        name="lu_linear",
        builder=lu_linear,
        family="linear",
        **_ANALYTIC_EXACT,
        conditional=False,
        fast_direction="both",
        forward_cost="O(D^2), plus O(D^3) per call to form W",
        inverse_cost="O(D^2), two triangular solves",
        reference=_GLOW,
        classes=(LULinear,),
    ),
    FlowSpec(
        name="qr_linear",
        builder=qr_linear,
        family="linear",
        **_ANALYTIC_EXACT,
        conditional=False,
        fast_direction="both",
        forward_cost="O(D^2), plus O(K D^2) per call to form QR",
        inverse_cost="O(D^2), one triangular solve",
        reference="Hoogeboom et al. 2019, Emerging Convolutions, arXiv:1901.11137",
        classes=(QRLinear,),
    ),
    FlowSpec(
        name="householder",
        builder=householder,
        family="linear",
        **_ANALYTIC_EXACT,
        conditional=False,
        fast_direction="both",
        forward_cost="O(D^2), plus O(K D^2) per call to form Q",
        inverse_cost="O(D^2)",
        reference="Tomczak & Welling 2016, Householder Flow, arXiv:1611.09630",
        classes=(Householder,),
    ),
    FlowSpec(
        name="planar",
        builder=planar,
        family="planar",
        inverse="numerical",
        log_det="exact",
        conditional=True,
        fast_direction="forward",
        forward_cost="O(D)",
        inverse_cost="O(D) per Newton iteration (root finder)",
        reference=_RM2015,
        classes=(Planar,),
    ),
    FlowSpec(
        name="radial",
        builder=radial,
        family="radial",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D)",
        inverse_cost="O(D), closed form",
        reference=_RM2015,
        classes=(Radial,),
    ),
    FlowSpec(
        name="affine_autoregressive",
        builder=affine_autoregressive,
        family="autoregressive",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="forward",
        forward_cost="O(D H), one MADE pass",
        inverse_cost="O(D^2 H), D sequential MADE passes",
        reference=_IAF,
        classes=(Autoregressive,),
    ),
    FlowSpec(
        name="affine_coupling",
        builder=affine_coupling,
        family="coupling",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D H), one conditioner pass",
        inverse_cost="O(D H), one conditioner pass",
        reference=_REALNVP,
        classes=(Coupling,),
    ),
    FlowSpec(
        name="additive_coupling",
        builder=additive_coupling,
        family="coupling",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D H), one conditioner pass",
        inverse_cost="O(D H), one conditioner pass",
        reference=_NICE,
        classes=(Coupling,),
    ),
    FlowSpec(
        name="maf",
        builder=maf,
        family="autoregressive",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="inverse",
        forward_cost="O(L D^2 H), sequential sampling",
        inverse_cost="O(L D H), parallel density",
        reference="Papamakarios et al. 2017, Masked Autoregressive Flow, arXiv:1705.07057",
        classes=(FlowSequence,),
    ),
    FlowSpec(
        name="iaf",
        builder=iaf,
        family="autoregressive",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="forward",
        forward_cost="O(L D H), parallel sampling",
        inverse_cost="O(L D^2 H), sequential",
        reference=_IAF,
        classes=(FlowSequence,),
    ),
    FlowSpec(
        name="realnvp",
        builder=realnvp,
        family="coupling",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(L D H)",
        inverse_cost="O(L D H)",
        reference=_REALNVP,
        classes=(FlowSequence,),
    ),
    FlowSpec(
        name="nice",
        builder=nice,
        family="coupling",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(L D H)",
        inverse_cost="O(L D H)",
        reference=_NICE,
        classes=(FlowSequence,),
    ),
    FlowSpec(
        name="spline",
        builder=spline,
        family="elementwise",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D K)",
        inverse_cost="O(D K), analytic",
        reference=_NSF,
        classes=(Spline,),
    ),
    FlowSpec(
        name="spline_coupling",
        builder=spline_coupling,
        family="coupling",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(D H + D K H)",
        inverse_cost="O(D H + D K H), analytic",
        reference=_NSF,
        classes=(Coupling,),
    ),
    FlowSpec(
        name="spline_autoregressive",
        builder=spline_autoregressive,
        family="autoregressive",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="forward",
        forward_cost="O(D K H), one MADE pass",
        inverse_cost="O(D^2 K H), D sequential MADE passes",
        reference=_NSF,
        classes=(Autoregressive,),
    ),
    FlowSpec(
        name="nsf",
        builder=nsf,
        family="coupling",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="both",
        forward_cost="O(L D K H)",
        inverse_cost="O(L D K H)",
        reference=_NSF,
        classes=(FlowSequence,),
    ),
    FlowSpec(
        name="nsf_autoregressive",
        builder=partial(nsf, autoregressive=True),
        family="autoregressive",
        **_ANALYTIC_EXACT,
        conditional=True,
        fast_direction="inverse",
        forward_cost="O(L D^2 K H), sequential sampling",
        inverse_cost="O(L D K H), parallel density",
        reference=_NSF,
        classes=(FlowSequence,),
    ),
    FlowSpec(
        name="neural_autoregressive",
        builder=neural_autoregressive,
        family="autoregressive",
        inverse="numerical",
        log_det="exact",
        conditional=True,
        fast_direction="forward",
        forward_cost="O(D K H), one MADE pass",
        inverse_cost="O(D^2 K H), D sequential MADE passes, each with a root-find",
        reference=_NAF,
        classes=(Autoregressive,),
    ),
    FlowSpec(
        name="naf",
        builder=naf,
        family="autoregressive",
        inverse="numerical",
        log_det="exact",
        conditional=True,
        fast_direction="inverse",
        forward_cost="O(L D^2 K H), sequential sampling with root-finds",
        inverse_cost="O(L D K H), parallel density",
        reference=_NAF,
        classes=(FlowSequence,),
    ),
):
    register(_spec)
