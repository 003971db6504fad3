r"""The flow autoguide: any registered flow as the posterior of a Pyro model's latents."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoContinuous
from pyro.infer.autoguide.initialization import init_to_median
from torch import Tensor, nn
from torch.distributions import AffineTransform, ComposeTransform, Transform

from ..transforms import REGISTRY, FlowModule, FlowSequence, InverseFlow, TriangularLinear, spec_of
from ._checks import SplineTailCheck, check_finite_draws
from ._defaults import AUTOFLOW_INIT_SCALE, autoflow_flow_options, autoflow_linear
from .posterior import FlowPosterior

__all__ = ["AutoFlow"]

_STANDARDISE_DRAWS = 512


class AutoFlow(AutoContinuous):
    r"""Flow autoguide: a normalizing flow over all continuous latents of a Pyro model.

    Like Pyro's :class:`~pyro.infer.autoguide.AutoContinuous`, every latent site is mapped to
    unconstrained space with ``biject_to(site.support).inv`` and the pieces are concatenated
    into one vector :math:`z \in \mathbb{R}^D`, whose posterior is

    .. math::
        z = \mu + \sigma \odot f(\varepsilon), \qquad \varepsilon \sim \mathcal{N}(0, I_D),
        \qquad \log q(z) = \log \mathcal{N}(\varepsilon; 0, I)
        - \log\left|\det \frac{\partial f}{\partial \varepsilon}\right| - \sum_i \log\sigma_i

    (a :class:`~pyroflows.infer.FlowPosterior`), with :math:`f` any flow of
    :data:`~pyroflows.transforms.REGISTRY` or a callable ``dim -> transform``. Each site's
    value is then ``biject_to(support)`` of its slice, scored with the log-det of that map.

    **Start.** :math:`\mu` starts at the model's initial values (``init_loc_fn``, default
    :func:`~pyro.infer.autoguide.initialization.init_to_median`) and the flow at (or near)
    the identity; :math:`\mu, \sigma` are then corrected by the mean and standard deviation
    of the initial flow's output, so that the guide starts as (close to)
    :math:`\mathcal{N}(\text{init}, \text{init\_scale}^2 I)` whatever the flow's own
    initialisation (e.g. the gated IAF, which contracts by :math:`\text{sigmoid}(2)` per layer,
    or a randomly initialised LU layer).

    **One pass per step.** A draw and its log-density come from one forward pass of the flow
    (every pyroflows transform returns its log-det with the forward map); no cache is needed
    for a correct ELBO, so :class:`~pyro.infer.JitTrace_ELBO` traces it. Flows whose forward
    direction is sequential (``maf``, ``nsf_autoregressive``, ``naf``: the registry's
    ``fast_direction == "inverse"``) still work but cost :math:`D` passes per sample; a
    warning says so. Use ``iaf``, ``spline_autoregressive``, couplings, planar or radial.

    Supports what Pyro's autoguides support: ``Predictive``, ``Trace_ELBO``,
    ``TraceGraph_ELBO``, ``TraceMeanField_ELBO``, ``RenyiELBO``, ``JitTrace_ELBO``,
    ``vectorize_particles=True``, :meth:`median`, :meth:`quantiles`, and
    :meth:`sample_posterior`. Marginal medians and quantiles of a flow have no closed form:
    they are estimated from ``num_samples`` draws (fixed seed, the global RNG untouched).

    Args:
        model: a Pyro model with continuous latent sites.
        flow: a registry name (``"iaf"``, ``"nsf"``, ``"planar"``, ``"realnvp"``, ...) or a
            callable ``input_dim -> transform`` (e.g. ``lambda d: pyroflows.build("iaf", d)``
            or one of Pyro's own flow helpers).
        init_loc_fn: per-site initialisation (see Pyro's ``autoguide.initialization``).
        init_scale: initial posterior standard deviation in unconstrained space (default 1,
            as Pyro's flow guides start from a standard normal; narrower starts made the
            plain IAF diverge on the posterior suite).
        linear: end the flow with a learnable lower-triangular linear layer
            :math:`u \mapsto L u + b` (:class:`~pyroflows.transforms.TriangularLinear`,
            starting as the identity), so that the family contains
            ``AutoMultivariateNormal``'s. Default (``None``): on for ``"iaf"``, where the
            posterior suite measured it (a correlated 100-D Gaussian: KL 9.2 without, 2.1
            with), off for other flows and for callables.
        **flow_options: keyword arguments of the registry builder (``num_layers``,
            ``hidden_dims``, ``count_bins``, ...). AutoFlow's defaults, chosen on the
            posterior suite (``benchmarks/bench_posteriors.py``, table on the benchmarks
            page), differ from the registry's: ``"iaf"`` has 3 layers of the plain affine
            update (``stable=False``), each MADE with one hidden layer of
            :math:`\min(\max(32, 4D), 64)` units, then the ``linear`` layer; spline flows
            have ``bound=5`` (their input is standard normal noise; outside the interval a
            spline is the identity, and a :class:`~pyroflows.infer.SplineTailWarning` says
            when many draws land there).
            An unknown name raises a ``TypeError`` here, not at the first step.

    Raises at a call (under Pyro's validation):
        :class:`~pyroflows.infer.NonFiniteDrawError` when a draw is not finite, naming the
        site and the guide call.

    References:
        Kucukelbir et al., "Automatic Differentiation Variational Inference", 2017,
        arXiv:1603.00788; Rezende & Mohamed, "Variational Inference with Normalizing Flows",
        2015, arXiv:1505.05770; Kingma et al., "Improving Variational Inference with Inverse
        Autoregressive Flow", 2016, arXiv:1606.04934.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(y)):
        ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        >>> pyro.clear_param_store()  # Pyro's parameters are global: start afresh
        >>> pyro.set_rng_seed(0)
        >>> y = torch.randn(20) + 1.0
        >>> guide = AutoFlow(model, "iaf", num_layers=2, hidden_dims=[16])
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        >>> for _ in range(500):
        ...     _ = svi.step(y)
        >>> exact_mean, exact_sd = y.sum() / 21, 21**-0.5  # the conjugate posterior
        >>> draws = guide.sample_posterior(4000, seed=0)["mu"]
        >>> bool(abs(draws.mean() - exact_mean) < 0.1 and abs(draws.std() / exact_sd - 1) < 0.2)
        True
    """

    def __init__(
        self,
        model: Callable,
        flow: str | Callable[[int], Transform] = "iaf",
        *,
        init_loc_fn: Callable = init_to_median,
        init_scale: float = AUTOFLOW_INIT_SCALE,
        linear: bool | None = None,
        **flow_options: Any,
    ) -> None:
        if isinstance(flow, str):
            if spec_of(flow, learnable=True).fast_direction == "inverse":
                warnings.warn(
                    f"flow {flow!r} samples sequentially (D network passes per layer, "
                    "fast_direction='inverse'): as a guide it is slow; 'iaf' or "
                    "'spline_autoregressive' are its fast-sampling counterparts",
                    stacklevel=2,
                )
        elif not callable(flow):
            raise TypeError(
                f"flow must be a registry name or a callable dim -> transform, got {flow!r}"
            )
        elif flow_options:
            raise TypeError("flow options are only for registry names; bind them in the callable")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {init_scale}")
        self._flow_recipe = flow
        self._flow_options = (
            autoflow_flow_options(flow, flow_options) if isinstance(flow, str) else {}
        )
        if isinstance(flow, str):  # the flow is built at the first step: check its options now
            REGISTRY[flow].check_options(**self._flow_options)
        self._init_scale = float(init_scale)
        self._linear = autoflow_linear(flow, linear)
        self._num_calls = 0
        self._latent: Tensor | None = None  # the current call's draw, for the finite check
        super().__init__(model, init_loc_fn=init_loc_fn)

    # -- construction, on the first call ---------------------------------------------------------
    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        init = self._init_loc()
        try:
            if isinstance(self._flow_recipe, str):
                flow = REGISTRY[self._flow_recipe].build(
                    self.latent_dim,
                    **autoflow_flow_options(self._flow_recipe, self._flow_options, self.latent_dim),
                )
            else:
                flow = self._flow_recipe(self.latent_dim)
        except ValueError as error:
            name = self._flow_recipe if isinstance(self._flow_recipe, str) else "the flow"
            raise ValueError(
                f"cannot build flow {name!r} for the {self.latent_dim}-dimensional latent of "
                f"this model: {error}"
            ) from error
        if isinstance(flow, Sequence):
            flow = pyro.distributions.transforms.ComposeTransformModule(list(flow))
        if self._linear:
            flow = _then_linear(flow, self.latent_dim)
        if isinstance(flow, nn.Module):
            flow = flow.to(device=init.device, dtype=init.dtype)
        loc, scale = self._standardised_start(flow, init)
        self.flow = flow
        self._tail_check = SplineTailCheck(flow)
        if isinstance(flow, nn.Module) and self._pyro_context.active:
            # Pyro's param store wins, as it does for loc and log_scale below: values already
            # there (a loaded store) are copied into the flow. Without this the flow kept its
            # fresh weights while SVI stepped the stored tensors, which nothing used.
            pyro.module(self._pyro_get_fullname("flow"), flow, update_module_params=True)
        self.loc = nn.Parameter(loc)
        self.log_scale = nn.Parameter(scale.log())

    @torch.no_grad()
    def _standardised_start(self, flow: Transform, init: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` such that the initial guide has mean ``init``, std ``init_scale``."""
        generator = torch.Generator(device=init.device).manual_seed(0)
        eps = torch.randn(
            _STANDARDISE_DRAWS, self.latent_dim, generator=generator, device=init.device
        ).to(init.dtype)
        zeros, ones = init.new_zeros(self.latent_dim), init.new_ones(self.latent_dim)
        u, _ = FlowPosterior(flow, zeros, ones).from_noise(eps)
        mean, std = u.mean(0), u.std(0)
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("the flow's initial output is degenerate (non-finite or constant)")
        scale = self._init_scale / std
        return init - scale * mean, scale

    # -- one guide call --------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draw every latent site (as Pyro's ``AutoContinuous``), then check the draw.

        Under Pyro's validation a non-finite draw raises
        :class:`~pyroflows.infer.NonFiniteDrawError` naming the site and the guide call;
        every 100 calls a spline flow checks its tails (:class:`SplineTailWarning`).
        """
        result = super().forward(*args, **kwargs)
        self._num_calls += 1
        latent, self._latent = self._latent, None
        if latent is not None:
            check_finite_draws(
                (
                    (site["name"], value, result[site["name"]])
                    for site, value in self._unpack_latent(latent)
                ),
                self._num_calls,
            )
        self._tail_check(self.get_posterior, "AutoFlow")
        return result

    def sample_latent(self, *args: Any, **kwargs: Any) -> Tensor:
        """Draw the packed unconstrained latent from :meth:`get_posterior` (a Pyro site)."""
        self._latent = super().sample_latent(*args, **kwargs)
        return self._latent

    # -- the posterior ---------------------------------------------------------------------------
    def get_posterior(self, *args: Any, **kwargs: Any) -> FlowPosterior:
        """The posterior of the packed unconstrained latent, a :class:`FlowPosterior`.

        It equals ``TransformedDistribution(get_base_dist(), get_transform())`` in
        distribution (see :meth:`get_transform`), but draws and scores a sample in one pass.
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        return FlowPosterior(self.flow, self.loc, self.log_scale.exp())

    def get_base_dist(self) -> dist.Distribution:
        r"""The base of the posterior: :math:`\mathcal{N}(0, I_D)` over the packed latent.

        A standard normal of event shape ``(latent_dim,)`` on the guide's device and dtype,
        as in Pyro's :class:`~pyro.infer.autoguide.AutoContinuous`: the posterior is
        ``TransformedDistribution(get_base_dist(), get_transform())``. The guide must have
        been set up first (called once, e.g. by a training step, or :meth:`get_transform`).

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     pyro.sample("x", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
            >>> pyro.clear_param_store()
            >>> guide = AutoFlow(model, "planar")
            >>> guide.get_base_dist()  # not set up yet
            Traceback (most recent call last):
            ...
            RuntimeError: AutoFlow.get_base_dist() needs the guide set up: call it once first
            >>> _ = guide.get_posterior()  # sets it up
            >>> guide.get_base_dist().event_shape
            torch.Size([3])
        """
        if self.prototype_trace is None:
            raise RuntimeError(
                "AutoFlow.get_base_dist() needs the guide set up: call it once first"
            )
        zeros = self.loc.new_zeros(self.latent_dim)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> Transform:
        r"""The map from base draws to the packed unconstrained latent, :math:`\mu + \sigma f`.

        ``ComposeTransform([flow, AffineTransform(loc, scale, event_dim=1)])``: the flow, then
        the element-wise location and scale, with an exact ``log_abs_det_jacobian`` and an
        exact ``inv``, so that :class:`~pyro.infer.reparam.NeuTraReparam` (which needs this
        method) works with any flow, Pyro's own included. ``TransformedDistribution(
        get_base_dist(), get_transform())`` has the density of :meth:`get_posterior`.

        A new transform is built on every call from the current ``loc`` and ``scale``: hold
        on to one only while the parameters stay fixed (e.g. for MCMC after training). The
        guide is set up from ``*args, **kwargs`` if it was not yet; the transform does not
        depend on them.

        Example:
            >>> import torch, pyro, pyro.distributions as dist
            >>> from pyro.infer.reparam import NeuTraReparam
            >>> def model():
            ...     pyro.sample("x", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
            >>> pyro.clear_param_store()
            >>> guide = AutoFlow(model, "iaf", num_layers=1, hidden_dims=[8])
            >>> transform = guide.get_transform()  # sets the guide up (a model without args)
            >>> eps = guide.get_base_dist().sample((5,))
            >>> z = transform(eps)
            >>> bool(torch.allclose(transform.inv(z), eps, atol=1e-5))
            True
            >>> neutra = NeuTraReparam(guide)  # NeuTra-reparameterise the model for MCMC
            >>> trace = pyro.poutine.trace(neutra.reparam(model)).get_trace()
            >>> trace.nodes["x"]["value"].shape
            torch.Size([2])
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
            self._create_plates(*args, **kwargs)  # NeuTraReparam reads them; a call makes them
        affine = AffineTransform(self.loc, self.log_scale.exp(), event_dim=1)
        return ComposeTransform([self.flow, affine])

    # -- summaries ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_posterior(
        self, num_samples: int, *args: Any, seed: int | None = None, **kwargs: Any
    ) -> dict[str, Tensor]:
        """Draw ``num_samples`` joint posterior samples of every latent site (constrained).

        One vectorised pass; no model run (the model's deterministic sites are not included:
        use :class:`pyro.infer.Predictive` for those). Shapes ``(num_samples, *site shape)``,
        sites inside plates included (the draws' dimension is kept left of every batch
        dimension of the sites while they are unpacked). ``seed`` makes the draw
        reproducible without touching the global RNG.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
            >>> pyro.clear_param_store()
            >>> guide = AutoFlow(model, "planar")
            >>> guide.sample_posterior(5)["s"].shape
            torch.Size([5])
        """
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        with _seeded(seed, self.loc.device):
            latent = self.get_posterior().sample((num_samples,))
        sites = list(self.prototype_trace.iter_stochastic_nodes())
        batch_dims = max(len(site["fn"].batch_shape) for _, site in sites)
        latent = latent.reshape((num_samples,) + (1,) * batch_dims + (self.latent_dim,))
        draws = {}
        for site, value in self._unpack_latent(latent):
            value = value.reshape((num_samples,) + self._unconstrained_shapes[site["name"]])
            draws[site["name"]] = biject_to(site["fn"].support)(value)
        return draws

    @torch.no_grad()
    def quantiles(
        self,
        quantiles: Sequence[float] | Tensor,
        *args: Any,
        num_samples: int = 4000,
        **kwargs: Any,
    ) -> dict[str, Tensor]:
        r"""Marginal posterior quantiles of each latent site, estimated from draws.

        Shapes ``(len(quantiles), *site shape)``. A flow has no closed-form marginal
        quantiles; they are the empirical quantiles of ``num_samples`` joint draws (seed 0,
        global RNG untouched), so their Monte Carlo error is about
        :math:`\sqrt{q(1-q)/n} / p(x_q)`.

        Example:
            >>> import pyro, pyro.distributions as dist
            >>> def model():
            ...     pyro.sample("x", dist.Normal(0.0, 1.0))
            >>> pyro.clear_param_store()
            >>> AutoFlow(model, "iaf", init_scale=1.0).quantiles([0.5])["x"].shape
            torch.Size([1])
        """
        samples = self.sample_posterior(num_samples, *args, seed=0, **kwargs)
        probs = torch.as_tensor(quantiles, dtype=self.loc.dtype, device=self.loc.device)
        return {name: _quantile(value, probs) for name, value in samples.items()}

    @torch.no_grad()
    def median(self, *args: Any, num_samples: int = 4000, **kwargs: Any) -> dict[str, Tensor]:
        """Marginal posterior medians of each latent site, estimated from draws.

        See :meth:`quantiles` for the estimate and its error.
        """
        result = self.quantiles([0.5], *args, num_samples=num_samples, **kwargs)
        return {name: value[0] for name, value in result.items()}

    def _loc_scale(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("a flow posterior has no (loc, scale) summary; see median()")


def _then_linear(flow: Transform, dim: int) -> Transform:
    """``flow`` followed by a learnable lower-triangular linear layer (starting as the identity)."""
    linear = TriangularLinear(dim)
    if isinstance(flow, FlowSequence):
        return FlowSequence([*flow.layers, linear])
    if isinstance(flow, (FlowModule, InverseFlow)):
        return FlowSequence([flow, linear])
    return pyro.distributions.transforms.ComposeTransformModule([flow, linear])


def _quantile(samples: Tensor, probs: Tensor) -> Tensor:
    flat = samples.reshape(samples.shape[0], -1)
    result = torch.quantile(flat.to(probs.dtype), probs, dim=0)
    return result.reshape(probs.shape + samples.shape[1:]).to(samples.dtype)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Draw with a fixed seed (when given) and leave the global RNG as it was."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
