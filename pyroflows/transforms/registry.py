"""The catalogue of every flow: name -> how to build it, plus what the docs and tests read.

A record is a :class:`FlowSpec`: a builder (a class, a ``functools.partial`` of one, or a
Pyro-named helper) and the few facts that differ from the defaults. Adding a flow family is its
module, one record here and its name in ``transforms/__init__.py`` (see ``CONTRIBUTING.md``).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from torch.distributions import Transform

from .autoregressive import Autoregressive
from .compose import FlowSequence
from .continuous import ContinuousFlow
from .convolution import InvertibleConv1x1
from .coupling import Coupling
from .elementwise import Elementwise, ElementwiseAffine, LeakyReLU, Spline
from .emerging import EmergingConv, PeriodicConv
from .helpers import (
    affine_autoregressive,
    affine_coupling,
    neural_autoregressive,
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
from .multiscale import MultiScale
from .planar import Planar
from .preprocessing import FixedAffine, LogitTransform
from .radial import Radial
from .residual import Residual, iresnet, residual
from .stacks import iaf, maf, naf, nice, nsf, realnvp
from .transformers import Additive, DeepSigmoid

__all__ = ["REGISTRY", "FlowSpec", "build", "register", "spec_of"]


@dataclass(frozen=True)
class FlowSpec:
    """How to build one flow, and the facts the catalogue and the tests read.

    Attributes:
        name: registry key.
        builder: a class or callable, called as ``builder(event, **kwargs)`` (``event``: the
            event size :math:`D`, or an event shape), with ``context_dim=...`` added for
            conditional flows.
        family: flow family (``"elementwise"``, ``"linear"``, ``"planar"``, ...).
        forward_cost: cost of the forward map per sample (for the catalogue).
        inverse_cost: cost of the inverse per sample.
        reference: the paper, with its arXiv number.
        classes: the transform classes this entry builds (checked for registry completeness).
        inverse: ``"analytic"`` (default), ``"numerical"`` or ``"none"``.
        log_det: ``"exact"`` (default); ``"unbiased"``, a stochastic estimate whose mean is
            the log-det (Russian roulette, Residual Flows; the Hutchinson trace, FFJORD); or
            ``"biased"``, a stochastic estimate with a bias that shrinks with its number of
            terms (a truncated power series, i-ResNet). The conformance suite checks both
            kinds against autograd with their estimator switched to the exact one
            (``set_log_det(flow, "exact")``), and ``tests/transforms/test_residual.py`` and
            ``tests/transforms/test_continuous.py`` check the estimators statistically.
        conditional: whether ``context_dim > 0`` is supported (default ``True``).
        fast_direction: ``"forward"``, ``"inverse"`` or ``"both"`` (default).
        event_dims: the event ranks the flow accepts: ``(1,)`` for vectors only (default);
            ``(1, 3)`` also takes ``(C, H, W)`` images; ``(3,)`` images only.
        density_inverted: ``True`` when a density model uses the flow inverted
            (``Flow.build`` does): the residual flows, whose forward map
            :math:`y = x + g(x)` is cheap and whose inverse is a fixed-point iteration, are
            put on the data side the other way round, so that ``log_prob`` runs the cheap
            map and sampling the iterations (default ``False``; planar layers, also cheap
            forward with a numerical inverse, keep their orientation for compatibility:
            use ``planar(D).inv`` by hand, see :doc:`/choosing`).
        fixed: ``True`` for a fixed map with nothing to train (``family="preprocessing"``):
            a step of a model's chain, not a flow to fit, so ``Flow.build``, the guides and the
            command line refuse it (default ``False``).

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
    forward_cost: str
    inverse_cost: str
    reference: str
    classes: tuple[type, ...]
    inverse: Literal["analytic", "numerical", "none"] = "analytic"
    log_det: Literal["exact", "unbiased", "biased"] = "exact"
    conditional: bool = True
    fast_direction: Literal["forward", "inverse", "both"] = "both"
    event_dims: tuple[int, ...] = (1,)
    fixed: bool = False
    density_inverted: bool = False

    def options(self) -> tuple[str, ...] | None:
        """The keyword arguments the builder takes besides the event and ``context_dim``.

        ``None`` when the builder takes ``**kwargs`` (any name may be valid) or has no
        signature to read.

        Example:
            >>> from pyroflows.transforms import REGISTRY
            >>> REGISTRY["radial"].options()
            ('hidden_dims',)
        """
        try:
            parameters = list(inspect.signature(self.builder).parameters.values())
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        return tuple(
            p.name
            for p in parameters[1:]  # the first one is the event size or shape
            if p.name != "context_dim"
            and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )

    def check_options(self, **kwargs: Any) -> None:
        """Reject keyword arguments the builder does not take, before anything is built.

        Guides that build their flow later (at the first SVI step) call this at construction,
        so a misspelt option fails at once; :meth:`build` calls it too. ``context_dim`` is
        not an option: it is given to :meth:`build` (or set by the caller) on its own.

        Raises:
            TypeError: naming the unknown arguments, the closest accepted names and all the
                accepted ones.

        Example:
            >>> from pyroflows.transforms import REGISTRY
            >>> try:
            ...     REGISTRY["iaf"].check_options(hidden_dim=[10])
            ... except TypeError as error:
            ...     for part in str(error).split("; "):
            ...         print(part)
            flow 'iaf' got unknown option 'hidden_dim' (did you mean 'hidden_dims'?)
            it accepts: hidden_dims, num_layers, stable, transformer, activation
        """
        accepted = self.options()
        if accepted is None:
            return
        unknown = [name for name in kwargs if name not in accepted]
        if not unknown:
            return
        hints = [
            f"{name!r} (did you mean {close[0]!r}?)"
            if (close := difflib.get_close_matches(name, accepted, n=1))
            else repr(name)
            for name in unknown
        ]
        plural = "s" if len(unknown) > 1 else ""
        raise TypeError(
            f"flow {self.name!r} got unknown option{plural} {', '.join(hints)}; it accepts: "
            + (", ".join(accepted) if accepted else "no options")
        )

    def build(self, event: int | Sequence[int], context_dim: int = 0, **kwargs: Any) -> Transform:
        """Build the flow for events of size (or shape) ``event``, with a context if asked.

        Unknown keyword arguments raise a ``TypeError`` (:meth:`check_options`).
        """
        self.check_options(**kwargs)
        rank = 1 if isinstance(event, int) else len(tuple(event))
        if rank not in self.event_dims:
            raise ValueError(
                f"flow {self.name!r} takes events of rank {self.event_dims}, got the event "
                f"shape {tuple(event) if rank != 1 else event}"
            )
        if context_dim:
            if not self.conditional:
                raise ValueError(f"flow {self.name!r} has no conditional form (context_dim=0)")
            kwargs["context_dim"] = context_dim
        return self.builder(event, **kwargs)


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


def spec_of(name: str, *, learnable: bool = False) -> FlowSpec:
    """The :class:`FlowSpec` named ``name``, with an error listing the names if there is none.

    With ``learnable=True`` a fixed preprocessing map (``spec.fixed``) is refused too: models
    and guides fit flows, and apply those maps themselves.

    Example:
        >>> spec_of("radial").family
        'radial'
        >>> spec_of("logit", learnable=True)
        Traceback (most recent call last):
        ...
        ValueError: 'logit' is a fixed preprocessing map with nothing to fit
    """
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise KeyError(f"no flow named {name!r}; registered: {sorted(REGISTRY)}") from None
    if learnable and spec.fixed:
        raise ValueError(f"{name!r} is a fixed preprocessing map with nothing to fit")
    return spec


def build(name: str, event: int | Sequence[int], context_dim: int = 0, **kwargs: Any) -> Transform:
    """Build the registered flow ``name``; see :class:`FlowSpec`.

    Example:
        >>> from pyroflows.transforms import build
        >>> flow = build("planar", 3, context_dim=2)
        >>> flow.input_dim, flow.context_dim, REGISTRY["planar"].inverse
        (3, 2, 'numerical')
    """
    return spec_of(name).build(event, context_dim, **kwargs)


# One citation per paper.
_RM2015 = "Rezende & Mohamed 2015, Variational Inference with Normalizing Flows, arXiv:1505.05770"
_GLOW = "Kingma & Dhariwal 2018, Glow, arXiv:1807.03039"
_IAF = "Kingma et al. 2016, Inverse Autoregressive Flow, arXiv:1606.04934"
_REALNVP = "Dinh et al. 2017, Density estimation using Real NVP, arXiv:1605.08803"
_NICE = "Dinh et al. 2015, NICE, arXiv:1410.8516"
_NSF = "Durkan et al. 2019, Neural Spline Flows, arXiv:1906.04032"
_NAF = "Huang et al. 2018, Neural Autoregressive Flows, arXiv:1804.00779"
_MAF = "Papamakarios et al. 2017, Masked Autoregressive Flow, arXiv:1705.07057"
_REVIEW = (
    "Papamakarios et al. 2021, Normalizing Flows for Probabilistic Modeling and Inference, "
    "arXiv:1912.02762"
)
_RESFLOW = "Chen et al. 2019, Residual Flows for Invertible Generative Modeling, arXiv:1906.02735"
_IRESNET = "Behrmann et al. 2019, Invertible Residual Networks, arXiv:1811.00995"
_IMAGES = (1, 3)  # vectors, and (C, H, W) images
_IMAGES_ONLY = (3,)  # (C, H, W) images only

# fmt: off
for _spec in (
    # -- element-wise: any transformer, any event shape ------------------------------------
    FlowSpec("elementwise_affine", ElementwiseAffine, "elementwise", "O(D)", "O(D)", _RM2015,
             (ElementwiseAffine,), event_dims=_IMAGES),
    FlowSpec("leaky_relu", LeakyReLU, "elementwise", "O(D)", "O(D)",
             "He et al. 2015, Delving Deep into Rectifiers (PReLU), arXiv:1502.01852",
             (LeakyReLU,), event_dims=_IMAGES),
    # event_dim=None: the whole event (log-det of the batch shape), not Pyro's per element
    FlowSpec("spline", partial(Spline, event_dim=None), "elementwise", "O(D K)",
             "O(D K), analytic", _NSF, (Spline,), event_dims=_IMAGES),
    FlowSpec("deep_sigmoid", partial(Elementwise, transformer=DeepSigmoid()),
             "elementwise", "O(D K)", "O(D K) per root-finder iteration", _NAF, (Elementwise,),
             inverse="numerical", event_dims=_IMAGES),
    # -- linear -------------------------------------------------------------------------------
    FlowSpec("permutation", permutation, "linear", "O(D)", "O(D)", _REALNVP, (Permutation,),
             conditional=False),
    FlowSpec("actnorm", ActNorm, "linear", "O(D)", "O(D)", _GLOW, (ActNorm,), conditional=False,
             event_dims=_IMAGES),
    FlowSpec("triangular", TriangularLinear, "linear", "O(D^2)",
             "O(D^2), one triangular solve", _REVIEW, (TriangularLinear,), conditional=False),
    FlowSpec("lu_linear", LULinear, "linear", "O(D^2), plus O(D^3) per call to form W",
             "O(D^2), two triangular solves", _GLOW, (LULinear,), conditional=False),
    FlowSpec("qr_linear", QRLinear, "linear", "O(D^2), plus O(K D^2) per call to form QR",
             "O(D^2), one triangular solve",
             "Hoogeboom et al. 2019, Emerging Convolutions, arXiv:1901.11137", (QRLinear,),
             conditional=False),
    FlowSpec("householder", Householder, "linear", "O(D^2), plus O(K D^2) per call to form Q",
             "O(D^2)", "Tomczak & Welling 2016, Householder Flow, arXiv:1611.09630",
             (Householder,), conditional=False),
    FlowSpec("conv1x1", InvertibleConv1x1, "linear",
             "O(C^2) per pixel, plus O(C^3) per call to form W",
             "O(C^2) per pixel, plus O(C^3) per call to form W^-1 by two triangular solves",
             _GLOW, (InvertibleConv1x1,), conditional=False, event_dims=_IMAGES_ONLY),
    FlowSpec("emerging_conv", EmergingConv, "linear",
             "O(m^2 C^2) per pixel, two masked convolutions with m = (k + 1) / 2",
             "O(m W C^2) per pixel, H sequential row solves per convolution",
             "Hoogeboom et al. 2019, Emerging Convolutions, arXiv:1901.11137", (EmergingConv,),
             conditional=False, fast_direction="forward", event_dims=_IMAGES_ONLY),
    FlowSpec("periodic_conv", PeriodicConv, "linear",
             "O(C log(H W) + C^2) per pixel (FFT), plus O(C^3 H W) per call for the log-det",
             "O(C log(H W) + C^2) per pixel (FFT), plus O(C^3 H W) per call to invert",
             "Hoogeboom et al. 2019, Emerging Convolutions, arXiv:1901.11137", (PeriodicConv,),
             conditional=False, event_dims=_IMAGES_ONLY),
    # -- planar and radial --------------------------------------------------------------------
    FlowSpec("planar", Planar, "planar", "O(D)", "O(D) per Newton iteration (root finder)",
             _RM2015, (Planar,), inverse="numerical", fast_direction="forward"),
    FlowSpec("radial", Radial, "radial", "O(D)", "O(D), closed form", _RM2015, (Radial,)),
    # -- coupling: structure x transformer, and stacks ------------------------------------
    FlowSpec("affine_coupling", affine_coupling, "coupling", "O(D H), one conditioner pass",
             "O(D H), one conditioner pass", _REALNVP, (Coupling,)),
    FlowSpec("additive_coupling", partial(Coupling, transformer=Additive()), "coupling",
             "O(D H), one conditioner pass", "O(D H), one conditioner pass", _NICE, (Coupling,)),
    FlowSpec("spline_coupling", spline_coupling, "coupling", "O(D H + D K H)",
             "O(D H + D K H), analytic", _NSF, (Coupling,)),
    FlowSpec("conv_affine_coupling", ConvCoupling, "coupling",
             "O(H W B F^2), one ResNet pass", "O(H W B F^2), one ResNet pass", _REALNVP,
             (ConvCoupling,), event_dims=_IMAGES_ONLY),
    FlowSpec("conv_additive_coupling", partial(ConvCoupling, transformer=Additive()), "coupling",
             "O(H W B F^2), one ResNet pass", "O(H W B F^2), one ResNet pass", _NICE,
             (ConvCoupling,), event_dims=_IMAGES_ONLY),
    FlowSpec("glow", glow, "coupling",
             "O(L K H W (C^2 + F^2)), one ResNet pass per step",
             "O(L K H W (C^2 + F^2)), one ResNet pass per step", _GLOW, (MultiScale,),
             event_dims=_IMAGES_ONLY),
    FlowSpec("realnvp_image", realnvp_image, "coupling",
             "O(7 L H W B F^2), one ResNet pass per coupling",
             "O(7 L H W B F^2), one ResNet pass per coupling", _REALNVP,
             (MultiScale, FlowSequence), event_dims=_IMAGES_ONLY),
    FlowSpec("realnvp", realnvp, "coupling", "O(L D H)", "O(L D H)", _REALNVP, (FlowSequence,)),
    FlowSpec("nice", nice, "coupling", "O(L D H)", "O(L D H)", _NICE, (FlowSequence,)),
    FlowSpec("nsf", nsf, "coupling", "O(L D K H)", "O(L D K H)", _NSF, (FlowSequence,)),
    # -- autoregressive: structure x transformer, and stacks ------------------------------
    FlowSpec("affine_autoregressive", affine_autoregressive, "autoregressive",
             "O(D H), one MADE pass", "O(D^2 H), D sequential MADE passes", _IAF,
             (Autoregressive,), fast_direction="forward"),
    FlowSpec("spline_autoregressive", spline_autoregressive, "autoregressive",
             "O(D K H), one MADE pass", "O(D^2 K H), D sequential MADE passes", _NSF,
             (Autoregressive,), fast_direction="forward"),
    FlowSpec("neural_autoregressive", neural_autoregressive, "autoregressive",
             "O(D K H), one MADE pass",
             "O(D^2 K H), D sequential MADE passes, each with a root-find", _NAF,
             (Autoregressive,), inverse="numerical", fast_direction="forward"),
    FlowSpec("maf", maf, "autoregressive", "O(L D^2 H), sequential sampling",
             "O(L D H), parallel density", _MAF, (FlowSequence,), fast_direction="inverse"),
    FlowSpec("iaf", iaf, "autoregressive", "O(L D H), parallel sampling",
             "O(L D^2 H), sequential", _IAF, (FlowSequence,), fast_direction="forward"),
    FlowSpec("nsf_autoregressive", partial(nsf, autoregressive=True), "autoregressive",
             "O(L D^2 K H), sequential sampling", "O(L D K H), parallel density", _NSF,
             (FlowSequence,), fast_direction="inverse"),
    FlowSpec("naf", naf, "autoregressive", "O(L D^2 K H), sequential sampling with root-finds",
             "O(L D K H), parallel density", _NAF, (FlowSequence,), inverse="numerical",
             fast_direction="inverse"),
    # -- residual: y = x + g(x) with Lip(g) < 1, numerical inverse, estimated log-det ------
    FlowSpec("residual", residual, "residual",
             "O(L H^2) for the map, plus n_exact + (1 - p) / p (default 3 expected) "
             "vector-Jacobian products of g per block for the log-det",
             "O(L H^2) per fixed-point iteration (Anderson-accelerated; plain: error ~ coeff^k)",
             _RESFLOW,
             (FlowSequence, Residual), inverse="numerical", log_det="unbiased",
             fast_direction="forward", density_inverted=True),
    FlowSpec("iresnet", iresnet, "residual",
             "O(L H^2) for the map, plus n_terms (default 5) vector-Jacobian products of g "
             "per block for the log-det",
             "O(L H^2) per fixed-point iteration (Anderson-accelerated; plain: error ~ coeff^k)",
             _IRESNET,
             (FlowSequence, Residual), inverse="numerical", log_det="biased",
             fast_direction="forward", density_inverted=True),
    # -- continuous: an ODE solved by torchdiffeq (the optional extra "ode") ----------------
    # log_det "unbiased": the default Hutchinson trace; trace="exact" gives the exact one
    FlowSpec("ffjord", ContinuousFlow, "continuous",
             "O(NFE H^2) Hutchinson, O(NFE D H^2) exact trace; NFE set by rtol/atol",
             "O(NFE H^2), the ODE solved backwards (numerical, to the solver's tolerance)",
             "Grathwohl et al. 2019, FFJORD, arXiv:1810.01367", (ContinuousFlow,),
             inverse="numerical", log_det="unbiased"),
    # -- preprocessing: fixed maps, the data side of a model's chain ----------------------
    FlowSpec("fixed_affine", FixedAffine, "preprocessing", "O(D)", "O(D)", _MAF,
             (FixedAffine,), conditional=False, event_dims=_IMAGES, fixed=True),
    FlowSpec("logit", LogitTransform, "preprocessing", "O(D)", "O(D)", _REALNVP,
             (LogitTransform,), conditional=False, event_dims=_IMAGES, fixed=True),
):
    register(_spec)
# fmt: on
