"""SVI step time of a deep Markov model whose guide applies 2 IAFs at every time step.

The model and guide are those of Pyro's ``examples/dmm.py`` (Krishnan et al., "Structured
Inference Networks for Nonlinear State Space Models", 2017, arXiv:1609.09869): a latent
Markov chain z_t | z_{t-1} with the gated transition, Bernoulli emissions x_t | z_t from an
MLP, and a guide q(z_t | z_{t-1}, x_{t:T}) whose loc and scale come from a combiner of
z_{t-1} and a backward RNN over the data; the guide's distribution at each step is
``TransformedDistribution(Normal(loc, scale), iafs)`` with the *same* ``iafs``
(``affine_autoregressive(z_dim, hidden_dims=[iaf_dim])``) at every step, exactly as dmm.py
builds it. The two contenders differ only in where ``affine_autoregressive`` comes from:
``pyro.distributions.transforms`` or ``pyroflows.transforms`` (same MADE sizes, same
parameter count, printed).

Data are synthetic binary sequences (88 notes, like JSB chorales), all of length ``T``.
Each contender is a ``pyro.infer.SVI`` with ``Trace_ELBO`` and dmm.py's ``ClippedAdam``; steps
are interleaved in one process, one thread, and the medians are reported. Pyro's IAF keeps
only its latest pass, so scoring the ``T`` draws runs ``T`` inverse passes per layer (each
``z_dim`` sequential network passes); ours scores every draw from the pass that made it. The
count of inverse passes per step is measured on a separate step (counting costs time).
``--quick`` runs a tiny model for a few steps (a smoke test).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from _timing import interleaved_medians, machine_line
from pyro.distributions import TransformedDistribution
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam
from torch import nn

import pyroflows.transforms

INPUT_DIM = 88  # notes of the JSB chorales


class Emitter(nn.Module):
    """``p(x_t | z_t)``: Bernoulli probabilities from a two-hidden-layer MLP."""

    def __init__(self, z_dim: int, emission_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim, emission_dim),
            nn.ReLU(),
            nn.Linear(emission_dim, emission_dim),
            nn.ReLU(),
            nn.Linear(emission_dim, INPUT_DIM),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class GatedTransition(nn.Module):
    """``p(z_t | z_{t-1})``: the gated transition of Krishnan et al. (section 5)."""

    def __init__(self, z_dim: int, transition_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(z_dim, transition_dim), nn.ReLU(), nn.Linear(transition_dim, z_dim)
        )
        self.proposed = nn.Sequential(
            nn.Linear(z_dim, transition_dim), nn.ReLU(), nn.Linear(transition_dim, z_dim)
        )
        self.sig = nn.Linear(z_dim, z_dim)
        self.z_to_loc = nn.Linear(z_dim, z_dim)
        with torch.no_grad():
            self.z_to_loc.weight.copy_(torch.eye(z_dim))
            self.z_to_loc.bias.zero_()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = torch.sigmoid(self.gate(z))
        proposed = self.proposed(z)
        loc = (1 - gate) * self.z_to_loc(z) + gate * proposed
        return loc, nn.functional.softplus(self.sig(torch.relu(proposed)))


class Combiner(nn.Module):
    """``q(z_t | z_{t-1}, x_{t:T})``'s loc and scale from ``z_{t-1}`` and the RNN state."""

    def __init__(self, z_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.to_loc = nn.Linear(rnn_dim, z_dim)
        self.to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        combined = 0.5 * (torch.tanh(self.z_to_hidden(z)) + h)
        return self.to_loc(combined), nn.functional.softplus(self.to_scale(combined))


class DMM(nn.Module):
    """Model and guide of Pyro's ``examples/dmm.py``, with IAFs from ``make_iaf``."""

    def __init__(self, name: str, make_iaf: Callable[..., nn.Module], sizes: dict) -> None:
        super().__init__()
        z_dim = sizes["z_dim"]
        self.name = name
        self.emitter = Emitter(z_dim, sizes["emission_dim"])
        self.trans = GatedTransition(z_dim, sizes["transition_dim"])
        self.combiner = Combiner(z_dim, sizes["rnn_dim"])
        self.rnn = nn.RNN(INPUT_DIM, sizes["rnn_dim"], nonlinearity="relu", batch_first=True)
        self.iafs = [make_iaf(z_dim, hidden_dims=[sizes["iaf_dim"]]) for _ in range(2)]
        self.iafs_modules = nn.ModuleList(self.iafs)
        self.z_0 = nn.Parameter(torch.zeros(z_dim))
        self.z_q_0 = nn.Parameter(torch.zeros(z_dim))
        self.h_0 = nn.Parameter(torch.zeros(1, 1, sizes["rnn_dim"]))

    def model(self, batch: torch.Tensor, reversed_batch: torch.Tensor, mask: torch.Tensor):
        pyro.module(self.name, self)
        z_prev = self.z_0.expand(batch.size(0), self.z_0.size(0))
        with pyro.plate("z_minibatch", len(batch)):
            for t in pyro.markov(range(1, batch.size(1) + 1)):
                z_loc, z_scale = self.trans(z_prev)
                prior = dist.Normal(z_loc, z_scale).mask(mask[:, t - 1 : t]).to_event(1)
                z_t = pyro.sample(f"z_{t}", prior)
                emission = dist.Bernoulli(self.emitter(z_t)).mask(mask[:, t - 1 : t])
                pyro.sample(f"obs_x_{t}", emission.to_event(1), obs=batch[:, t - 1, :])
                z_prev = z_t

    def guide(self, batch: torch.Tensor, reversed_batch: torch.Tensor, mask: torch.Tensor):
        pyro.module(self.name, self)
        h_0 = self.h_0.expand(1, batch.size(0), self.rnn.hidden_size).contiguous()
        rnn_output = self.rnn(reversed_batch, h_0)[0].flip(1)  # all sequences full length
        z_prev = self.z_q_0.expand(batch.size(0), self.z_q_0.size(0))
        with pyro.plate("z_minibatch", len(batch)):
            for t in pyro.markov(range(1, batch.size(1) + 1)):
                z_loc, z_scale = self.combiner(z_prev, rnn_output[:, t - 1, :])
                z_dist = TransformedDistribution(dist.Normal(z_loc, z_scale), self.iafs)
                z_t = pyro.sample(f"z_{t}", z_dist.mask(mask[:, t - 1]))
                z_prev = z_t


def make_data(batch: int, steps: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    notes = torch.bernoulli(torch.full((batch, steps, INPUT_DIM), 0.1), generator=generator)
    return notes, notes.flip(1), torch.ones(batch, steps, dtype=torch.bool)


def svi_for(dmm: DMM) -> SVI:
    optimizer = ClippedAdam({"lr": 3e-4, "betas": (0.96, 0.999), "clip_norm": 10.0})
    return SVI(dmm.model, dmm.guide, optimizer, Trace_ELBO())


def count_inverse_passes(dmm: DMM, data) -> int:
    """Inverse passes of the IAFs during one SVI step (a separate, untimed step)."""
    calls = []
    for iaf in dmm.iafs:
        hook = "_inverse_pass" if isinstance(iaf, pyroflows.transforms.FlowModule) else "_inverse"
        original = getattr(iaf, hook)

        def counting(*args, original=original):
            calls.append(1)
            return original(*args)

        setattr(iaf, hook, counting)
    svi_for(dmm).step(*data)
    for iaf in dmm.iafs:
        for hook in ("_inverse_pass", "_inverse"):
            iaf.__dict__.pop(hook, None)
    return len(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="time steps T of the sequences")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--z-dim", type=int, default=100)
    parser.add_argument("--iaf-dim", type=int, default=100, help="MADE hidden size (dmm.py's)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved SVI steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tiny model, a few steps")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = {
        "z_dim": args.z_dim,
        "iaf_dim": args.iaf_dim,
        "emission_dim": 100,
        "transition_dim": 200,
        "rnn_dim": 600,
    }
    steps, rounds, warmup = args.steps, args.rounds, 2
    if args.quick:
        sizes = {name: 16 for name in sizes}
        steps, rounds, warmup = 5, 2, 1
    data = make_data(args.batch, steps)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    makers = {
        "pyro": pyro.distributions.transforms.affine_autoregressive,
        "ours": pyroflows.transforms.affine_autoregressive,
    }
    dmms = {side: DMM(f"dmm_{side}", make, sizes) for side, make in makers.items()}
    params = {side: sum(p.numel() for p in dmm.parameters()) for side, dmm in dmms.items()}
    print(f"# machine: {machine_line()}")
    print(
        f"# DMM (Pyro's examples/dmm.py): T={steps}, batch {args.batch}, {sizes}; 2 IAFs "
        f"at every step; Trace_ELBO; medians over {rounds} interleaved SVI steps; "
        f"parameters: pyro {params['pyro']:,}, ours {params['ours']:,}"
    )
    inverses = {side: count_inverse_passes(dmm, data) for side, dmm in dmms.items()}
    svis = {side: svi_for(dmm) for side, dmm in dmms.items()}
    medians = interleaved_medians(
        {side: lambda svi=svi: svi.step(*data) for side, svi in svis.items()},
        repeats=rounds,
        warmup=warmup,
    )
    header = f"{'IAFs from':<34}{'ms / SVI step':>15}{'inverse passes / step':>23}"
    print(header)
    print("-" * len(header))
    rows = []
    for side, label in (("pyro", "pyro.distributions.transforms"), ("ours", "pyroflows")):
        ms = 1e3 * medians[side]
        rows.append({"iafs": label, "ms_per_step": ms, "inverse_passes": inverses[side]})
        print(f"{label:<34}{ms:>15.1f}{inverses[side]:>23}")
    speed_up = medians["pyro"] / medians["ours"]
    print(f"speed-up: {speed_up:.1f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "machine": machine_line(),
                    "T": steps,
                    "batch": args.batch,
                    "sizes": sizes,
                    "rounds": rounds,
                    "rows": rows,
                    "speed_up": speed_up,
                },
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
