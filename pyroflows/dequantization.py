r"""Variational dequantisation (Flow++): a learned noise :math:`q(u \mid k)` instead of uniform.

Uniform dequantisation (:func:`~pyroflows.data.dequantize`) fits a density :math:`p_x` on
:math:`[0, 1)^D` to :math:`x = (k + u) / L` with :math:`u \sim \mathcal{U}[0, 1)^D`; with
:math:`p_v(v) = L^{-D} p_x(v / L)` the density of :math:`v = k + u`,

.. math::

    \log P(k) = \log \int_{[0, 1)^D} p_v(k + u)\, du
    \ge \mathbb{E}_{q(u \mid k)}\big[\log p_v(k + u) - \log q(u \mid k)\big]

for any density :math:`q(\cdot \mid k)` on the unit cube (Jensen); the uniform :math:`q`
(:math:`\log q = 0`) is the usual bound, and a learned :math:`q` can only tighten it, since
the gap is :math:`\mathrm{KL}(q(u \mid k) \,\|\, P(u \mid k))`. :class:`VariationalDequantizer`
is such a :math:`q` (a conditional flow followed by a sigmoid) and :class:`DequantizedFlow`
trains it jointly with the density model, with :func:`~pyroflows.train.fit` on the raw
integers. Its ``-log_prob`` is an NLL of the :math:`[0, 1)` data with the same meaning as
uniform dequantisation's, so :func:`~pyroflows.data.bits_per_dim` applies unchanged.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.digits import dequantize
from .distributions import Flow
from .transforms import ConvCoupling, Coupling, coupling_mask

__all__ = ["DequantizedFlow", "VariationalDequantizer"]


def _event_shape(event_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (operator.index(event_shape),) if isinstance(event_shape, int) else tuple(event_shape)
    if len(shape) not in (1, 3) or any(int(n) < 1 for n in shape):
        raise ValueError(f"event_shape must be (D,) or (C, H, W) of positive sizes, got {shape}")
    return tuple(int(n) for n in shape)


def _log_sigmoid_slope(y: Tensor, event_dims: int) -> Tensor:
    r""":math:`\sum \log \sigma'(y) = \sum [\log \sigma(y) + \log \sigma(-y)]` over the event."""
    return (F.logsigmoid(y) + F.logsigmoid(-y)).flatten(y.dim() - event_dims).sum(-1)


class VariationalDequantizer(nn.Module):
    r"""Dequantisation noise :math:`u \sim q(u \mid k)` on :math:`(0, 1)^D`, with its log-density.

    .. math::

        \varepsilon \sim \operatorname{Logistic}(0, 1)^D, \qquad
        y = f_c(\varepsilon), \qquad u = \sigma(y), \qquad
        c = \frac{2k}{L - 1} - 1,

        \log q(u \mid k) = \sum_{i=1}^{D} \log \ell(\varepsilon_i)
        - \log\left|\det \frac{\partial f_c}{\partial \varepsilon}\right|
        - \sum_{i=1}^{D} \log \sigma'(y_i),

    with :math:`\ell(e) = \sigma(e)\,(1 - \sigma(e)) = \sigma'(e)` the logistic density and
    :math:`f_c` a conditional flow whose context is the integer image scaled to
    :math:`[-1, 1]`: ``num_layers`` checkerboard :class:`~pyroflows.transforms.ConvCoupling`
    layers with ``image_context=True`` for images ``(C, H, W)`` (flipped in turn), or
    :class:`~pyroflows.transforms.Coupling` layers (alternating halves) with the context as
    a vector for vectors ``(D,)``. Both start as the identity, and with a logistic base
    :math:`u = \sigma(\varepsilon)` is then exactly uniform and :math:`\log q = 0`
    (:math:`\ell = \sigma'`): training starts from uniform dequantisation. (Flow++ draws
    :math:`\varepsilon` from a standard normal; with it the identity start would be a
    logit-normal, not the uniform bound. The logistic is drawn as
    :math:`\varepsilon = \operatorname{logit}(U)`, :math:`U \sim \mathcal{U}(0, 1)`.)
    Sampling is reparameterised: gradients reach the flow's parameters through :math:`u`.
    Calling the module with integers ``k`` ``(..., *event_shape)`` returns ``(u, log_q)``, of
    shapes ``k.shape`` and ``k.shape[:-len(event_shape)]``; ``noise`` gives :math:`U` instead
    of drawing it (torch's global RNG). Cost: one pass of each coupling's conditioner,
    :math:`O(D)` more.

    Args:
        event_shape: ``D`` or ``(D,)`` for vectors (:math:`D \ge 2`), ``(C, H, W)`` for
            images (:math:`HW \ge 2`).
        levels: number of levels :math:`L` of the integers, which lie in ``[0, L - 1]``.
        num_layers: coupling layers of :math:`f_c` (0: uniform dequantisation).
        hidden: hidden channels of the image couplings' ResNets, or hidden width of the vector
            couplings' MLPs.
        num_blocks: residual blocks of the image couplings' ResNets.

    References:
        Ho, J., Chen, X., Srinivas, A., Duan, Y., Abbeel, P. "Flow++: Improving Flow-Based
        Generative Models with Variational Dequantization and Architecture Design", ICML 2019,
        arXiv:1902.00275, section 3.1.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> q = VariationalDequantizer((1, 4, 4), levels=17, hidden=8)
        >>> k = torch.randint(0, 17, (5, 1, 4, 4)).float()
        >>> u, log_q = q(k)
        >>> u.shape, log_q.shape, bool(((u > 0) & (u < 1)).all())
        (torch.Size([5, 1, 4, 4]), torch.Size([5]), True)
        >>> bool(log_q.abs().max() < 1e-4)  # the identity start: uniform noise, log q = 0
        True
    """

    def __init__(
        self,
        event_shape: int | Sequence[int],
        levels: int,
        num_layers: int = 2,
        hidden: int = 16,
        num_blocks: int = 1,
    ) -> None:
        super().__init__()
        self.event_shape = shape = _event_shape(event_shape)
        self.levels = operator.index(levels)
        if self.levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        if operator.index(num_layers) < 0:
            raise ValueError(f"num_layers must be 0 or positive, got {num_layers}")
        dim = math.prod(shape)
        layers: list[nn.Module] = []
        for index in range(num_layers):
            flip = index % 2 == 1
            if len(shape) == 3:
                layer = ConvCoupling(
                    shape,
                    hidden,
                    mask="checkerboard",
                    flip=flip,
                    num_blocks=num_blocks,
                    context_dim=dim,
                    image_context=True,
                )
            else:
                mask = coupling_mask(dim, "alternate", flip=flip)
                layer = Coupling(dim, [hidden], mask=mask, context_dim=dim)
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.config = {
            "event_shape": list(shape),
            "levels": self.levels,
            "num_layers": int(num_layers),
            "hidden": int(hidden),
            "num_blocks": int(num_blocks),
        }

    def check(self, k: Tensor) -> None:
        """Raise ``ValueError`` unless ``k`` holds integers in ``[0, L - 1]`` of the event shape."""
        shape = self.event_shape
        if k.dim() < len(shape) or tuple(k.shape[k.dim() - len(shape) :]) != shape:
            raise ValueError(
                f"expected integer data of event shape {shape}, got shape {tuple(k.shape)}"
            )
        values = k.detach()
        if values.numel():
            off = (values != values.round()) | (values < 0) | (values > self.levels - 1)
            if bool(off.any()):
                raise ValueError(
                    f"expected integer values in [0, {self.levels - 1}], got values in "
                    f"[{float(values.min())}, {float(values.max())}]"
                )

    def forward(self, k: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``u ~ q(. | k)``; return ``(u, log q(u | k))`` (see the class)."""
        self.check(k)
        reference = next(self.parameters(), None)
        if reference is not None:
            dtype = reference.dtype
        else:
            dtype = k.dtype if k.dtype.is_floating_point else torch.get_default_dtype()
        k = k.to(dtype)
        event_dims = len(self.event_shape)
        info = torch.finfo(dtype)
        below_one = float(
            torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
        )
        if noise is None:
            noise = torch.rand(k.shape, dtype=dtype, device=k.device)
        elif noise.shape != k.shape:
            raise ValueError(
                f"noise must have the shape of k, {tuple(k.shape)}, got {tuple(noise.shape)}"
            )
        uniform = noise.to(dtype).clamp(info.tiny, below_one)
        eps = torch.log(uniform) - torch.log1p(-uniform)
        log_q = _log_sigmoid_slope(eps, event_dims)
        scale = max(self.levels - 1, 1)
        context = (2.0 * k / scale - 1.0).flatten(k.dim() - event_dims)
        y = eps
        for layer in self.layers:
            y, log_det = layer.forward_and_log_det(y, context)
            log_q = log_q - log_det
        log_q = log_q - _log_sigmoid_slope(y, event_dims)
        u = torch.sigmoid(y).clamp(info.tiny, below_one)
        return u, log_q


class DequantizedFlow(nn.Module):
    r"""A density model of :math:`x \in [0, 1)^D` trained on integers with learned noise.

    For integers :math:`k \in \{0, \dots, L - 1\}^D`, :meth:`log_prob` returns the one-sample
    bound

    .. math::

        \mathcal{L}(k) = \log p_x\Big(\frac{k + u}{L}\Big) - \log q(u \mid k),
        \qquad u \sim q(\cdot \mid k) \text{ (reparameterised)},

        \log P(k) \ge \mathbb{E}_q\big[\log p_v(k + u) - \log q(u \mid k)\big]
        = \mathbb{E}_q[\mathcal{L}(k)] - D \log L,
        \qquad p_v(v) = L^{-D} p_x(v / L),

    with :math:`p_x` the wrapped :class:`~pyroflows.distributions.Flow` and :math:`q` a
    :class:`VariationalDequantizer`. So :math:`-\mathcal{L}` is an NLL of the :math:`[0, 1)`
    data in the sense of uniform dequantisation (where :math:`\log q = 0`), and
    :func:`~pyroflows.data.bits_per_dim` ``(nll, D, L)`` turns its mean into an upper bound on
    the bits per dimension of the integers. It is stochastic (one draw of :math:`u` per call,
    torch's global RNG). :meth:`sample` returns the model's samples :math:`x`
    (``floor(L x)`` gives integers).

    A wrapper rather than a :class:`~pyroflows.distributions.Flow` option: the model stays a
    plain density of :math:`x` (its recipe, checkpoints and evaluation unchanged), and the
    dequantizer is a training-time device. The wrapper has what
    :func:`~pyroflows.train.fit` reads from a model (``forward`` as ``log_prob``,
    ``event_shape``, ``context_dim``, ``config``, ``data_loc``, :meth:`standardize_with`), so
    ``fit(DequantizedFlow(model, q), k)`` trains both on the raw integers, without the
    :class:`~pyroflows.data.Dequantize` augment (new noise is drawn at every step). Its
    validation NLL is a noisy bound. Unconditional models only. Cost: one pass of :math:`q`
    and one :meth:`~pyroflows.distributions.Flow.log_prob` of the model per call.

    Args:
        model: the density of :math:`x \in [0, 1)` (e.g. ``Flow.build(..., logit_alpha=0.05)``).
        dequantizer: the noise :math:`q`, of the model's event shape; its ``levels`` are
            :math:`L`.

    References:
        Ho, J., Chen, X., Srinivas, A., Duan, Y., Abbeel, P. "Flow++: Improving Flow-Based
        Generative Models with Variational Dequantization and Architecture Design", ICML 2019,
        arXiv:1902.00275, section 3.1.

    Example:
        >>> from pyroflows.data import bits_per_dim, load_digits_images
        >>> _ = torch.manual_seed(0)
        >>> k = load_digits_images("test")[:64]
        >>> model = Flow.build("glow", (1, 8, 8), levels=1, steps_per_level=2, hidden_channels=8,
        ...                    logit_alpha=0.05)
        >>> q = VariationalDequantizer((1, 8, 8), levels=17, hidden=8)
        >>> dequantized = DequantizedFlow(model, q)
        >>> dequantized.standardize_with(k)
        >>> bound = dequantized.log_prob(k).detach()
        >>> bound.shape, float(bits_per_dim(-bound.mean(), 64, 17)) > 0
        (torch.Size([64]), True)
        >>> dequantized.sample((3,)).shape
        torch.Size([3, 1, 8, 8])
    """

    def __init__(self, model: Flow, dequantizer: VariationalDequantizer) -> None:
        super().__init__()
        if tuple(model.event_shape) != tuple(dequantizer.event_shape):
            raise ValueError(
                f"the dequantizer's event shape {tuple(dequantizer.event_shape)} differs from "
                f"the model's {tuple(model.event_shape)}"
            )
        if model.context_dim:
            raise ValueError(
                f"DequantizedFlow takes unconditional models, got context_dim={model.context_dim}"
            )
        self.model, self.dequantizer = model, dequantizer
        self.levels = dequantizer.levels
        self.event_shape = tuple(model.event_shape)
        self.input_dim, self.context_dim = model.input_dim, 0

    @property
    def config(self) -> dict[str, Any]:
        """The recipe: the model's and the dequantizer's settings (what checkpoints store)."""
        return {
            "name": "dequantized",
            "model": self.model.config,
            "dequantizer": dict(self.dequantizer.config),
        }

    @property
    def data_loc(self) -> Tensor:
        """The model's standardisation mean (its dtype and device are the model's)."""
        return self.model.data_loc

    def standardize_with(self, k: Tensor) -> None:
        """Standardise the model with the integers ``k`` dequantised uniformly (seed 0)."""
        self.model.standardize_with(dequantize(k, self.levels, seed=0))

    def log_prob(self, k: Tensor, context: Tensor | None = None) -> Tensor:
        """The one-sample bound of the class for integers ``k`` ``(..., *event_shape)``."""
        if context is not None:
            raise ValueError("DequantizedFlow is not conditional: it takes no context")
        u, log_q = self.dequantizer(k)
        dtype = u.dtype
        below_one = float(
            torch.nextafter(torch.ones((), dtype=dtype), torch.zeros((), dtype=dtype))
        )
        x = ((k.to(dtype) + u) / self.levels).clamp(max=below_one)
        return self.model.log_prob(x) - log_q

    def forward(self, k: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as :meth:`log_prob` (what :func:`~pyroflows.train.fit` calls)."""
        return self.log_prob(k, context)

    @torch.no_grad()
    def sample(self, sample_shape: Sequence[int] | torch.Size = ()) -> Tensor:
        """The model's samples :math:`x` (``floor(L x)``, clamped, gives integers)."""
        return self.model.sample(torch.Size(sample_shape))
