"""Pyro's own autoguide tests, rewritten for :class:`~pyroflows.infer.AutoFlow`.

The tests of ``tests/infer/test_autoguide.py`` in pyro-ppl/pyro (and two of
``tests/infer/test_predictive.py``) that make sense for a flow guide, with AutoFlow in the
place of Pyro's guides; what they check is Pyro's, the code and the tolerances are ours (a flow's
medians and quantiles are estimated from draws, so "equal" becomes "within Monte Carlo error").
``tests/infer/test_autoguide.py`` already covers Trace/TraceGraph/TraceMeanField/Renyi/Jit
ELBOs on a conjugate model, Predictive with the jit path, plates with local latents,
``state_dict``/pickle/deepcopy and the initial scale of several flows; these tests extend it.

Ported (Pyro's name -> here):

* ``test_scores`` -> :func:`test_scores`
* ``test_factor`` (Trace, TraceGraph, TraceEnum ELBOs) -> :func:`test_factor`
* ``test_shapes`` (every ``init_to_*``, three ELBOs, 1 and 10 vectorized particles; a
  Dirichlet, an LKJ Cholesky factor, a masked site, a plate) -> :func:`test_shapes`
* ``test_median`` (the Jit ELBOs, and ``init_to_*`` variants, an AutoGuideList with an
  AutoFlow part) -> :func:`test_median`
* ``test_serialization`` (``torch.save``/``load`` and ``torch.jit.trace_module`` of the
  guide's ``call``) -> :func:`test_serialization`; and, not in Pyro, the ``state_dict`` and
  ``pyro.get_param_store()`` save/load round trips -> :func:`test_param_store_round_trip`,
  :func:`test_state_dict_round_trip_of_a_trained_guide`
* ``test_quantiles`` (three ELBOs, an AutoGuideList) -> :func:`test_quantiles`
* ``test_discrete_parallel`` (AutoFlow + AutoDiscreteParallel, TraceEnum_ELBO) ->
  :func:`test_discrete_parallel`
* ``test_guide_list``, ``test_callable``, ``test_callable_return_dict`` ->
  :func:`test_guide_list`, :func:`test_callable`
* ``test_empty_model_error``, ``test_unpack_latent`` -> same names
* ``test_init_loc_fn`` -> :func:`test_init_loc_fn` (medians at the initial values within a
  tiny ``init_scale``)
* ``test_init_scale`` (1e-1, 1e-4, 1e-8) -> :func:`test_init_scale` (the spread of draws
  in unconstrained space: AutoFlow has no ``_loc_scale``)
* ``test_median_module``, ``test_nested_autoguide``, ``test_linear_regression_smoke`` (a
  PyroModule model with PyroSample priors) -> same names
* ``test_predictive`` (Predictive, and the jit-traced Predictive saved and loaded) ->
  :func:`test_predictive`; ``test_predictive.py::test_posterior_predictive_svi_auto_diag_
  normal_guide`` (``parallel=True``, ``get_vectorized_trace``) and ``test_shapes`` (``parallel``
  either way) -> :func:`test_posterior_predictive_parallel_and_sequential`
* ``test_replay_plates`` (the guide under outer particle plates) -> same name
* ``test_subsample_guide`` (the AutoGuideList form, with ``create_plates``: AutoFlow on the
  global latent, AutoNormal on the subsampled local ones) -> :func:`test_subsample_guide_list`
* ``test_subsample_model``, in the form an AutoContinuous guide is meant for (global latents,
  subsampled data) -> :func:`test_subsample_model_with_global_latents`
* ``test_discrete_helpful_error``, ``test_sphere_helpful_error``, ``test_sphere_reparam_ok``
  -> same names
* ``test_exact``, ``test_exact_batch``, ``test_exact_tree`` (moments and the ELBO's value
  against the exact log evidence, JitTrace_ELBO) -> same names (slow)

Left out, and why:

* ``test_iplate_smoke``: an ``xfail`` in Pyro (sequential plates are not supported by any
  autoguide).
* ``test_subsample_model`` / ``test_subsample_guide`` with local latents in a subsampled plate,
  ``test_subsample_guide_2`` (a model without latents) and ``test_subsample_model_amortized``:
  Pyro runs them only for AutoNormal, AutoDelta and the messenger guides. An
  ``AutoContinuous`` guide (AutoFlow is one) packs the latents of its first call into one
  fixed-size vector: a local latent in a subsampled plate gets ``subsample_size`` slots that
  every later minibatch shares, not one posterior per data point (Pyro's own behaviour,
  not refused; use an AutoGuideList with AutoNormal for such sites, as tested below).
* ``test_autonormal_dynamic_model``, ``test_sphere_raw_ok``: AutoNormal-only and AutoDelta-only.
* ``test_init_scale``'s ``_loc_scale``, ``test_quantiles``' ``posterior.variance``: a flow
  posterior has no closed-form scale (AutoFlow's ``_loc_scale`` raises); checked through
  draws instead.
* AutoLaplaceApproximation / AutoStructured / AutoGaussian specific branches.
"""

from __future__ import annotations

import functools
import io
import warnings
from functools import partial

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
)
from pyro.infer.autoguide import (
    AutoDelta,
    AutoDiscreteParallel,
    AutoGuideList,
    AutoNormal,
    init_to_feasible,
    init_to_mean,
    init_to_median,
    init_to_sample,
)
from pyro.infer.reparam import ProjectedNormalReparam
from pyro.nn import PyroModule, PyroParam, PyroSample
from pyro.ops.gaussian import Gaussian
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch import nn

from pyroflows.infer import AutoFlow

SMALL = {"num_layers": 2, "hidden_dims": [16]}  # a small IAF: these tests are about the API
INIT_FNS = [init_to_feasible, init_to_mean, init_to_median, init_to_sample]
ELBOS = [Trace_ELBO, TraceGraph_ELBO, TraceEnum_ELBO]


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()


def small_flow(model, **kwargs):
    return AutoFlow(model, **{**SMALL, **kwargs})


def flow_guide_list(model):
    """An AutoGuideList: AutoDelta for ``x``, AutoFlow for everything else."""
    guide = AutoGuideList(model)
    guide.append(AutoDelta(poutine.block(model, expose=["x"])))
    guide.append(small_flow(poutine.block(model, hide=["x"]), init_scale=1.0))
    return guide


def flow_guide_list_normal(model):
    """An AutoGuideList: AutoNormal for ``x``, AutoFlow for everything else."""
    guide = AutoGuideList(model)
    guide.append(AutoNormal(poutine.block(model, expose=["x"]), init_scale=1.0))
    guide.append(small_flow(poutine.block(model, hide=["x"]), init_scale=1.0))
    return guide


def nested_flow_guide_list(model):
    guide = AutoGuideList(model)
    guide.append(AutoDelta(poutine.block(model, expose=["x"])))
    inner = AutoGuideList(poutine.block(model, expose=["y"]))
    inner.z = small_flow(poutine.block(model, expose=["y"]))
    guide.append(inner)
    return guide


GUIDES_WITH_INITS = [small_flow] + [functools.partial(small_flow, init_loc_fn=f) for f in INIT_FNS]
GUIDE_IDS = ["default"] + [f.__name__ for f in INIT_FNS]


def train(model, guide, elbo, steps, lr, *args):
    """SVI with ClippedAdam, the learning rate decaying ten-fold over the steps."""
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)}), elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit tracer warnings
        for _ in range(steps):
            svi.step(*args)


# -- traces and ELBOs ----------------------------------------------------------------------------
def test_scores():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0).expand([10]))

    guide = small_flow(model)
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace()
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    assert "_AutoFlow_latent" not in model_trace.nodes
    assert guide_trace.nodes["_AutoFlow_latent"]["log_prob_sum"].item() != 0.0
    assert model_trace.nodes["z"]["log_prob_sum"].item() != 0.0
    # an unconstrained site: the guide's Delta carries no log-det
    assert guide_trace.nodes["z"]["log_prob_sum"].item() == 0.0


@pytest.mark.parametrize("Elbo", ELBOS)
def test_factor(Elbo):
    def model(log_factor):
        pyro.sample("z1", dist.Normal(0.0, 1.0))
        pyro.factor("f1", log_factor)
        pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
        with pyro.plate("plate", 3):
            pyro.factor("f2", log_factor)
            pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))

    guide = small_flow(model)
    elbo = Elbo(strict_enumeration_warning=False)
    elbo.loss(model, guide, torch.tensor(0.0))  # set the guide up
    pyro.set_rng_seed(123)
    loss_5 = elbo.loss(model, guide, torch.tensor(5.0))
    pyro.set_rng_seed(123)
    loss_4 = elbo.loss(model, guide, torch.tensor(4.0))
    assert loss_5 - loss_4 == pytest.approx(-1 - 3, abs=1e-4)


def shapes_model():
    pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.sample("z2", dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1))
    with pyro.plate("plate", 3):
        pyro.sample("z3", dist.Normal(torch.zeros(3), torch.ones(3)))
    pyro.sample("z4", dist.MultivariateNormal(torch.zeros(2), torch.eye(2)))
    pyro.sample("z5", dist.Dirichlet(torch.ones(3)))
    pyro.sample("z6", dist.Normal(0, 1).expand((2,)).mask(torch.arange(2) > 0).to_event(1))
    pyro.sample("z7", dist.LKJCholesky(2, torch.tensor(1.0)))


@pytest.mark.parametrize("num_particles", [1, 10])
@pytest.mark.parametrize("Elbo", ELBOS)
@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
def test_shapes(init_loc_fn, Elbo, num_particles):
    guide = small_flow(shapes_model, init_loc_fn=init_loc_fn)
    elbo = Elbo(
        num_particles=num_particles, vectorize_particles=True, strict_enumeration_warning=False
    )
    loss = elbo.loss(shapes_model, guide)
    assert np.isfinite(loss), loss
    # 1 + 2 + 3 + 2 + 2 (simplex) + 2 + 1 (LKJ factor of a 2x2 matrix)
    assert guide.latent_dim == 13
    draws = guide.sample_posterior(5, seed=0)
    assert draws["z3"].shape == (5, 3) and draws["z7"].shape == (5, 2, 2)
    assert torch.allclose(draws["z5"].sum(-1), torch.ones(5))


def test_empty_model_error():
    def model():
        pass

    with pytest.raises(RuntimeError, match="no latent variables"):
        small_flow(model)()


def test_unpack_latent():
    def model():
        return pyro.sample("x", dist.LKJCholesky(2, torch.tensor(1.0)))

    guide = small_flow(model)
    assert guide()["x"].shape == model().shape
    latent = guide.sample_latent()
    assert next(iter(guide._unpack_latent(latent)))[1].shape == (1,)


# -- medians and quantiles -----------------------------------------------------------------------
def xyz_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.LogNormal(0.0, 1.0))
    pyro.sample("z", dist.Beta(2.0, 2.0))


# The posterior is the prior (sd 1 in unconstrained space): the flow starts as wide.
WIDE = [functools.partial(small_flow, init_scale=1.0, init_loc_fn=f) for f in INIT_FNS]
# Started away from the answer (Pyro's test starts at it with init_to_median), so that the
# medians have to move: x 1.0 -> 0, y e^1 -> 1, z sigmoid(1) = 0.73 -> 0.5.
OFF = functools.partial(
    small_flow,
    init_scale=1.0,
    init_loc_fn=pyro.infer.autoguide.init_to_value(
        values={"x": torch.tensor(1.0), "y": torch.tensor(1.0).exp(), "z": torch.tensor(0.731)}
    ),
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "make_guide", [OFF, flow_guide_list, *WIDE], ids=["off", "list", *GUIDE_IDS[1:]]
)
@pytest.mark.parametrize("Elbo", [JitTrace_ELBO, JitTraceGraph_ELBO, JitTraceEnum_ELBO])
def test_median(make_guide, Elbo):
    """Measured (Trace_ELBO, three seeds): every median within 0.05 of the truth (bound 0.1,
    Pyro's; a flow's median is estimated from 4000 draws, error about 0.02 for x)."""
    guide = make_guide(xyz_model)
    elbo = Elbo(
        strict_enumeration_warning=False,
        num_particles=64,
        vectorize_particles=True,
        ignore_jit_warnings=True,
    )
    train(xyz_model, guide, elbo, 200, 0.05)
    median = guide.median()
    assert median["x"].item() == pytest.approx(0.0, abs=0.1)
    assert median["y"].item() == pytest.approx(1.0, abs=0.1)
    assert median["z"].item() == pytest.approx(0.5, abs=0.1)


def quantile_model():
    pyro.sample("y", dist.LogNormal(0.0, 1.0))
    pyro.sample("z", dist.Beta(2.0, 2.0).expand([2]).to_event(1))
    pyro.sample("x", dist.Normal(0.0, 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("make_guide", [WIDE[2], flow_guide_list_normal], ids=["flow", "list"])
@pytest.mark.parametrize("Elbo", ELBOS)
def test_quantiles(make_guide, Elbo):
    guide = make_guide(quantile_model)
    elbo = Elbo(strict_enumeration_warning=False, num_particles=100, vectorize_particles=True)
    train(quantile_model, guide, elbo, 100, 0.05)
    quantiles = guide.quantiles([0.1, 0.5, 0.9])
    median = guide.median()
    for name in ["x", "y", "z"]:
        assert not median[name].requires_grad
        assert len(quantiles[name]) == 3
        for q in quantiles[name]:
            assert not q.requires_grad
            assert q.shape == (() if name != "z" else (2,))
        torch.testing.assert_close(median[name], quantiles[name][1])
    q = {name: value.tolist() for name, value in quantiles.items()}
    # Pyro's bounds: the posterior is the prior, so the 10/50/90% points are spread out
    assert -3.0 < q["x"][0] and q["x"][0] + 1.0 < q["x"][1] < q["x"][2] - 1.0 and q["x"][2] < 3.0
    assert 0.01 < q["y"][0] and q["y"][0] * 2 < q["y"][1] < q["y"][2] / 2 and q["y"][2] < 100.0
    for j in range(2):
        z = [value[j] for value in q["z"]]
        assert 0.01 < z[0] and z[0] + 0.1 < z[1] < z[2] - 0.1 and z[2] < 0.99


@pytest.mark.parametrize("init_loc_fn_values", [False, True], ids=["callable", "init_to_value"])
def test_init_loc_fn(init_loc_fn_values):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5, 5)))

    generator = torch.Generator().manual_seed(0)
    inits = {"x": torch.randn((), generator=generator), "y": torch.randn(5, generator=generator)}

    def init_loc_fn(site):
        return inits[site["name"]]

    init = pyro.infer.autoguide.init_to_value(values=inits) if init_loc_fn_values else init_loc_fn
    guide = small_flow(model, init_loc_fn=init, init_scale=1e-3)
    guide()
    median = guide.median()
    torch.testing.assert_close(median["x"], inits["x"], rtol=0, atol=1e-3)
    torch.testing.assert_close(median["y"], inits["y"], rtol=0, atol=1e-3)


@pytest.mark.parametrize("init_scale", [1e-1, 1e-4, 1e-8])
def test_init_scale(init_scale):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5, 5)))
        with pyro.plate("plate", 100):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    guide = small_flow(model, init_scale=init_scale)
    guide()
    with torch.no_grad():
        latent = guide.get_posterior().sample((500,))
    scale_rms = latent.std(0).pow(2).mean().sqrt().item()
    assert init_scale * 0.5 < scale_rms < 2.0 * init_scale


# -- serialization -------------------------------------------------------------------------------
def serialization_model():
    pyro.sample("x", dist.Normal(0.0, 1.0))
    with pyro.plate("plate", 2):
        pyro.sample("y", dist.LogNormal(0.0, 1.0))
        pyro.sample("z", dist.Beta(2.0, 2.0))


def moved(guide):
    """Move every parameter off its start (a trained guide, without the training)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in guide.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return guide


@pytest.mark.parametrize("jit", [False, True], ids=["nojit", "jit"])
@pytest.mark.parametrize(
    "make_guide",
    [*GUIDES_WITH_INITS, flow_guide_list, nested_flow_guide_list],
    ids=[*GUIDE_IDS, "list", "nested_list"],
)
def test_serialization(make_guide, jit):
    guide = make_guide(serialization_model)
    guide()
    moved(guide)
    pyro.set_rng_seed(0)
    expected = guide.call()
    latent_names = sorted(guide())
    expected_params = {k: v.data for k, v in guide.named_parameters()}
    assert any("flow" in name for name in expected_params)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if jit:
            traced = torch.jit.trace_module(guide, {"call": ()}, check_trace=False)
            torch.jit.save(traced, buffer)
        else:
            torch.save(guide, buffer)
        del guide
        pyro.clear_param_store()
        buffer.seek(0)
        restored = torch.jit.load(buffer) if jit else torch.load(buffer, weights_only=False)

    pyro.set_rng_seed(0)
    actual = restored.call()
    assert len(actual) == len(expected) == len(latent_names) >= 2
    for name, a, e in zip(latent_names, actual, expected, strict=True):
        torch.testing.assert_close(a, e, msg=name)
    actual_params = {k: v.data for k, v in restored.named_parameters()}
    assert set(actual_params) == set(expected_params)
    for name, value in expected_params.items():
        torch.testing.assert_close(actual_params[name], value)


def test_state_dict_round_trip_of_a_trained_guide():
    guide = small_flow(serialization_model)
    train(serialization_model, guide, Trace_ELBO(), 20, 0.05)
    expected = guide.sample_posterior(50, seed=0)
    state = guide.state_dict()
    pyro.clear_param_store()
    fresh = small_flow(serialization_model)
    fresh()  # parameters exist after the first call
    assert not torch.equal(fresh.sample_posterior(50, seed=0)["x"], expected["x"])
    fresh.load_state_dict(state)
    actual = fresh.sample_posterior(50, seed=0)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=name)


def test_param_store_round_trip(tmp_path):
    """Save the param store, load it into a fresh session: a new guide is the trained one.

    Before the fix in ``AutoFlow._setup_prototype`` the new guide took ``loc`` and
    ``log_scale`` from the store but kept its fresh flow weights (``pyro.module`` does not
    copy stored values into a plain ``nn.Module`` by default), and SVI then stepped the stored
    copies, which nothing used: see :func:`test_a_second_guide_in_a_used_param_store_trains`.
    """
    guide = small_flow(serialization_model)
    train(serialization_model, guide, Trace_ELBO(), 20, 0.05)
    expected = guide.sample_posterior(50, seed=0)
    path = tmp_path / "params.pt"
    pyro.get_param_store().save(path)
    pyro.clear_param_store()
    pyro.get_param_store().load(path)
    restored = small_flow(serialization_model)
    restored()
    actual = restored.sample_posterior(50, seed=0)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=name)


def test_a_second_guide_in_a_used_param_store_trains():
    """Without ``pyro.clear_param_store()`` between two guides every parameter still learns."""
    small_flow(serialization_model)()  # leaves its parameters in the store
    guide = small_flow(serialization_model)
    svi = SVI(serialization_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step()
    before = {name: value.detach().clone() for name, value in guide.named_parameters()}
    for _ in range(3):
        svi.step()
    unchanged = [n for n, v in guide.named_parameters() if torch.equal(v.detach(), before[n])]
    assert not unchanged


# -- guide lists, callables, modules ---------------------------------------------------------------
@pytest.mark.parametrize("Elbo", [TraceEnum_ELBO, JitTraceEnum_ELBO])
def test_discrete_parallel(Elbo):
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])

    def model(data):
        weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(2)))
        locs = pyro.sample("locs", dist.Normal(0, 10).expand_by([2]).to_event(1))
        scale = pyro.sample("scale", dist.LogNormal(0, 1))
        with pyro.plate("data", len(data)):
            weights = weights.expand(torch.Size((len(data),)) + weights.shape)
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)

    guide = AutoGuideList(model)
    guide.append(small_flow(poutine.block(model, hide=["assignment"])))
    guide.append(AutoDiscreteParallel(poutine.block(model, expose=["assignment"])))
    elbo = Elbo(max_plate_nesting=1, ignore_jit_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = elbo.loss_and_grads(model, guide, data)
    assert np.isfinite(loss), loss
    assert guide[0].latent_dim == 1 + 2 + 1
    assert all(p.grad is not None for p in guide[0].parameters())


def test_guide_list():
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5, 5)))

    guide = AutoGuideList(model)
    guide.append(small_flow(poutine.block(model, expose=["x"])))
    guide.append(small_flow(poutine.block(model, expose=["y"])))
    values = guide()
    assert values["x"].shape == (2,) and values["y"].shape == (5,)
    assert guide[0].latent_dim == 2 and guide[1].latent_dim == 5


@pytest.mark.parametrize("return_dict", [False, True], ids=["none", "dict"])
def test_callable(return_dict):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.MultivariateNormal(torch.zeros(5), torch.eye(5, 5)))

    def guide_x():
        x_loc = pyro.param("x_loc", torch.tensor(0.0))
        x = pyro.sample("x", dist.Delta(x_loc))
        return {"x": x} if return_dict else None

    guide = AutoGuideList(model)
    guide.append(guide_x)
    guide.append(small_flow(poutine.block(model, expose=["y"])))
    values = guide()
    assert set(values) == ({"x", "y"} if return_dict else {"y"})


class XYModel(PyroModule):
    def __init__(self):
        super().__init__()
        self.x_loc = nn.Parameter(torch.tensor(1.0))
        self.x_scale = PyroParam(torch.tensor(0.1), constraints.positive)

    def forward(self):
        x = pyro.sample("x", dist.Normal(self.x_loc, self.x_scale))
        pyro.sample("y", dist.Normal(2.0, 0.1))
        pyro.sample("z", dist.Normal(1.0, 0.1), obs=x)


# Pyro's test starts its guide at scale 0.1 (AutoDiagonalNormal's default): 20 steps from
# AutoFlow's default start (scale 1) leave the draws' median of x about 0.1 from 1.
@pytest.mark.parametrize(
    "make_guide", [partial(small_flow, init_scale=0.1), flow_guide_list], ids=["flow", "list"]
)
@pytest.mark.parametrize("Elbo", ELBOS)
def test_median_module(make_guide, Elbo):
    model = XYModel()
    guide = make_guide(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.005}), Elbo(strict_enumeration_warning=False))
    for _ in range(20):
        svi.step()
    median = guide.median()
    assert median["x"].item() == pytest.approx(1.0, abs=0.1)
    assert median["y"].item() == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("Elbo", ELBOS)
def test_nested_autoguide(Elbo):
    class Model(PyroModule):
        def __init__(self):
            super().__init__()
            self.x_loc = nn.Parameter(torch.tensor(1.0))
            self.x_scale = PyroParam(torch.tensor(0.1), constraints.positive)

        def forward(self):
            pyro.sample("x", dist.Normal(self.x_loc, self.x_scale))
            with pyro.plate("plate", 2):
                pyro.sample("y", dist.Normal(2.0, 0.1))

    model = Model()
    guide = nested_flow_guide_list(model)
    for _, module in guide.named_modules():
        if module is not guide and isinstance(module, PyroModule):
            assert module.master is not None and module.master() is guide, module._pyro_name
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.005}), Elbo(strict_enumeration_warning=False))
    for _ in range(20):
        svi.step()
    guide_trace = poutine.trace(guide).get_trace()
    model_trace = poutine.trace(model).get_trace()
    check_model_guide_match(model_trace, guide_trace)
    assert all(
        name.startswith("AutoGuideList.0") or name.startswith("AutoGuideList.1.z")
        for name in guide_trace.param_nodes
    )
    assert any(name.startswith("AutoGuideList.1.z.flow") for name in guide_trace.param_nodes)
    stochastic = set(guide_trace.stochastic_nodes)
    assert {"x", "y", "_AutoGuideList.1.z_latent"} <= stochastic


class RandomLinear(nn.Linear, PyroModule):
    def __init__(self, in_features, out_features):
        super().__init__(in_features, out_features)
        self.weight = PyroSample(
            dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
        )
        self.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))


class LinearRegression(PyroModule):
    def __init__(self, dim, size):
        super().__init__()
        self.linear = RandomLinear(dim, 1)
        self.size = size

    def forward(self, x, y=None):
        mean = self.linear(x).squeeze(-1)
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("plate", self.size):
            return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


@pytest.mark.parametrize("Elbo", ELBOS)
def test_linear_regression_smoke(Elbo):
    x, y = torch.randn(10, 3), torch.randn(10)
    model = LinearRegression(3, 10)
    guide = small_flow(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.005}), Elbo(strict_enumeration_warning=False))
    loss = svi.step(x, y)
    assert np.isfinite(loss)
    assert guide.latent_dim == 3 + 1 + 1


# -- Predictive ----------------------------------------------------------------------------------
def test_predictive():
    x, y = torch.randn(3, 2), torch.randn(3)
    model = LinearRegression(2, 3)
    guide = small_flow(model)
    guide(x, y=y)  # the prototype trace records y as observed
    model_trace = poutine.trace(model).get_trace(x, y=None)
    predictive = Predictive(model, guide=guide, num_samples=10)
    pyro.set_rng_seed(0)
    samples = predictive(x)
    for site in prune_subsample_sites(model_trace).stochastic_nodes:
        assert site in samples
    assert samples["linear.weight"].shape[0] == samples["obs"].shape[0] == 10
    assert samples["linear.weight"].shape[-2:] == (1, 2) and samples["obs"].shape[-1] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(predictive, {"call": (x,)})
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    restored = torch.jit.load(buffer)
    pyro.set_rng_seed(0)
    samples_restored = restored.call(x)
    assert len(samples_restored) == len(samples)  # values differ: the traced RNG is fixed
    for value in samples_restored:
        assert torch.isfinite(value).all()


def binomial_model(num_trials):
    with pyro.plate("data", num_trials.size(0)):
        success_prob = pyro.sample("phi", dist.Uniform(0.0, 1.0))
        return pyro.sample("obs", dist.Binomial(num_trials, success_prob))


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
def test_posterior_predictive_parallel_and_sequential(parallel):
    """Pyro's AutoDiagonalNormal predictive test: 5 x 1000 trials with p = 0.7 -> mean 700."""
    pyro.set_rng_seed(0)
    num_trials = torch.ones(5) * 1000
    num_success = dist.Binomial(num_trials, torch.ones(5) * 0.7).sample()
    conditioned = poutine.condition(binomial_model, data={"obs": num_success})
    guide = small_flow(conditioned)
    svi = SVI(conditioned, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(500):
        svi.step(num_trials)
    predictive = Predictive(binomial_model, guide=guide, num_samples=2000, parallel=parallel)
    values = predictive.get_samples(num_trials)["obs"]
    assert values.shape == (2000, 5)
    torch.testing.assert_close(values.mean(0), torch.full((5,), 700.0), rtol=0.05, atol=0)
    if parallel:
        trace = predictive.get_vectorized_trace(num_trials)
        assert trace.nodes["obs"]["value"].shape == (2000, 5)


@pytest.mark.parametrize("sample_shape", [(), (6,), (5, 4)], ids=str)
def test_replay_plates(sample_shape):
    def model():
        a = pyro.sample("a", dist.Normal(0, 1))
        b = pyro.sample("b", dist.Normal(a[..., None], torch.ones(3)).to_event(1))
        c = pyro.sample("c", dist.MultivariateNormal(torch.zeros(3) + a[..., None], torch.eye(3)))
        with pyro.plate("i", 2):
            d = pyro.sample("d", dist.Dirichlet((b + c).exp()))
            pyro.sample("e", dist.Categorical(logits=d), obs=torch.tensor([0, 0]))
        return a, b, c, d

    guide = small_flow(model)
    with pyro.plate_stack("particles", sample_shape, rightmost_dim=-2):
        guide_trace = poutine.trace(guide).get_trace()
        a, b, c, d = poutine.replay(model, guide_trace)()
    assert a.shape == ((*sample_shape, 1) if sample_shape else ())
    assert b.shape == ((*sample_shape, 1, 3) if sample_shape else (3,))
    assert c.shape == ((*sample_shape, 1, 3) if sample_shape else (3,))
    assert d.shape == (*sample_shape, 2, 3)


# -- subsampling ---------------------------------------------------------------------------------
def test_subsample_model_with_global_latents():
    """Subsampled data, global latents (what an AutoContinuous guide can pack)."""

    def model(x, y=None, batch_size=None):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        sigma = pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        with pyro.plate("batch", len(x), subsample_size=batch_size):
            batch_x = pyro.subsample(x, event_dim=0)
            batch_y = pyro.subsample(y, event_dim=0) if y is not None else None
            return pyro.sample("obs", dist.Normal(loc + batch_x, sigma), obs=batch_y)

    pyro.set_rng_seed(0)
    x = torch.randn(50)
    y = 2.0 + x + 0.5 * torch.randn(50)
    guide = small_flow(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(x, y, batch_size=20)
    median = guide.median(x, y)
    assert guide.latent_dim == 2
    assert median["loc"].item() == pytest.approx(2.0, abs=0.3)
    assert median["sigma"].item() == pytest.approx(0.5, abs=0.2)


@pytest.mark.parametrize("init_fn", [None, init_to_mean, init_to_median])
def test_subsample_guide_list(init_fn):
    """Pyro's easyguide model: AutoFlow for the global drift, AutoNormal for local states."""

    def model(batch, subsample, full_size):
        result = [None] * len(batch)
        drift = pyro.sample("drift", dist.LogNormal(-1, 0.5))
        with pyro.plate("data", full_size, subsample=subsample):
            z = 0.0
            for t in range(len(batch)):
                z = pyro.sample(f"state_{t}", dist.Normal(z, drift))
                result[t] = pyro.sample(f"obs_{t}", dist.Bernoulli(logits=z), obs=batch[t])
        return torch.stack(result)

    def create_plates(batch, subsample, full_size):
        return pyro.plate("data", full_size, subsample=subsample)

    inits = {} if init_fn is None else {"init_loc_fn": init_fn}
    guide = AutoGuideList(model, create_plates=create_plates)
    guide.append(small_flow(poutine.block(model, expose=["drift"]), **inits))
    guide.append(AutoNormal(poutine.block(model, hide=["drift"]), **inits))

    full_size, batch_size, steps = 50, 20, 8
    pyro.set_rng_seed(0)
    data = model([None] * steps, torch.arange(full_size), full_size)
    pyro.clear_param_store()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.02}), Trace_ELBO())
    for _ in range(2):
        for begin in range(0, full_size, batch_size):
            subsample = torch.arange(begin, min(full_size, begin + batch_size))
            loss = svi.step(data[:, subsample], subsample, full_size=full_size)
            assert np.isfinite(loss)
    assert guide[0].latent_dim == 1
    assert guide[1].locs.state_0.shape == (full_size,)


# -- helpful errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
def test_discrete_helpful_error(init_loc_fn):
    def model():
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        x = pyro.sample("x", dist.Bernoulli(p))
        pyro.sample("obs", dist.Bernoulli(p * x + (1 - p) * (1 - x)), obs=torch.tensor([1.0, 0.0]))

    guide = small_flow(model, init_loc_fn=init_loc_fn)
    with pytest.raises(ValueError, match=r"enumeration\.html"):
        guide()


@pytest.mark.parametrize("init_loc_fn", INIT_FNS)
def test_sphere_helpful_error(init_loc_fn):
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        y = pyro.sample("y", dist.ProjectedNormal(x))
        pyro.sample("obs", dist.Normal(y, 1), obs=torch.tensor([1.0, 0.0]))

    guide = small_flow(model, init_loc_fn=init_loc_fn)
    with pytest.raises(ValueError, match="ProjectedNormalReparam"):
        guide()


def test_sphere_reparam_ok():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        y = pyro.sample("y", dist.ProjectedNormal(x))
        pyro.sample("obs", dist.Normal(y, 1).to_event(1), obs=torch.tensor([1.0, 0.0, 0.0]))

    model = poutine.reparam(model, {"y": ProjectedNormalReparam()})
    guide = small_flow(model)
    trace = poutine.trace(guide).get_trace()
    trace.compute_log_prob()
    assert torch.isfinite(trace.log_prob_sum())
    assert guide.latent_dim == 6


# -- exact posteriors ----------------------------------------------------------------------------
def fit_exactly(model, data, steps=500):
    """Pyro's recipe (JitTrace_ELBO, 100 vectorized particles, ClippedAdam decaying ten-fold)
    with lr 0.02 instead of 0.05 and a wide start: at 0.05 from ``init_scale=0.1`` the flow
    was still 5% too wide after 500 steps (sd 0.528 for 0.5), at 0.02 it is within 2%."""
    guide = small_flow(model, init_scale=1.0)
    elbo = JitTrace_ELBO(num_particles=100, vectorize_particles=True, ignore_jit_warnings=True)
    optim = pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.1 ** (1 / steps)})
    svi = SVI(model, guide, optim, elbo)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            svi.step(data)
    guide.requires_grad_(False)
    return guide, elbo


def replayed(model, guide, data, num_samples):
    """The model's return value at ``num_samples`` guide draws (a particle plate at dim -2)."""
    vectorize = pyro.plate("particles", num_samples, dim=-2)
    with torch.no_grad():
        guide_trace = poutine.trace(vectorize(guide)).get_trace(data)
        return poutine.replay(vectorize(model), guide_trace)(data)


@pytest.mark.slow
def test_exact():
    def model(data):
        loc = pyro.sample("loc", dist.Normal(0, 1))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", dist.Normal(loc, 1), obs=data)
        return loc

    pyro.set_rng_seed(0)
    data = torch.randn(3)
    g = Gaussian(
        log_normalizer=torch.zeros(()),
        info_vec=torch.zeros(4),
        precision=torch.tensor(
            [[4, -1, -1, -1], [-1, 1, 0, 0], [-1, 0, 1, 0], [-1, 0, 0, 1]], dtype=data.dtype
        ),
    )
    expected_loss = float(g.event_logsumexp() - g.condition(data).event_logsumexp())
    guide, elbo = fit_exactly(model, data)
    samples = replayed(model, guide, data, 10000)
    assert samples.mean().item() == pytest.approx(data.sum().item() / 4, abs=0.05)
    assert samples.std().item() == pytest.approx(0.5, rel=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert elbo.loss(model, guide, data) == pytest.approx(expected_loss, abs=0.01)


@pytest.mark.slow
def test_exact_batch():
    def model(data):
        with pyro.plate("data", len(data)):
            loc = pyro.sample("loc", dist.Normal(0, 1))
            pyro.sample("obs", dist.Normal(loc, 1), obs=data)
        return loc

    pyro.set_rng_seed(0)
    data = torch.randn(3)
    g = Gaussian(
        log_normalizer=torch.zeros(3),
        info_vec=torch.zeros(3, 2),
        precision=torch.tensor([[[2, -1], [-1, 1]]] * 3, dtype=data.dtype),
    )
    expected_loss = float(
        g.event_logsumexp().sum() - g.condition(data[:, None]).event_logsumexp().sum()
    )
    guide, elbo = fit_exactly(model, data)
    samples = replayed(model, guide, data, 10000)
    torch.testing.assert_close(samples.mean(0), data / 2, rtol=0, atol=0.05)
    torch.testing.assert_close(samples.std(0), torch.full((3,), 0.5**0.5), rtol=0.05, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert elbo.loss(model, guide, data) == pytest.approx(expected_loss, abs=0.01)


@pytest.mark.slow
def test_exact_tree():
    def model(data):
        x = pyro.sample("x", dist.Normal(0, 1))
        with pyro.plate("data", len(data)):
            y = pyro.sample("y", dist.Normal(x, 1))
            pyro.sample("obs", dist.Normal(y, 1), obs=data)
        return {"x": x, "y": y}

    pyro.set_rng_seed(0)
    data = torch.randn(2)
    g = Gaussian(
        log_normalizer=torch.zeros(()),
        info_vec=torch.zeros(5),
        precision=torch.tensor(
            [
                [3, -1, -1, 0, 0],
                [-1, 2, 0, -1, 0],
                [-1, 0, 2, 0, -1],
                [0, -1, 0, 1, 0],
                [0, 0, -1, 0, 1],
            ],
            dtype=data.dtype,
        ),
    )
    conditioned = g.condition(data)
    mean = torch.linalg.solve(conditioned.precision, conditioned.info_vec)
    std = torch.inverse(conditioned.precision).diag().sqrt()
    expected_loss = float(g.event_logsumexp() - conditioned.event_logsumexp())
    guide, elbo = fit_exactly(model, data)
    samples = replayed(model, guide, data, 50000)
    # a flow has the exact (correlated Gaussian) posterior in its family: Pyro's checks for
    # the exact guides (AutoMultivariateNormal, AutoGaussian) apply, the ELBO's within 0.02
    # nats rather than 0.01 (measured 0.012 after 500 steps: 100-particle estimate, and the
    # three correlated coordinates not quite reached)
    for name, index in (("x", slice(0, 1)), ("y", slice(1, 3))):
        value = samples[name].reshape(50000, -1)
        torch.testing.assert_close(value.mean(0), mean[index], rtol=0, atol=0.05)
        torch.testing.assert_close(value.std(0), std[index], rtol=0.05, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert elbo.loss(model, guide, data) == pytest.approx(expected_loss, abs=0.02)
