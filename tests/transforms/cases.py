"""Building registry flows for the generic tests: cases, preparation, tolerance table."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Transform, biject_to, constraints

from pyroflows.nn.lipschitz import SpectralNormLinear
from pyroflows.transforms import REGISTRY, set_log_det

CONTEXT_DIM = 2
VECTOR = (3,)
IMAGE = (2, 4, 4)  # (C, H, W): the same checks on image-shaped events


@dataclass(frozen=True)
class Case:
    """One registry entry, unconditional or conditioned on a context of size CONTEXT_DIM,
    on vectors (VECTOR) or, for flows that take them, images (IMAGE)."""

    name: str
    context_dim: int = 0
    event_shape: tuple[int, ...] = VECTOR

    @property
    def spec(self):
        return REGISTRY[self.name]

    @property
    def conditional(self) -> bool:
        return self.context_dim > 0

    @property
    def is_image(self) -> bool:
        return len(self.event_shape) == 3

    @property
    def id(self) -> str:
        name = f"{self.name}|ctx" if self.conditional else self.name
        return name + ("@" + "x".join(map(str, self.event_shape)) if self.is_image else "")

    def shape(self, size: int) -> tuple[int, ...]:
        """An event shape of this case's rank with ``size`` elements (2 or 3 in the tests)."""
        return (size, 1, 1) if self.is_image else (size,)


def _cases(event_shape):
    rank = len(event_shape)
    specs = {name: spec for name, spec in REGISTRY.items() if rank in spec.event_dims}
    return [Case(name, 0, event_shape) for name in specs] + [
        Case(name, CONTEXT_DIM, event_shape) for name, spec in specs.items() if spec.conditional
    ]


CASES = _cases(VECTOR) + _cases(IMAGE)
CASE_IDS = [case.id for case in CASES]

# Loosened tolerances, one entry each with its reason. Default: float64 1e-10, float32 1e-4.
TOLERANCE_FLOAT64 = {
    "planar": (1e-9, "numerical inverse: root finder tolerance eps**0.75 then one Newton step"),
}
_SPLINE_FLOAT32 = (
    "4 perturbed spline layers with knot slopes down to 1e-3: each inverse amplifies float32 "
    "rounding up to 1000-fold"
)
_GLOW_FLOAT32 = (
    "2 levels of 2 perturbed Glow steps (ActNorm log-scales moved by N(0, 0.25) per channel, "
    "1x1 convolutions, conv couplings) map the (2, 4, 4) test inputs to values up to 4e4; "
    "their float32 rounding, carried back through the contracting inverse, gives round-trip "
    "errors up to 2.7e-2 (measured over make_flow seeds 0-5; float64 round trips 3e-13)"
)
TOLERANCE_FLOAT32 = {
    "glow": (3e-2, _GLOW_FLOAT32),
    "nsf": (5e-3, _SPLINE_FLOAT32),
    "nsf_autoregressive": (5e-3, _SPLINE_FLOAT32),
    "qr_linear": (5e-4, "QR inverse: Householder product and triangular solve in float32"),
    "lu_linear": (5e-4, "two float32 triangular solves with a random orthogonal start"),
}


# Round trips of inputs up to 1e3 in float64, relative to the input's size. Default 1e-9.
_DEEP_STACK = (
    "far from the data every layer of a perturbed stack sits at its log-scale clamp, so 4-8 "
    "layers contracting by up to e^-5 each reach condition numbers up to e^40: the check is "
    "that the round trip stays finite and close, not float64-exact"
)
_PREFIX_PASSES = (
    "the inverse evaluates MADE on prefixes (MADE.sequential), whose matrix products sum in a "
    "different order than the forward's full pass; far from the origin the conditioner's "
    "outputs reach hundreds and knot slopes down to 1e-3 amplify those 1e-16 relative "
    "differences (measured 2e-9 of the input's size at x = (450, 0, 0), spline|ctx)"
)
TOLERANCE_FAR = {
    **{
        name: (1e-3, _DEEP_STACK)
        for name in ("maf", "iaf", "realnvp", "nice", "nsf", "nsf_autoregressive", "naf", "glow")
    },
    **{name: (1e-7, _PREFIX_PASSES) for name in ("spline_autoregressive", "neural_autoregressive")},
}

# |integral of the density - 1| on the test grid. Default 1e-4.
_SPLINE_QUADRATURE = (
    "spline densities have steep pieces (knot slopes down to 1e-3) that 0.05-wide cells "
    "resolve to a few 1e-4 (refining the grid converges to 1)"
)
_SPLINE_STACK_QUADRATURE = (
    "four stacked spline layers compound the steep pieces: measured 0.99787 for "
    "nsf_autoregressive|ctx at 0.05-wide cells, 1.00006 at 0.0125-wide cells (quadrature error, "
    "no mass outside the grid in 2e5 samples)"
)
TOLERANCE_DENSITY = {
    **{
        name: (1e-3, _SPLINE_QUADRATURE)
        for name in ("spline", "spline_coupling", "spline_autoregressive")
    },
    **{name: (3e-3, _SPLINE_STACK_QUADRATURE) for name in ("nsf", "nsf_autoregressive")},
}


# Checks that cannot apply to a flow, one entry each with its reason.
_BOUNDED_DOMAIN = (
    "the domain is a bounded interval: no input is far from the origin, and the inputs that "
    "biject_to(domain) makes of values up to 1e3 are its ends, where the logit is infinite; the "
    "ends and the saturated sigmoid are tested in tests/transforms/test_preprocessing.py"
)
_REALNVP_IMAGE_FAR = (
    "10 perturbed checkerboard and channel couplings lie on the path of the kept channels: "
    "inputs of 1e3 make outputs up to 1.5e8 and conditioner shifts of that size, whose "
    "cancellation in each inverse coupling is amplified by up to e^5 (the log-scale clamp): "
    "measured round-trip errors up to 0.77x the input's size at 1e3 in float64; "
    "round trips at data scale are checked by test_round_trip_both_ways"
)
SKIP_FAR = {"logit": _BOUNDED_DOMAIN, "realnvp_image": _REALNVP_IMAGE_FAR}
_SQUEEZES = (
    "multi-scale stacks squeeze: H and W must be even (multiples of 4 for two levels), so no "
    "image of two elements exists for the 2-D quadrature; each part (conv couplings, ActNorm, "
    "conv1x1) passes it on its own, and the stacks' log-dets are checked against autograd"
)
SKIP_DENSITY = {"glow": _SQUEEZES, "realnvp_image": _SQUEEZES}
# Flows whose forward pass checks its input range while Pyro's validation is on: a NaN is
# "outside" and raises (tested in test_preprocessing.py), so the NaN-propagation check runs
# with validation off.
RANGE_CHECKED = {"logit": "the range check (under Pyro validation) rejects NaN inputs"}


def _fixed_affine_options(shape, dtype):
    generator = torch.Generator().manual_seed(3)
    loc = torch.randn(shape, dtype=dtype, generator=generator)
    scale = (0.5 * torch.randn(shape, dtype=dtype, generator=generator)).exp()
    return {"loc": loc, "scale": scale}


def _small_multiscale_options(shape, dtype):
    return {"levels": 2, "hidden_channels": 8, "num_blocks": 1}


def _residual_options(shape, dtype):
    # Small stacks (3 blocks of a [16, 16] g) keep the exact log-det cheap; the fixed-point
    # inverse is run to the suite's round-trip tolerances (float64 1e-10, float32 1e-4), far
    # below its defaults (rtol 1e-5), which a user tunes the same way.
    tight = (
        {"atol": 1e-13, "rtol": 1e-13} if dtype == torch.float64 else {"atol": 1e-6, "rtol": 1e-6}
    )
    return {"hidden_dims": [16, 16], "num_layers": 3, "max_iter": 1000, **tight}


def _ffjord_options(shape, dtype, tol=None):
    # A small network ([16, 16]) keeps the solves cheap; the adaptive solver (dopri5) runs to
    # tolerances tied to the dtype, far below its defaults (1e-5), which a user tunes the same
    # way. Float64 rtol = atol = 1e-12 (measured: round trips 6e-12, log-dets 1.6e-11 off the
    # autograd Jacobian's, NFE about 140 per solve; at 1e-10 they are 8e-10 and 1e-9, over the
    # suite's float64 bounds); float32 1e-6 (round trips within 5.5e-6, under the default
    # float32 bound 1e-4, NFE 26). So no TOLERANCE_FLOAT64/FLOAT32/FAR row is needed.
    if tol is None:
        tol = 1e-12 if dtype == torch.float64 else 1e-6
    return {"hidden_dims": [16, 16], "rtol": tol, "atol": tol, "max_num_steps": 10_000}


# Builder options: of fixed maps, whose tensors are buffers that make_flow does not perturb
# (without these the affine map would be the identity); of the multi-scale stacks, small
# enough for the autograd Jacobians (2 levels, 2 Glow steps per level, 8 hidden channels).
BUILD_OPTIONS = {
    "fixed_affine": _fixed_affine_options,
    "glow": lambda shape, dtype: {**_small_multiscale_options(shape, dtype), "steps_per_level": 2},
    # without ActNorms: ten of them on one path, each log-scale moved by N(0, 0.25) (fan 1),
    # reach condition numbers of 1e8 and float32 round trips off by 1 (ActNorm is tested on
    # its own, and inside realnvp_image in tests/transforms/test_multiscale.py)
    "residual": _residual_options,
    "iresnet": _residual_options,
    "ffjord": _ffjord_options,
    "realnvp_image": lambda shape, dtype: {
        **_small_multiscale_options(shape, dtype),
        "actnorm": False,
    },
}


# Builder options of the normalisation check alone (its 160,000 grid points), replacing
# BUILD_OPTIONS there, one entry each with its reason.
DENSITY_OPTIONS = {
    "ffjord": (
        lambda shape, dtype: _ffjord_options(shape, dtype, tol=1e-8),
        "160,000 exact-trace solves at the float64 tolerance 1e-12 take over 10 s; at rtol = "
        "atol = 1e-8 the integral is off by at most 1.3e-8 (measured), far below the check's "
        "1e-4, in a quarter of the time (NFE 26 per solve)",
    )
}

# Checks that compare two evaluations of the same values exactly (atol=0): a copy rebuilt
# from the state_dict, the samples beside a NaN. Default 0. One entry each with its reason.
_SOLVER_STEPS = (
    "an adaptive ODE solver picks one step sequence per solve, from the error estimate of the "
    "whole batch and of the log-det state (which depends on the Hutchinson probe, drawn anew "
    "per solve): the same input solved beside other samples, or with another probe, agrees to "
    "the solver's tolerance (float64 rtol = atol = 1e-12: measured differences up to 1e-11), "
    "not bit for bit"
)
TOLERANCE_SAME_VALUES = {"ffjord": (1e-10, _SOLVER_STEPS)}


# Image shapes with two elements for the normalisation check, where (2, 1, 1) cannot be used.
_TWO_PIXELS = (
    "a checkerboard mask needs two pixels (H W >= 2): two pixels of one channel, (1, 1, 2)"
)
DENSITY_SHAPE = {
    name: ((1, 1, 2), _TWO_PIXELS) for name in ("conv_affine_coupling", "conv_additive_coupling")
}


def density_shape(case: Case) -> tuple[int, ...]:
    """The two-element event shape of the normalisation check (default ``case.shape(2)``)."""
    if case.is_image and case.name in DENSITY_SHAPE:
        return DENSITY_SHAPE[case.name][0]
    return case.shape(2)


def density_options(case: Case) -> dict | None:
    """The builder options of the normalisation check (``None``: those of BUILD_OPTIONS)."""
    if case.name not in DENSITY_OPTIONS:
        return None
    return DENSITY_OPTIONS[case.name][0](density_shape(case), torch.float64)


def same_values_tolerance(case: Case) -> float:
    """The tolerance of checks that compare two evaluations of the same values (default 0)."""
    return TOLERANCE_SAME_VALUES.get(case.name, (0.0, ""))[0]


def density_tolerance(case: Case) -> float:
    return TOLERANCE_DENSITY.get(case.name, (1e-4, ""))[0]


def far_tolerance(case: Case) -> float:
    return TOLERANCE_FAR.get(case.name, (1e-9, ""))[0]


def tolerance(case: Case, dtype: torch.dtype) -> float:
    if dtype == torch.float64:
        return TOLERANCE_FLOAT64.get(case.name, (1e-10, ""))[0]
    return TOLERANCE_FLOAT32.get(case.name, (1e-4, ""))[0]


# Flows whose log-det is a stochastic estimate (registry log_det "unbiased" or "biased"):
# make_flow switches them to their exact log-det (set_log_det(flow, "exact")) unless a check
# asks for the estimator. Checks that compare log-det values (against autograd, cached against
# recomputed, copies, NaN isolation, normalisation) need the exact one; the others (round
# trips, shapes, dtypes, gradients, state_dict, meta, far inputs) run with the estimator.
# The estimators are checked statistically in tests/transforms/test_residual.py and
# tests/transforms/test_continuous.py.
ESTIMATED_LOG_DET = ("unbiased", "biased")


# Where the suite runs: ``--device`` (tests/transforms/conftest.py sets it). Flows are built,
# warmed up and perturbed on the CPU (the same seeded flow on every device), then moved here.
DEVICE = torch.device("cpu")


def make_flow(
    case: Case,
    shape: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 0.5,
    estimator: bool = False,
    options: dict | None = None,
):
    """Build the case's flow, pass one batch through it (data-dependent init), then perturb
    every parameter so that no check passes only because a flow starts as the identity.

    A flow with an estimated log-det keeps its estimator only with ``estimator=True`` (see
    ``ESTIMATED_LOG_DET``); spectrally normalised layers get their power iterations converged
    after the perturbation moved their weights (as training would, one step per update), so
    that their Lipschitz bounds hold and the fixed-point inverses contract. ``options``
    replaces the case's BUILD_OPTIONS (e.g. DENSITY_OPTIONS)."""
    shape = case.event_shape if shape is None else shape
    torch.manual_seed(seed)
    event = shape[0] if len(shape) == 1 else shape
    if options is None:
        options = BUILD_OPTIONS[case.name](shape, dtype) if case.name in BUILD_OPTIONS else {}
    flow = case.spec.build(event, context_dim=case.context_dim, **options).to(dtype)
    warmup = make_input((64,), shape, dtype, seed=None, constraint=flow.domain).cpu()
    context = torch.randn(64, case.context_dim, dtype=dtype) if case.conditional else None
    # a convolution's fan-in is in_channels * kernel area, not its last dimension (the kernel
    # width): perturbations of 0.5 / sqrt(3) on every conditioner weight blow images up
    conv_weights = {id(m.weight) for m in flow.modules() if isinstance(m, torch.nn.Conv2d)}
    with torch.no_grad():
        as_transform(flow, context)(warmup)
        for param in flow.parameters():
            fan = param.shape[-1] if param.dim() >= 2 else 1
            if id(param) in conv_weights:
                fan = param[0].numel()
            param.add_(scale / math.sqrt(fan) * torch.randn_like(param))
        for module in flow.modules():
            if isinstance(module, SpectralNormLinear):
                module.power_iteration(1000)
    if case.spec.log_det in ESTIMATED_LOG_DET and not estimator:
        set_log_det(flow, "exact")
    flow = flow.to(DEVICE)
    flow.clear_cache()
    return flow


def as_transform(flow, context: torch.Tensor | None) -> Transform:
    return flow.condition(context) if context is not None else flow


def make_context(case: Case, batch_shape, dtype=torch.float64, seed: int = 1):
    if not case.conditional:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*batch_shape, case.context_dim, dtype=dtype, generator=generator).to(DEVICE)


def is_real(constraint) -> bool:
    """Whether ``constraint`` is all of the reals (on events of any rank)."""
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    return constraint is constraints.real


def onto(constraint, value: torch.Tensor) -> torch.Tensor:
    """``value`` (real) carried into ``constraint`` by ``biject_to``; unchanged on the reals."""
    return value if constraint is None or is_real(constraint) else biject_to(constraint)(value)


def make_input(
    batch_shape, shape, dtype=torch.float64, seed: int | None = 2, constraint=None
) -> torch.Tensor:
    """Standard normal values, carried into ``constraint`` (a flow's ``domain`` for inputs of
    its forward map, its ``codomain`` for inputs of the inverse) when that is not the reals."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    value = torch.randn(*batch_shape, *shape, dtype=dtype, generator=generator).to(DEVICE)
    return onto(constraint, value)
