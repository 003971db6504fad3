# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Padding a flow: zeros or Gaussian noise?
#
# Affine couplings (RealNVP) become universal approximators once the data are *padded* with
# extra coordinates that the flow can use as a scratch pad (Huang, Dinh & Courville 2020).
# The usual padding is zeros, $e = 0$, but then the data lie on a slice of the padded space
# and the padded map has a singular Jacobian. Koehler, Mehta and Risteski (ICML 2021,
# arXiv:2010.01155) prove that affine couplings are universal *without* padding too, at the
# price of ill-conditioned Jacobians, and report experiments on 2-D data:
#
# > padding with zeros resulted in a very poorly conditioned model which produced poor samples
# > [...] iid Gaussian samples as values for the added dimensions [...] we found that in
# > practice it frequently does [result in better-conditioned networks] and it also results in
# > better samples [...] without padding, the model produces samples of middling quality and
# > has a condition number in between that of zero and Gaussian padding.
#
# This notebook repeats that comparison with `pyroflows.experiments.padding`. The same flow,
# `Flow.build("realnvp", ...)` with 8 affine couplings (alternating halves, MLP conditioners
# 64-64), is fitted to two data sets with
#
# * **none**: the 2-D data as they are;
# * **zero**: padded to 4-D with $e = 0$; the model's `log_prob` is then $\log p(x, 0)$, the
#   density on the slice, which is *not* a density of $x$ and no NLL;
# * **gaussian**: padded with $e \sim \mathcal{N}(0, s^2 I_2)$, $s = 0.5$; `log_prob` is the
#   importance-weighted lower bound $\mathcal{L}_K(x) \le \log p(x)$ (the ELBO, $K = 1$, in
#   training; $K = 64$ to evaluate);
# * **learned**: the same with $s$ learned, starting at 0.5.
#
# For each fit we measure at held-out data the condition number
# $\kappa = \sigma_{\max} / \sigma_{\min}$ of the flow's Jacobian (on the standardised, padded
# coordinates, at the points where `log_prob` inverts the flow, exact SVD), the generator's
# smallest singular value $\sigma_{\min}(\partial f / \partial z)$, the test NLL (exact, or
# the bound), and the energy distance between 1,000 samples and 1,000 test points (a
# sample-quality score that every model has, zero padding included). Set `PYROFLOWS_SMOKE=1`
# to run it in seconds (60 steps); the outputs shown come from a full run.

# %%
# %matplotlib inline
import os
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from pyroflows.experiments.padding import (
    PADDINGS,
    make_dataset,
    padding_table,
    summary_table,
)

SMOKE = os.environ.get("PYROFLOWS_SMOKE", "") not in ("", "0")
print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); smoke mode: {SMOKE}")

# %% [markdown]
# ## The data
#
# Two moons (`make_toy("moons")`), and a noisy line $y = x$ (`degenerate_line`):
# $x = t\,(1, 1) + \sigma \varepsilon$ with $t \sim \mathcal{N}(0, 1)$,
# $\varepsilon \sim \mathcal{N}(0, I_2)$ and $\sigma = 0.05$, a spread of $\sqrt 2$ along the
# line and $0.05$ across it: 2-D data with a nearly degenerate direction, where even the best
# unpadded map to a standard normal has a condition number of about $\sqrt 2 / \sigma
# \approx 28$. Each data set has 2,000 training and 1,000 test points (fresh draws).

# %%
DATASETS = ["moons", "line"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, name in zip(axes, DATASETS, strict=True):
    x = make_dataset(name, 2000, seed=0)
    ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
    ax.set_title(name)
    ax.set_aspect("equal")
plt.show()

# %% [markdown]
# ## The fits
#
# Each fit is `padding_run`: 3,000 Adam steps (learning rate $10^{-3}$) on minibatches of 256,
# the loss `-log_prob` (exact NLL, ELBO, or $-\log p(x, 0)$), with the conditioning recorded
# every 150 steps at 200 fixed test points. The full run uses one seed per cell to stay within
# about five minutes on one thread (a fit takes about 35 s); the issue's own reproduction and
# `tests/test_padding_experiment.py` (three seeds checked at a small size while writing it)
# give the spread.

# %%
STEPS = 60 if SMOKE else 3000
SEEDS = [0]
ROWS = {"train_rows": 500, "test_rows": 200} if SMOKE else {"train_rows": 2000, "test_rows": 1000}

start = time.perf_counter()
rows = padding_table(DATASETS, PADDINGS, SEEDS, STEPS, **ROWS)
print(f"{len(rows)} fits of {STEPS} steps in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## The table
#
# Median and maximum condition number over the test points, the generator's smallest singular
# value, the test NLL in nats (exact for *none*; an upper bound, $-\mathcal{L}_{64}$, for the
# Gaussian paddings; none for *zero*), $-\log p(x, 0)$ for zero padding in its own column,
# the energy distance of samples to test data (lower is better; two independent draws of
# 1,000 points from the data distribution itself give 0.0006 for the moons and 0.001 to
# 0.003 for the line, the floor), and the final padding scale $s$.

# %%
print(summary_table(rows))

# %% [markdown]
# ## Samples
#
# 1,000 samples of each model (the padding dropped), over the test data in grey.

# %%
fig, axes = plt.subplots(
    len(DATASETS), len(PADDINGS), figsize=(3.2 * len(PADDINGS), 3.2 * len(DATASETS))
)
for i, name in enumerate(DATASETS):
    test = make_dataset(name, ROWS["test_rows"], seed=10_000 + SEEDS[0])
    for j, pad in enumerate(PADDINGS):
        run = next(r for r in rows if (r.dataset, r.padding, r.seed) == (name, pad, SEEDS[0]))
        ax = axes[i, j]
        ax.scatter(test[:, 0], test[:, 1], s=2, color="lightgray")
        ax.scatter(run.samples[:, 0], run.samples[:, 1], s=2, color="C0", alpha=0.6)
        lo, hi = test.min(0).values - 0.5, test.max(0).values + 0.5
        ax.set_xlim(float(lo[0]), float(hi[0]))
        ax.set_ylim(float(lo[1]), float(hi[1]))
        ax.set_title(f"{name}, {pad}: cond {run.cond_median:.0f}, E {run.energy:.3f}", fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Condition numbers at the test points
#
# Histograms of $\log_{10} \kappa$ over 500 test points per model.

# %%
fig, axes = plt.subplots(1, len(DATASETS), figsize=(11, 4))
for ax, name in zip(axes, DATASETS, strict=True):
    for pad in PADDINGS:
        run = next(r for r in rows if (r.dataset, r.padding, r.seed) == (name, pad, SEEDS[0]))
        values = np.log10(run.conditions.numpy())
        ax.hist(values, bins=40, alpha=0.5, label=pad)
    ax.set_xlabel("log10 condition number")
    ax.set_title(name)
    ax.legend()
plt.show()

# %% [markdown]
# ## Over training
#
# The median condition number and the generator's smallest singular value at 200 fixed test
# points (fixed padding draws), every 150 steps.

# %%
fig, axes = plt.subplots(2, len(DATASETS), figsize=(11, 7), sharex=True)
for j, name in enumerate(DATASETS):
    for pad in PADDINGS:
        run = next(r for r in rows if (r.dataset, r.padding, r.seed) == (name, pad, SEEDS[0]))
        axes[0, j].plot(run.curve["step"], run.curve["cond_median"], label=pad)
        axes[1, j].plot(run.curve["step"], run.curve["sigma_min"], label=pad)
    axes[0, j].set_title(name)
    axes[0, j].set_ylabel("median condition number")
    axes[1, j].set_ylabel("smallest singular value of df/dz")
    axes[1, j].set_xlabel("Adam step")
    for ax in axes[:, j]:
        ax.set_yscale("log")
        ax.legend()
plt.show()

# %% [markdown]
# ## What we measured and what the paper says
#
# **The paper** (introduction, on its experiments) finds on synthetic 2-D data that zero padding
# gives very poorly conditioned models with poor samples, that Gaussian padding (no theory)
# frequently gives better-conditioned models and better samples, and that without padding
# both the samples and the condition number are in between.
#
# **We measured** (full run: 3,000 Adam steps, one seed per cell; median / maximum $\kappa$
# over 500 test points; $\sigma_{\min}$ of $\partial f / \partial z$; NLL in nats, exact
# for *none*, the upper bound $-\mathcal{L}_{64}$ for the Gaussian paddings; "slice":
# $-\log p(x, 0)$; energy distance over 1,000 samples, floor about 0.001):
#
# | data | padding | med. $\kappa$ | max $\kappa$ | $\sigma_{\min}$ | NLL | slice | energy | $s$ |
# |---|---|---|---|---|---|---|---|---|
# | moons | none | 8.4 | 6,080 | 0.0069 | 2.65 | - | 0.0131 | - |
# | moons | zero | 1,550 | 3,890 | 0.00021 | - | -8.05 | 0.0339 | - |
# | moons | gaussian | 7.2 | 436 | 0.040 | $\le$ 2.45 | - | 0.0023 | 0.50 |
# | moons | learned | 6.1 | 450 | 0.036 | $\le$ 2.44 | - | 0.0018 | 0.46 |
# | line | none | 25.4 | 142 | 0.016 | 0.23 | - | 0.0012 | - |
# | line | zero | 755 | 3,450 | 0.010 | - | 1.16 | 12.7 | - |
# | line | gaussian | 26.2 | 51.9 | 0.039 | $\le$ 0.21 | - | 0.0024 | 0.50 |
# | line | learned | 26.5 | 56.4 | 0.039 | $\le$ 0.21 | - | 0.0022 | 0.50 |
#
# * **Zero padding is by far the worst conditioned in the median**, as the paper says: a median
#   condition number 200 times the Gaussian padding's on the moons and 30 times on the line,
#   and a generator whose smallest singular value is 4 to 200 times smaller (it squashes the
#   padding directions: in the curves above its $\sigma_{\min}$ falls during training on the
#   moons and stays far below the others' on the line). Its samples are the worst too: 15 times
#   the Gaussian padding's energy distance on the moons, and on the line a few samples thrown
#   far off the line (padding draws the model never saw) make it thousands of times worse. Its
#   $-\log p(x, 0)$ (e.g. $-8.05$ on the moons) is no NLL and must not be read as a better fit.
# * **Gaussian padding is as well or better conditioned than no padding**: about equal in the
#   median (7.2 against 8.4 on the moons, 26 against 25 on the line, where $\sqrt 2/\sigma
#   \approx 28$ is the floor the data impose) and much better at the worst test point (436
#   against 6,080; 52 against 142), with a larger $\sigma_{\min}$. Its samples are better on the
#   moons (energy 0.002 against 0.013: the unpadded flow leaves mass between the moons) and at
#   the sampling floor on the line, where the unpadded flow is as good. Its NLL *bound* is
#   already below the unpadded exact NLL on both data sets, so the padded model's true NLL is
#   lower still.
# * **The paper's ordering** "none in between" holds on the moons for the samples and, narrowly,
#   for the median condition number; but the unpadded flow has the worst single test point of
#   all (6,080, above zero padding's 3,890). On the line, no padding and Gaussian padding tie.
#   **Learning the scale** changes little here: $s$ stays near its start (0.46 and 0.50) and
#   the numbers match the fixed $s = 0.5$.
# * **Against the reproduction** (same architecture and steps: zero padding median
#   $\kappa$ 1,050 on moons / 1,390 on its line against 38 / 263 unpadded and 34 / 224
#   Gaussian; samples 5 to 9 times worse): the same ordering and similar zero-padding numbers.
#   Our unpadded and Gaussian numbers are lower; for the line probably because ours is less
#   degenerate ($\sigma = 0.05$), for the moons possibly because we measure the flow on
#   standardised coordinates (we did not check which). One seed per cell is a cut made to keep
#   the notebook near five minutes on one thread; at a small size (4 couplings, 150 steps) zero
#   padding's median $\kappa$ exceeded Gaussian padding's by 14 to 150 times on each of three
#   seeds and both data sets, and `tests/test_padding_experiment.py` checks that trend on
#   every run.
