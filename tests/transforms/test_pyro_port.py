"""Pyro code ports by changing one import (issue 12, points 4 and 5).

Every lowercase helper of ``pyro.distributions.transforms`` exists in ``pyroflows.transforms``
with Pyro's signature (or raises ``NotImplementedError`` naming its family); old-style
positional ``context_dim`` fails at construction; element-wise splines have Pyro's
``event_dim``; Pyro's own networks serve as conditioners.
"""

from __future__ import annotations

import inspect

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as PT
import pytest
import torch
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN
from torch.autograd.functional import jacobian

import pyroflows.transforms as T

F64 = torch.float64
PYRO_HELPERS = sorted(name for name in PT.__all__ if name[0].islower())
# Defaults that differ on purpose (docs/migration.rst): Pyro's linear splines are not here.
DIFFERENT_DEFAULTS = {"order": ("linear", "quadratic")}
BUILD_ARGS = {
    "iterated": (2, T.planar, 3),
    "elu": (),
    "leaky_relu": (),
    "identity_transform": None,  # an object, not a helper
}


def _call_args(name: str) -> tuple:
    if name in BUILD_ARGS:
        return BUILD_ARGS[name]
    return (4, 2) if name.startswith("conditional_") else (4,)


@pytest.mark.parametrize("name", PYRO_HELPERS)
def test_every_pyro_helper_exists_and_builds_or_names_its_family(name):
    ours = getattr(T, name)
    if name == "identity_transform":
        assert ours is PT.identity_transform
        return
    if name in T.PYRO_MISSING:
        with pytest.raises(NotImplementedError, match=f"not in pyroflows yet.*transforms.{name}"):
            ours(*_call_args(name))
        return
    flow = ours(*_call_args(name))
    assert isinstance(flow, torch.distributions.Transform)
    if name.startswith("conditional_"):
        assert flow.context_dim == 2
    # Pyro's parameters, in Pyro's positions, with Pyro's defaults; ours add keyword-only ones.
    signature = inspect.signature(getattr(PT, name)).parameters.values()
    theirs = [p for p in signature if p.kind is not inspect.Parameter.VAR_KEYWORD]
    open_ended = len(theirs) < len(signature)  # Pyro's **kwargs: any later parameter
    mine = list(inspect.signature(ours).parameters.values())
    for index, parameter in enumerate(theirs):
        assert mine[index].name == parameter.name, (name, index)
        default = DIFFERENT_DEFAULTS.get(parameter.name, (parameter.default,) * 2)
        assert parameter.default == default[0]
        assert mine[index].default == default[1], (name, parameter.name)
    for extra in [] if open_ended else mine[len(theirs) :]:
        assert extra.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)


def test_pyro_fixed_maps_win_over_the_old_alias():
    assert isinstance(T.leaky_relu(), PT.LeakyReLUTransform)
    assert isinstance(T.elu(), PT.ELUTransform)
    assert isinstance(T.tanh(), torch.distributions.TanhTransform)


# -- the defects ------------------------------------------------------------------


def test_affine_autoregressive_second_argument_is_hidden_dims():
    flow = T.affine_autoregressive(4, [16])
    assert flow.context_dim == 0
    assert flow.made.layers[0].out_features == 16


def test_spline_coupling_second_argument_is_split_dim():
    flow = T.spline_coupling(4, 2)
    assert flow.context_dim == 0
    assert flow.identity_index.tolist() == [0, 1]
    assert T.spline_coupling(4, 1).identity_index.tolist() == [0]
    assert T.affine_coupling(5, [8], split_dim=3).identity_index.tolist() == [0, 1, 2]


def test_pyro_keywords_are_accepted():
    assert len(T.householder(4, count_transforms=3).vectors) == 3
    assert len(T.householder(4).vectors) == 4 // 2 + 1  # Pyro's default
    assert T.spline(3, order="quadratic").transformer.count_bins == 8
    flow = T.affine_autoregressive(3, log_scale_min_clip=-2.0, log_scale_max_clip=1.0)
    assert (flow.transformer.log_scale_min, flow.transformer.log_scale_max) == (-2.0, 1.0)
    assert T.permute(3, torch.tensor([2, 0, 1])).permutation.tolist() == [2, 0, 1]


def test_linear_spline_order_is_refused_with_the_reason():
    for build in (
        lambda: T.spline(2, order="linear"),
        lambda: T.Spline(2, order="linear"),
        lambda: T.spline_autoregressive(2, order="linear"),
        lambda: T.conditional_spline(2, 1, order="linear"),
    ):
        with pytest.raises(NotImplementedError, match=r"linear rational splines.*quadratic"):
            build()
    with pytest.raises(ValueError, match="order must be"):
        T.spline(2, order="cubic")


@pytest.mark.parametrize(
    "build",
    [
        lambda: T.maf(3, 2),
        lambda: T.iaf(3, 2),
        lambda: T.nsf(3, 2),
        lambda: T.naf(3, 2),
        lambda: T.realnvp(4, 2),
        lambda: T.nice(4, 2),
        lambda: T.autoregressive_stack(3, 2),
        lambda: T.coupling_stack(4, 2),
        lambda: T.Autoregressive(3, 2),
        lambda: T.Coupling(4, 2),
        lambda: T.Planar(3, 2),
        lambda: T.Radial(3, 2),
        lambda: T.ElementwiseAffine(3, 2),
        lambda: T.LeakyReLU(3, 2),
        lambda: T.Elementwise(3, 2),
    ],
)
def test_old_positional_context_dim_fails_at_construction(build):
    with pytest.raises(TypeError, match="context_dim is keyword-only: pass context_dim=2"):
        build()


def test_keyword_context_dim_still_builds_conditional_flows():
    assert T.maf(3, context_dim=2).context_dim == 2
    assert T.Coupling(4, [8], context_dim=2).context_dim == 2
    assert T.Spline(3, count_bins=4, context_dim=2).context_dim == 2


def test_elementwise_spline_has_pyros_event_dim_and_log_prob_shape():
    torch.manual_seed(0)
    base = dist.Normal(torch.zeros(2), torch.ones(2))
    x = torch.randn(5, 2)
    ours = dist.TransformedDistribution(base, [T.spline(2)])
    theirs = dist.TransformedDistribution(base, [PT.spline(2)])
    assert ours.log_prob(x).shape == theirs.log_prob(x).shape == (5, 2)
    flow = T.Spline(2, count_bins=16)
    assert flow.event_dim == PT.Spline(2, count_bins=16).event_dim == 0
    assert flow.log_abs_det_jacobian(x, flow(x)).shape == (5, 2)

    def model(distribution):
        with pyro.plate("dims", 2):
            return pyro.sample("x", distribution)

    assert model(ours).shape == model(theirs).shape == (2,)
    # pyroflows' whole-event mode, the registry's
    assert T.REGISTRY["spline"].build(2).event_dim == 1
    assert T.Spline(2, event_dim=None).log_abs_det_jacobian(x, x).shape == (5,)


def test_a_sequence_sums_per_element_log_dets():
    torch.manual_seed(0)
    spline, linear = T.Spline(2, count_bins=4), T.LULinear(2)
    with torch.no_grad():
        spline.params.knots.normal_()
    flow = T.FlowSequence([spline, linear])
    x = torch.randn(5, 2)
    y, log_det = flow.forward_and_log_det(x)
    u = spline(x)
    expected = spline.log_abs_det_jacobian(x, u).sum(-1) + linear.log_abs_det_jacobian(u, y)
    assert log_det.shape == (5,)
    torch.testing.assert_close(log_det, expected)
    torch.testing.assert_close(flow.inv(y.clone()), x, atol=1e-5, rtol=1e-5)


# -- user conditioners ----------------------------------------------------------------------


def _assert_log_det_is_autograd(flow, x, context=None):
    y, log_det = flow.forward_and_log_det(x, context)
    for row in range(x.shape[0]):
        view = flow if context is None else flow.condition(context[row])
        matrix = jacobian(lambda v: view(v), x[row])  # noqa: B023
        torch.testing.assert_close(log_det[row], torch.linalg.slogdet(matrix)[1])
    x_back, inverse_log_det = flow.inverse_and_log_det(y.detach().clone(), context)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_log_det, -log_det)


@pytest.mark.parametrize("stable", [False, True])
def test_affine_autoregressive_with_pyros_network_equals_pyros_layer(stable):
    torch.manual_seed(1)
    arn = AutoRegressiveNN(4, [16]).double()  # a random permutation
    ours = T.AffineAutoregressive(arn, stable=stable, log_scale_min_clip=-50.0)
    theirs = PT.AffineAutoregressive(arn, stable=stable, log_scale_min_clip=-50.0)
    x = torch.randn(3, 4, dtype=F64)
    y = theirs(x)
    torch.testing.assert_close(ours(x), y)
    torch.testing.assert_close(ours.log_abs_det_jacobian(x, y), theirs.log_abs_det_jacobian(x, y))
    _assert_log_det_is_autograd(ours, x)


def test_conditional_affine_autoregressive_with_pyros_network():
    torch.manual_seed(2)
    arn = ConditionalAutoRegressiveNN(3, 2, [16]).double()
    ours = T.ConditionalAffineAutoregressive(arn)
    theirs = PT.ConditionalAffineAutoregressive(arn).condition(torch.ones(2, dtype=F64))
    assert ours.context_dim == 2
    x, context = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    torch.testing.assert_close(ours.condition(torch.ones(2, dtype=F64))(x), theirs(x))
    _assert_log_det_is_autograd(ours, x, context)


def test_affine_coupling_with_pyros_networks_equals_pyros_layer():
    torch.manual_seed(3)
    hypernet = DenseNN(2, [16], [3, 3]).double()
    ours, theirs = T.AffineCoupling(2, hypernet), PT.AffineCoupling(2, hypernet)
    x = torch.randn(4, 5, dtype=F64)
    y = theirs(x)
    torch.testing.assert_close(ours(x), y)
    torch.testing.assert_close(ours.log_abs_det_jacobian(x, y), theirs.log_abs_det_jacobian(x, y))
    _assert_log_det_is_autograd(ours, x)
    conditional = T.ConditionalAffineCoupling(2, ConditionalDenseNN(2, 3, [16], [2, 2]).double())
    _assert_log_det_is_autograd(
        conditional, torch.randn(4, 4, dtype=F64), torch.randn(4, 3, dtype=F64)
    )


def test_spline_autoregressive_with_pyros_network():
    torch.manual_seed(4)
    arn = AutoRegressiveNN(3, [16], param_dims=[4, 4, 3]).double()
    flow = T.SplineAutoregressive(3, arn, count_bins=4, order="quadratic")
    _assert_log_det_is_autograd(flow, torch.randn(4, 3, dtype=F64))
    conditional = T.ConditionalSplineAutoregressive(
        3, ConditionalAutoRegressiveNN(3, 2, [16], param_dims=[4, 4, 3]).double(), count_bins=4
    )
    _assert_log_det_is_autograd(
        conditional, torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    )


def test_a_wrong_network_is_refused_at_construction_naming_what_was_expected():
    with pytest.raises(ValueError, match=r"must return 2 parameters per coordinate.*returned"):
        T.Autoregressive(3, conditioner=AutoRegressiveNN(3, [8], param_dims=[1]))
    with pytest.raises(ValueError, match=r"failed on inputs of shape \(1, 2\)"):
        T.Coupling(4, conditioner=DenseNN(3, [8], [2, 2]))
    with pytest.raises(ValueError, match=r"must expose its order as \.permutation"):
        net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Unflatten(-1, (2, 2)))
        T.Autoregressive(2, conditioner=net)
    with pytest.raises(ValueError, match="needs a conditional network"):
        T.ConditionalAffineAutoregressive(AutoRegressiveNN(3, [8]))
    with pytest.raises(ValueError, match="a user conditioner brings its own"):
        T.Autoregressive(3, [8], conditioner=AutoRegressiveNN(3, [8]))


# -- Pyro's normalizing-flow tutorial, ported by changing the import ------------------------


def _tutorial(T, data: torch.Tensor, steps: int = 5) -> list[float]:
    """The code of Pyro's "Normalizing Flows - Introduction" tutorial, with ``T`` the module."""
    losses = []
    base_dist = dist.Normal(torch.zeros(2), torch.ones(2))
    for spline_transform in (T.Spline(2, count_bins=16), T.spline_coupling(2, count_bins=16)):
        flow_dist = dist.TransformedDistribution(base_dist, [spline_transform])
        optimizer = torch.optim.Adam(spline_transform.parameters(), lr=1e-2)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = -flow_dist.log_prob(data).mean()
            loss.backward()
            optimizer.step()
            flow_dist.clear_cache()
            losses.append(loss.item())
        assert flow_dist.sample(torch.Size([10])).shape == (10, 2)
    dist_base = dist.Normal(torch.zeros(1), torch.ones(1))
    x1_transform = T.spline(1)
    dist_x1 = dist.TransformedDistribution(dist_base, [x1_transform])
    x2_transform = T.conditional_spline(1, context_dim=1)
    dist_x2_given_x1 = dist.ConditionalTransformedDistribution(dist_base, [x2_transform])
    modules = torch.nn.ModuleList([x1_transform, x2_transform])
    optimizer = torch.optim.Adam(modules.parameters(), lr=3e-3)
    x1, x2 = data[:, 0][:, None], data[:, 1][:, None]
    for _ in range(steps):
        optimizer.zero_grad()
        ln_p_x1 = dist_x1.log_prob(x1)
        ln_p_x2_given_x1 = dist_x2_given_x1.condition(x1.detach()).log_prob(x2.detach())
        loss = -(ln_p_x1 + ln_p_x2_given_x1).mean()
        loss.backward()
        optimizer.step()
        dist_x1.clear_cache()
        dist_x2_given_x1.clear_cache()
        losses.append(loss.item())
    x1_flow = dist_x1.sample(torch.Size([7]))
    assert dist_x2_given_x1.condition(x1_flow).sample(torch.Size([7])).shape == (7, 1)
    return losses


@pytest.mark.slow
def test_pyros_tutorial_runs_with_only_the_import_changed():
    torch.manual_seed(0)
    data = torch.randn(200, 2) * torch.tensor([1.0, 0.5]) + torch.tensor([0.5, -0.5])
    ours = _tutorial(T, data)
    torch.manual_seed(0)
    theirs = _tutorial(PT, data)
    assert len(ours) == len(theirs) == 15
    for start in (0, 5, 10):  # each fit makes progress
        assert ours[start + 4] < ours[start]
