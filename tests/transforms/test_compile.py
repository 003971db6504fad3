"""Every registry flow compiles with ``torch.compile(fullgraph=True)``: no graph breaks.

For every case of the conformance suite (unconditional and conditional, vectors and, where
the spec takes them, ``(C, H, W)`` images) both directions a flow distribution computes are
compiled with ``fullgraph=True`` (which raises on any graph break) and compared with eager:

* the density direction, ``log N(z; 0, I) + log|det dz/dy|`` with
  ``z, log_det = flow.inverse_and_log_det(y, c)`` (``log_prob``);
* the sampling direction, ``flow.forward_and_log_det(eps, c)`` (``rsample_and_log_prob``);

and the density model's own ``Flow.log_prob`` and ``Flow.rsample_and_log_prob`` (standardised,
with the logit map where it applies), which add the distribution's bookkeeping around them.

These run dynamo only (a counting backend that runs the captured graph as it is, like
``backend="eager"``): graph breaks are found cheaply, with no code generation. One slow test
compiles MAF, RealNVP and NSF with inductor, forward and backward.

The only exemptions are the directions that run a numerical inverse (:data:`EXEMPT`; both
directions of a continuous flow, whose forward map is an ODE solve too); they are checked to
break there and nowhere else, so an exemption that is no longer needed fails.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch._dynamo.testing import CompileCounter

from pyroflows.distributions import Flow
from pyroflows.transforms import REGISTRY

from .cases import CASE_IDS, CASES, Case, make_context, make_flow, make_input

_ROOT_FINDER = (
    "numerical inverse: RootFinder iterates until every element has converged "
    "(`if bool(done.all()): break`, _root.py) and raises InverseNotConvergedError naming the "
    "failures; both read tensor values on the host, which no graph can hold. Unrolling the "
    "100-iteration cap instead would trace 100 copies of the map (D x 100 for NAF) and lose "
    "the convergence error"
)

# (registry name, direction) -> why that direction breaks the graph. Every other case and
# direction must compile without a break.
EXEMPT: dict[tuple[str, str], str] = {
    ("planar", "density"): _ROOT_FINDER + " (planar's inverse along w)",
    ("deep_sigmoid", "density"): _ROOT_FINDER + " (per element)",
    ("neural_autoregressive", "density"): _ROOT_FINDER + " (per dimension, D sequential)",
    ("naf", "sampling"): _ROOT_FINDER + " (NAF samples through its layers' inverses)",
    **{
        (name, "density"): (
            "numerical inverse: the fixed-point iteration x <- y - g(x) runs until every sample "
            "has converged (`if bool(done.all())`, _residual_logdet.py) and raises "
            "InverseNotConvergedError otherwise; host values, as for the root finder"
        )
        for name in ("residual", "iresnet")
    },
    **{
        ("ffjord", direction): (
            "adaptive ODE solve, both ways: the flow first checks its inputs for NaN/inf "
            "(`if ... bool(finite.all())`, continuous.py) to solve non-finite samples apart, "
            "and torchdiffeq's dopri5 then accepts or rejects each step and stops at T by "
            "reading its error norm and time on the host (a loop of data-dependent length, "
            "which raises SolverError on step-size underflow); no graph holds either"
        )
        for direction in ("density", "sampling")
    },
}
# where each exempt flow's numerical solve breaks the graph, and the host read that breaks it
# (default: the root finder's convergence check)
BREAKS_IN = {
    "residual": (r"_residual_logdet\.py", "done.all()"),
    "iresnet": (r"_residual_logdet\.py", "done.all()"),
    "ffjord": (r"continuous\.py", "finite.all()"),
}
# flows whose both directions are numerical solves (an ODE integrated forwards or backwards)
SOLVED_BOTH_WAYS = {"ffjord"}

DIRECTIONS = ("density", "sampling")
BATCH = (5,)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Forget earlier compilations: each case compiles from scratch, far from recompile limits."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _density(flow, case: Case):
    rank = len(case.event_shape)
    half_log_two_pi = 0.5 * math.log(2 * math.pi)

    def log_prob(y, context):
        z, log_det = flow.inverse_and_log_det(y, context)
        base = (-0.5 * z.pow(2) - half_log_two_pi).flatten(-rank).sum(-1)
        return base + log_det

    return log_prob


def _sampling(flow, case: Case):
    def rsample_and_log_det(eps, context):
        return flow.forward_and_log_det(eps, context)

    return rsample_and_log_det


def _function(flow, case: Case, direction: str):
    return (_density if direction == "density" else _sampling)(flow, case)


def _inputs(case: Case, flow, direction: str, batch=BATCH):
    """Inputs in the flow's domain (sampling) or codomain (density); the reals for most."""
    constraint = flow.domain if direction == "sampling" else flow.codomain
    return make_input(batch, case.event_shape, constraint=constraint), make_context(case, batch)


def _assert_same(compiled, eager, tol=1e-10):
    compiled = compiled if isinstance(compiled, tuple) else (compiled,)
    eager = eager if isinstance(eager, tuple) else (eager,)
    assert len(compiled) == len(eager)
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def _cases(direction: str, exempt: bool) -> list[Case]:
    return [case for case in CASES if ((case.name, direction) in EXEMPT) == exempt]


def _params(direction: str, exempt: bool):
    return [pytest.param(case, id=case.id) for case in _cases(direction, exempt)]


def _compiles_in_one_graph(case: Case, direction: str) -> None:
    flow = make_flow(case)
    fn = _function(flow, case, direction)
    counter = CompileCounter()
    compiled = torch.compile(fn, fullgraph=True, backend=counter)
    inputs = _inputs(case, flow, direction)
    _assert_same(compiled(*inputs), fn(*inputs))
    assert counter.frame_count == 1  # compiled, as one graph (not skipped, not split)


@pytest.mark.parametrize("case", _params("density", exempt=False))
def test_density_direction_compiles_without_graph_breaks(case):
    _compiles_in_one_graph(case, "density")


@pytest.mark.parametrize("case", _params("sampling", exempt=False))
def test_sampling_direction_compiles_without_graph_breaks(case):
    _compiles_in_one_graph(case, "sampling")


@pytest.mark.parametrize(
    ("case", "direction"),
    [
        pytest.param(case, direction, id=f"{case.id}-{direction}")
        for direction in DIRECTIONS
        for case in _cases(direction, exempt=True)
    ],
)
def test_exempt_directions_break_only_at_the_root_finder(case, direction):
    flow = make_flow(case)
    fn = _function(flow, case, direction)
    inputs = _inputs(case, flow, direction)
    where, check = BREAKS_IN.get(case.name, (r"_root\.py", "done.all()"))
    with pytest.raises(Exception, match=where) as caught:
        torch.compile(fn, fullgraph=True, backend="eager")(*inputs)
    assert check in str(caught.value)  # the solver's host check, nothing before it
    if case.conditional or case.is_image:
        return  # the fallback below costs seconds: checked once per exempt flow
    torch._dynamo.reset()
    # Without fullgraph the break splits the graph there and the result is eager's.
    _assert_same(torch.compile(fn, backend="eager")(*inputs), fn(*inputs), tol=1e-9)


def test_exemptions_are_the_numerical_inverses_only():
    numerical = {name for name, spec in REGISTRY.items() if spec.inverse == "numerical"}
    assert {name for name, _ in EXEMPT} == numerical
    assert all(direction in DIRECTIONS for _, direction in EXEMPT)
    assert SOLVED_BOTH_WAYS <= numerical
    for name in numerical:  # exactly one direction of each runs the numerical inverse
        expected = len(DIRECTIONS) if name in SOLVED_BOTH_WAYS else 1  # ODEs: both
        assert sum((name, direction) in EXEMPT for direction in DIRECTIONS) == expected
    assert all(reason for reason in EXEMPT.values())


_BY_ID = dict(zip(CASE_IDS, CASES, strict=True))


def _model(case: Case) -> Flow:
    flow = make_flow(case)
    logit = None if case.is_image or case.conditional else 0.05  # the logit map, on some
    model = Flow(flow, logit_alpha=logit).double()
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():  # non-trivial standardisation statistics
        model.data_loc.copy_(0.1 * torch.randn(case.event_shape, generator=generator))
        model.data_scale.copy_(torch.rand(case.event_shape, generator=generator) + 0.5)
    return model


def _model_params(method: str):
    direction = "density" if method == "log_prob" else "sampling"
    return [
        pytest.param(case, id=case.id)
        for case in CASES
        if not case.spec.fixed and (case.name, direction) not in EXEMPT
    ]


@pytest.mark.parametrize("case", _model_params("log_prob"))
def test_flow_log_prob_compiles_without_graph_breaks(case):
    model = _model(case)
    x = make_input(BATCH, case.event_shape)
    if model.logit_alpha is not None:  # data in [0, 1]
        x = 0.1 + 0.8 * torch.sigmoid(x)
    context = make_context(case, BATCH)
    counter = CompileCounter()
    compiled = torch.compile(model.log_prob, fullgraph=True, backend=counter)
    _assert_same(compiled(x, context), model.log_prob(x, context), tol=1e-9)
    assert counter.frame_count == 1


@pytest.mark.parametrize("case", _model_params("rsample_and_log_prob"))
def test_flow_rsample_and_log_prob_compiles_without_graph_breaks(case):
    model = _model(case)
    context = make_context(case, BATCH)
    counter = CompileCounter()
    compiled = torch.compile(model.rsample_and_log_prob, fullgraph=True, backend=counter)
    torch.manual_seed(5)
    got = compiled((2,), context)
    torch.manual_seed(5)
    _assert_same(got, model.rsample_and_log_prob((2,), context), tol=1e-9)
    assert counter.frame_count == 1


# A few representative flows and directions, images and contexts included.
@pytest.mark.parametrize(
    ("case_id", "direction"),
    [
        ("maf", "density"),
        ("iaf|ctx", "sampling"),
        ("realnvp|ctx", "density"),
        ("spline|ctx@2x4x4", "sampling"),
    ],
)
def test_a_new_batch_size_recompiles_once_without_graph_breaks(case_id, direction):
    case = _BY_ID[case_id]
    flow = make_flow(case)
    fn = _function(flow, case, direction)
    counter = CompileCounter()
    compiled = torch.compile(fn, fullgraph=True, backend=counter)
    for batch in (5, 7, 9):
        inputs = _inputs(case, flow, direction, (batch,))
        _assert_same(compiled(*inputs), fn(*inputs))
    assert counter.frame_count == 2  # static at first, then once with a dynamic batch size


@pytest.mark.parametrize("case_id", ["iaf", "maf|ctx", "realnvp"])
def test_the_cached_transform_interface_compiles_under_pyro(case_id):
    """Pyro's ``TransformedDistribution`` (``__call__``, ``inv``, ``log_abs_det_jacobian``):
    the pass cache is bypassed while compiling, so its bookkeeping never breaks the graph (the
    score of the sample then runs the inverse: correct, not free)."""
    case = _BY_ID[case_id]
    flow = make_flow(case)
    shape = case.event_shape

    def sample_and_score(context):
        base = dist.Normal(torch.zeros(shape, dtype=torch.float64), 1.0).to_event(len(shape))
        transform = flow.condition(context) if context is not None else flow
        model = dist.TransformedDistribution(base.expand(BATCH), [transform])
        y = model.rsample()
        return y, model.log_prob(y)

    context = make_context(case, BATCH)
    counter = CompileCounter()
    # Validation off, as for any compiled model: torch's argument and support checks read
    # values on the host (and dynamo may refuse to trace torch.distributions' checks at all).
    with pyro.validation_enabled(False):
        torch.manual_seed(3)
        y, log_prob = torch.compile(sample_and_score, fullgraph=True, backend=counter)(context)
        assert counter.frame_count == 1
        assert len(flow._pass_cache) == 0  # nothing was cached from inside the graph
        torch.manual_seed(3)
        y_eager, log_prob_eager = sample_and_score(context)
    _assert_same((y, log_prob), (y_eager, log_prob_eager), tol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["maf", "realnvp", "nsf"])
def test_inductor_compiles_the_density_and_its_gradient(name):
    """Real code generation (inductor, CPU): values and parameter gradients match eager."""
    case = Case(name)
    flow = make_flow(case)
    fn = _density(flow, case)
    y, _ = _inputs(case, flow, "density", (16,))
    compiled = torch.compile(fn, fullgraph=True)
    for _ in range(2):  # the second call runs the cached compiled code
        flow.zero_grad()
        out = compiled(y, None)
        out.sum().backward()
        grads = [p.grad.clone() for p in flow.parameters()]
        flow.zero_grad()
        expected = fn(y, None)
        expected.sum().backward()
        torch.testing.assert_close(out, expected, atol=1e-8, rtol=1e-8)
        for got, want in zip(grads, [p.grad for p in flow.parameters()], strict=True):
            torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-8)
