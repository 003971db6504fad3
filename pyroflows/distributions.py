r"""The flow distribution, and the density model that owns one.

:class:`FlowDistribution` is the one Pyro distribution of pyroflows: noise
:math:`\varepsilon \sim \mathcal{N}(0, I)` over the event shape, a flow :math:`f_c`, an
element-wise location and scale, then fixed maps :math:`g` (e.g. the inverse logit),

.. math::
    x = g\big(\mu + \sigma \odot f_c(\varepsilon)\big),

with the draw and its log-density from one forward pass
(:meth:`~FlowDistribution.rsample_and_log_prob`) and any other value scored by one inverse
pass. The density model :class:`Flow` returns one
from :meth:`Flow.distribution` (the data's standardisation as :math:`\mu, \sigma`, the logit
map as :math:`g`), and the variational posteriors of :mod:`pyroflows.infer` are one
(:class:`~pyroflows.infer.FlowPosterior` is this class).

:class:`Flow` holds everything a fitted density needs (the flow's parameters, the base and the
data's standardisation statistics) as parameters and *buffers* of one ``nn.Module``:
``.to(device)`` moves all of it, ``state_dict`` saves all of it, and no tensor of the base
distribution is left behind on the CPU (the problem of Pyro issue #2761, where a
``TransformedDistribution``'s base keeps the device it was built on).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor, nn
from torch.distributions import Transform, constraints

from ._casting import as_model_dtype
from ._padding import PaddedFlowDistribution, Padding, as_padding
from ._recipe import make_recipe, read_recipe
from .transforms import (
    REGISTRY,
    FlowModule,
    FlowSequence,
    FlowView,
    InverseFlow,
    LogitTransform,
    spec_of,
)
from .transforms.preprocessing import affine_and_log_det, inverse_affine_and_log_det

__all__ = ["Flow", "FlowDistribution", "PaddedFlowDistribution", "Padding"]

_Size = torch.Size | Sequence[int]
_ZERO_PADDING_WARNING = (
    "zero padding: this model's log_prob(x) is log p(x, 0), the joint density on the slice "
    "e = 0, not a normalised density of x, and zero-padded flows train to badly conditioned "
    "Jacobians (Koehler, Mehta & Risteski 2021); Padding(kind='gaussian') gives a lower bound "
    "on log p(x) instead"
)
_LOG_2PI = math.log(2.0 * math.pi)
_PYROFLOWS = (FlowModule, InverseFlow, FlowView)


def _standard_normal_log_prob(eps: Tensor, event_dim: int) -> Tensor:
    r""":math:`\log \mathcal{N}(\varepsilon; 0, I)` summed over the last ``event_dim`` dims."""
    squares = eps.square().sum(tuple(range(-event_dim, 0)))
    size = math.prod(eps.shape[eps.dim() - event_dim :])
    return -0.5 * (squares + size * _LOG_2PI)


class FlowDistribution(TorchDistribution):
    r"""Distribution of :math:`x = g(\mu + \sigma \odot f_c(\varepsilon))`, standard normal noise.

    .. math::
        \varepsilon \sim \mathcal{N}(0, I), \qquad u = f_c(\varepsilon), \qquad
        z = \mu + \sigma \odot u, \qquad x = g(z) = g_K \circ \cdots \circ g_1 (z),

        \log q(x \mid c) = \log \mathcal{N}(\varepsilon; 0, I)
        - \log\left|\det \frac{\partial f_c}{\partial \varepsilon}\right|
        - \sum_i \log|\sigma_i|
        - \sum_{k=1}^{K} \log\left|\det \frac{\partial g_k}{\partial z_{k-1}}\right| .

    The chain, from the base to the value, is ``[flow, affine (loc, scale), *transforms]``:
    the flow :math:`f_c` (conditioned on ``context`` when given), the element-wise location
    and scale (:func:`~pyroflows.transforms.preprocessing.affine_and_log_det`), then fixed
    unconditional pyroflows maps :math:`g_k` such as ``LogitTransform(alpha).inv``.
    :class:`Flow` and the guides of :mod:`pyroflows.infer` all return this distribution
    (:class:`~pyroflows.infer.FlowPosterior` is its name there).

    The noise has the event shape (``(D,)`` for vectors, ``(C, H, W)`` for images); the
    batch shape is the broadcast of the batch shapes of ``loc``, ``scale`` and ``context``
    (or what :meth:`expand` sets, e.g. a Pyro plate of particles).

    Cost: :meth:`rsample_and_log_prob` is one forward pass of every map (each returns its
    log-det with it). ``rsample`` followed by ``log_prob`` of that very sample, which is what
    Pyro's ELBOs do, reuses that pass's log-density: the pair lives on the distribution object
    that drew it (one object per guide call), so it can never be stale. Any other value is
    scored by one exact inverse pass (for IAF-type flows :math:`D` sequential network passes;
    for numerically inverted flows a convergence-checked root-find).

    Args:
        flow: a pyroflows flow (or any ``torch.distributions.Transform`` on vectors, e.g.
            Pyro's own flows), mapping noise to the standardised value; conditional when
            ``context`` is given; ``None`` for the identity (then :math:`z` is Gaussian).
        loc: :math:`\mu`, shape ``(..., *event_shape)``.
        scale: :math:`\sigma \neq 0`, shape ``(..., *event_shape)``.
        context: :math:`c`, shape ``(..., C)`` for conditional flows.
        batch_shape: explicit batch shape (default: broadcast of the inputs' batch shapes).
        transforms: the fixed maps :math:`g_1, \dots, g_K`: unconditional pyroflows flows
            of the same event shape.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762, section 2; Rezende & Mohamed, "Variational Inference with
        Normalizing Flows", 2015, arXiv:1505.05770; Kingma et al., "Improving Variational
        Inference with Inverse Autoregressive Flow", 2016, arXiv:1606.04934.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import build
        >>> _ = torch.manual_seed(0)
        >>> q = FlowDistribution(build("iaf", 3, num_layers=2), torch.zeros(3), torch.ones(3))
        >>> z, log_q = q.rsample_and_log_prob((4,))
        >>> z.shape, log_q.shape
        (torch.Size([4, 3]), torch.Size([4]))
        >>> bool(torch.allclose(q.log_prob(z.clone()), log_q, atol=1e-4))  # exact inverse
        True
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(
        self,
        flow: Transform | None,
        loc: Tensor,
        scale: Tensor,
        context: Tensor | None = None,
        batch_shape: Sequence[int] | None = None,
        validate_args: bool | None = None,
        *,
        transforms: Sequence[FlowModule | InverseFlow] = (),
    ) -> None:
        self.flow, self.loc, self.scale, self.context = flow, loc, scale, context
        self.transforms = tuple(transforms)
        if isinstance(flow, _PYROFLOWS):
            event_shape = torch.Size(flow.event_shape)
        else:
            event_shape = loc.shape[-1:]
        self._event_dim = rank = len(event_shape)
        for transform in self.transforms:
            if not isinstance(transform, _PYROFLOWS) or transform.context_dim:
                raise TypeError(
                    "transforms must be unconditional pyroflows flows, got "
                    f"{type(transform).__name__}"
                )
            if tuple(transform.event_shape) != event_shape:
                raise ValueError(
                    f"every transform needs the event shape {tuple(event_shape)}, got "
                    f"{tuple(transform.event_shape)}"
                )
        if batch_shape is None:
            shapes = [loc.shape[: loc.dim() - rank], scale.shape[: scale.dim() - rank]]
            if context is not None:
                shapes.append(context.shape[:-1])
            shapes = [shape for shape in shapes if shape]  # the common case: none (a model)
            batch_shape = (
                torch.broadcast_shapes(*shapes) if len(shapes) > 1 else (shapes or [()])[0]
            )
        self._drawn: tuple[Tensor, Tensor] | None = None
        super().__init__(torch.Size(batch_shape), event_shape, validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        """The values' domain: real events, or the last transform's codomain."""
        if self.transforms:
            return self.transforms[-1].codomain
        if self._event_dim == 1:
            return constraints.real_vector
        return constraints.independent(constraints.real, self._event_dim)

    def expand(self, batch_shape: Sequence[int], _instance=None) -> FlowDistribution:
        """The same distribution with a larger batch shape (e.g. inside a Pyro plate)."""
        batch_shape = torch.Size(batch_shape)
        try:
            torch.broadcast_shapes(batch_shape, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"cannot expand a {type(self).__name__} of batch shape "
                f"{tuple(self.batch_shape)} to {tuple(batch_shape)}"
            ) from None
        return type(self)(
            self.flow,
            self.loc,
            self.scale,
            self.context,
            batch_shape,
            transforms=self.transforms,
        )

    # -- the passes ---------------------------------------------------------------------------
    def _context_for(self, batch: torch.Size) -> Tensor | None:
        context = self.context
        if context is None or context.shape[:-1] == batch:
            return context
        return context.expand(batch + context.shape[-1:])

    def _flow_forward(self, eps: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | float]:
        flow = self.flow
        if flow is None:
            return eps, 0.0
        if isinstance(flow, _PYROFLOWS):
            return flow.forward_and_log_det(eps, context if flow.context_dim else None)
        transform = flow.condition(context) if context is not None else flow
        u = transform(eps)
        return u, transform.log_abs_det_jacobian(eps, u)

    def _flow_inverse(self, u: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | float]:
        r"""The noise and the inverse map's own log-det, :math:`\log|\det d\varepsilon/du|`."""
        flow = self.flow
        if flow is None:
            return u, 0.0
        if isinstance(flow, _PYROFLOWS):
            return flow.inverse_and_log_det(u, context if flow.context_dim else None)
        transform = flow.condition(context) if context is not None else flow
        eps = transform.inv(u)
        return eps, -transform.log_abs_det_jacobian(eps, u)

    def from_noise(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        r"""Map noise to values, with their log-density: one forward pass of every map.

        ``eps`` has shape ``sample_shape + batch_shape + event_shape`` (e.g. common random
        numbers, or quasi-random points pushed through :math:`\Phi^{-1}`).

        Example:
            >>> q = FlowDistribution(None, torch.ones(2), torch.full((2,), 2.0))
            >>> x, log_q = q.from_noise(torch.zeros(2))
            >>> x.tolist(), round(float(log_q), 4)  # log N(0; 0, I_2) - 2 log 2
            ([1.0, 1.0], -3.2242)
        """
        batch = eps.shape[: eps.dim() - self._event_dim]
        u, log_det = self._flow_forward(eps, self._context_for(batch))
        x, affine_log_det = affine_and_log_det(u, self.loc, self.scale, self._event_dim)
        log_det = affine_log_det + log_det
        for transform in self.transforms:
            x, step = transform.forward_and_log_det(x)
            log_det = log_det + step
        return x, _standard_normal_log_prob(eps, self._event_dim) - log_det

    def rsample_and_log_prob(self, sample_shape: _Size = ()) -> tuple[Tensor, Tensor]:
        """Reparameterised draws and their log-density from one forward pass of every map."""
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.from_noise(eps)

    def rsample(self, sample_shape: _Size = ()) -> Tensor:
        """Reparameterised draws, shape ``sample_shape + batch_shape + event_shape``."""
        x, log_q = self.rsample_and_log_prob(sample_shape)
        self._drawn = (x, log_q)
        return x

    def log_prob(self, value: Tensor) -> Tensor:
        """Log-density; the draw just made by :meth:`rsample` is scored from its own pass."""
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        rank = self._event_dim
        if value.dim() < rank or value.shape[value.dim() - rank :] != self.event_shape:
            what = f"event size {self.event_shape[0]}" if rank == 1 else "event shape"
            raise ValueError(
                f"expected values with {what} {tuple(self.event_shape)}, got shape "
                f"{tuple(value.shape)}"
            )
        batch, own = value.shape[: value.dim() - rank], self.batch_shape
        if own and batch[len(batch) - len(own) :] != own:  # else the value's batch is the result
            batch = torch.broadcast_shapes(batch, own)
            value = value.expand(batch + self.event_shape)
        x, log_det = value, 0.0
        for transform in reversed(self.transforms):
            x, step = transform.inverse_and_log_det(x)
            log_det = log_det + step
        u, step = inverse_affine_and_log_det(x, self.loc, self.scale, rank)
        eps, flow_step = self._flow_inverse(u, self._context_for(batch))
        log_det = log_det + step + flow_step
        return _standard_normal_log_prob(eps, rank) + log_det

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_drawn"] = None
        return state


class Flow(nn.Module):
    r"""Density model :math:`x = g(\mu + \sigma \odot f(z))`, :math:`z \sim \mathcal{N}(0, I)`.

    With :math:`u = (x - \mu) / \sigma` the standardised data (no :math:`g`),

    .. math::
        \log p(x \mid c) = \log \mathcal{N}\big(f_c^{-1}(u); 0, I\big)
        + \log\left|\det \frac{\partial f_c^{-1}}{\partial u}\right|
        - \sum_{i=1}^{D} \log \sigma_i ,

    where :math:`f_c` is the flow (conditioned on a context :math:`c` for conditional flows)
    and :math:`\mu, \sigma` are the data's standardisation statistics
    (:meth:`standardize_with`; identity until set). The base is a standard normal over the
    flow's event shape (``(D,)``, or ``(C, H, W)`` for image flows).

    **Data in** :math:`[0, 1)` **(images).** With ``logit_alpha`` :math:`= \alpha > 0`,
    :math:`g` is the inverse of the logit map
    :math:`v = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`
    (:class:`~pyroflows.transforms.LogitTransform`): the model standardises and models
    :math:`v`, and the exact log-determinant of the map makes :meth:`log_prob` the density of
    :math:`x`; :meth:`sample` returns values in its support
    :math:`(-\alpha, 1 - \alpha) / (1 - 2\alpha) \supset [0, 1]` (RealNVP, MAF). Data outside
    that support raise ``ValueError`` naming the rows while Pyro's validation is on (the
    default; the check reads values, so ``pyro.enable_validation(False)`` removes it). The base's
    mean and scale (fixed at 0 and 1) and :math:`\mu, \sigma` are buffers: part of
    ``state_dict`` and moved by ``.to(device)``.

    :meth:`distribution` returns the model as a
    :class:`FlowDistribution` whose chain is ``[flow, standardisation (mu, sigma),
    LogitTransform(alpha).inv]`` (for ``pyro.sample`` or anything else that wants a
    distribution object); :meth:`log_prob`, :meth:`sample`, :meth:`rsample` and
    :meth:`rsample_and_log_prob` are that distribution's. ``forward(x, context)`` is
    :meth:`log_prob`, so the model can be wrapped in ``DistributedDataParallel``.

    **Padding (augmented flows).** With ``padding=Padding(E, ...)`` (:class:`Padding`) the
    flow :math:`f` acts on :math:`\mathbb{R}^{D + E}`: it models the joint density of the
    standardised data :math:`u` and :math:`E` padding coordinates :math:`e`,

    .. math::
        \log p(x, e \mid c) = \log \mathcal{N}\big(f_c^{-1}(u, e); 0, I_{D+E}\big)
        + \log\left|\det \frac{\partial f_c^{-1}}{\partial (u, e)}\right|
        - \sum_{i=1}^{D} \log \sigma_i ,
        \qquad p(x \mid c) = \int p(x, e \mid c)\, de ,

    and the marginal :math:`p(x)` has no closed form.

    * *Gaussian padding* (``kind="gaussian"``, the default), :math:`q(e) = \mathcal{N}(0, s^2 I_E)`
      with :math:`s` fixed or learned (``learn_scale``): :meth:`log_prob` returns the
      importance-weighted bound with :math:`K` = ``particles`` draws,

      .. math::
          \mathcal{L}_K(x) = \log \frac{1}{K} \sum_{k=1}^{K} \frac{p(x, e_k)}{q(e_k)},
          \quad e_k \sim q, \qquad
          \mathbb{E}\,\mathcal{L}_1 \le \mathbb{E}\,\mathcal{L}_K \le \log p(x),

      a lower bound in expectation that tightens as :math:`K` grows and tends to
      :math:`\log p(x)` (Burda et al. 2016); :math:`K = 1` is the ELBO
      :math:`\mathbb{E}_q[\log p(x, e) - \log q(e)] = \log p(x) - \mathrm{KL}(q(e) \,\|\, p(e
      \mid x))`. It is *stochastic*: every call draws new :math:`e_k = s\,\varepsilon_k`
      from torch's global RNG (seed it for repeatable values), reparameterised so that
      gradients reach a learned :math:`s`. :func:`~pyroflows.train.fit` maximises it
      unchanged (its loss is ``-log_prob``, so its NLLs are upper bounds, and its validation
      NLL a noisy one); :meth:`log_prob_bound` takes another :math:`K`, e.g. a tighter bound
      when evaluating.
    * *Zero padding* (``kind="zero"``), :math:`e = 0`: :meth:`log_prob` returns
      :math:`\log p(x, 0)`, the joint density on the slice :math:`e = 0`. It is **not** a
      normalised density of :math:`x` (its integral over :math:`x` is the density of the
      padding at 0) and can grow without bound as the flow contracts the padding directions,
      so its values are no NLLs to compare with other models' (a training curve of one model
      is what they show). The method keeps the name ``log_prob`` because
      :func:`~pyroflows.train.fit`, ``DistributedDataParallel`` and the command line train
      through it; building a zero-padded model warns instead (a ``UserWarning``, once per
      process under Python's default warning filter).

    Why pad: the extra coordinates are a "scratch pad" for the flow. With zero padding, affine
    couplings are universal approximators (Huang, Dinh & Courville 2020), but the padded map
    has a singular Jacobian, the padding being constant. Koehler, Mehta & Risteski (2021)
    prove that affine couplings are universal without padding too, at the price of
    ill-conditioned Jacobians, and find on 2-D data that zero padding trains very poorly
    conditioned models with poor samples, while Gaussian padding (for which they have no
    theory) frequently gives better-conditioned models and better samples. Measured here
    (``tests/test_padding.py``: four affine couplings, moons padded to 4-D, 200 Adam steps),
    the median condition number of the flow at the data is about 100 with zero padding and
    2 with Gaussian padding (:math:`s = 0.5`). :func:`pyroflows.diagnostics.condition_numbers`
    measures it at the points where :meth:`log_prob` inverts the flow,
    ``condition_numbers(model.flow.inv, model.flow_points(x))``.

    :meth:`sample` and :meth:`rsample` draw :math:`(x, e)` from the flow and return :math:`x`
    only; :meth:`rsample_and_log_prob` returns the draws and :meth:`log_prob` of them (fresh
    padding draws: one forward and one inverse pass). The standardisation and the logit map
    act on the data coordinates only (the padding enters the flow as drawn, in the units of
    the standardised data); a context conditions the flow as without padding.
    :meth:`distribution` returns a :class:`PaddedFlowDistribution`. The recipe
    (:attr:`config`) stores the spec, so model files rebuild the same density (recipes
    without it are unpadded); :math:`\log s` is the entry ``padding_log_scale`` of
    ``state_dict`` (a parameter when learned, else a buffer).

    Cost: a log-density costs one pass of the flow's inverse (on :math:`K` times the rows
    with Gaussian padding), a sample one pass of its forward map; see the flow's registry
    entry for which is fast.

    Args:
        flow: a pyroflows flow (``FlowModule``, its ``.inv``, or a sequence of them, composed
            with :class:`~pyroflows.transforms.FlowSequence`), mapping base samples to
            (standardised) data; with ``padding``, a flow on vectors of size
            :math:`D + E`.
        config: the JSON-serialisable recipe the flow was built from (set by :meth:`build`);
            checkpoints store it so that the model can be rebuilt before loading weights.
        logit_alpha: model data in :math:`[0, 1)` through the logit map with this squeeze
            (``None``: no logit map).
        padding: a :class:`Padding` (or its dict): pad the data with ``extra`` coordinates
            (``None``: no padding).

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762, section 2; Koehler, Mehta & Risteski, "Representational
        aspects of depth and conditioning in normalizing flows", ICML 2021, arXiv:2010.01155;
        Huang, Dinh & Courville, "Augmented Normalizing Flows: Bridging the Gap Between
        Generative Flows and Latent Variable Models", 2020, arXiv:2002.07101; Burda, Grosse &
        Salakhutdinov, "Importance Weighted Autoencoders", 2016, arXiv:1509.00519.

    Example:
        >>> import torch
        >>> model = Flow.build("maf", 2, num_layers=2, hidden_dims=[16])
        >>> data = torch.randn(100, 2) * 3.0 + 1.0
        >>> model.standardize_with(data)
        >>> model.log_prob(data[:4]).shape
        torch.Size([4])
        >>> x, log_prob = model.rsample_and_log_prob((5,))
        >>> bool(torch.allclose(log_prob, model.log_prob(x), atol=1e-4))
        True

        Gaussian padding: the flow acts on 2 + 2 coordinates, samples have the data's 2.

        >>> padded = Flow.build("realnvp", 2, num_layers=4, padding=Padding(2, scale=0.5))
        >>> padded.standardize_with(data)
        >>> bound = padded.log_prob(data[:4])  # a stochastic lower bound on log p(x)
        >>> bound.shape, padded.sample((3,)).shape
        (torch.Size([4]), torch.Size([3, 2]))
        >>> padded.config["padding"]["extra"], padded.flow.input_dim
        (2, 4)
    """

    def __init__(
        self,
        flow: FlowModule | InverseFlow | Sequence[FlowModule | InverseFlow],
        config: dict[str, Any] | None = None,
        logit_alpha: float | None = None,
        padding: Padding | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if logit_alpha is not None and not 0 < logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 1/2), got {logit_alpha}")
        self.logit_alpha = logit_alpha
        if isinstance(flow, Sequence):
            flow = FlowSequence(list(flow))
        if not isinstance(flow, FlowModule | InverseFlow):
            raise TypeError(
                f"Flow expects a pyroflows flow (FlowModule or .inv), got {type(flow).__name__}"
            )
        self.flow = flow
        self.padding = padding = as_padding(padding)
        self.event_shape = tuple(flow.event_shape)
        self.input_dim, self.context_dim = flow.input_dim, flow.context_dim
        if padding is not None:
            self._check_padded_flow(flow, padding)
            self.input_dim -= padding.extra
            self.event_shape = (self.input_dim,)
        self.config = dict(config) if config is not None else None
        shape = self.event_shape
        self.register_buffer("base_loc", torch.zeros(shape))
        self.register_buffer("base_scale", torch.ones(shape))
        self.register_buffer("data_loc", torch.zeros(shape))
        self.register_buffer("data_scale", torch.ones(shape))
        # The fixed maps after the standardisation (no tensors: nothing in state_dict).
        self.logit = None if logit_alpha is None else LogitTransform(shape, logit_alpha)
        self._data_side = () if self.logit is None else (self.logit.inv,)
        if padding is not None:
            log_scale = torch.tensor(math.log(padding.scale))
            if padding.learn_scale:
                self.padding_log_scale = nn.Parameter(log_scale)
            else:
                self.register_buffer("padding_log_scale", log_scale)
            if padding.kind == "zero":
                warnings.warn(_ZERO_PADDING_WARNING, UserWarning, stacklevel=2)

    @staticmethod
    def _check_padded_flow(flow: FlowModule | InverseFlow, padding: Padding) -> None:
        if len(flow.event_shape) != 1:
            raise ValueError(
                "padding needs a flow on vectors (event shape (D + extra,)), got event shape "
                f"{tuple(flow.event_shape)}"
            )
        if flow.input_dim <= padding.extra:
            raise ValueError(
                f"a flow padded with extra={padding.extra} coordinates needs input_dim = D + "
                f"{padding.extra} with D >= 1, got input_dim {flow.input_dim}"
            )

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        name: str,
        input_dim: int | Sequence[int],
        context_dim: int = 0,
        *,
        logit_alpha: float | None = None,
        padding: Padding | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Flow:
        """Build the registry flow ``name`` (``REGISTRY[name].build``) and remember the recipe.

        ``input_dim`` is the event size :math:`D`, or an event shape such as ``(C, H, W)`` for
        flows that take images. ``options`` are the builder's keyword arguments
        (``num_layers``, ``hidden_dims``, ...) and must be JSON-serialisable, since checkpoints
        store them; ``logit_alpha`` and ``padding`` (a :class:`Padding`, or its dict) are the
        model's own options (see the class). With padding the flow is built on
        :math:`D` + ``extra`` coordinates (vectors only) while ``input_dim`` stays the data's
        :math:`D`.

        A flow with a cheap forward map and a numerical inverse (``residual``, ``iresnet``:
        :attr:`~pyroflows.transforms.FlowSpec.density_inverted`) is built inverted, so that
        ``log_prob`` runs the cheap map from data to base and sampling the numerical inverse.

        :attr:`config`, the recipe that checkpoints and ``model.pt`` store, records the value
        of every builder option (those passed, and the defaults of the others) and the
        pyroflows version, so that a later change of a default cannot load the file as
        another density.

        Example:
            >>> model = Flow.build("nsf", 4, num_layers=2)
            >>> model.config["name"], model.config["options"]["bound"]  # a default, pinned
            ('nsf', 3.0)
        """
        spec_of(name, learnable=True).check_options(**options)
        padding = as_padding(padding)
        event = int(input_dim) if isinstance(input_dim, int) else [int(n) for n in input_dim]
        if padding is not None and not isinstance(event, int):
            raise ValueError(
                f"padding needs vector data (an int input_dim), got event shape {tuple(event)}"
            )
        config = make_recipe(name, event, context_dim, options, logit_alpha, padding)
        event = event if isinstance(event, int) else tuple(event)
        if padding is not None:
            event = event + padding.extra
        spec = REGISTRY[name]
        flow = spec.build(event, context_dim, **config["options"])
        if spec.density_inverted:  # the cheap direction evaluates densities (residual flows)
            flow = flow.inv
        return cls(flow, config, logit_alpha=logit_alpha, padding=padding)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Flow:
        """Rebuild an (untrained) model from :attr:`config`, e.g. before loading weights.

        The recipe is checked first (:class:`~pyroflows.errors.ModelFileError` names a bad
        field, an unknown option or a newer major version); options it does not hold take the
        defaults of the release that wrote it.

        Example:
            >>> model = Flow.build("nice", 2, num_layers=2)
            >>> Flow.from_config(model.config).config == model.config
            True
        """
        recipe = read_recipe(config)
        return cls.build(
            recipe["name"],
            recipe["input_dim"],
            recipe["context_dim"],
            logit_alpha=recipe["logit_alpha"],
            padding=recipe.get("padding"),
            **recipe["options"],
        )

    @torch.no_grad()
    def standardize_with(self, data: Tensor) -> None:
        r"""Set :math:`\mu, \sigma` to the per-element mean and standard deviation of ``data``.

        ``data`` has shape ``(N, *event_shape)``; with ``logit_alpha`` the statistics are those
        of the data in logit space. Raises ``ValueError`` for data of the wrong shape, with
        non-finite values, or with a constant column (its :math:`\sigma` would be 0).
        """
        data = torch.as_tensor(data)
        shape = self.event_shape
        if data.dim() != 1 + len(shape) or tuple(data.shape[1:]) != shape or len(data) < 2:
            expected = ", ".join(str(n) for n in shape)
            raise ValueError(
                f"standardisation needs data of shape (N >= 2, {expected}), got {tuple(data.shape)}"
            )
        if not torch.isfinite(data).all():
            raise ValueError("standardisation data contain NaN or inf values")
        if self.logit is not None:
            data = self.logit.forward_and_log_det(data)[0]
        loc, scale = data.double().mean(0), data.double().std(0)
        constant = torch.nonzero(scale.flatten() == 0).flatten().tolist()
        if constant:
            raise ValueError(f"cannot standardise constant column(s) {constant}")
        self.data_loc.copy_(loc)
        self.data_scale.copy_(scale)

    # -- the distribution -------------------------------------------------------------------------
    def _check_context(self, context: Tensor | None) -> None:
        if self.context_dim:
            if context is None:
                raise ValueError(
                    f"this model is conditional (context_dim={self.context_dim}): pass a context"
                )
            if context.dim() < 1 or context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"expected a context of shape (..., {self.context_dim}), "
                    f"got {tuple(context.shape)}"
                )
        elif context is not None:
            raise ValueError("this model is not conditional: it takes no context")

    def distribution(
        self, context: Tensor | None = None
    ) -> FlowDistribution | PaddedFlowDistribution:
        """The model as a :class:`FlowDistribution` (given ``context``).

        Its chain is ``[flow, standardisation, LogitTransform(alpha).inv]`` (the last only with
        ``logit_alpha``), and its batch shape that of the context. A padded model gives a
        :class:`PaddedFlowDistribution` of the data (its ``log_prob``: see the class,
        "Padding").

        Example:
            >>> model = Flow.build("planar", 2)
            >>> model.distribution().event_shape
            torch.Size([2])
        """
        return self._distribution(context)

    def _distribution(
        self, context: Tensor | None, particles: int | None = None
    ) -> FlowDistribution | PaddedFlowDistribution:
        self._check_context(context)
        if self.padding is None:
            return FlowDistribution(
                self.flow, self.data_loc, self.data_scale, context, transforms=self._data_side
            )
        # The joint of (v, e): the standardisation acts on the data coordinates only.
        extra = self.padding.extra
        loc = torch.cat([self.data_loc, self.data_loc.new_zeros(extra)])
        scale = torch.cat([self.data_scale, self.data_scale.new_ones(extra)])
        joint = FlowDistribution(self.flow, loc, scale, context)
        return PaddedFlowDistribution(
            joint, self.padding, self.padding_log_scale, self._data_side, particles
        )

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        r"""Log-density of ``x`` ``(..., *event_shape)``, shape ``(...)`` (broadcast: context).

        ``x`` and ``context`` must be on the model's device; values of another dtype are cast
        to the model's (float64 into a float32 model warns once, a
        :class:`~pyroflows.errors.DataWarning`). A padded model returns the stochastic lower
        bound :math:`\mathcal{L}_K(x)` (Gaussian padding) or :math:`\log p(x, 0)` (zero
        padding, not a density of :math:`x`): see the class, "Padding".
        """
        return self._log_prob(x, context)

    def log_prob_bound(
        self, x: Tensor, context: Tensor | None = None, particles: int | None = None
    ) -> Tensor:
        r"""The importance-weighted bound :math:`\mathcal{L}_K(x) \le \log p(x)` with ``particles``.

        For a Gaussian-padded model (see the class, "Padding"), with :math:`K` = ``particles``
        draws of the padding per row (default: the spec's); :math:`\mathcal{L}_K` tightens in
        expectation as :math:`K` grows, at :math:`K` times the cost. For an unpadded model it
        is :meth:`log_prob` (exact, any ``particles``). Zero padding has no bound on
        :math:`\log p(x)` (``ValueError``).

        Example:
            >>> _ = torch.manual_seed(0)
            >>> model = Flow.build("realnvp", 1, num_layers=2, padding=Padding(1))
            >>> x = torch.randn(500, 1)
            >>> elbo = model.log_prob_bound(x, particles=1).mean()
            >>> iwae = model.log_prob_bound(x, particles=64).mean()
            >>> bool(iwae > elbo)
            True
        """
        if self.padding is not None and self.padding.kind == "zero":
            raise ValueError(
                "zero padding has no bound on log p(x): log_prob is log p(x, 0), the joint "
                "density on the slice e = 0 (use Padding(kind='gaussian') for a bound)"
            )
        if particles is not None and (not isinstance(particles, int) or particles < 1):
            raise ValueError(f"particles must be an int >= 1, got {particles!r}")
        return self._log_prob(x, context, particles)

    def _log_prob(self, x: Tensor, context: Tensor | None, particles: int | None = None) -> Tensor:
        shape = self.event_shape
        if x.dim() < len(shape) or tuple(x.shape[x.dim() - len(shape) :]) != shape:
            what = f"event size {self.input_dim}" if len(shape) == 1 else f"event shape {shape}"
            raise ValueError(f"expected data with {what}, got shape {tuple(x.shape)}")
        x = self._on_model(x, "data")
        if context is not None:
            context = self._on_model(context, "the context")
            batch, context_batch = x.shape[: x.dim() - len(shape)], context.shape[:-1]
            try:
                torch.broadcast_shapes(batch, context_batch)
            except RuntimeError:
                raise ValueError(
                    f"the context's batch shape {tuple(context_batch)} does not broadcast with "
                    f"the data's {tuple(batch)} (data {tuple(x.shape)}, context "
                    f"{tuple(context.shape)})"
                ) from None
        return self._distribution(context, particles).log_prob(x)

    def flow_points(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The points at which :meth:`log_prob` evaluates the flow's inverse, ``(N, D + E)``.

        The data ``x`` ``(N, D)`` through the logit map and the standardisation, followed by the
        padding: zeros, or one draw of :math:`q` per row (torch's RNG); without padding, the
        standardised data alone. Give them to :mod:`pyroflows.diagnostics` with
        ``model.flow.inv`` to measure the conditioning of the padded flow
        (``context``: checked here, passed there).

        Example:
            >>> from pyroflows.diagnostics import condition_numbers
            >>> model = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, "zero"))
            >>> points = model.flow_points(torch.randn(5, 2))
            >>> points.shape, bool((points[:, 2:] == 0).all())
            (torch.Size([5, 4]), True)
            >>> condition_numbers(model.flow.inv, points).condition.shape
            torch.Size([5])
        """
        self._check_context(context)
        x = self._on_model(torch.as_tensor(x), "x")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(
                f"expected rows x of shape (N, {self.input_dim}), got {tuple(x.shape)}"
            )
        with torch.no_grad():
            v = x
            for transform in reversed(self._data_side):
                v, _ = transform.inverse_and_log_det(v)
            u = (v - self.data_loc) / self.data_scale
            if self.padding is None:
                return u
            extra = (len(u), self.padding.extra)
            if self.padding.kind == "zero":
                return torch.cat([u, u.new_zeros(extra)], -1)
            e = torch.randn(extra, dtype=u.dtype, device=u.device) * self.padding_log_scale.exp()
            return torch.cat([u, e], -1)

    def _on_model(self, values: Tensor, name: str) -> Tensor:
        """``values`` in the model's dtype; an error naming both devices if they differ."""
        device = self.data_loc.device
        if values.device != device:
            raise ValueError(
                f"device mismatch: {name} on {values.device}, the model on {device}; move one "
                f"of them (e.g. with .to({str(device)!r}))"
            )
        return as_model_dtype(values, self.data_loc.dtype, name)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob` (so that ``DistributedDataParallel`` can wrap the model)."""
        return self.log_prob(x, context)

    def rsample_and_log_prob(
        self, sample_shape: _Size = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Reparameterised samples and their log-density, from one forward pass.

        Cheap for flows whose forward map is fast (IAF-type), which find the log-det on the
        way. A padded model returns the samples (padding dropped) and :meth:`log_prob` of
        them at fresh padding draws (the bound, or :math:`\log p(x, 0)`): one forward and one
        inverse pass.
        """
        return self.distribution(context).rsample_and_log_prob(sample_shape)

    def rsample(self, sample_shape: _Size = (), context: Tensor | None = None) -> Tensor:
        """Reparameterised samples, shape ``sample_shape + context batch + event_shape``.

        A padded model draws :math:`(x, e)` and returns :math:`x` (the padding dropped).
        """
        return self.distribution(context).rsample(sample_shape)

    @torch.no_grad()
    def sample(self, sample_shape: _Size = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradients, shape ``sample_shape + context batch + event_shape``."""
        return self.rsample(sample_shape, context)

    def extra_repr(self) -> str:
        """Flow name and sizes, shown in ``repr(model)``."""
        name = self.config["name"] if self.config else type(self.flow).__name__
        text = f"{name}, input_dim={self.input_dim}, context_dim={self.context_dim}"
        return text if self.padding is None else f"{text}, padding={self.padding}"
