r"""A normalizing-flow density model as one module: base, flow and data standardisation.

:class:`Flow` holds everything a fitted density needs (the flow's parameters, the standard
normal base and the data's standardisation statistics) as parameters and *buffers* of one
``nn.Module``: ``.to(device)`` moves all of it, ``state_dict`` saves all of it, and no tensor
of the base distribution is left behind on the CPU (the problem of Pyro issue #2761, where a
``TransformedDistribution``'s base keeps the device it was built on).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import AffineTransform, Transform
from torch.distributions.transforms import IndependentTransform, SigmoidTransform

from .data.digits import inverse_logit_transform, logit_transform
from .transforms import REGISTRY, FlowModule, FlowSequence, InverseFlow

__all__ = ["Flow"]

_Size = torch.Size | Sequence[int]


class Flow(nn.Module):
    r"""Density model :math:`x = \mu + \sigma \odot f(z)`, :math:`z \sim \mathcal{N}(0, I_D)`.

    With :math:`u = (x - \mu) / \sigma` the standardised data,

    .. math::
        \log p(x \mid c) = \log \mathcal{N}\big(f_c^{-1}(u); 0, I\big)
        + \log\left|\det \frac{\partial f_c^{-1}}{\partial u}\right|
        - \sum_{i=1}^{D} \log \sigma_i ,

    where :math:`f_c` is the flow (conditioned on a context :math:`c` for conditional flows)
    and :math:`\mu, \sigma` are the data's standardisation statistics
    (:meth:`standardize_with`; identity until set).

    **Data in** :math:`[0, 1)` **(images).** With ``logit_alpha`` :math:`= \alpha > 0` the
    model first maps the data to logit space,
    :math:`v = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`
    (:func:`~pyroflows.data.logit_transform`), standardises and models :math:`v`, and adds the
    exact log-determinant of that map, so :meth:`log_prob` is still the density of :math:`x`
    and :meth:`sample` returns values in its support
    :math:`(-\alpha, 1 - \alpha) / (1 - 2\alpha) \supset [0, 1]` (RealNVP, MAF). Data outside
    that support raise ``ValueError`` naming the rows while Pyro's validation is on (the
    default; the check reads values, so ``pyro.enable_validation(False)`` removes it). The base's
    mean and scale and :math:`\mu, \sigma` are buffers: part of ``state_dict`` and moved by
    ``.to(device)``.

    The methods mirror a Pyro distribution: :meth:`log_prob`, :meth:`sample`,
    :meth:`rsample`, :meth:`rsample_and_log_prob`; :meth:`distribution` returns an actual
    ``pyro.distributions.TransformedDistribution`` (for ``pyro.sample`` or anything else that
    wants a distribution object). ``forward(x, context)`` is :meth:`log_prob`, so the model can
    be wrapped in ``DistributedDataParallel``.

    Cost: a log-density costs one pass of the flow's inverse, a sample one pass of its forward
    map; see the flow's registry entry for which is fast.

    Args:
        flow: a pyroflows flow (``FlowModule``, its ``.inv``, or a sequence of them, composed
            with :class:`~pyroflows.transforms.FlowSequence`), mapping base samples to
            (standardised) data.
        config: the JSON-serialisable recipe the flow was built from (set by :meth:`build`);
            checkpoints store it so that the model can be rebuilt before loading weights.
        logit_alpha: model data in :math:`[0, 1)` through the logit map with this squeeze
            (``None``: no logit map).

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762, section 2.

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
    """

    def __init__(
        self,
        flow: FlowModule | InverseFlow | Sequence[FlowModule | InverseFlow],
        config: dict[str, Any] | None = None,
        logit_alpha: float | None = None,
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
        self.input_dim, self.context_dim = flow.input_dim, flow.context_dim
        self.config = dict(config) if config is not None else None
        dim = self.input_dim
        self.register_buffer("base_loc", torch.zeros(dim))
        self.register_buffer("base_scale", torch.ones(dim))
        self.register_buffer("data_loc", torch.zeros(dim))
        self.register_buffer("data_scale", torch.ones(dim))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        name: str,
        input_dim: int,
        context_dim: int = 0,
        *,
        logit_alpha: float | None = None,
        **options: Any,
    ) -> Flow:
        """Build the registry flow ``name`` (``REGISTRY[name].build``) and remember the recipe.

        ``options`` are the builder's keyword arguments (``num_layers``, ``hidden_dims``, ...)
        and must be JSON-serialisable, since checkpoints store them; ``logit_alpha`` is the
        model's own option (see the class).

        Example:
            >>> Flow.build("realnvp", 4, num_layers=2).config["name"]
            'realnvp'
        """
        if name not in REGISTRY:
            raise KeyError(f"no flow named {name!r}; registered: {sorted(REGISTRY)}")
        config = {
            "name": name,
            "input_dim": int(input_dim),
            "context_dim": int(context_dim),
            "options": dict(options),
        }
        if logit_alpha is not None:
            config["logit_alpha"] = float(logit_alpha)
        try:
            json.dumps(config)
        except TypeError as error:
            raise TypeError(f"flow options must be JSON-serialisable: {error}") from None
        flow = REGISTRY[name].build(input_dim, context_dim, **options)
        return cls(flow, config, logit_alpha=logit_alpha)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Flow:
        """Rebuild an (untrained) model from :attr:`config`, e.g. before loading weights.

        Example:
            >>> model = Flow.build("nice", 2, num_layers=2)
            >>> Flow.from_config(model.config).config == model.config
            True
        """
        missing = {"name", "input_dim", "context_dim", "options"} - set(config)
        if missing:
            raise ValueError(f"flow config lacks {sorted(missing)}: {config}")
        return cls.build(
            config["name"],
            config["input_dim"],
            config["context_dim"],
            logit_alpha=config.get("logit_alpha"),
            **config["options"],
        )

    @torch.no_grad()
    def standardize_with(self, data: Tensor) -> None:
        r"""Set :math:`\mu, \sigma` to the per-column mean and standard deviation of ``data``.

        Raises ``ValueError`` for data of the wrong shape, with non-finite values, or with a
        constant column (its :math:`\sigma` would be 0).
        """
        data = torch.as_tensor(data)
        if data.dim() != 2 or data.shape[-1] != self.input_dim or len(data) < 2:
            raise ValueError(
                f"standardisation needs data of shape (N >= 2, {self.input_dim}), "
                f"got {tuple(data.shape)}"
            )
        if not torch.isfinite(data).all():
            raise ValueError("standardisation data contain NaN or inf values")
        data = self._to_model_space(data)[0]
        loc, scale = data.double().mean(0), data.double().std(0)
        constant = torch.nonzero(scale == 0).flatten().tolist()
        if constant:
            raise ValueError(f"cannot standardise constant column(s) {constant}")
        self.data_loc.copy_(loc)
        self.data_scale.copy_(scale)

    # -- the distribution -------------------------------------------------------------------------
    def _to_model_space(self, x: Tensor) -> tuple[Tensor, Tensor | float]:
        """The logit map (when set) and its log-determinant per example; else ``(x, 0)``."""
        if self.logit_alpha is None:
            return x, 0.0
        # The range check reads the data on the host (a device sync): like Pyro's own support
        # checks it runs while Pyro's validation is on (the default), and
        # pyro.enable_validation(False) takes it off the scoring path.
        if dist.is_validation_enabled():
            squeezed = self.logit_alpha + (1 - 2 * self.logit_alpha) * x
            outside = ~((squeezed > 0) & (squeezed < 1)).all(-1)
            if bool(outside.any()):
                rows = torch.nonzero(outside.reshape(-1)).flatten()[:10].tolist()
                raise ValueError(
                    f"this model takes data in [0, 1] (logit_alpha={self.logit_alpha}; its "
                    f"support reaches alpha / (1 - 2 alpha) beyond); rows {rows} have values "
                    "outside it"
                )
        return logit_transform(x, self.logit_alpha)

    def _from_model_space(self, v: Tensor) -> Tensor:
        return v if self.logit_alpha is None else inverse_logit_transform(v, self.logit_alpha)

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

    def _transform(self, context: Tensor | None) -> Transform:
        self._check_context(context)
        return self.flow.condition(context) if self.context_dim else self.flow

    def _base(self, context: Tensor | None) -> dist.TorchDistribution:
        base = dist.Normal(self.base_loc, self.base_scale, validate_args=False).to_event(1)
        if context is not None and context.dim() > 1:
            base = base.expand(context.shape[:-1])
        return base

    def _unstandardize(self) -> AffineTransform:
        return AffineTransform(self.data_loc, self.data_scale, event_dim=1)

    def distribution(self, context: Tensor | None = None) -> dist.TransformedDistribution:
        """The model as a ``pyro.distributions.TransformedDistribution`` (given ``context``).

        Example:
            >>> model = Flow.build("planar", 2)
            >>> model.distribution().event_shape
            torch.Size([2])
        """
        transforms = [self._transform(context), self._unstandardize()]
        if self.logit_alpha is not None:
            squeeze = 1.0 - 2.0 * self.logit_alpha
            transforms += [
                IndependentTransform(SigmoidTransform(), 1),
                AffineTransform(-self.logit_alpha / squeeze, 1.0 / squeeze, event_dim=1),
            ]
        return dist.TransformedDistribution(self._base(context), transforms, validate_args=False)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``x`` ``(..., D)``; shape ``(...)`` (broadcast with the context)."""
        if x.shape[-1:] != (self.input_dim,):
            raise ValueError(
                f"expected data with event size {self.input_dim}, got shape {tuple(x.shape)}"
            )
        self._check_context(context)
        v, logit_log_det = self._to_model_space(x)
        u = (v - self.data_loc) / self.data_scale
        # One uncached inverse pass that returns the log-det with it: the pass cache and its
        # bookkeeping cannot help when scoring data (each batch is new).
        z, log_det = self.flow.inverse_and_log_det(u, context)
        log_prob = self._base(None).log_prob(z) + log_det - self.data_scale.log().sum()
        return log_prob + logit_log_det

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob` (so that ``DistributedDataParallel`` can wrap the model)."""
        return self.log_prob(x, context)

    def rsample_and_log_prob(
        self, sample_shape: _Size = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log-density, from one forward pass.

        Cheap for flows whose forward map is fast (IAF-type), which find the log-det on the
        way.
        """
        transform = self._transform(context)
        base = self._base(context)
        z = base.rsample(torch.Size(sample_shape))
        y = transform(z)
        log_prob = base.log_prob(z) - transform.log_abs_det_jacobian(z, y)
        log_prob = log_prob - self.data_scale.log().sum()
        v = self.data_loc + self.data_scale * y
        if self.logit_alpha is None:
            return v, log_prob
        # log|dx/dv| from v itself: exact even where the sigmoid saturates in floating point
        squeeze = math.log1p(-2 * self.logit_alpha)
        log_dx_dv = (F.logsigmoid(v) + F.logsigmoid(-v)).sum(-1) - squeeze * self.input_dim
        return self._from_model_space(v), log_prob - log_dx_dv

    def rsample(self, sample_shape: _Size = (), context: Tensor | None = None) -> Tensor:
        """Reparameterised samples, shape ``sample_shape + context batch + (D,)``."""
        transform = self._transform(context)
        y = transform(self._base(context).rsample(torch.Size(sample_shape)))
        return self._from_model_space(self.data_loc + self.data_scale * y)

    @torch.no_grad()
    def sample(self, sample_shape: _Size = (), context: Tensor | None = None) -> Tensor:
        """Samples without gradients, shape ``sample_shape + context batch + (D,)``."""
        return self.rsample(sample_shape, context)

    def extra_repr(self) -> str:
        """Flow name and sizes, shown in ``repr(model)``."""
        name = self.config["name"] if self.config else type(self.flow).__name__
        return f"{name}, input_dim={self.input_dim}, context_dim={self.context_dim}"
