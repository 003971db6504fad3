"""The guides' run-time checks: non-finite draws name the site and call; spline tails warn."""

from __future__ import annotations

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyroflows.infer import AmortizedFlow, AutoFlow, NonFiniteDrawError, SplineTailWarning
from pyroflows.infer._checks import TAIL_CHECK_EVERY
from pyroflows.infer._defaults import GUIDE_SPLINE_BOUND
from pyroflows.transforms import RationalQuadraticSpline, spline_tails


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()


def model():
    pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("s", dist.LogNormal(0.0, 1.0))


def test_an_overflowing_site_is_named_with_the_call():
    guide = AutoFlow(model, "iaf", num_layers=1, hidden_dims=[8])
    guide()
    with torch.no_grad():
        guide.loc[2] = 1e3  # exp(1000) overflows: the site "s" becomes inf
    with pytest.raises(NonFiniteDrawError, match=r"site 's' .* guide call 2.*overflowed"):
        guide()


def test_a_non_finite_flow_draw_is_reported_as_such():
    guide = AutoFlow(model, "iaf", num_layers=1, hidden_dims=[8])
    guide()
    with torch.no_grad():
        guide.loc[0] = float("nan")
    with pytest.raises(NonFiniteDrawError, match=r"site 'z' .* draw itself is not finite"):
        guide()


def test_without_validation_there_is_no_check():
    guide = AutoFlow(model, "iaf", num_layers=1, hidden_dims=[8])
    guide()
    with torch.no_grad():
        guide.loc[2] = 1e3
    with pyro.validation_enabled(False):
        assert torch.isinf(guide()["s"])


def _spline_bounds(flow) -> set[float]:
    return {
        module.transformer.bound
        for module in flow.modules()
        if isinstance(getattr(module, "transformer", None), RationalQuadraticSpline)
    }


@pytest.mark.parametrize("flow", ["nsf", "spline_autoregressive", "spline_coupling"])
def test_guide_splines_cover_the_standard_normal_noise(flow):
    guide = AutoFlow(model, flow)
    guide()
    assert _spline_bounds(guide.flow) == {GUIDE_SPLINE_BOUND}
    assert _spline_bounds(AutoFlow(model, flow, bound=2.0).get_posterior().flow) == {2.0}


def _calls(guide, n):
    for _ in range(n):
        guide()


def test_splines_with_a_narrow_interval_warn_with_the_share_outside():
    guide = AutoFlow(model, "spline_autoregressive", hidden_dims=[8], bound=1.0)
    with pytest.warns(SplineTailWarning, match=r"(2\d|3\d)\.\d% of the inputs .* \[-1, 1\]"):
        _calls(guide, TAIL_CHECK_EVERY)  # N(0, 1) noise: 32% outside [-1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplineTailWarning)  # once per guide
        _calls(guide, TAIL_CHECK_EVERY)


def test_splines_with_the_guide_default_do_not_warn():
    guide = AutoFlow(model, "spline_autoregressive", hidden_dims=[8])
    with warnings.catch_warnings():
        warnings.simplefilter("error", SplineTailWarning)
        _calls(guide, TAIL_CHECK_EVERY)


def test_the_tail_check_leaves_the_global_rng_alone():
    guide = AutoFlow(model, "spline_autoregressive", hidden_dims=[8])
    _calls(guide, TAIL_CHECK_EVERY - 1)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    guide._tail_check(guide.get_posterior, "AutoFlow")  # the 100th call: a check
    assert torch.equal(torch.rand(3), expected)


def test_amortized_guides_warn_too():
    guide = AmortizedFlow(3, 2, "spline_autoregressive", hidden_dims=[8], bound=0.5)
    x = torch.randn(4, 3)
    with pytest.warns(SplineTailWarning, match=r"AmortizedFlow: .*\[-0.5, 0.5\]"):
        for _ in range(TAIL_CHECK_EVERY):
            guide(x)


def test_the_monitor_records_only_inside_its_block_and_changes_nothing():
    spline = RationalQuadraticSpline(count_bins=4, bound=1.0)
    params = torch.randn(spline.params_per_dim, 3)
    x = torch.tensor([[-2.0, 0.2, 0.9], [0.0, 1.5, -0.3]])
    outside = spline.forward(x, params)
    with spline_tails() as tails:
        inside = spline.forward(x, params)
        spline.inverse(inside[0], params)
    spline.forward(x, params)  # after the block: not recorded
    assert all(torch.equal(a, b) for a, b in zip(outside, inside, strict=True))
    assert tails.count == 12 and tails.share() == pytest.approx(4 / 12)
