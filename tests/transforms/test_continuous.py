"""ContinuousFlow (FFJORD): log-dets against autograd, the Hutchinson estimator, round trips,
adjoint gradients, copies, errors, regularisers and the auxiliary-loss mechanism."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from pyroflows.errors import PyroflowsError
from pyroflows.transforms import (
    REGISTRY,
    ContinuousFlow,
    Residual,
    SolverError,
    auxiliary_loss,
    build,
    has_auxiliary_loss,
    residual,
    set_log_det,
)
from tests.helpers import jacobian_log_det, perturbed

pytest.importorskip("torchdiffeq")

TIGHT = 1e-10  # solver tolerance of the float64 accuracy checks


def _flow(trace="exact", tol=TIGHT, scale=0.5, seed=0, **kwargs) -> ContinuousFlow:
    torch.manual_seed(seed)
    flow = ContinuousFlow(2, [16, 16], trace=trace, rtol=tol, atol=tol, **kwargs)
    return perturbed(flow, scale, seed).double()


def _inputs(shape=(6, 2), seed=1) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_exact_log_det_matches_the_autograd_jacobian_of_the_solved_map():
    flow, x = _flow(), _inputs()
    y, log_det = flow.forward_and_log_det(x)
    expected = torch.stack(
        [jacobian_log_det(lambda v: flow.forward_and_log_det(v)[0], row) for row in x]
    )
    # both sides carry the solver's error, a few times its tolerance
    torch.testing.assert_close(log_det, expected, rtol=0, atol=1e3 * TIGHT)
    x_back, inverse_log_det = flow.inverse_and_log_det(y)
    torch.testing.assert_close(inverse_log_det, -log_det, rtol=0, atol=1e3 * TIGHT)
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e3 * TIGHT)


def test_exact_log_det_by_jacrev_above_four_dimensions():
    torch.manual_seed(0)
    flow = perturbed(ContinuousFlow(5, [16], trace="exact", rtol=1e-9, atol=1e-9), 0.3).double()
    x = _inputs((3, 5))
    _, log_det = flow.forward_and_log_det(x)
    expected = torch.stack(
        [jacobian_log_det(lambda v: flow.forward_and_log_det(v)[0], row) for row in x]
    )
    torch.testing.assert_close(log_det, expected, rtol=0, atol=1e-6)


def test_conditional_exact_log_det_matches_autograd():
    torch.manual_seed(0)
    flow = ContinuousFlow(2, [16], context_dim=3, trace="exact", rtol=TIGHT, atol=TIGHT)
    flow = perturbed(flow, 0.5).double()
    x, context = _inputs((4, 2)), _inputs((4, 3), seed=2)
    _, log_det = flow.forward_and_log_det(x, context)
    expected = torch.stack(
        [
            jacobian_log_det(lambda v, c=c: flow.forward_and_log_det(v, c)[0], row)
            for row, c in zip(x, context, strict=True)
        ]
    )
    torch.testing.assert_close(log_det, expected, rtol=0, atol=1e3 * TIGHT)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_mean_is_within_five_sigma_of_the_exact_log_det(probe):
    exact = _flow("exact", tol=1e-8)
    noisy = _flow("hutchinson", tol=1e-8, probe=probe)
    noisy.load_state_dict(exact.state_dict())
    x = _inputs((3, 2))
    repeats = 500  # one solve: every row of the batch draws its own probe
    _, reference = exact.forward_and_log_det(x)
    torch.manual_seed(3)
    _, estimates = noisy.forward_and_log_det(x.repeat(repeats, 1, 1))
    mean, std = estimates.mean(0), estimates.std(0)
    assert bool((std > 0).all())  # the estimator is noisy in 2-D: the test has power
    error = (mean - reference).abs().detach()
    assert bool((error <= 5 * std / repeats**0.5 + 1e-6).all()), (error, std)


def test_round_trip_to_the_solver_tolerance():
    tol = 1e-8
    flow, x = _flow("hutchinson", tol=tol), _inputs((20, 2))
    y, _ = flow.forward_and_log_det(x)
    assert (y - x).abs().max() > 0.1  # a map far from the identity
    x_back, _ = flow.inverse_and_log_det(y)
    torch.testing.assert_close(x_back, x, rtol=0, atol=100 * tol)


def test_float32_round_trip_at_the_default_tolerance():
    torch.manual_seed(0)
    flow = perturbed(ContinuousFlow(2, [16]), 0.5)
    x = torch.randn(10, 2)
    y = flow(x)
    torch.testing.assert_close(flow.inv(y.clone()), x, rtol=0, atol=1e-3)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_and_direct_gradients_agree(trace):
    direct = _flow(trace, tol=1e-9)
    adjoint = _flow(trace, tol=1e-9, adjoint=True)
    adjoint.load_state_dict(direct.state_dict())
    x = _inputs((8, 2))
    grads = []
    for flow in (direct, adjoint):
        torch.manual_seed(5)  # the same probes
        x_in = x.clone().requires_grad_()
        y, log_det = flow.inverse_and_log_det(x_in)
        loss = (y.pow(2).sum(-1) / 2 - log_det).mean()
        params = list(flow.parameters())
        grads.append(torch.autograd.grad(loss, [*params, x_in]))
    for g_direct, g_adjoint in zip(*grads, strict=True):
        torch.testing.assert_close(g_adjoint, g_direct, rtol=1e-5, atol=1e-6)
    assert adjoint.nfe_total > adjoint.nfe_forward  # the backward solve is counted


def test_adjoint_reaches_a_context_that_requires_grad():
    torch.manual_seed(0)
    flows = []
    for adjoint in (False, True):
        flow = ContinuousFlow(
            2, [8], context_dim=2, trace="exact", adjoint=adjoint, rtol=1e-9, atol=1e-9
        )
        flows.append(perturbed(flow, 0.5).double())
    flows[1].dynamics.load_state_dict(flows[0].dynamics.state_dict())
    context = _inputs((4, 2), seed=4)
    grads = []
    for flow in flows:
        c = context.clone().requires_grad_()
        _, log_det = flow.forward_and_log_det(_inputs((4, 2)), c)
        grads.append(torch.autograd.grad(log_det.sum(), c)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_nfe_counters():
    flow, x = _flow("hutchinson", tol=1e-6), _inputs()
    assert flow.nfe_forward == flow.nfe_total == 0
    flow.forward_and_log_det(x)
    first = flow.nfe_forward
    assert first >= 8  # dopri5: at least one step of six evaluations, plus the first-step probe
    flow.inverse_and_log_det(x)
    assert flow.nfe_total == first + flow.nfe_forward


def test_fixed_grid_solver_takes_its_steps():
    flow = _flow("exact", solver="rk4", step_size=0.25)
    flow.forward_and_log_det(_inputs())
    assert flow.nfe_forward == 4 * 4  # four steps of four stages
    with pytest.raises(ValueError, match="step_size"):
        ContinuousFlow(2, solver="euler")
    with pytest.raises(ValueError, match="solver must be one of"):
        ContinuousFlow(2, solver="rk45")


def test_copies_state_dict_and_dtype():
    flow = _flow("hutchinson", tol=1e-6, kinetic_energy=0.1)
    x = _inputs()
    flow.forward_and_log_det(x)  # leaves an auxiliary loss with a graph behind
    for clone in (copy.deepcopy(flow), pickle.loads(pickle.dumps(flow))):
        assert clone.auxiliary_loss() is None
        torch.manual_seed(0)
        y_clone = clone.forward_and_log_det(x)[0]
        torch.manual_seed(0)
        torch.testing.assert_close(y_clone, flow.forward_and_log_det(x)[0])
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    fresh = ContinuousFlow(2, [16, 16], rtol=1e-6, atol=1e-6, kinetic_energy=0.1).double()
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    torch.manual_seed(0)
    expected = flow.forward_and_log_det(x)
    torch.manual_seed(0)
    torch.testing.assert_close(fresh.forward_and_log_det(x), expected)
    y32, log_det32 = flow.float().forward_and_log_det(x.float())
    assert y32.dtype == log_det32.dtype == torch.float32


def test_conditional_shapes_and_condition():
    torch.manual_seed(0)
    flow = ContinuousFlow(3, [8], context_dim=2)
    x, context = torch.randn(5, 3), torch.randn(4, 1, 2)
    y, log_det = flow.forward_and_log_det(x, context)
    assert y.shape == (4, 5, 3) and log_det.shape == (4, 5)
    assert flow.condition(torch.randn(5, 2))(x).shape == (5, 3)
    with pytest.raises(ValueError, match="needs a context"):
        flow(x)


def test_nan_input_stays_in_its_sample():
    flow, x = _flow("exact", tol=1e-8), _inputs((5, 2))
    poisoned = x.clone()
    poisoned[2, 0] = float("nan")
    clean, dirty = flow.forward_and_log_det(x), flow.forward_and_log_det(poisoned)
    assert bool(dirty[0][2].isnan().all()) and bool(dirty[1][2].isnan())
    keep = [0, 1, 3, 4]  # solved without the poisoned sample: equal to the tolerance
    torch.testing.assert_close(dirty[0][keep], clean[0][keep], rtol=0, atol=1e-6)
    torch.testing.assert_close(dirty[1][keep], clean[1][keep], rtol=0, atol=1e-6)


def test_too_many_steps_raise_a_solver_error_naming_the_solver():
    torch.manual_seed(0)
    flow = ContinuousFlow(2, [8], activation=nn.Identity, max_num_steps=3).double()
    perturbed(flow, 30.0)  # a stiff linear field: tiny steps
    with pytest.raises(SolverError, match=r"dopri5 \(rtol=1e-05, atol=1e-05") as caught:
        flow.forward_and_log_det(_inputs())
    assert isinstance(caught.value, PyroflowsError) and isinstance(caught.value, RuntimeError)
    assert "max_num_steps" in str(caught.value)


def test_non_finite_output_raises_never_a_silent_nan():
    flow = ContinuousFlow(2, [8], time=2.0, solver="euler", step_size=0.5).double()
    with torch.no_grad():
        flow.dynamics.net.output_layer.bias.fill_(1e308)  # four steps of 5e307 overflow
    with pytest.raises(SolverError, match="non-finite"):
        flow.forward_and_log_det(_inputs())


def test_a_failed_adjoint_solve_raises_a_solver_error_from_backward():
    torch.manual_seed(0)
    flow = ContinuousFlow(2, [16], adjoint=True, trace="exact", rtol=1e-8, atol=1e-8)
    flow = perturbed(flow, 1.0).double()
    flow.max_num_steps = 40  # enough for the forward solve, not for the adjoint's
    x = torch.randn(64, 2, dtype=torch.float64, requires_grad=True)
    y = flow(x)
    with pytest.raises(SolverError, match=r"backwards \(the adjoint's\) with dopri5 \(rtol=1e-08"):
        y.sum().backward()


def test_kinetic_energy_of_a_constant_field():
    flow = ContinuousFlow(2, [8], time=2.0, kinetic_energy=0.5, jacobian_norm=3.0).double()
    with torch.no_grad():
        flow.dynamics.net.output_layer.bias.copy_(torch.tensor([1.0, 2.0]))
    y = flow(_inputs())
    # f = b: kinetic energy T |b|^2 = 10, Jacobian zero; y = x + T b
    aux = auxiliary_loss(flow)
    torch.testing.assert_close(aux, torch.tensor(0.5 * 10.0, dtype=torch.float64))
    torch.testing.assert_close(y - _inputs(), torch.tensor([2.0, 4.0]).double().expand(6, 2))
    assert auxiliary_loss(flow) is None  # consumed
    flow.inverse_and_log_det(y)  # backwards, the penalty is the same positive integral
    torch.testing.assert_close(auxiliary_loss([flow.inv]), aux)
    with torch.no_grad():
        flow(_inputs())
    assert flow.auxiliary_loss() is None  # only passes with gradients leave a penalty


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_jacobian_norm_of_a_linear_field(trace):
    torch.manual_seed(0)
    flow = ContinuousFlow(2, [4], activation=nn.Identity, trace=trace, jacobian_norm=1.0)
    flow = perturbed(flow, 0.3).double()
    net = flow.dynamics.net
    jacobian = (net[-1].weight @ net[0].weight)[:, :2]  # constant: f is linear in z
    expected = jacobian.pow(2).sum().detach()  # times T = 1
    torch.manual_seed(1)
    flow(_inputs((4000, 2)))
    tol = 1e-6 if trace == "exact" else 0.1 * float(expected)
    torch.testing.assert_close(auxiliary_loss(flow).detach(), expected, rtol=0, atol=tol)


def test_auxiliary_loss_is_none_for_flows_without_one():
    assert auxiliary_loss(build("planar", 2)) is None
    assert auxiliary_loss([]) is None


def test_registry_record_and_exact_switch():
    spec = REGISTRY["ffjord"]
    assert (spec.family, spec.log_det, spec.inverse) == ("continuous", "unbiased", "numerical")
    flow = spec.build(2, context_dim=3, trace="exact")
    assert isinstance(flow, ContinuousFlow) and flow.trace == "exact" and flow.context_dim == 3
    assert "trace" in spec.options()


def test_set_log_det_switches_the_trace_and_leaves_the_map():
    flow, x = _flow("hutchinson"), _inputs()
    y = flow(x)
    assert set_log_det(flow, "exact") is flow and flow.trace == "exact"
    exact = _flow("exact")
    y_exact, log_det = flow.forward_and_log_det(x)
    torch.testing.assert_close(y_exact, y, atol=1e-8, rtol=1e-8)  # the map: to the tolerance
    torch.testing.assert_close(log_det, exact.forward_and_log_det(x)[1], atol=0, rtol=0)
    assert set_log_det(flow, "unbiased").trace == "hutchinson"


def test_set_log_det_rejects_series_and_switches_nothing_in_a_mixed_stack():
    flow = _flow("hutchinson")
    stack = nn.ModuleList([residual(2, [4], num_layers=1), flow])
    with pytest.raises(ValueError, match=r"ContinuousFlow takes log_det one of .*'series'"):
        set_log_det(stack, "series")
    assert flow.trace == "hutchinson"
    assert {m.log_det_mode for m in stack.modules() if isinstance(m, Residual)} == {"unbiased"}
    set_log_det(stack, "exact")
    assert flow.trace == "exact"
    assert {m.log_det_mode for m in stack.modules() if isinstance(m, Residual)} == {"exact"}


def test_bad_arguments():
    with pytest.raises(ValueError, match="trace must be"):
        ContinuousFlow(2, trace="skilling")
    with pytest.raises(ValueError, match="probe must be"):
        ContinuousFlow(2, probe="uniform")
    with pytest.raises(ValueError, match="takes vectors"):
        ContinuousFlow((1, 2, 2))
    with pytest.raises(TypeError, match="context_dim is keyword-only"):
        ContinuousFlow(2, 3)


def test_torchdiffeq_is_imported_lazily_with_a_clear_error(monkeypatch):
    code = "import sys, pyroflows, pyroflows.transforms; print('torchdiffeq' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'pyroflows\[ode\]'"):
        ContinuousFlow(2, [4])(torch.zeros(1, 2))


def test_fit_adds_the_penalty_to_the_loss():
    from pyroflows.distributions import Flow
    from pyroflows.train import fit

    data = _inputs((64, 2), seed=7).float()
    energies = []
    for weight in (0.0, 100.0):
        torch.manual_seed(0)
        model = Flow.build("ffjord", 2, hidden_dims=[8], trace="exact", kinetic_energy=weight)
        perturbed(model, 0.3)  # off the identity start, where the penalty has no gradient
        fit(
            model, data, epochs=1, batch_size=64, lr=0.05, max_steps=3, progress=False, device="cpu"
        )
        (flow,) = [m for m in model.modules() if isinstance(m, ContinuousFlow)]
        energies.append(_kinetic_energy(flow, data))
    # the penalised fit moved its parameters down the kinetic energy
    assert energies[1] < 0.9 * energies[0], energies


def _kinetic_energy(flow: ContinuousFlow, points: torch.Tensor) -> float:
    weight, flow.kinetic_energy = flow.kinetic_energy, 1.0
    flow(points)
    flow.kinetic_energy = weight
    return float(flow.auxiliary_loss().detach())


def test_train_guide_adds_the_penalty_to_the_negative_elbo():
    import pyro
    import pyro.distributions as dist

    from pyroflows.infer import AutoFlow, train_guide

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), torch.tensor([1.0, 3.0])).to_event(1))

    energies, losses = [], []
    for weight in (0.0, 100.0):
        pyro.clear_param_store()
        guide = AutoFlow(model, "ffjord", hidden_dims=[8], trace="exact", kinetic_energy=weight)
        trace = train_guide(
            model, guide, num_steps=8, lr=0.05, num_particles=8, vectorize_particles=True,
            progress=False, seed=0,
        )  # fmt: skip
        (flow,) = [m for m in guide.modules() if isinstance(m, ContinuousFlow)]
        assert flow.has_auxiliary_loss == (weight > 0)
        energies.append(_kinetic_energy(flow, _inputs((256, 2), seed=3).float()))
        losses.append(trace.loss)
    assert energies[1] < 0.5 * energies[0], energies
    # the first step builds the guide and is the same in both; the recorded loss is the
    # negative ELBO alone (a penalty of weight 100 would add at least several units)
    assert losses[0][0] == pytest.approx(losses[1][0])
    assert abs(losses[1][1] - losses[0][1]) < 1.0


def test_train_guide_refuses_a_loss_without_differentiable_loss():
    import pyro
    import pyro.distributions as dist
    from pyro.infer import TraceGraph_ELBO

    from pyroflows.infer import AutoFlow, train_guide

    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    pyro.clear_param_store()
    guide = AutoFlow(model, "ffjord", hidden_dims=[4], rtol=1e-3, atol=1e-3, jacobian_norm=0.1)
    with pytest.raises(ValueError, match="TraceGraph_ELBO has none"):
        train_guide(model, guide, num_steps=3, loss=TraceGraph_ELBO(), progress=False)


def test_penalties_of_several_passes_are_averaged():
    flow = ContinuousFlow(2, [8], time=2.0, kinetic_energy=1.0).double()
    with torch.no_grad():
        flow.dynamics.net.output_layer.bias.copy_(torch.tensor([1.0, 2.0]))
    flow(_inputs())
    flow(_inputs((3, 2), seed=5))  # f = b everywhere: the same penalty, 2 |b|^2 = 10
    torch.testing.assert_close(flow.auxiliary_loss(), torch.tensor(10.0, dtype=torch.float64))
    assert has_auxiliary_loss([flow.inv]) and not has_auxiliary_loss(build("planar", 2))


def test_meta_device_gives_shapes():
    flow = ContinuousFlow(2, [8], context_dim=1, kinetic_energy=1.0).to("meta")
    x, context = torch.empty(5, 2, device="meta"), torch.empty(5, 1, device="meta")
    for value, log_det in (
        flow.forward_and_log_det(x, context),
        flow.inverse_and_log_det(x, context),
    ):
        assert value.is_meta and value.shape == (5, 2) and log_det.shape == (5,)
