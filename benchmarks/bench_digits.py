r"""Density estimation on the scikit-learn digits: test bits/dim reached with ``fit()``.

Protocol (``pyroflows.data``): 80/20 split with ``random_state=0`` (1,437 training and 360
test images of 64 pixels), uniform dequantisation to [0, 1) (test noise drawn once, seed 1),
bits per dimension of the 17-level data, ``bits_per_dim(nll, 64, 17)``, where ``nll`` is the
mean negative log-likelihood (nats per image) of the [0, 1) data. A full-covariance Gaussian
on [0, 1) scores about 2.97.

Every pyroflows row trains with ``fit()``'s defaults (Adam at 1e-3 with a cosine schedule,
batch 256, gradient clipping at 5, at most 100 epochs, early stopping after 20 epochs
without a better validation NLL, best epoch restored); only the ``weight_decay=3`` row departs
from them (a weight decay that strong would spoil the 2-D toys, so it is no default).

* ``logit``: ``Flow.build(..., logit_alpha=1e-3)``: the model maps the data to
  :math:`v = \mathrm{logit}(\alpha + (1 - 2\alpha) x)`, standardises and models
  :math:`v`, and adds the exact log-determinant of that map, so ``log_prob`` (and every NLL
  in the table) is the density of the [0, 1) data.
* ``draws``: dequantisation draws per training image. With 1, ``fit(model, x)`` holds out its
  default 10% validation split. With K > 1, 10% of the *images* is held out first
  (``train_test_split(images, 0.1, seed=0)``, one draw each, passed as ``val_data``) and the
  other images enter the training set K times with fresh noise: splitting the K-fold rows
  at random would put draws of one image on both sides and make early stopping watch images
  it trains on.
* ``random orders``: ``nsf_autoregressive``'s layers built by hand,
  ``spline_autoregressive(64, ..., ordering="random").inv``, each with its own random MADE
  input order (the ``nsf_autoregressive`` stack alternates natural and reversed orders),
  wrapped in ``Flow(layers, logit_alpha=1e-3)``.
* ``Pyro ...`` rows: Pyro's own transforms of the same architecture (``T.SplineAutoregressive``
  with rational-quadratic splines and ``T.affine_autoregressive``, inverted, MADE hidden sizes
  as ours; Pyro's MADE orders its inputs at random where ours alternates natural and reversed
  orders), on the same logit-space, standardised data and the same validation rows, trained
  by :func:`fit_like`, a plain loop with ``fit()``'s settings.

Usage: python benchmarks/bench_digits.py [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import pyro.distributions as dist
import pyro.distributions.transforms as pyro_t
import torch
from _timing import machine_line
from pyro.nn import AutoRegressiveNN

from pyroflows.data import (
    DIGITS_DIM,
    DIGITS_LEVELS,
    bits_per_dim,
    dequantize,
    load_digits,
    logit_transform,
)
from pyroflows.data import train_test_split as split_rows
from pyroflows.distributions import Flow
from pyroflows.train import fit, validation_split
from pyroflows.transforms import spline_autoregressive

DIM, LEVELS = DIGITS_DIM, DIGITS_LEVELS
ALPHA = 1e-3  # logit squeeze; 0.05 (RealNVP's value) is far worse on these 17-level images
BEST = {"num_layers": 5, "hidden_dims": [256, 256], "count_bins": 4, "bound": 5.0}


def digits(draws: int, quick: bool):
    """Training rows, validation rows (``None``: fit's own split) and test rows, in [0, 1)."""
    train_k, test_k = load_digits("train"), load_digits("test")
    if quick:
        train_k = train_k[:300]
    test = dequantize(test_k, seed=1)
    if draws == 1:
        return dequantize(train_k, seed=0), None, test
    fit_k, val_k = split_rows(train_k, test_fraction=0.1, seed=0)
    train = torch.cat([dequantize(fit_k, seed=100 + d) for d in range(draws)])
    return train, dequantize(val_k, seed=0), test


def nll(log_prob, rows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.cat([-log_prob(chunk) for chunk in rows.split(1024)]).double().mean())


def gaussian_row(logit: bool, quick: bool) -> dict:
    train, _, test = digits(1, quick)
    shift = torch.zeros(len(test), dtype=torch.float64)
    train, test = train.double(), test.double()
    if logit:
        train, _ = logit_transform(train, ALPHA)
        test, shift = logit_transform(test, ALPHA)
    gauss = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    test_nll = float((-gauss.log_prob(test) - shift).mean())
    return {"epochs": "-", "best": "-", "val": math.nan, "test": test_nll, "seconds": 0.0}


def pyroflows_row(name, options, logit, draws, fit_options, quick, epochs) -> dict:
    train, val, test = digits(draws, quick)
    torch.manual_seed(0)
    alpha = ALPHA if logit else None
    if name == "random orders":  # nsf_autoregressive's layers, each with a random MADE order
        layers = [
            spline_autoregressive(
                DIM,
                hidden_dims=options["hidden_dims"],
                count_bins=options["count_bins"],
                bound=options["bound"],
                ordering="random",
            ).inv
            for _ in range(options["num_layers"])
        ]
        model = Flow(layers, logit_alpha=alpha)
    else:
        model = Flow.build(name, DIM, logit_alpha=alpha, **options)
    start = time.perf_counter()
    history = fit(
        model, train, val_data=val, progress=False, device="cpu", epochs=epochs, **fit_options
    )
    seconds = time.perf_counter() - start
    return {
        "epochs": len(history.epoch),
        "best": history.best_epoch,
        "val": history.best_val_nll,
        "test": nll(model.log_prob, test),
        "seconds": seconds,
        "params": sum(p.numel() for p in model.parameters()),
    }


def pyro_side(kind: str, options: dict) -> tuple[torch.nn.ModuleList, list]:
    """Pyro's layers of the same architecture, inverted so that density is one MADE pass."""
    hidden, layers = options["hidden_dims"], options["num_layers"]
    if kind == "spline":
        bins = options["count_bins"]
        modules = torch.nn.ModuleList(
            pyro_t.SplineAutoregressive(
                DIM,
                AutoRegressiveNN(DIM, hidden, param_dims=[bins, bins, bins - 1]),
                count_bins=bins,
                bound=options["bound"],
                order="quadratic",
            )
            for _ in range(layers)
        )
    else:
        modules = torch.nn.ModuleList(
            pyro_t.affine_autoregressive(DIM, hidden_dims=hidden) for _ in range(layers)
        )
    return modules, [module.inv for module in modules]


def fit_like(modules, transforms, train, val, epochs, batch_size=256, lr=1e-3, patience=20):
    """``fit()``'s loop written out for Pyro transforms: Adam + cosine, clip 5, early stop."""
    loc, scale = train.mean(0), train.std(0)
    base = dist.Normal(torch.zeros(DIM), torch.ones(DIM)).to_event(1)
    model = dist.TransformedDistribution(
        base, [*transforms, dist.transforms.AffineTransform(loc, scale, event_dim=1)]
    )
    params = list(modules.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    steps = math.ceil(len(train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
    best, best_state, best_epoch, since, epoch = math.inf, None, 0, 0, 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch - 1))
        for rows in order.split(batch_size):
            optimizer.zero_grad()
            loss = -model.log_prob(train[rows]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimizer.step()
            schedule.step()
            for module in modules:
                module.clear_cache()
        score = nll(model.log_prob, val)
        if score < best:
            best, best_epoch, since = score, epoch, 0
            best_state = copy.deepcopy(modules.state_dict())
        else:
            since += 1
            if since >= patience:
                break
    modules.load_state_dict(best_state)
    for module in modules:
        module.clear_cache()
    return model, epoch, best_epoch


def pyro_row(kind, options, quick, epochs) -> dict:
    train, _, test = digits(1, quick)
    train, _, val, _ = validation_split(train, None, 0.1, 0)  # what fit() holds out
    (v_train, _), (v_val, shift_val), (v_test, shift_test) = (
        logit_transform(rows, ALPHA) for rows in (train, val, test)
    )
    torch.manual_seed(0)
    modules, transforms = pyro_side(kind, options)
    start = time.perf_counter()
    model, last, best = fit_like(modules, transforms, v_train, v_val, epochs)
    seconds = time.perf_counter() - start
    # change of variables back to [0, 1): log p(x) = log q(v) + log|dv/dx|
    return {
        "epochs": last,
        "best": best,
        "val": nll(model.log_prob, v_val) - float(shift_val.double().mean()),
        "test": nll(model.log_prob, v_test) - float(shift_test.double().mean()),
        "seconds": seconds,
        "params": sum(p.numel() for p in modules.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny models and epochs (smoke)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quick = args.quick
    epochs = 2 if quick else 100
    best = {**BEST, "num_layers": 2, "hidden_dims": [64]} if quick else BEST
    coupling = {"num_layers": 2 if quick else 5, "hidden_dims": [64] if quick else [256, 256]}
    draws = 2 if quick else 8
    rows = [
        ("Gaussian (full covariance)", "-", "[0,1)", "-", lambda: gaussian_row(False, quick)),
        ("Gaussian (full covariance)", "-", "logit", "-", lambda: gaussian_row(True, quick)),
        (
            "nsf (coupling + LU)",
            f"L={coupling['num_layers']} H={coupling['hidden_dims']} K=8 B=3",
            "[0,1)",
            1,
            lambda: pyroflows_row("nsf", coupling, False, 1, {}, quick, epochs),
        ),
        (
            "maf",
            f"L={coupling['num_layers']} H={coupling['hidden_dims']}",
            "logit",
            1,
            lambda: pyroflows_row("maf", coupling, True, 1, {}, quick, epochs),
        ),
    ]
    arch = f"L={best['num_layers']} H={best['hidden_dims']} K={best['count_bins']} B=5"
    spline_rows = [
        ("nsf_autoregressive", "nsf_autoregressive", 1, {}),
        ("nsf_autoregressive", "nsf_autoregressive", draws, {}),
        ("nsf_autoregressive, random orders", "random orders", 1, {}),
        ("nsf_autoregressive, random orders", "random orders", draws, {}),
        ("random orders, weight_decay=3", "random orders", draws, {"weight_decay": 3.0}),
    ]
    for label, name, count, options in spline_rows:
        rows.append(
            (
                label,
                arch,
                "logit",
                count,
                lambda name=name, count=count, options=options: pyroflows_row(
                    name, best, True, count, options, quick, epochs
                ),
            )
        )
    rows.append(
        (
            "Pyro SplineAutoregressive",
            arch,
            "logit",
            1,
            lambda: pyro_row("spline", best, quick, epochs),
        )
    )
    rows.append(
        (
            "Pyro affine_autoregressive (MAF)",
            f"L={coupling['num_layers']} H={coupling['hidden_dims']}",
            "logit",
            1,
            lambda: pyro_row("affine", coupling, quick, epochs),
        )
    )

    print(f"# digits, {machine_line()}; fit() defaults unless noted; test bits/dim (17 levels)")
    header = (
        f"{'model':36} {'architecture':30} {'space':6} {'draws':>5} {'params':>9} "
        f"{'epochs':>6} {'best':>5} {'val NLL':>8} {'val b/d':>7} {'test NLL':>8} "
        f"{'test b/d':>8} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    for model, arch_text, space, count, run in rows:
        result = run()
        val = result["val"]
        val_text = (
            f"{val:8.2f} {bits_per_dim(val, DIM, LEVELS):7.3f}"
            if val == val
            else " " * 8 + "       -"
        )
        print(
            f"{model:36} {arch_text:30} {space:6} {count!s:>5} {result.get('params', '-')!s:>9} "
            f"{result['epochs']!s:>6} {result['best']!s:>5} {val_text} "
            f"{result['test']:8.2f} {bits_per_dim(result['test'], DIM, LEVELS):8.3f} "
            f"{result['seconds']:8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
