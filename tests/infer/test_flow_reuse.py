"""One flow used at many sites of a trace: every draw is scored without an inverse pass.

The guide applies the same two IAFs at every time step of a small Markov chain, as Pyro's
``examples/dmm.py`` does (``TransformedDistribution(base_t, iafs)`` per step), or
conditioned views of conditional IAFs (``flow.condition(h_t)``, a new view per step); the
model may put the same flows in a prior too. The ELBO must run no inverse pass and equal the
ELBO with exact inverses (``with_cache(0)``) to float64 precision, step after step.
"""

from __future__ import annotations

import copy

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyroflows.transforms import Autoregressive, affine_autoregressive

D, T, B, C = 3, 5, 4, 2
DATA = torch.randn(T, B, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.fixture(autouse=True)
def fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture
def inverse_calls(monkeypatch):
    calls = []
    original = Autoregressive._inverse_pass

    def counted(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(Autoregressive, "_inverse_pass", counted)
    return calls


class Chain(torch.nn.Module):
    """A linear-Gaussian Markov chain and a guide with 2 IAFs at each of its ``T`` steps."""

    def __init__(self, conditioned: bool, prior_flows: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        context_dim = C if conditioned else 0
        self.iafs = torch.nn.ModuleList(
            [affine_autoregressive(D, hidden_dims=[8], context_dim=context_dim) for _ in range(2)]
        )
        self.combiner = torch.nn.Linear(2 * D, 2 * D + C)
        self.conditioned, self.prior_flows = conditioned, prior_flows
        self.double()

    def flows(self, exact: bool, context: torch.Tensor | None) -> list:
        flows = [iaf.condition(context) if self.conditioned else iaf for iaf in self.iafs]
        return [flow.with_cache(0) for flow in flows] if exact else flows

    def model(self, exact: bool = False) -> None:
        pyro.module("chain", self)
        with pyro.plate("batch", B):
            z = DATA.new_zeros(B, D)
            for t in range(T):
                prior = dist.Normal(0.5 * z, 1.0).to_event(1)
                if self.prior_flows and t == 0:  # the guide's (unconditional) flows, again
                    prior = dist.TransformedDistribution(
                        dist.Normal(0.5 * z, 1.0), self.flows(exact, None)
                    )
                z = pyro.sample(f"z_{t}", prior)
                pyro.sample(f"x_{t}", dist.Normal(z, 1.0).to_event(1), obs=DATA[t])

    def guide(self, exact: bool = False) -> None:
        pyro.module("chain", self)
        with pyro.plate("batch", B):
            z = DATA.new_zeros(B, D)
            for t in range(T):
                out = self.combiner(torch.cat([z, DATA[t]], -1))
                loc, scale, h = out[:, :D], out[:, D : 2 * D].exp(), out[:, 2 * D :]
                flows = self.flows(exact, h if self.conditioned else None)
                z = pyro.sample(
                    f"z_{t}", dist.TransformedDistribution(dist.Normal(loc, scale), flows)
                )


def _elbo(chain: Chain, exact: bool, seed: int) -> torch.Tensor:
    pyro.set_rng_seed(seed)
    return Trace_ELBO().differentiable_loss(chain.model, chain.guide, exact)


@pytest.mark.parametrize(
    ("conditioned", "prior_flows"),
    [(False, False), (False, True), (True, False)],
    ids=["guide", "prior+guide", "conditioned-views"],
)
def test_a_flow_at_every_site_is_scored_without_inverse_passes(
    conditioned, prior_flows, inverse_calls
):
    chain = Chain(conditioned, prior_flows)
    loss = _elbo(chain, exact=False, seed=1)
    assert inverse_calls == []
    exact = _elbo(chain, exact=True, seed=1)
    assert len(inverse_calls) == 2 * T + 2 * prior_flows  # what scoring costs without a cache
    torch.testing.assert_close(loss, exact, atol=1e-12, rtol=1e-12)
    loss.backward()
    del loss
    assert all(len(iaf._pass_cache) == 0 for iaf in chain.iafs)  # the draws died, and entries


@pytest.mark.slow
def test_training_steps_never_reuse_a_pass_of_older_parameters(inverse_calls):
    """SVI on the same data: each step's ELBO equals the exact one at that step's parameters."""
    cached = Chain(conditioned=False, prior_flows=True)
    exact = copy.deepcopy(cached)
    losses = []
    for chain, use_exact in ((cached, False), (exact, True)):
        pyro.clear_param_store()
        pyro.set_rng_seed(2)
        svi = SVI(chain.model, chain.guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        losses.append([svi.step(use_exact) for _ in range(4)])
    assert len(inverse_calls) == 4 * (2 * T + 2)  # only the exact run inverts
    torch.testing.assert_close(losses[0], losses[1], atol=1e-9, rtol=1e-12)
    assert len(set(losses[0])) == 4  # the loss followed the updates
