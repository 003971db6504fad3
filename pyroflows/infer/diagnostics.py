r"""Did the variational fit work? Importance-sampling diagnostics and posterior draws.

:func:`importance_diagnostics` uses the guide :math:`q` as an importance-sampling proposal
for the posterior :math:`p(z \mid x)` and reports how well that works: the Pareto
:math:`\hat k` of the importance weights' upper tail (Yao et al. 2018; Vehtari et al. 2024),
their effective sample size, and the importance-weighted estimate of :math:`\log p(x)`.
Posterior draws and their conversion to ArviZ are in :mod:`pyroflows.infer.samples`.

References:
    Yuling Yao, Aki Vehtari, Daniel Simpson, Andrew Gelman, "Yes, but did it work?:
    Evaluating variational inference", ICML 2018, arXiv:1802.02538.

    Aki Vehtari, Daniel Simpson, Andrew Gelman, Yuling Yao, Jonah Gabry, "Pareto smoothed
    importance sampling", JMLR 25 (2024), arXiv:1507.02646.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.infer.importance import vectorized_importance_weights
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from ._traces import model_and_guide_traces, vectorized_or_loop

__all__ = ["ImportanceDiagnostics", "importance_diagnostics"]

_MIN_TAIL = 5  # distinct tail values needed for the generalized Pareto fit
_CUTOFF_MIN = math.log(1e-15)  # weights below 1e-15 of the largest never enter the tail


def _pareto_k(log_weights: Tensor) -> float:
    r"""Pareto :math:`\hat k` of the upper tail of ``exp(log_weights)``, as Pyro/PSIS fit it.

    The tail is the :math:`M = \lceil \min(S/5, 3\sqrt S) \rceil` largest weights (above
    the :math:`(M+1)`-th largest); ``fit_generalized_pareto`` (Zhang & Stephens 2009, with
    PSIS's weak prior towards 0.5) fits their exceedances. Returns ``-inf`` when the largest
    weights are all equal up to rounding (bounded weights, as for an exact guide), ``inf``
    when one weight exceeds all others by more than a factor 1e15, ``nan`` when ``S <= 20``.
    """
    lw = log_weights.detach().double().flatten().cpu()
    size = lw.numel()
    tail_size = math.ceil(min(0.2 * size, 3.0 * math.sqrt(size)))
    if tail_size < _MIN_TAIL:
        return math.nan
    lw = torch.sort(lw - lw.max()).values
    order_cutoff = float(lw[-tail_size - 1])
    cutoff = max(_CUTOFF_MIN, order_cutoff)
    tail = lw[lw > cutoff]
    if torch.unique(tail).numel() < _MIN_TAIL:
        return math.inf if cutoff > order_cutoff else -math.inf
    k, _ = fit_generalized_pareto(tail.exp() - math.exp(cutoff))
    return float(k)


@dataclass(frozen=True, eq=False)
class ImportanceDiagnostics:
    r"""Importance sampling with a guide as the proposal: Pareto :math:`\hat k`, ESS, evidence.

    With :math:`S` draws :math:`z_s \sim q(z)` the log importance weights are

    .. math::
        \log w_s = \log p(x, z_s) - \log q(z_s),

    the effective sample size of the self-normalised weights is

    .. math::
        \mathrm{ESS} = \frac{\left(\sum_s w_s\right)^2}{\sum_s w_s^2}
        \in [1, S],

    and :math:`\log \frac{1}{S} \sum_s w_s` estimates :math:`\log p(x)` (from below, on
    average), while :math:`\frac{1}{S}\sum_s \log w_s` estimates the ELBO.

    :math:`\hat k` is the shape of a generalized Pareto distribution fitted to the largest
    weights. Thresholds (Vehtari et al. 2024; Yao et al. 2018): :math:`\hat k < 0.5` good (the
    weights have finite variance: the guide covers the posterior's tails);
    :math:`0.5 \le \hat k \le 0.7` ok (finite mean, slower convergence; usable);
    :math:`\hat k > 0.7` unreliable (the guide misses posterior mass; importance-weighted
    estimates, and the guide's own, may be far off). With :math:`S` draws the reliable range
    is in fact :math:`\hat k < \min(1 - 1/\log_{10} S,\ 0.7)`.

    Attributes:
        pareto_k: :math:`\hat k` (``-inf`` when the largest weights are all equal, as for the
            exact posterior; ``nan`` with 20 draws or fewer).
        ess: effective sample size of the self-normalised weights.
        ess_fraction: ``ess / num_samples``.
        log_marginal: :math:`\log \frac{1}{S}\sum_s w_s`, the importance-weighted estimate of
            :math:`\log p(x)`.
        elbo: :math:`\frac{1}{S}\sum_s \log w_s`, the Monte Carlo ELBO.
        log_weights: the :math:`\log w_s`, shape ``(S,)``.

    References:
        Yuling Yao, Aki Vehtari, Daniel Simpson, Andrew Gelman, "Yes, but did it work?:
        Evaluating variational inference", 2018, arXiv:1802.02538.

        Aki Vehtari, Daniel Simpson, Andrew Gelman, Yuling Yao, Jonah Gabry, "Pareto
        smoothed importance sampling", 2024 (first 2015), arXiv:1507.02646.

    Example:
        Log-normal weights (a light tail) and Pareto weights of shape k = 1 (a heavy one):

        >>> _ = torch.manual_seed(0)
        >>> good = ImportanceDiagnostics.from_log_weights(0.2 * torch.randn(4000))
        >>> good.verdict, good.ess_fraction > 0.9
        ('good', True)
        >>> heavy = ImportanceDiagnostics.from_log_weights(torch.rand(4000).log() * -1.0)
        >>> heavy.verdict, heavy.ess_fraction < 0.1
        ('unreliable', True)
    """

    pareto_k: float
    ess: float
    ess_fraction: float
    log_marginal: float
    elbo: float
    log_weights: Tensor

    @classmethod
    def from_log_weights(cls, log_weights: Tensor) -> ImportanceDiagnostics:
        """Compute every diagnostic from log importance weights of shape ``(S,)``.

        Raises:
            ValueError: on NaN or ``+inf`` log weights, or when all are ``-inf``.
        """
        log_weights = torch.as_tensor(log_weights).detach().flatten()
        lw = log_weights.double()
        bad = int((torch.isnan(lw) | (lw == math.inf)).sum())
        if bad:
            raise ValueError(f"{bad} of {lw.numel()} log importance weights are NaN or +inf")
        if not bool(torch.isfinite(lw).any()):
            raise ValueError(
                "all importance weights are zero: the model has zero density at every guide "
                "sample (check the guide's support)"
            )
        size = lw.numel()
        log_sum = torch.logsumexp(lw, 0)
        ess = float(torch.exp(2.0 * log_sum - torch.logsumexp(2.0 * lw, 0)))
        finite = lw[torch.isfinite(lw)]
        elbo = float(finite.mean()) if finite.numel() == size else -math.inf
        return cls(
            pareto_k=_pareto_k(lw),
            ess=ess,
            ess_fraction=ess / size,
            log_marginal=float(log_sum) - math.log(size),
            elbo=elbo,
            log_weights=log_weights,
        )

    @property
    def num_samples(self) -> int:
        """The number of draws :math:`S`."""
        return self.log_weights.numel()

    @property
    def verdict(self) -> str:
        r"""``"good"`` (:math:`\hat k < 0.5`), ``"ok"`` (:math:`\le 0.7`), ``"unreliable"``.

        ``"undetermined"`` when :math:`\hat k` is ``nan`` (too few draws).
        """
        if math.isnan(self.pareto_k):
            return "undetermined"
        if self.pareto_k < 0.5:
            return "good"
        return "ok" if self.pareto_k <= 0.7 else "unreliable"

    def to_dict(self) -> dict[str, float | int | str]:
        """The scalar diagnostics (no weights), JSON-friendly."""
        return {
            "pareto_k": self.pareto_k,
            "verdict": self.verdict,
            "ess": self.ess,
            "ess_fraction": self.ess_fraction,
            "log_marginal": self.log_marginal,
            "elbo": self.elbo,
            "num_samples": self.num_samples,
        }

    def summary(self) -> str:
        """A few lines stating the diagnostics and what they mean."""
        meaning = {
            "good": "the weights have finite variance; the guide covers the posterior",
            "ok": "usable, but importance-weighted estimates converge slowly",
            "unreliable": "the guide misses posterior mass; do not trust its tails or "
            "importance-weighted estimates",
            "undetermined": "too few draws to fit the tail; use at least a few hundred",
        }[self.verdict]
        threshold = min(1.0 - 1.0 / math.log10(max(self.num_samples, 11)), 0.7)
        gap = self.log_marginal - self.elbo
        return "\n".join(
            [
                f"Importance sampling with the guide as proposal ({self.num_samples} draws):",
                f"  Pareto k = {self.pareto_k:.3f}: {self.verdict} ({meaning})",
                f"  ESS = {self.ess:.1f} ({100 * self.ess_fraction:.1f}% of the draws)",
                f"  log p(x) estimate = {self.log_marginal:.4f}, ELBO = {self.elbo:.4f} "
                f"(gap {gap:.4f}, an estimate of KL(q || posterior))",
                "  Thresholds (Vehtari et al. 2024; Yao et al. 2018): k < 0.5 good, "
                "0.5-0.7 ok, k > 0.7 unreliable;",
                f"  with {self.num_samples} draws, reliable needs k < {threshold:.2f}.",
            ]
        )

    def __str__(self) -> str:
        return self.summary()


def _max_plate_nesting(*traces) -> int:
    dims = [
        frame.dim
        for trace in traces
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


def _sequential_log_weights(model, guide, num_samples: int, args, kwargs) -> Tensor:
    values = []
    for _ in range(num_samples):
        model_trace, guide_trace = model_and_guide_traces(model, guide, args, kwargs)
        values.append(model_trace.log_prob_sum() - guide_trace.log_prob_sum())
    return torch.stack([torch.as_tensor(v) for v in values])


def _vectorized_log_weights(model, guide, num_samples, chunk_size, nesting, args, kwargs):
    chunks = []
    for start in range(0, num_samples, chunk_size):
        count = min(chunk_size, num_samples - start)
        log_weights, _, _ = vectorized_importance_weights(
            model, guide, *args, num_samples=count, max_plate_nesting=nesting, **kwargs
        )
        chunks.append(log_weights.detach().reshape(-1))
        if chunks[-1].numel() != count:
            raise ValueError(
                f"vectorized weights have shape {tuple(log_weights.shape)}, expected ({count},)"
            )
    return torch.cat(chunks)


def importance_diagnostics(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    max_plate_nesting: int | None = None,
    chunk_size: int | None = None,
    vectorize: bool | None = None,
    **kwargs: Any,
) -> ImportanceDiagnostics:
    r"""Pareto :math:`\hat k`, ESS and :math:`\log p(x)` of ``guide`` as a proposal for ``model``.

    Draws ``num_samples`` samples :math:`z_s \sim q` from the guide, replays the model on
    them, and computes :math:`\log w_s = \log p(x, z_s) - \log q(z_s)` from the two traces'
    log densities, as :class:`pyro.infer.Importance` does; see
    :class:`ImportanceDiagnostics` for what is reported and the thresholds. Guide sites
    marked ``is_auxiliary`` (the joint latent of :class:`~pyro.infer.autoguide.AutoContinuous`
    guides, whose per-site ``Delta`` samples carry the Jacobian of the unpacking transform)
    count in :math:`\log q`, which is what makes :math:`q` the density of the model's latents;
    a guide whose auxiliary variables are *not* a deterministic, invertible function of the
    latents has no tractable marginal :math:`q(z)`, and these weights are then not importance
    weights for :math:`p(z \mid x)`. Subsampled plates scale the log-likelihood, so use the
    full data.

    The draws are vectorized (an outer :func:`pyro.plate` over samples, in chunks of
    ``chunk_size`` to bound memory), which needs a model and guide that declare their batch
    dimensions with ``pyro.plate``. With ``vectorize=None`` a failing vectorized run falls
    back, with a warning, to a Python loop over draws (slower, same result).

    Args:
        model: Pyro model.
        guide: Pyro guide (trained or not).
        *args: positional arguments of the model and guide.
        num_samples: number of draws :math:`S` (a few hundred at least for :math:`\hat k`).
        max_plate_nesting: bound on nested plates in the model and guide (default: found
            by running them once).
        chunk_size: draws per vectorized pass (default: all at once).
        vectorize: ``True``: vectorized only; ``False``: Python loop; ``None``: vectorized,
            falling back to the loop.
        **kwargs: keyword arguments of the model and guide.

    Returns:
        The :class:`ImportanceDiagnostics`.

    References:
        Yuling Yao, Aki Vehtari, Daniel Simpson, Andrew Gelman, "Yes, but did it work?:
        Evaluating variational inference", 2018, arXiv:1802.02538.

        Aki Vehtari, Daniel Simpson, Andrew Gelman, Yuling Yao, Jonah Gabry, "Pareto
        smoothed importance sampling", 2024 (first 2015), arXiv:1507.02646.

    Example:
        The exact posterior of ``mu ~ N(0, 1)``, ``y ~ N(mu, 1)`` is ``N(y / 2, 1 / 2)``;
        with it as the guide every weight is the evidence :math:`p(y) = \mathcal N(y; 0, 2)`:

        >>> import pyro, pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(torch.zeros(()), 1.0))
        ...     pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> def exact(y):
        ...     pyro.sample("mu", dist.Normal(y / 2, 0.5**0.5))
        >>> pyro.set_rng_seed(0)
        >>> y = torch.tensor(1.0)
        >>> result = importance_diagnostics(model, exact, y, num_samples=500)
        >>> log_evidence = dist.Normal(0.0, 2**0.5).log_prob(y).item()
        >>> abs(result.log_marginal - log_evidence) < 1e-5, result.verdict, round(result.ess)
        (True, 'good', 500)
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")

    def vectorized() -> Tensor:
        with torch.no_grad():
            nesting = max_plate_nesting
            if nesting is None:
                nesting = _max_plate_nesting(*model_and_guide_traces(model, guide, args, kwargs))
            return _vectorized_log_weights(
                model, guide, num_samples, chunk_size or num_samples, nesting, args, kwargs
            )

    def sequential() -> Tensor:
        with torch.no_grad():
            return _sequential_log_weights(model, guide, num_samples, args, kwargs)

    log_weights = vectorized_or_loop(
        vectorized,
        sequential,
        vectorize,
        "importance sampling",
        hint=" (or pass max_plate_nesting)",
    )
    return ImportanceDiagnostics.from_log_weights(log_weights)
