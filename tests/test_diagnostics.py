"""pyroflows.diagnostics: Jacobians, singular values, condition numbers, reports, fit callbacks."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyroflows import Flow, fit
from pyroflows.data import make_toy
from pyroflows.diagnostics import (
    ConditioningMonitor,
    EstimateNotConvergedError,
    EstimateNotConvergedWarning,
    condition_numbers,
    guide_report,
    inverse_error,
    jacobian,
    layer_report,
    log_det_check,
    singular_values,
)
from pyroflows.infer import AmortizedFlow, AutoFlow
from pyroflows.train import History, _RunState
from pyroflows.transforms import (
    ElementwiseAffine,
    FlowSequence,
    LULinear,
    TriangularLinear,
    affine_autoregressive,
    build,
)

from .helpers import perturbed

F64 = torch.float64


def _near_singular(dim: int, small: float = 1e-4) -> ElementwiseAffine:
    """y = x except one coordinate scaled by ``small`` (a zero-padding-like degeneracy)."""
    flow = ElementwiseAffine(dim)
    with torch.no_grad():
        flow.params.log_scale[1] = math.log(small)
    return flow


# -- exact Jacobians and singular values -----------------------------------------------------------
@pytest.mark.parametrize("layer", [LULinear, TriangularLinear])
def test_singular_values_of_a_linear_flow_are_those_of_its_matrix(layer):
    flow = perturbed(layer(5), 0.5).double()
    matrix = flow.matrix() if isinstance(flow, LULinear) else _triangular(flow)
    x = torch.randn(7, 5, dtype=F64)
    jac = jacobian(flow, x)
    assert jac.shape == (7, 5, 5) and jac.dtype == F64
    torch.testing.assert_close(jac, matrix.detach().expand(7, 5, 5))
    expected = torch.linalg.svdvals(matrix.detach())
    torch.testing.assert_close(singular_values(flow, x), expected.expand(7, 5))
    result = condition_numbers(flow, x)
    assert result.exact and result.iterations == 0
    torch.testing.assert_close(result.condition, (expected[0] / expected[-1]).expand(7))


def _triangular(flow: TriangularLinear) -> torch.Tensor:
    weight = torch.tril(flow.weight, -1)
    return weight + torch.diag_embed(flow.log_diag.exp())


def test_jacobian_matches_autograd_through_a_numerical_inverse_and_the_preprocessing():
    """A density model's map (logit, standardisation, planar's root-finding inverse)."""
    model = Flow.build("planar", 3, logit_alpha=0.05).double()
    perturbed(model, 0.3)
    x = torch.rand(4, 3, dtype=F64)
    model.standardize_with(torch.rand(50, 3, dtype=F64))

    def noise(row):
        u = (model.logit.forward_and_log_det(row)[0] - model.data_loc) / model.data_scale
        return model.flow.inverse_and_log_det(u)[0]

    expected = torch.stack([torch.autograd.functional.jacobian(noise, row) for row in x])
    torch.testing.assert_close(jacobian(model, x), expected)
    # log|det| of that map is exactly what log_prob adds to the base density
    _, log_det = torch.linalg.slogdet(expected)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(torch.stack([noise(r) for r in x]))
    torch.testing.assert_close(model.log_prob(x), base.sum(-1) + log_det)


def test_conditional_flows_and_pyro_transforms_are_accepted():
    flow = perturbed(build("realnvp", 3, context_dim=2, num_layers=2), 0.2).double()
    x, context = torch.randn(5, 3, dtype=F64), torch.randn(5, 2, dtype=F64)
    jac = jacobian(flow, x, context)
    for row in range(5):
        expected = jacobian(flow.condition(context[row]), x[row : row + 1])[0]
        torch.testing.assert_close(jac[row], expected)
    pyro_flow = perturbed(affine_autoregressive(4), 0.3)  # Pyro-named helper
    pyro_native = dist.transforms.affine_autoregressive(4)
    for transform in (pyro_flow, pyro_native):
        assert float(log_det_check(transform, torch.randn(6, 4)).max()) < 1e-4
        assert float(inverse_error(transform, torch.randn(6, 4)).max()) < 1e-5


def test_wrong_inputs_raise_naming_what_was_expected():
    flow = build("realnvp", 3, num_layers=2)
    with pytest.raises(ValueError, match=r"expected rows x of shape \(N, D\)"):
        jacobian(flow, torch.randn(3))
    with pytest.raises(ValueError, match="event shape"):
        jacobian(flow, torch.randn(2, 4))
    with pytest.raises(ValueError, match="one row per row of x"):
        jacobian(build("realnvp", 3, context_dim=2), torch.randn(4, 3), torch.randn(3, 2))
    with pytest.raises(TypeError, match="expected a pyroflows flow"):
        jacobian(torch.nn.Linear(3, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="ActNorm layer is not initialised"):
        jacobian(build("actnorm", 3), torch.randn(2, 3))


# -- the estimate ---------------------------------------------------------------------------------
def test_the_estimate_agrees_with_the_exact_values_within_its_error_bars():
    flow = perturbed(build("maf", 12, num_layers=3), 0.15).double()
    x = torch.randn(6, 12, dtype=F64)
    exact = condition_numbers(flow, x)
    estimate = condition_numbers(flow, x, exact_max_dim=4)
    assert exact.exact and not estimate.exact and 0 < estimate.iterations <= 12
    assert exact.condition.min() > 2  # a map well away from the identity
    for name in ("condition", "sigma_max", "sigma_min"):
        error = getattr(estimate, f"{name}_error")
        assert (error > 0).all() and (error < 1e-2 * getattr(estimate, name)).all()
        assert ((getattr(estimate, name) - getattr(exact, name)).abs() <= error).all(), name


def test_the_estimate_keeps_the_inputs_dtype_and_warns_or_raises_when_not_converged():
    flow = perturbed(TriangularLinear(8), 1.0)
    x = torch.randn(3, 8)
    result = condition_numbers(flow, x, exact_max_dim=2)
    assert result.condition.dtype == torch.float32 and result.condition.shape == (3,)
    with pytest.warns(EstimateNotConvergedWarning, match="did not converge in 1 iterations"):
        rough = condition_numbers(flow, x, exact_max_dim=2, max_iter=1)
    assert (rough.condition_error > result.condition_error).all()
    with pytest.raises(EstimateNotConvergedError, match=r"expected <= rtol=0.001"):
        condition_numbers(flow, x, exact_max_dim=2, max_iter=1, on_failure="raise")


def test_a_nearly_singular_map_has_condition_number_one_over_its_smallest_scale():
    flow = _near_singular(20)
    x = torch.randn(4, 20)
    for exact_max_dim in (64, 4):  # exact and estimated
        result = condition_numbers(flow, x, exact_max_dim=exact_max_dim)
        torch.testing.assert_close(result.condition, torch.full((4,), 1e4), rtol=1e-3, atol=0)
        torch.testing.assert_close(result.sigma_min, torch.full((4,), 1e-4), rtol=1e-3, atol=0)


# -- log-dets, inverse errors, reports -------------------------------------------------------------
@pytest.mark.parametrize("name", ["maf", "realnvp", "nsf", "planar"])
def test_registry_flows_report_the_log_det_of_their_jacobian(name):
    flow = perturbed(build(name, 4), 0.1).double()
    assert float(log_det_check(flow, torch.randn(8, 4, dtype=F64)).max()) < 1e-5


def test_an_exact_inverse_round_trips_to_rounding():
    flow = perturbed(build("realnvp", 4, num_layers=4), 0.1)
    error = inverse_error(flow, torch.randn(32, 4))
    assert error.shape == (32,) and float(error.max()) < 1e-5


def test_the_layer_report_has_one_row_per_layer_and_log_dets_that_add_up():
    flow = FlowSequence([perturbed(build("realnvp", 3, num_layers=2), 0.2), _near_singular(3)])
    report = layer_report(flow, torch.randn(16, 3))
    assert [row.name for row in report.rows] == [
        "0: FlowSequence",
        "1: ElementwiseAffine",
        "whole flow",
    ]
    layers = sum(row.log_det_mean for row in report.rows[:-1])
    assert report.total.log_det_mean == pytest.approx(layers, abs=1e-5)
    assert report.rows[1].cond_max == pytest.approx(1e4, rel=1e-3)
    assert report.total.cond_max >= report.rows[1].cond_median / report.rows[0].cond_max
    table = str(report).splitlines()
    assert len(table) == 4 and table[0].startswith("layer") and "ElementwiseAffine" in table[2]
    assert json.loads(json.dumps(report.to_dict()))["rows"][1]["name"] == "1: ElementwiseAffine"


def test_the_report_of_a_density_model_runs_from_the_data_to_the_noise():
    model = Flow.build("realnvp", 4, num_layers=3, logit_alpha=0.05)
    perturbed(model.flow, 0.2)
    x = torch.rand(24, 4)
    report = layer_report(model, x, exact_max_dim=2)  # every row estimated
    names = [row.name for row in report.rows]
    assert names == ["logit", "standardisation", "2: Coupling.inv", "1: Coupling.inv",
                     "0: Coupling.inv", "whole flow"]  # fmt: skip
    assert not any(row.exact for row in report.rows)
    log_det = report.total.log_det_mean
    assert log_det == pytest.approx(sum(row.log_det_mean for row in report.rows[:-1]), abs=1e-4)
    with torch.no_grad():  # log_prob without log N(eps; 0, I)
        u = (model.logit.forward_and_log_det(x)[0] - model.data_loc) / model.data_scale
        eps = model.flow.inverse_and_log_det(u)[0]
        expected = model.log_prob(x) + 0.5 * (eps.square().sum(-1) + 4 * math.log(2 * math.pi))
    assert log_det == pytest.approx(float(expected.mean()), abs=1e-4)


def test_the_report_plots_bars_per_layer():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = layer_report(FlowSequence([LULinear(3), _near_singular(3)]), torch.randn(8, 3))
    ax = report.plot()
    heights = [bar.get_height() for bar in ax.patches]
    assert len(heights) == 3 and heights[1] == pytest.approx(4.0, abs=1e-3)
    plt.close(ax.figure)


# -- fit callbacks ---------------------------------------------------------------------------------
def _small_model(seed: int = 0) -> Flow:
    torch.manual_seed(seed)
    return Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])


_FIT = {"epochs": 4, "batch_size": 64, "progress": False}


def test_fit_logs_the_callbacks_numbers_per_epoch_and_a_resume_keeps_them(tmp_path):
    data = make_toy("moons", 320, seed=2)
    epochs_seen = []

    def spy(model, history):
        assert not model.training and torch.is_grad_enabled()
        epochs_seen.append(history.epoch[-1])
        return {"epoch_squared": torch.tensor(history.epoch[-1] ** 2)}

    monitors = [ConditioningMonitor(data[:32]), ConditioningMonitor(data[:8], every=2, prefix="b_")]
    straight = fit(_small_model(), data, callbacks=[*monitors, spy], **_FIT)
    assert epochs_seen == [1, 2, 3, 4] and len(straight.logs) == 4
    assert [sorted(k for k in logs if k.startswith("b_")) for logs in straight.logs] == [
        [], ["b_cond_max", "b_cond_median", "b_sigma_max", "b_sigma_min"], [],
        ["b_cond_max", "b_cond_median", "b_sigma_max", "b_sigma_min"],
    ]  # fmt: skip
    assert all(
        logs["epoch_squared"] == epoch**2
        for epoch, logs in zip([1, 2, 3, 4], straight.logs, strict=True)
    )
    assert all(1 <= logs["cond_median"] <= logs["cond_max"] for logs in straight.logs)
    assert all(isinstance(v, float) for logs in straight.logs for v in logs.values())

    # 288 training rows, 5 steps per epoch: stopped in epoch 3, resumed without the spy
    path = tmp_path / "run.pt"
    first = fit(_small_model(), data, checkpoint=path, max_steps=12, callbacks=monitors, **_FIT)
    assert len(first.logs) == 2
    resumed = fit(_small_model(1), data, checkpoint=path, resume=True, callbacks=monitors, **_FIT)
    assert resumed.logs[:2] == first.logs and len(resumed.logs) == 4
    for logs, reference in zip(resumed.logs, straight.logs, strict=True):
        assert set(logs) == set(reference) - {"epoch_squared"}
        for key, value in logs.items():  # resuming is exact: the same numbers
            assert value == pytest.approx(reference[key], rel=1e-5)


def test_fit_refuses_a_callback_that_returns_no_mapping_and_pads_old_checkpoints():
    data = make_toy("moons", 128)
    with pytest.raises(TypeError, match="returns a mapping of names to numbers, or None"):
        fit(_small_model(), data, callbacks=[lambda model, history: 1.0], **_FIT)
    history = fit(_small_model(), data, callbacks=[lambda m, h: None], epochs=2, progress=False)
    assert history.logs == [{}, {}]
    state = _RunState()
    old = History(epoch=[1, 2], train_nll=[1.0, 0.9], val_nll=[1.1, 1.0]).to_dict()
    del old["logs"]  # a checkpoint written before callbacks existed
    state.load_state_dict({"state": {}, "best_model": {}, "history": old})
    assert state.history.logs == [{}, {}]


# -- guides ----------------------------------------------------------------------------------------
def test_guide_report_of_an_autoflow_after_a_few_svi_steps():
    def model(y):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(loc, scale).to_event(1), obs=y)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    y = torch.randn(20, 3) + 1.0
    guide = AutoFlow(model, "iaf", num_layers=2, hidden_dims=[8])
    with pytest.raises(ValueError, match="set up"):
        guide_report(guide)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(20):
        svi.step(y)
    report = guide_report(guide, num_samples=32)
    assert [row.name for row in report.rows][-2:] == ["loc/scale", "whole guide"]
    assert len(report.rows) == len(guide.flow.layers) + 2
    for row in report.rows:
        numbers = [row.cond_median, row.cond_max, row.sigma_min, row.sigma_max, row.log_det_mean]
        assert all(math.isfinite(value) for value in numbers) and row.cond_median >= 1
    scale = guide.log_scale.detach().exp()
    assert report.rows[-2].cond_max == pytest.approx(float(scale.max() / scale.min()), rel=1e-4)
    total = sum(row.log_det_mean for row in report.rows[:-1])
    assert report.total.log_det_mean == pytest.approx(total, abs=1e-4)


def test_guide_report_of_an_amortized_flow_at_its_encoder_outputs():
    guide = AmortizedFlow(5, 3, "iaf", context_dim=4, encoder_hidden_dims=[8], num_layers=2)
    perturbed(guide, 0.1)
    data = torch.randn(10, 5)
    report = guide_report(guide, data=data)
    assert report.rows[-2].name == "loc/scale" and report.total.name == "whole guide"
    assert all(math.isfinite(row.cond_max) for row in report.rows)
    with pytest.raises(ValueError, match="needs data="):
        guide_report(guide)
