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
# # The depth a flow needs: mixtures of Gaussians on a sphere
#
# Koehler, Mehta and Risteski (ICML 2021, arXiv:2010.01155) prove that invertibility costs
# depth. Their example is a mixture of $k$ equal-weight Gaussians whose means are drawn at
# random on a sphere: a tiny *non-invertible* generator, "pick a component $c$, return
# $\mu_c + \sigma \varepsilon$", produces it exactly, but for $k$ up to $e^{o(d)}$ there are
# such mixtures that no composition of few Lipschitz invertible layers with few parameters
# per layer approximates, in KL or in Wasserstein distance. The theorem is an existence
# result without constants to measure. This notebook measures its practical shadow with the
# library's flows (`pyroflows.experiments.depth`): how the KL divergence of a *trained* flow
# to the mixture falls with its depth, for
#
# * **affine couplings** (`"realnvp"`: halves swapped from layer to layer) and **spline
#   couplings** (`"nsf"`: rational-quadratic splines with 8 bins, an LU mixing layer after each
#   coupling), both with MLP conditioners 64-64, depths $L = 1, 2, 4, 8$ (and 16 for the
#   cheaper affine couplings);
# * $k = 2, 8, 32$ components in $d = 8$ dimensions, and $d = 4, 8, 16$ with $k = 8$;
# * the non-invertible generator of the theorem as the reference, fitted by EM
#   (`generator_run`): depth one, $k (d + 2) - 1$ parameters.
#
# The mixture's exact density (`sphere_mixture_distribution`) turns the test NLL into a KL
# estimate: on fresh test points $x_i \sim p$,
# $\widehat{\mathrm{KL}}(p \,\|\, q) = \frac1n \sum_i \log p(x_i) - \log q(x_i)$, an unbiased
# estimate with a standard error from the paired differences. Set `PYROFLOWS_SMOKE=1` to run
# it in seconds; the outputs shown come from a full run.

# %%
# %matplotlib inline
import os
import time

import matplotlib.pyplot as plt
import torch

from pyroflows.data import sphere_mixture, sphere_mixture_distribution
from pyroflows.experiments.depth import DEPTH_FLOWS, depth_needed, depth_table, kl_table

SMOKE = os.environ.get("PYROFLOWS_SMOKE", "") not in ("", "0")
torch.set_num_threads(1)
print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); smoke mode: {SMOKE}")

# %% [markdown]
# ## The data
#
# Unit sphere, component spread $\sigma = 0.1$, means fixed by `means_seed=0`. In high
# dimension random points on a sphere are nearly equidistant (distance about $\sqrt 2$), so
# the components are well separated: the mixture has $k$ distinct modes. Below, the first two
# principal components of 2,000 draws for $d = 8$.

# %%
fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
for ax, k in zip(axes, [2, 8, 32], strict=True):
    x = sphere_mixture(2000, 8, num_components=k, seed=0)
    centred = x - x.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    projected = centred @ v[:2].T
    ax.scatter(projected[:, 0], projected[:, 1], s=2, alpha=0.4)
    means = sphere_mixture_distribution(8, k).component_distribution.base_dist.loc
    distances = torch.pdist(means)
    ax.set_title(
        f"d = 8, k = {k}: mean distance {distances.mean():.2f} (min {distances.min():.2f})"
    )
    ax.set_aspect("equal")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The fits
#
# `depth_run` fits each flow with `fit()` on 50,000 training rows (10% of them the validation
# split for early stopping), about 3,000 Adam steps of 256 rows at a peak learning rate of
# $10^{-3}$ with cosine decay, and scores 5,000 fresh test points. With that many rows the
# fits are limited by the model, not by overfitting (a pilot with 5,000 rows stopped early
# and left the 8-layer spline flow at a KL of 1.56 where 50,000 rows give 0.48, on $k = 32$).
# One seed per cell keeps the notebook near 20 minutes on one thread.

# %%
if SMOKE:
    STEPS, DEPTHS, DEEP = 30, [1, 2], []
    ROWS = {"train_rows": 600, "test_rows": 300, "hidden_dims": [16]}
    COMPONENTS, DIMS, D_FIXED, K_FIXED = [2, 8], [4], 4, 8
else:
    STEPS, DEPTHS, DEEP = 3000, [1, 2, 4, 8], [16]
    ROWS = {"train_rows": 50_000, "test_rows": 5000, "hidden_dims": [64, 64]}
    COMPONENTS, DIMS, D_FIXED, K_FIXED = [2, 8, 32], [4, 8, 16], 8, 8

start = time.perf_counter()
rows = depth_table(DEPTH_FLOWS, [D_FIXED], COMPONENTS, DEPTHS, steps=STEPS, **ROWS)
rows += depth_table(
    DEPTH_FLOWS, [d for d in DIMS if d != D_FIXED], [K_FIXED], DEPTHS, steps=STEPS, **ROWS
)
cells = {(d, k) for d in [D_FIXED] for k in COMPONENTS} | {(d, K_FIXED) for d in DIMS}
for d, k in sorted(cells):  # the cheaper affine couplings also at depth 16
    rows += depth_table(["realnvp"], [d], [k], DEEP, steps=STEPS, generator=False, **ROWS)
print(f"{len(rows)} fits in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## KL against depth
#
# Median estimate of $\mathrm{KL}(p \,\|\, q)$ in nats per depth (one seed: the value), the
# generator's under $L = 1$, and the smallest depth of the grid within 0.1 nats ("needed";
# `>L` when even the deepest misses). Standard errors are printed below the table.

# %%
print(kl_table(rows, tolerance=0.1))
worst = max(rows, key=lambda row: row.kl_se)
print(
    f"\nlargest standard error: {worst.kl_se:.3f} ({worst.flow}, d={worst.dim}, "
    f"k={worst.num_components}, L={worst.depth}); median "
    f"{sorted(r.kl_se for r in rows)[len(rows) // 2]:.3f}"
)


# %%
def plot_kl(ax, flow, cells, label):
    """KL against depth for ``flow`` on each (d, k) of ``cells``, the generator dotted."""
    for d, k in cells:
        mine = sorted(
            (r for r in rows if (r.flow, r.dim, r.num_components) == (flow, d, k)),
            key=lambda r: r.depth,
        )
        line = ax.errorbar(
            [r.depth for r in mine],
            [max(r.kl, 1e-3) for r in mine],
            yerr=[2 * r.kl_se for r in mine],
            marker="o",
            label=label(d, k),
        )
        reference = next(
            r for r in rows if (r.flow, r.dim, r.num_components) == ("generator", d, k)
        )
        ax.axhline(max(reference.kl, 1e-3), color=line[0].get_color(), linestyle=":")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("depth L (layers)")
    ax.set_ylabel("KL(p || q), nats")
    ax.legend(fontsize=8)


fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey=True)
for j, flow in enumerate(DEPTH_FLOWS):
    plot_kl(axes[0, j], flow, [(D_FIXED, k) for k in COMPONENTS], lambda d, k: f"k = {k}")
    axes[0, j].set_title(f"{flow}, d = {D_FIXED}: more components")
    plot_kl(axes[1, j], flow, [(d, K_FIXED) for d in DIMS], lambda d, k: f"d = {d}")
    axes[1, j].set_title(f"{flow}, k = {K_FIXED}: more dimensions")
fig.suptitle("KL of the trained flow (solid) and of the EM-fitted generator (dotted)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Depth needed, parameters and time
#
# The depth needed at two tolerances, and for each flow at its deepest the parameter count
# and the wall-clock time of the fit, next to the generator's.

# %%
for tolerance in (0.1, 0.5):
    needed = depth_needed(rows, tolerance)
    print(f"depth needed for KL <= {tolerance} nats:")
    for (flow, d, k), depth in needed.items():
        print(f"  {flow:<10} d={d:<3} k={k:<3} {depth if depth else 'more than tried'}")

print(f"\n{'flow':<10} {'d':>3} {'k':>3} {'L':>3} {'params':>8} {'KL':>7} {'seconds':>8}")
for d, k in sorted(cells):
    mine = [r for r in rows if (r.dim, r.num_components) == (d, k)]
    for flow in ("generator", *DEPTH_FLOWS):
        row = max((r for r in mine if r.flow == flow), key=lambda r: r.depth)
        print(
            f"{flow:<10} {d:>3} {k:>3} {row.depth:>3} {row.num_params:>8} {row.kl:>7.3f} "
            f"{row.seconds:>8.1f}"
        )

# %% [markdown]
# ## What we measured and what the paper states
#
# **The paper** proves that for every $k$ up to $e^{o(d)}$ some mixtures of $k$ Gaussians with
# means on a sphere, each the output of a small depth-one generator, are far from every
# composition of few Lipschitz invertible layers with few parameters per layer: the depth
# (or the size) an invertible model needs grows with the number of modes it must represent.
# It has no experiment on this point and no constants to compare with.
#
# **We measured** (full run above: one seed per cell, 50 fits in 18.5 minutes on one thread;
# KL in nats, standard errors 0.011 in the median and at most 0.042):
#
# * **The required depth grows with the number of modes**, as the theorem's shadow should.
#   In $d = 8$, RealNVP reaches 0.1 nats at $L = 4$ for $k = 2$, misses it at $L = 16$ for
#   $k = 8$ (0.21) and is at 0.90 for $k = 32$; NSF reaches it at $L = 2$ for $k = 2$, is at
#   0.115 at $L = 8$ for $k = 8$ and at 0.48 for $k = 32$. At 0.5 nats: RealNVP needs 2, 8
#   and more than 16 layers for $k = 2, 8, 32$; NSF needs 1, 2 and 8.
# * **And with the dimension** at a fixed $k = 8$: RealNVP at $L = 8$ has KL 0.20, 0.31 and
#   0.49 in $d = 4, 8, 16$; NSF at $L = 8$ 0.05, 0.12 and 0.27 (needing 2, 2 and 4 layers for
#   0.5 nats).
# * **The non-invertible generator** $(c, \varepsilon) \mapsto \mu_c + s_c \varepsilon$, depth
#   one with $k (d + 2) - 1$ parameters (19 to 319), fits every case to within 0.004 nats in
#   about a second of EM, while the flows with 60,000 to 140,000 parameters and 8 or 16
#   layers do not reach 0.1 nats beyond the easiest cells. This is the gap the theorem is
#   about; our measurement adds a training procedure, so it shows what depth *buys in
#   practice*, not the representational limit alone.
# * **Splines buy more per layer** than affine couplings: NSF at depth $L$ is about as good as
#   RealNVP at $2L$ to $4L$ (or more, for $k = 32$), at about five times the time per layer
#   (spline plus LU mixing layer), so per second of training they are ahead too.
# * **Caveats.** One seed per cell (the test-set standard errors are small, but the spread
#   over training seeds is not measured); a fixed budget of about 3,000 steps, which favours
#   shallow models (the deeper flows were still improving); a non-monotone cell (NSF, $d = 8$,
#   $k = 2$: 0.034 at $L = 2$, 0.06 at $L = 4$ and 8) shows the optimisation noise at that
#   level. `tests/test_depth_experiment.py` checks the trend on every CI run at a small size:
#   one Gaussian needs one layer, eight modes need more, and four layers beat one by far.
