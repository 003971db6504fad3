r"""Padded (augmented) density models: the padding spec and the distribution of the data.

:class:`Padding` says how a :class:`~pyroflows.distributions.Flow` pads its data
:math:`x \in \mathbb{R}^D` with :math:`E` extra coordinates :math:`e` before its flow, which
then acts on :math:`\mathbb{R}^{D + E}`; :class:`PaddedFlowDistribution` is the resulting
distribution of :math:`x` (what ``Flow.distribution`` returns for a padded model). Both are
re-exported by :mod:`pyroflows.distributions`; the maths is on ``Flow``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from .errors import OptionError

if TYPE_CHECKING:
    from .distributions import FlowDistribution
    from .transforms import FlowModule, InverseFlow

__all__ = ["PaddedFlowDistribution", "Padding"]

_KINDS = ("gaussian", "zero")
_LOG_2PI = math.log(2.0 * math.pi)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Padding:
    r"""How a density model pads its data: ``extra`` coordinates, Gaussian or zero.

    The flow of a padded :class:`~pyroflows.distributions.Flow` models the joint density
    :math:`p(x, e)` of the data :math:`x \in \mathbb{R}^D` and the padding
    :math:`e \in \mathbb{R}^E`, :math:`E =` ``extra``; the density of the data is the
    marginal :math:`p(x) = \int p(x, e)\, de`. With ``kind="gaussian"`` the padding is drawn
    from :math:`q(e) = \mathcal{N}(0, s^2 I_E)`, :math:`s =` ``scale``, and ``log_prob`` is
    the importance-weighted lower bound with :math:`K =` ``particles`` draws,

    .. math::
        \mathcal{L}_K(x) = \log \frac{1}{K} \sum_{k=1}^{K}
        \frac{p(x, e_k)}{q(e_k)}, \quad e_k \sim q, \qquad
        \mathbb{E}\,\mathcal{L}_1 \le \mathbb{E}\,\mathcal{L}_K \le \mathbb{E}\,\mathcal{L}_{K+1}
        \le \log p(x);

    with ``kind="zero"`` the padding is :math:`e = 0` and ``log_prob`` is
    :math:`\log p(x, 0)`, the joint density on the slice :math:`e = 0`, *not* a normalised
    density of :math:`x` (see :class:`~pyroflows.distributions.Flow`, "Padding").

    Args:
        extra: the number :math:`E \ge 1` of padding coordinates.
        kind: ``"gaussian"`` (default) or ``"zero"``.
        scale: :math:`s > 0`, the padding's standard deviation (Gaussian padding), in the
            units of the flow's coordinates, where the data are standardised (so 1 is the
            data's own scale after :meth:`~pyroflows.distributions.Flow.standardize_with`).
        learn_scale: learn :math:`s` (a parameter of the model, starting at ``scale``)
            instead of fixing it (Gaussian padding).
        particles: :math:`K \ge 1`, the draws per data point of the bound ``log_prob``
            returns (Gaussian padding); :math:`K = 1` is the ELBO
            :math:`\mathbb{E}_q[\log p(x, e) - \log q(e)]`.

    Raises:
        OptionError: (a ``ValueError``) for a spec that is not one of the above, naming the
            field, what it expects and what it got; the zero kind takes no ``scale``,
            ``learn_scale`` or ``particles`` (they describe :math:`q`).

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", ICML 2021, arXiv:2010.01155; Huang, Dinh & Courville, "Augmented
        Normalizing Flows", 2020, arXiv:2002.07101; Burda, Grosse &
        Salakhutdinov, "Importance Weighted Autoencoders", 2016, arXiv:1509.00519.

    Example:
        >>> Padding(2)
        Padding(extra=2, kind='gaussian', scale=1.0, learn_scale=False, particles=1)
        >>> Padding(2, "zero").to_dict()["kind"]
        'zero'
        >>> Padding(0)
        Traceback (most recent call last):
        ...
        pyroflows.errors.OptionError: Padding extra must be an int >= 1, got 0
    """

    extra: int
    kind: Literal["gaussian", "zero"] = "gaussian"
    scale: float = 1.0
    learn_scale: bool = False
    particles: int = 1

    def __post_init__(self) -> None:
        if not _is_int(self.extra) or self.extra < 1:
            raise OptionError(f"Padding extra must be an int >= 1, got {self.extra!r}")
        if self.kind not in _KINDS:
            raise OptionError(
                f"Padding kind must be one of {', '.join(map(repr, _KINDS))}, got {self.kind!r}"
            )
        scale = self.scale
        if not (_is_int(scale) or isinstance(scale, float)) or not math.isfinite(scale):
            raise OptionError(f"Padding scale must be a finite number > 0, got {scale!r}")
        if scale <= 0:
            raise OptionError(f"Padding scale must be a finite number > 0, got {scale!r}")
        object.__setattr__(self, "scale", float(scale))
        if not isinstance(self.learn_scale, bool):
            raise OptionError(
                f"Padding learn_scale must be True or False, got {self.learn_scale!r}"
            )
        if not _is_int(self.particles) or self.particles < 1:
            raise OptionError(f"Padding particles must be an int >= 1, got {self.particles!r}")
        if self.kind == "zero":
            given = [
                f"{name}={value!r}"
                for name, value, default in (
                    ("scale", self.scale, 1.0),
                    ("learn_scale", self.learn_scale, False),
                    ("particles", self.particles, 1),
                )
                if value != default
            ]
            if given:
                raise OptionError(
                    f"Padding kind 'zero' takes no {', '.join(given)}: scale, learn_scale and "
                    "particles describe the Gaussian padding q(e) (kind='gaussian')"
                )

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON values (what a model's recipe stores).

        Example:
            >>> Padding(1, scale=0.5).to_dict()
            {'extra': 1, 'kind': 'gaussian', 'scale': 0.5, 'learn_scale': False, 'particles': 1}
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Padding:
        """The spec from :meth:`to_dict`'s output; unknown or missing fields are refused.

        Example:
            >>> Padding.from_dict({"extra": 2, "kind": "zero"})
            Padding(extra=2, kind='zero', scale=1.0, learn_scale=False, particles=1)
        """
        if not isinstance(value, Mapping):
            raise OptionError(f"a padding must be a Padding or a dict, got {type(value).__name__}")
        fields = ("extra", "kind", "scale", "learn_scale", "particles")
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise OptionError(
                f"a padding has no field(s) {', '.join(map(repr, unknown))} (it has: "
                f"{', '.join(fields)})"
            )
        if "extra" not in value:
            raise OptionError("a padding needs its 'extra' field (the number of coordinates)")
        return cls(**value)


def as_padding(value: Padding | Mapping[str, Any] | None) -> Padding | None:
    """``value`` (a :class:`Padding`, its dict, or ``None``) as a :class:`Padding` or ``None``."""
    if value is None or isinstance(value, Padding):
        return value
    return Padding.from_dict(value)


def _padding_log_prob(eps: Tensor, log_scale: Tensor) -> Tensor:
    r""":math:`\log q(e)`, :math:`q = \mathcal{N}(0, s^2 I)`, at :math:`e = s \varepsilon`."""
    size = eps.shape[-1]
    return -0.5 * (eps.square().sum(-1) + size * _LOG_2PI) - size * log_scale


class PaddedFlowDistribution(TorchDistribution):
    r"""The distribution of the data :math:`x` under a padded flow; ``log_prob`` is a bound.

    :math:`(v, e)` is drawn from ``joint``, a
    :class:`~pyroflows.distributions.FlowDistribution` on :math:`\mathbb{R}^{D + E}`, and
    :math:`x = g(v)` through the data-side maps :math:`g` (e.g. the inverse logit map) on the
    first :math:`D` coordinates; the padding :math:`e` is dropped. With the padding
    distribution :math:`q(e) = \mathcal{N}(0, s^2 I)` and :math:`K` particles,

    .. math::
        \log p(x) \ge \mathcal{L}_K(x) = \log \frac{1}{K} \sum_{k=1}^{K}
        \frac{p(g^{-1}(x), e_k)}{q(e_k)}
        + \log\left|\det \frac{\partial g^{-1}}{\partial x}\right|,
        \qquad e_k = s\, \varepsilon_k, \; \varepsilon_k \sim \mathcal{N}(0, I_E),

    which :meth:`log_prob` returns: one draw of a random variable (torch's global RNG),
    reparameterised so that gradients reach :math:`s`. Zero padding gives
    :math:`\log p(x, 0)` instead (see :class:`Padding`). :class:`~pyroflows.distributions.Flow`
    builds it (``Flow.distribution`` of a padded model); the maths and the caveats are there.

    Cost: :meth:`log_prob` is one inverse pass of the flow on :math:`K` times the rows;
    :meth:`rsample` one forward pass; :meth:`rsample_and_log_prob` both (the draw is scored
    at fresh padding draws, as :meth:`log_prob` would score it).

    Args:
        joint: the flow's distribution of :math:`(v, e)`, event shape ``(D + E,)``.
        padding: the :class:`Padding` spec.
        log_scale: :math:`\log s`, a 0-dim tensor (a parameter when learned).
        transforms: the data-side maps :math:`g` on the first :math:`D` coordinates
            (unconditional pyroflows flows of event shape ``(D,)``).
        particles: :math:`K` (default: the spec's).

    References:
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2016,
        arXiv:1509.00519; Koehler, Mehta & Risteski, 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> from pyroflows.distributions import Flow
        >>> _ = torch.manual_seed(0)
        >>> model = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2))
        >>> q = model.distribution()
        >>> type(q).__name__, q.event_shape
        ('PaddedFlowDistribution', torch.Size([2]))
        >>> x, bound = q.rsample_and_log_prob((3,))
        >>> x.shape, bound.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(
        self,
        joint: FlowDistribution,
        padding: Padding,
        log_scale: Tensor,
        transforms: Sequence[FlowModule | InverseFlow] = (),
        particles: int | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.joint, self.padding, self.log_scale = joint, padding, log_scale
        self.transforms = tuple(transforms)
        particles = padding.particles if particles is None else particles
        if not _is_int(particles) or particles < 1:
            raise ValueError(f"particles must be an int >= 1, got {particles!r}")
        if padding.kind == "zero" and particles != 1:
            raise ValueError(f"zero padding draws nothing: particles must be 1, got {particles}")
        self.particles = particles
        (padded,) = joint.event_shape
        self.data_dim = padded - padding.extra
        super().__init__(joint.batch_shape, torch.Size([self.data_dim]), validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        """Real vectors, or the last data-side map's codomain."""
        return self.transforms[-1].codomain if self.transforms else constraints.real_vector

    def expand(self, batch_shape: Sequence[int], _instance=None) -> PaddedFlowDistribution:
        """The same distribution with a larger batch shape (e.g. inside a Pyro plate)."""
        return type(self)(
            self.joint.expand(batch_shape),
            self.padding,
            self.log_scale,
            self.transforms,
            self.particles,
        )

    def rsample(self, sample_shape: Sequence[int] = ()) -> Tensor:
        """Draws of :math:`x` (the padding dropped), ``sample_shape + batch_shape + (D,)``."""
        values, _ = self.joint.rsample_and_log_prob(sample_shape)
        x = values[..., : self.data_dim]
        for transform in self.transforms:
            x, _ = transform.forward_and_log_det(x)
        return x

    def log_prob(self, value: Tensor) -> Tensor:
        r"""The bound :math:`\mathcal{L}_K` (Gaussian) or :math:`\log p(x, 0)` (zero padding)."""
        if value.dim() < 1 or value.shape[-1] != self.data_dim:
            raise ValueError(
                f"expected values with event size {self.data_dim}, got shape {tuple(value.shape)}"
            )
        if self.batch_shape:
            batch = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
            value = value.expand(batch + value.shape[-1:])
        v, log_det = value, 0.0
        for transform in reversed(self.transforms):
            v, step = transform.inverse_and_log_det(v)
            log_det = log_det + step
        extra, batch = self.padding.extra, v.shape[:-1]
        if self.padding.kind == "zero":
            joint = self.joint.log_prob(torch.cat([v, v.new_zeros((*batch, extra))], -1))
            return joint + log_det
        count = self.particles
        eps = torch.randn((count, *batch, extra), dtype=v.dtype, device=v.device)
        log_scale = self.log_scale.to(v.dtype)
        e = eps * log_scale.exp()
        points = torch.cat([v.expand((count, *v.shape)), e], -1)
        weights = self.joint.log_prob(points) - _padding_log_prob(eps, log_scale)
        return torch.logsumexp(weights, 0) - math.log(count) + log_det

    def rsample_and_log_prob(self, sample_shape: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
        """Draws of :math:`x` and :meth:`log_prob` of them (fresh padding draws): two passes."""
        x = self.rsample(sample_shape)
        return x, self.log_prob(x)
