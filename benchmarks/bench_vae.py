r"""A VAE on the scikit-learn digits: Gaussian encoder vs encoder + IAF posterior.

The table of ``tutorials/amortized_vae.ipynb``, reproduced from the command line.

* Data: the 8 x 8 digits, 80/20 split with ``random_state=0`` (``pyroflows.data.load_digits``:
  1,437 training and 360 test images). Pixels are binarised *dynamically*: every training
  step draws fresh binary images :math:`x_i \sim \mathrm{Bernoulli}(k_i / 16)` from the grey
  levels :math:`k_i \in \{0, \dots, 16\}`; the test set is binarised once the same way with
  a fixed generator (seed 1), so every posterior is scored on the same 360 binary images.
* Model: :math:`z \sim \mathcal{N}(0, I_8)`, :math:`x \mid z \sim \prod_{i=1}^{64}
  \mathrm{Bernoulli}(\sigma(f(z)_i))`, decoder :math:`f` an MLP 8-128-128-64 (ELU).
* Posteriors (``pyroflows.infer.AmortizedFlow``, encoder MLP 64-128-128, ELU):
  ``gaussian`` (``flow=None``: :math:`\mathcal{N}(\mu(x), \mathrm{diag}\,\sigma^2(x))`) and
  ``iaf`` (encoder + 2 IAF layers conditioned on a 32-dimensional context :math:`h(x)`,
  MADE hidden sizes at their default ``[32, 32]``).
* Training: Pyro's ``Trace_ELBO`` (one particle), minibatches of 100 drawn by
  ``pyro.plate(..., subsample_size=100)``, Adam at 3e-3 with a cosine decay to 0 over 300
  epochs (15 steps each), the same for both posteriors.
* Test metrics (nats per image, higher is better), from the same K draws
  :math:`z_k \sim q(z \mid x)` per test image with the posterior's ``rsample_and_log_prob``:
  the ELBO, :math:`\frac1K \sum_k \log w_k`, and the importance-weighted bound (IWAE, Burda
  et al. 2016), :math:`\log \frac1K \sum_k w_k`, with :math:`w_k = p(x, z_k) / q(z_k \mid x)`,
  a lower bound on :math:`\log p(x)` that tightens as K grows; the gap IWLL - ELBO estimates
  (from below) the mean :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z \mid x))`.

Usage: python benchmarks/bench_vae.py [--seeds N] [--epochs E] [--K K] [--json PATH] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from _timing import machine_line
from pyro.infer import Trace_ELBO
from torch import nn

from pyroflows.data import load_digits
from pyroflows.infer import AmortizedFlow

PIXELS, LATENT, HIDDEN = 64, 8, 128
CONTEXT, IAF_LAYERS = 32, 2
BATCH, LR = 100, 3e-3
POSTERIORS = ("gaussian", "iaf")


def make_decoder() -> nn.Sequential:
    """MLP from the latent to the 64 Bernoulli logits."""
    return nn.Sequential(
        nn.Linear(LATENT, HIDDEN),
        nn.ELU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ELU(),
        nn.Linear(HIDDEN, PIXELS),
    )


def make_posterior(kind: str) -> AmortizedFlow:
    if kind == "gaussian":
        return AmortizedFlow(PIXELS, LATENT, None, encoder_hidden_dims=(HIDDEN, HIDDEN))
    return AmortizedFlow(
        PIXELS,
        LATENT,
        "iaf",
        context_dim=CONTEXT,
        encoder_hidden_dims=(HIDDEN, HIDDEN),
        num_layers=IAF_LAYERS,
    )


def make_model_and_guide(decoder: nn.Module, posterior: AmortizedFlow, num_images: int):
    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", num_images, subsample_size=BATCH) as idx:
            z = pyro.sample("z", dist.Normal(x.new_zeros(LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x[idx])

    def guide(x):
        pyro.module("posterior", posterior)
        with pyro.plate("data", num_images, subsample_size=BATCH) as idx:
            pyro.sample("z", posterior(x[idx]))

    return model, guide


def log_joint(decoder: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x, z) = log N(z; 0, I) + sum_i log Bernoulli(x_i; sigmoid(f(z)_i))."""
    log_prior = -0.5 * (z.square().sum(-1) + LATENT * math.log(2 * math.pi))
    logits = decoder(z)
    log_lik = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum(-1)
    return log_prior + log_lik


@torch.no_grad()
def test_bounds(decoder, posterior, x, num_draws: int, rows: int = 20_000):
    """Per-image ELBO estimate and IWAE bound from the same ``num_draws`` draws each."""
    chunk_images = max(1, rows // min(num_draws, rows))
    chunk_draws = min(num_draws, rows)
    elbo, iwae = [], []
    for images in x.split(chunk_images):
        q = posterior(images)
        log_w = []
        for start in range(0, num_draws, chunk_draws):
            z, log_q = q.rsample_and_log_prob((min(chunk_draws, num_draws - start),))
            log_w.append(log_joint(decoder, z, images) - log_q)
        log_w = torch.cat(log_w)  # (K, images)
        elbo.append(log_w.mean(0))
        iwae.append(torch.logsumexp(log_w, 0) - math.log(num_draws))
    return torch.cat(elbo), torch.cat(iwae)


def train(kind: str, seed: int, epochs: int, train_probs: torch.Tensor):
    """Fit decoder and posterior by SVI; return them and the seconds per epoch."""
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    decoder, posterior = make_decoder(), make_posterior(kind)
    num_images = len(train_probs)
    model, guide = make_model_and_guide(decoder, posterior, num_images)
    optimizer = torch.optim.Adam([*decoder.parameters(), *posterior.parameters()], lr=LR)
    steps_per_epoch = math.ceil(num_images / BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    elbo = Trace_ELBO()
    start = time.perf_counter()
    for _ in range(epochs * steps_per_epoch):
        x = torch.bernoulli(train_probs)  # dynamic binarisation
        loss = elbo.differentiable_loss(model, guide, x) / num_images  # -ELBO per image
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return decoder, posterior, (time.perf_counter() - start) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per posterior")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--K", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the settings and per-seed results here")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_levels, test_levels = load_digits("train"), load_digits("test")
    if args.quick:
        train_levels, args.seeds, args.epochs, args.K = train_levels[:200], 1, 3, 20
    train_probs = train_levels / 16
    test_x = torch.bernoulli(test_levels / 16, generator=torch.Generator().manual_seed(1))

    print(
        f"# VAE on the digits (dynamically binarised; test set binarised once, seed 1), "
        f"{len(train_probs)} training / {len(test_x)} test images, latent {LATENT}, "
        f"{args.epochs} epochs, {args.seeds} seed(s), K={args.K}; {machine_line()}"
    )
    results: dict[str, list[dict]] = {kind: [] for kind in POSTERIORS}
    for seed in range(args.seeds):
        for kind in POSTERIORS:
            decoder, posterior, seconds = train(kind, seed, args.epochs, train_probs)
            torch.manual_seed(10_000 + seed)
            elbo, iwll = test_bounds(decoder, posterior, test_x, args.K)
            results[kind].append(
                {
                    "seed": seed,
                    "elbo": float(elbo.double().mean()),
                    "iwll": float(iwll.double().mean()),
                    "seconds_per_epoch": seconds,
                    "posterior_params": sum(p.numel() for p in posterior.parameters()),
                    "decoder_params": sum(p.numel() for p in decoder.parameters()),
                }
            )

    def summary(values: list[float], digits: int = 2) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    header = (
        f"{'posterior':10} {'test ELBO':>15} {f'test IWLL (K={args.K})':>19} "
        f"{'gap':>13} {'s/epoch':>7} {'params':>18}"
    )
    print(header)
    print("-" * len(header))
    for kind, runs in results.items():
        elbo = [r["elbo"] for r in runs]
        iwll = [r["iwll"] for r in runs]
        gap = [b - a for a, b in zip(elbo, iwll, strict=True)]
        params = f"{runs[0]['posterior_params']:,} + {runs[0]['decoder_params']:,}"
        print(
            f"{kind:10} {summary(elbo):>15} {summary(iwll):>19} {summary(gap):>13} "
            f"{statistics.median(r['seconds_per_epoch'] for r in runs):7.3f} {params:>18}"
        )
    print("(nats per test image, mean ± sd over seeds; params: posterior + decoder)")
    if args.json:
        settings = {
            "latent": LATENT,
            "hidden": HIDDEN,
            "context": CONTEXT,
            "iaf_layers": IAF_LAYERS,
            "batch": BATCH,
            "lr": LR,
            "epochs": args.epochs,
            "K": args.K,
            "seeds": args.seeds,
            "train_images": len(train_probs),
            "machine": machine_line(),
        }
        with open(args.json, "w") as handle:
            json.dump({"settings": settings, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
