"""The pass cache (``transforms/_base.py``): every live draw is scored from its own pass.

The rules: a pass is found again by the identity of its input or output while both (and the
context) are unmodified, the parameters are unchanged and the output is alive; anything else
runs the pass. The cache never changes a result.
"""

from __future__ import annotations

import copy
import pickle
import warnings
import weakref

import pyro.distributions as dist
import pytest
import torch

from pyroflows.transforms import Autoregressive, FlowSequence, _base, affine_autoregressive, build


@pytest.fixture
def inverse_calls(monkeypatch):
    """Names of the flows whose ``_inverse_pass`` ran (autoregressive layers and stacks)."""
    calls = []
    for cls in (Autoregressive, FlowSequence):
        original = cls._inverse_pass

        def counted(self, *args, original=original):
            calls.append(type(self).__name__)
            return original(self, *args)

        monkeypatch.setattr(cls, "_inverse_pass", counted)
    return calls


def _iaf(device, dtype, context_dim=0):
    torch.manual_seed(0)
    flow = affine_autoregressive(3, hidden_dims=[8], context_dim=context_dim).to(device, dtype)
    with torch.no_grad():  # away from the identity, so that a wrong pairing shows
        for param in flow.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return flow


def _randn(*shape, like):
    return torch.randn(*shape, device=like.device, dtype=like.dtype)


def test_every_live_draw_is_inverted_and_scored_from_its_own_pass(inverse_calls, device, dtype):
    flow = _iaf(device, dtype)
    anchor = next(flow.parameters())
    xs = [_randn(4, 3, like=anchor) for _ in range(5)]
    ys = [flow(x) for x in xs]  # five sites: each overwrote the single entry of old
    for x, y in zip(xs, ys, strict=True):
        assert flow.inv(y) is x
        log_det = flow.log_abs_det_jacobian(x, y)
        torch.testing.assert_close(log_det, flow.forward_and_log_det(x)[1], atol=0, rtol=0)
        assert flow(x) is y
    assert inverse_calls == []
    assert len(flow._pass_cache) == 5


def test_an_inverse_pass_is_remembered_too(inverse_calls, device, dtype):
    flow = _iaf(device, dtype)
    y = _randn(4, 3, like=next(flow.parameters()))
    x = flow.inv(y)
    assert flow(x) is y and flow.inv(y) is x
    log_det = flow.log_abs_det_jacobian(x, y)
    assert inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(log_det, -flow.inverse_and_log_det(y)[1], atol=0, rtol=0)


def test_a_new_conditioned_view_per_site_still_finds_its_pass(inverse_calls, device, dtype):
    """The cache lives in the flow module, shared by its views: ``flow.condition(c_t)`` per
    time step (a new view each time) still hits, at its own context only."""
    flow = _iaf(device, dtype, context_dim=2)
    anchor = next(flow.parameters())
    contexts = [_randn(4, 2, like=anchor) for _ in range(3)]
    xs = [_randn(4, 3, like=anchor) for _ in contexts]
    ys = [flow.condition(c)(x) for c, x in zip(contexts, xs, strict=True)]
    for c, x, y in zip(contexts, xs, ys, strict=True):
        assert flow.condition(c).inv(y) is x and flow.inv.condition(c)(y) is x
    assert inverse_calls == []
    # the same values in another context tensor: not the pass's context, so computed
    x_back = flow.condition(contexts[0].clone()).inv(ys[0])
    assert x_back is not xs[0] and inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(x_back, xs[0])
    # the pass at one context is no answer at another
    assert flow.condition(contexts[1]).inv(ys[0]) is not xs[0]


@pytest.mark.parametrize("modified", ["output", "input", "context"])
def test_tensors_modified_in_place_after_the_pass_are_not_served(modified, device, dtype):
    flow = _iaf(device, dtype, context_dim=2)
    anchor = next(flow.parameters())
    context, x = _randn(4, 2, like=anchor), _randn(4, 3, like=anchor)
    view = flow.condition(context)
    with torch.no_grad():
        y = view(x)
        {"output": y, "input": x, "context": context}[modified].mul_(1.5)
        exact = flow.condition(context).with_cache(0)
        assert flow._pass_cache.log_det_for(x, y, context, view._versions) is None
        if modified == "output":
            assert view.inv(y) is not x
            torch.testing.assert_close(view.inv(y), exact.inv(y))
        else:
            assert view(x) is not y
            torch.testing.assert_close(view(x), exact(x))


def test_a_parameter_update_empties_the_cache(inverse_calls, device, dtype):
    flow = _iaf(device, dtype)
    x = _randn(4, 3, like=next(flow.parameters()))
    y = flow(x)
    optimizer = torch.optim.SGD(flow.parameters(), lr=0.1)
    flow.log_abs_det_jacobian(x, y).sum().backward()
    optimizer.step()  # the pass that made y is stale now
    x_back = flow.inv(y)
    assert x_back is not x and inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(x_back, flow.with_cache(0).inv(y))
    assert len(flow._pass_cache) == 1  # the stale entry went; the new inverse pass is in


def test_a_value_the_flow_did_not_make_runs_the_inverse(inverse_calls, device, dtype):
    flow = _iaf(device, dtype)
    x = _randn(4, 3, like=next(flow.parameters()))
    y = flow(x)
    x_back = flow.inv(y.clone())
    assert x_back is not x and inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(x_back, x)


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_entries_die_with_their_draws(grad, device, dtype):
    """Nothing is kept alive by the cache once the draw is dropped: the entry, and the base
    draw it held (``TransformedDistribution.rsample`` keeps no other reference to it)."""
    flow = _iaf(device, dtype)
    base = dist.Normal(torch.zeros(3, device=device, dtype=dtype), 1.0).to_event(1)
    model = dist.TransformedDistribution(base, [flow, flow])  # the same flow twice
    with torch.set_grad_enabled(grad):
        z = model.rsample((4,))
        noise = _randn(4, 3, like=z)
        x = flow(noise)
        assert len(flow._pass_cache) == 3  # the draw's two passes, and x's
        score = model.log_prob(z)
        assert score.shape == (4,)
        draw, input_ = weakref.ref(z), weakref.ref(noise)
        del z, score, noise
        assert len(flow._pass_cache) == 1 and draw() is None
        assert input_() is not None  # held for x's entry
        del x
        assert len(flow._pass_cache) == 0 and input_() is None


def test_the_cache_is_bounded(inverse_calls, device, dtype):
    assert f"At most {_base._MAX_PASSES} entries per flow" in _base.__doc__  # as documented
    flow = _iaf(device, dtype)
    anchor = next(flow.parameters())
    with torch.no_grad():
        xs = [_randn(2, 3, like=anchor) for _ in range(_base._MAX_PASSES + 3)]
        ys = [flow(x) for x in xs]
        assert len(flow._pass_cache) == _base._MAX_PASSES
        assert flow.inv(ys[-1]) is xs[-1] and inverse_calls == []
        x_back = flow.inv(ys[0])  # forgotten (the oldest), so computed
    assert x_back is not xs[0] and inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(x_back, xs[0])


def test_with_cache_zero_caches_nothing(inverse_calls, device, dtype):
    flow = _iaf(device, dtype)
    uncached = flow.with_cache(0)
    x = _randn(4, 3, like=next(flow.parameters()))
    y = uncached(x)
    assert len(flow._pass_cache) == 0
    x_back = uncached.inv(y)
    assert x_back is not x and inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(
        uncached.log_abs_det_jacobian(x, y), flow.forward_and_log_det(x)[1], atol=0, rtol=0
    )


def test_a_stack_keeps_one_entry_per_pass(inverse_calls):
    stack = build("iaf", 3, num_layers=2, hidden_dims=[8])
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    sites = [dist.TransformedDistribution(base, [stack]) for _ in range(3)]
    draws = [site.rsample((2,)) for site in sites]
    scores = [site.log_prob(z) for site, z in zip(sites, draws, strict=True)]
    assert inverse_calls == []
    assert len(stack._pass_cache) == 3
    assert all(len(layer._pass_cache) == 0 for layer in stack.layers)
    exact = dist.TransformedDistribution(base, [stack.with_cache(0)])
    for z, score in zip(draws, scores, strict=True):
        torch.testing.assert_close(score, exact.log_prob(z))


def test_caches_never_travel(device, dtype):
    flow = _iaf(device, dtype)
    x = _randn(4, 3, like=next(flow.parameters()))
    y = flow(x)
    copies = (copy.deepcopy(flow), pickle.loads(pickle.dumps(flow)))
    assert [len(other._pass_cache) for other in copies] == [0, 0]
    assert len(flow._pass_cache) == 1 and flow.inv(y) is x
    torch.testing.assert_close(copies[0](x), y)


def test_inference_tensors_are_never_cached(inverse_calls):
    """They have no version counter, so an in-place update could not be seen."""
    flow = _iaf("cpu", torch.float32)
    with torch.inference_mode():
        x = torch.randn(4, 3)
        y = flow(x)
        x_back = flow.inv(y)
    assert len(flow._pass_cache) == 0 and inverse_calls == ["Autoregressive"]
    torch.testing.assert_close(x_back, x)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_jit_traces_use_only_their_own_passes(inverse_calls):
    """Inside one trace a draw is scored from its pass (no inverse is traced); a pass made
    outside the trace is never served in it (the trace would bake in its result)."""
    flow = _iaf("cpu", torch.float32)

    class SampleAndScore(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.flow = flow

        def forward(self, loc):
            model = dist.TransformedDistribution(dist.Normal(loc, 1.0).to_event(1), [self.flow])
            z = model.rsample()
            return z, model.log_prob(z)

    class Inverse(SampleAndScore):
        def forward(self, y):
            return self.flow.inv(y)

    loc = torch.zeros(4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced_score = torch.jit.trace(SampleAndScore(), loc, check_trace=False)
        assert inverse_calls == []
        y = flow(torch.randn(4, 3))  # cached outside any trace
        traced_inverse = torch.jit.trace(Inverse(), y, check_trace=False)
    assert inverse_calls == ["Autoregressive"]
    other = torch.randn(4, 3)
    torch.testing.assert_close(traced_inverse(other), flow.with_cache(0).inv(other))
    torch.manual_seed(5)
    z, score = traced_score(loc)
    exact = dist.TransformedDistribution(dist.Normal(loc, 1.0).to_event(1), [flow.with_cache(0)])
    torch.testing.assert_close(score, exact.log_prob(z))
