r"""Residual flows: invertible ResNets (i-ResNet) and Residual Flows, on vector events.

A block is :math:`y = x + g(x, c)` with :math:`\mathrm{Lip}_x(g) \le c_L < 1`
(:class:`~pyroflows.nn.LipschitzMLP`), inverted by fixed-point iteration and scored by an
exact, a truncated-series or an unbiased Russian-roulette log-determinant; see
:class:`Residual`. :func:`residual` and :func:`iresnet` stack blocks (with
:class:`~pyroflows.transforms.ActNorm` in between), and :func:`set_log_det` switches the
estimator of every block of a flow, residual or continuous (e.g. to ``"exact"`` for a check
against autograd).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import LipschitzMLP
from ..nn.lipschitz import SpectralNormLinear
from . import _residual_logdet as _ld
from ._args import _check_hidden_dims
from ._base import FlowModule
from .compose import FlowSequence
from .linear import ActNorm

__all__ = ["Residual", "exact_log_det", "iresnet", "residual", "set_log_det"]

_MODES = ("exact", "series", "unbiased")
_PROBES = ("gaussian", "rademacher")
_DEFAULT_HIDDEN = [64, 64]
_Network = Callable[[Tensor, Tensor | None], Tensor]


class Residual(FlowModule):
    r"""Residual flow block :math:`y = x + g(x, c)` with a contractive :math:`g`.

    **Forward.** :math:`g` is a :class:`~pyroflows.nn.LipschitzMLP` whose spectrally
    normalised layers make :math:`\mathrm{Lip}_x(g) \le` ``coeff`` :math:`< 1`, so the block
    is invertible (Behrmann et al. 2019). The context :math:`c` enters :math:`g` only (it is
    concatenated to :math:`x`), so every context gives an invertible map.

    **Inverse** by Banach's fixed point, :math:`x = T(x) = y - g(x)`, from :math:`x_0 = y`:
    :math:`T` is a contraction with constant :math:`L \le` ``coeff``, so the plain iteration
    :math:`x_{k+1} = T(x_k)` (``anderson=0``) converges like :math:`L^k`, and
    :math:`\|T(x_k) - x\| \le \frac{L}{1 - L} \|T(x_k) - x_k\|`. By default it is
    Anderson-accelerated (``anderson=5``, Walker & Ni 2011): :math:`x_{k+1} = \sum_i \alpha_i
    T(x_i)` over the last 5 iterates, :math:`\alpha` minimising
    :math:`\|\sum_i \alpha_i (T(x_i) - x_i)\|` under :math:`\sum_i \alpha_i = 1`, with a
    restart from a plain step when the residual grows. Vectorised over the batch; a sample
    stops once every element has :math:`|T(x_k) - x_k| \le \text{atol} + \text{rtol}\,
    |T(x_k)|` and returns :math:`T(x_k)`. Defaults ``rtol=1e-5``, ``atol=1e-6``: about 100
    float32 ulps, and the target of the issue (1e-5 relative); ``max_iter=100``: at the
    bound :math:`L = 0.9` the plain iteration's worst case needs
    :math:`\log(10^{-5}) / \log(0.9) \approx 110` steps from a unit first step. Measured on
    a trained flow in ``docs/benchmarks`` ("Residual flows", inverse iterations). Past
    ``max_iter``, :class:`~pyroflows.transforms.InverseNotConvergedError`. The last counts
    (evaluations of :math:`g`) are kept in
    ``last_inverse_iterations`` (the batch's maximum) and
    ``last_inverse_iteration_counts`` (per sample). Gradients through the inverse are the
    implicit ones, :math:`\partial x / \partial (y, \theta) = (I + J_g)^{-1}\,
    \partial(y - g) / \partial(y, \theta)`: a hook solves :math:`a = \bar x - J_g^T a` by the
    plain iteration.

    **Log-determinant**, :math:`\log|\det(I + J_g)| = \sum_{k \ge 1}
    \frac{(-1)^{k+1}}{k} \operatorname{tr}(J_g^k)` (converges since :math:`\|J_g\| < 1`),
    selected by ``log_det``:

    * ``"exact"``: :math:`\log|\det(I + J_g)|` with :math:`J_g` from ``torch.func``
      (``vmap(jacrev)``), :math:`O(D)` passes of :math:`g` plus :math:`O(D^3)` per sample; for
      small :math:`D` and tests.
    * ``"series"`` (i-ResNet, biased): the first ``n_terms`` terms, each trace by one
      Hutchinson probe :math:`v` (:math:`E[vv^T] = I`):
      :math:`\sum_{k=1}^{n} \frac{(-1)^{k+1}}{k} v^T J^k v`. Bias at most
      :math:`\sum_{k > n} D L^k / k`; variance from the probe.
    * ``"unbiased"`` (Residual Flows): ``n_exact_terms`` terms always, plus
      :math:`N \sim \mathrm{Geometric}(p)` more (``geometric_p``, support
      :math:`\{0, 1, \dots\}`), term :math:`k` reweighted by :math:`1 / P(N \ge k -
      n_{\text{exact}}) = (1 - p)^{-(k - n_{\text{exact}})}`:

      .. math::
          \widehat{L} = \sum_{k=1}^{n_{\text{exact}} + N} \frac{(-1)^{k+1}}{k}
          \frac{v^T J^k v}{P(N \ge k - n_{\text{exact}})}, \qquad
          E_{N, v}[\widehat{L}] = \log\det(I + J_g),

      unbiased, with a variance from the probe and the roulette; expected cost
      :math:`n_{\text{exact}} + (1-p)/p` terms. One :math:`N` is drawn per pass (shared by
      the batch), as in Chen et al. Term :math:`k` contributes a variance of order
      :math:`\|J\|^{2k} (1 - p)^{-k}`: finite when :math:`\|J\|^2 < 1 - p`
      (:math:`\|J_g\| < 0.71` at :math:`p = 0.5`), heavy-tailed for blocks whose local
      Lipschitz constant approaches a ``coeff`` of 0.9.

    Both estimators write :math:`J_g = W_K D_{K-1} \cdots D_0 W_0` out for the MLP
    (:math:`D_i` the activations' slopes): the :math:`n - 1` products :math:`v^T J^k` run
    as matrix products without a graph; one differentiable product :math:`J v` gives the last
    term :math:`(v^T J^{n-1})(J v)` and the gradient, by the Neumann series (Chen et al.,
    section 3.2):
    :math:`\nabla \log\det(I + J) = \operatorname{tr}((I + J)^{-1} \nabla J) \approx
    \sum_{k=0}^{n-1} (-1)^k w_{k+1}\, v^T J^k (\nabla J) v`, i.e. the ordinary backward of
    :math:`u^T J v` with :math:`u` held constant. Training memory is one graph of :math:`g`
    and of :math:`J v`, whatever :math:`n` (the memory-saving backward; no double backward,
    and per-sample weights of the loss stay exact, unlike precomputing the parameter
    gradients in the forward pass). In eval mode (``not self.training``) ``"unbiased"``
    uses ``max(n_exact_terms, n_eval_exact_terms)`` exact terms (default 20) before the
    roulette: still unbiased, with a far smaller variance, for reporting likelihoods. Draws use
    torch's global RNG (``torch.manual_seed`` reproduces them).

    **Spectral normalisation.** In training mode each layer's singular vectors are refreshed
    once per parameter update (at the first pass after the parameters change, not at every
    pass), so between two optimizer steps the block is one fixed map and its inverse round
    trips; in eval mode they are left as they are. The refresh is exact (one symmetric
    eigensolve) for layers up to 128 wide on their short side, and power iteration to a
    relative change of 1e-6 beyond: a single power step per update, as in GAN training,
    lets a block's bound drift above 1 when a layer's top two singular values are close.

    Shapes: ``x`` ``(..., D)``, ``context`` ``(..., context_dim)`` (broadcast), log-det the
    batch shape. Cost per sample: forward :math:`O(H^2)` for hidden width :math:`H`; log-det
    :math:`n` Jacobian products of :math:`O(H^2)` each (``"exact"``: :math:`D` passes and a
    :math:`D \times D` determinant); inverse :math:`O(H^2)` per fixed-point iteration.

    Args:
        input_dim: event size :math:`D`.
        hidden_dims: hidden sizes of :math:`g` (default ``[64, 64]``).
        coeff: Lipschitz bound of :math:`g`, in :math:`(0, 1)`.
        log_det: ``"exact"``, ``"series"`` or ``"unbiased"``.
        n_terms: terms of the truncated series (``"series"``).
        n_exact_terms: terms always evaluated by ``"unbiased"``.
        geometric_p: success probability of the roulette's geometric number of extra terms.
        n_eval_exact_terms: exact terms of ``"unbiased"`` in eval mode.
        probe: ``"gaussian"`` or ``"rademacher"`` Hutchinson probes.
        activation: 1-Lipschitz activation of :math:`g` (see ``LipschitzMLP``).
        n_power_iterations: power iterations per refresh of each spectral norm.
        atol: absolute tolerance of the fixed-point inverse.
        rtol: relative tolerance of the fixed-point inverse.
        max_iter: iteration cap of the inverse.
        anderson: memory of the Anderson acceleration of the inverse (``0``: plain iteration).
        context_dim: context size (``0``: unconditional); keyword-only.

    References:
        Chen, Behrmann, Duvenaud & Jacobsen, "Residual Flows for Invertible Generative
        Modeling", NeurIPS 2019, arXiv:1906.02735 (and Behrmann et al., "Invertible Residual
        Networks", ICML 2019, arXiv:1811.00995, for the block, the inverse and the series).

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> block = Residual(2, [16, 16], coeff=0.9, log_det="exact")
        >>> x = torch.randn(5, 2)
        >>> y, log_det = block.forward_and_log_det(x)
        >>> x_back, _ = block.inverse_and_log_det(y)
        >>> log_det.shape, bool(torch.allclose(x_back, x, atol=1e-4))
        (torch.Size([5]), True)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        coeff: float = 0.9,
        *,
        log_det: str = "unbiased",
        n_terms: int = 5,
        n_exact_terms: int = 2,
        geometric_p: float = 0.5,
        n_eval_exact_terms: int = 20,
        probe: str = "gaussian",
        activation: str = "lipswish",
        n_power_iterations: int = 1,
        atol: float = 1e-6,
        rtol: float = 1e-5,
        max_iter: int = 100,
        anderson: int = 5,
        context_dim: int = 0,
    ) -> None:
        super().__init__(input_dim, context_dim)
        if not 0.0 < float(coeff) < 1.0:
            raise ValueError(f"coeff must be in (0, 1) for an invertible block, got {coeff}")
        if log_det not in _MODES:
            raise ValueError(f"log_det must be one of {_MODES}, got {log_det!r}")
        if probe not in _PROBES:
            raise ValueError(f"probe must be one of {_PROBES}, got {probe!r}")
        if not 0.0 < float(geometric_p) < 1.0:
            raise ValueError(f"geometric_p must be in (0, 1), got {geometric_p}")
        for name, value in (("n_terms", n_terms), ("max_iter", max_iter)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if int(anderson) < 0:
            raise ValueError(f"anderson must be >= 0 (0: plain iteration), got {anderson}")
        if int(n_exact_terms) < 1:
            raise ValueError(f"n_exact_terms must be >= 1, got {n_exact_terms}")
        hidden = _check_hidden_dims(hidden_dims)
        self.g = LipschitzMLP(
            self.input_dim,
            _DEFAULT_HIDDEN if hidden is None else hidden,
            coeff,
            activation,
            self.context_dim,
            n_power_iterations,
        )
        self.coeff = float(coeff)
        self.log_det_mode = log_det
        self.n_terms, self.n_exact_terms = int(n_terms), int(n_exact_terms)
        self.geometric_p, self.n_eval_exact_terms = float(geometric_p), int(n_eval_exact_terms)
        self.probe = probe
        self.atol, self.rtol, self.max_iter = float(atol), float(rtol), int(max_iter)
        self.anderson = int(anderson)
        self.last_inverse_iterations: int | None = None
        self.last_inverse_iteration_counts: Tensor | None = None
        self._stamp: tuple[tuple[int, int], ...] | None = None
        self._seen: list[Tensor] | None = None  # the weights at the last refresh

    # -- spectral normalisation: one refresh per parameter update --------------------------
    def _spectral_layers(self) -> list[SpectralNormLinear]:
        return [m for m in self.g.net if isinstance(m, SpectralNormLinear)]

    def _current_stamp(self) -> tuple[tuple[int, int], ...]:
        return tuple((id(m.weight), m.weight._version) for m in self._spectral_layers())

    def _refresh(self) -> None:
        """Refresh the layers' singular vectors if training and the weights changed since."""
        if not self.training:
            return
        compiling = torch.compiler.is_compiling()
        # version counters are no values a graph can guard on: a compiled pass refreshes
        # every time (the same vectors at the same weights, so the same map)
        stamp = None if compiling else self._current_stamp()
        if compiling or stamp != self._stamp or not self._same_weights():
            with torch.no_grad():
                for layer in self._spectral_layers():
                    _ld.refresh_spectral_norm(layer)
                self._seen = [layer.weight.detach().clone() for layer in self._spectral_layers()]
            self._stamp = stamp

    def _same_weights(self) -> bool:
        """Whether the weights hold the values of the last refresh.

        Version counters miss updates that do not bump them (torch's fused Adam, ``.data``
        assignments), so the values are compared too.
        """
        seen = getattr(self, "_seen", None)
        layers = self._spectral_layers()
        if seen is None or len(seen) != len(layers):
            return False
        return all(
            old.device == layer.weight.device
            and old.dtype == layer.weight.dtype
            and torch.equal(old, layer.weight)
            for old, layer in zip(seen, layers, strict=True)
        )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_fresh"] = self._stamp == self._current_stamp()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        fresh = state.pop("_fresh", False)
        super().__setstate__(state)
        # a copy's tensors are new (other ids and versions): as fresh as the original's
        self._stamp = self._current_stamp() if fresh else None

    # -- g with its normalised weights formed once per pass -----------------------------------
    def _network(self, detach: bool = False) -> _Network:
        ops: list[Callable[[Tensor], Tensor]] = []
        for module in self.g.net:
            if isinstance(module, SpectralNormLinear):
                weight, bias = module.normalized_weight(), module.bias
                if detach:
                    weight, bias = weight.detach(), bias.detach()
                ops.append(partial(F.linear, weight=weight, bias=bias))
            else:
                ops.append(module)

        def g(x: Tensor, context: Tensor | None) -> Tensor:
            h = x if context is None else torch.cat([x, context], dim=-1)
            for op in ops:
                h = op(h)
            return h

        return g

    def _layers(self) -> tuple[list[tuple[Tensor, Tensor]], list[_ld.Slope]]:
        """``(weight, bias)`` of each linear layer of ``g``, and its activations with slopes.

        The weights are the normalised ones; each hidden activation is ``a -> (phi, phi')``.
        """
        layers, activations = [], []
        for module in self.g.net:
            if isinstance(module, SpectralNormLinear):
                layers.append((module.normalized_weight(), module.bias))
            else:
                activations.append(_ld.with_slope(module))
        return layers, activations

    def _flatten(
        self, value: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
        batch = value.shape[:-1]
        if context is not None:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
            context = context.expand(*batch, self.context_dim).reshape(-1, self.context_dim)
        flat = value.expand(*batch, self.input_dim).reshape(-1, self.input_dim)
        return flat, context, tuple(batch)

    # -- the estimator ------------------------------------------------------------------------
    _log_det_modes = _MODES  # what set_log_det may switch this block to

    def _set_log_det(self, mode: str) -> None:
        """Use the log-det estimator ``mode`` (one of ``_MODES``); called by set_log_det."""
        if mode not in _MODES:
            raise ValueError(f"log_det must be one of {_MODES}, got {mode!r}")
        self.log_det_mode = mode

    def _get_log_det(self) -> str:
        return self.log_det_mode

    # -- the passes ---------------------------------------------------------------------------
    def _estimator_weights(self) -> list[float]:
        if self.log_det_mode == "series":
            return [1.0] * self.n_terms
        n_exact = self.n_exact_terms
        if not self.training:
            n_exact = max(n_exact, self.n_eval_exact_terms)
        return _ld.roulette_weights(n_exact, self.geometric_p)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._refresh()
        flat, context, batch = self._flatten(x, context)
        if self.log_det_mode == "exact":
            g = self._network()
            y = flat + g(flat, context)
            log_det = _ld.exact_log_det(g, flat, context)
        else:
            layers, activations = self._layers()
            jacobian = _ld.MLPJacobian(layers, activations, flat, context)
            y = flat + jacobian.output
            probe = _ld._probe(flat, self.probe)
            weights = self._estimator_weights()
            log_det = _ld.series_log_det(jacobian, probe, weights, torch.is_grad_enabled())
        return y.reshape(*batch, self.input_dim), log_det.reshape(batch)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, None]:
        self._refresh()
        flat, context, batch = self._flatten(y, context)
        fixed = self._network(detach=True)
        fixed_context = None if context is None else context.detach()

        def contraction(v: Tensor) -> Tensor:
            return fixed(v, fixed_context)

        with torch.no_grad():
            x_star, counts = _ld.fixed_point(
                contraction,
                flat.detach(),
                self.atol,
                self.rtol,
                self.max_iter,
                self.coeff,
                memory=self.anderson,
            )
        self.last_inverse_iteration_counts = counts.cpu()
        self.last_inverse_iterations = int(counts.max()) if counts.numel() else 0
        if torch.is_grad_enabled():
            x = flat - self._network()(x_star, context)  # one step, differentiable
            if x.requires_grad:
                x.register_hook(
                    _ld.implicit_gradient_hook(contraction, x_star, self.atol, self.max_iter)
                )
        else:
            x = flat - contraction(x_star)
        return x.reshape(*batch, self.input_dim), None

    def extra_repr(self) -> str:
        """Sizes, the Lipschitz bound and the log-det estimator."""
        return f"{super().extra_repr()}, coeff={self.coeff}, log_det={self.log_det_mode!r}"


def set_log_det(flow: nn.Module, mode: str) -> nn.Module:
    r"""Switch the log-det estimator of every residual and continuous block in ``flow``, in place.

    Each flow module with a log-det estimator takes some of the modes
    :math:`\{\texttt{"exact"}, \texttt{"series"}, \texttt{"unbiased"}\}`:

    - :class:`Residual`, :math:`\log|\det(I + J_g)|`: ``"exact"`` (the determinant of the
      Jacobian), ``"series"`` (the truncated power series) or ``"unbiased"`` (Russian roulette);
    - :class:`~pyroflows.transforms.ContinuousFlow`,
      :math:`\int_0^T \operatorname{tr} \partial f / \partial z \, dt`: ``"exact"``
      (``trace="exact"``) or ``"unbiased"`` (``trace="hutchinson"``); ``"series"`` raises.

    .. math::
        \texttt{mode} = \texttt{"exact"} \ \Rightarrow\
        \log\left|\det \frac{\partial y}{\partial x}\right| \text{ deterministic}
        \ (\text{to the solver's tolerance for a continuous flow}).

    The map and its inverse do not change; ``"exact"`` makes the log-density deterministic,
    e.g. to check a trained stochastic flow against autograd or to report an exact likelihood
    in low dimension. Modules without an estimator are left alone. Every block is checked
    before any is switched, so a mode one of them does not take changes nothing. Cost: a walk
    over the module tree.

    Args:
        flow: any module (a block, a stack, a distribution's flow).
        mode: the estimator.

    Returns:
        ``flow`` itself.

    Raises:
        ValueError: ``mode`` is unknown, or a block of ``flow`` does not take it (naming the
            block's class and the modes it takes).

    References:
        Chen, Behrmann, Duvenaud & Jacobsen, "Residual Flows for Invertible Generative
        Modeling", NeurIPS 2019, arXiv:1906.02735.

    Example:
        >>> flow = set_log_det(residual(2, [8], num_layers=2), "exact")
        >>> sorted({m.log_det_mode for m in flow.modules() if isinstance(m, Residual)})
        ['exact']
        >>> from pyroflows.transforms import ContinuousFlow
        >>> set_log_det(ContinuousFlow(2, [8]), "exact").trace
        'exact'
    """
    if mode not in _MODES:
        raise ValueError(f"log_det must be one of {_MODES}, got {mode!r}")
    blocks = [module for module in flow.modules() if hasattr(module, "_set_log_det")]
    for block in blocks:
        if mode not in block._log_det_modes:
            raise ValueError(
                f"{type(block).__name__} takes log_det one of {block._log_det_modes}, got {mode!r}"
            )
    for block in blocks:
        block._set_log_det(mode)
    return flow


@contextmanager
def exact_log_det(flow: nn.Module) -> Iterator[nn.Module]:
    r"""Score ``flow`` with exact log-determinants inside the ``with`` block, then restore.

    :func:`set_log_det` ``(flow, "exact")`` for the block's duration: every module with a
    log-det estimator (:class:`Residual`, :class:`~pyroflows.transforms.ContinuousFlow`)
    computes :math:`\log|\det \partial y / \partial x|` exactly and gets its own mode back
    afterwards (also when the block raises). For test likelihoods and importance weights,
    which need an exact :math:`\log q`: :math:`\exp` of an unbiased estimate of
    :math:`\log q` is no unbiased estimate of :math:`q`.

    Example:
        >>> flow = residual(2, [8], num_layers=1)
        >>> with exact_log_det(flow):
        ...     print([m.log_det_mode for m in flow.modules() if isinstance(m, Residual)])
        ['exact']
        >>> [m.log_det_mode for m in flow.modules() if isinstance(m, Residual)]
        ['unbiased']
    """
    blocks = [module for module in flow.modules() if hasattr(module, "_set_log_det")]
    modes = [block._get_log_det() for block in blocks]
    set_log_det(flow, "exact")
    try:
        yield flow
    finally:
        for block, mode in zip(blocks, modes, strict=True):
            block._set_log_det(mode)


def residual(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 8,
    coeff: float = 0.9,
    *,
    log_det: str = "unbiased",
    actnorm: bool = True,
    n_terms: int = 5,
    n_exact_terms: int = 2,
    geometric_p: float = 0.5,
    probe: str = "gaussian",
    activation: str = "lipswish",
    atol: float = 1e-6,
    rtol: float = 1e-5,
    max_iter: int = 100,
    anderson: int = 5,
    context_dim: int = 0,
) -> FlowSequence:
    r"""Residual Flow: ``num_layers`` :class:`Residual` blocks, each after an ActNorm.

    .. math::
        f = f_L \circ a_L \circ \dots \circ f_1 \circ a_1, \qquad
        f_l(x) = x + g_l(x, c), \qquad
        \log|\det J_f| = \sum_l \log|\det(I + J_{g_l})| + \log|\det J_{a_l}|,

    with :math:`a_l` an :class:`~pyroflows.transforms.ActNorm` (``actnorm=True``, as in Chen
    et al.) and each block's log-det by the unbiased Russian-roulette estimator (default;
    see :class:`Residual` for every option). Inverse: the blocks' fixed-point iterations in
    reverse order. Cost: ``num_layers`` times a block's.

    Example:
        >>> import torch
        >>> flow = residual(2, [16, 16], num_layers=2)
        >>> len(flow), flow.forward_and_log_det(torch.randn(5, 2))[1].shape
        (4, torch.Size([5]))

    References:
        Chen, Behrmann, Duvenaud & Jacobsen, "Residual Flows for Invertible Generative
        Modeling", NeurIPS 2019, arXiv:1906.02735.
    """
    layers: list[FlowModule] = []
    for _ in range(num_layers):
        if actnorm:
            layers.append(ActNorm(input_dim))
        layers.append(
            Residual(
                input_dim,
                hidden_dims,
                coeff,
                log_det=log_det,
                n_terms=n_terms,
                n_exact_terms=n_exact_terms,
                geometric_p=geometric_p,
                probe=probe,
                activation=activation,
                atol=atol,
                rtol=rtol,
                max_iter=max_iter,
                anderson=anderson,
                context_dim=context_dim,
            )
        )
    return FlowSequence(layers)


def iresnet(
    input_dim: int,
    hidden_dims: Sequence[int] | None = None,
    num_layers: int = 8,
    coeff: float = 0.9,
    *,
    n_terms: int = 5,
    actnorm: bool = True,
    probe: str = "gaussian",
    activation: str = "lipswish",
    atol: float = 1e-6,
    rtol: float = 1e-5,
    max_iter: int = 100,
    anderson: int = 5,
    context_dim: int = 0,
) -> FlowSequence:
    r"""Invertible ResNet: :func:`residual` with the truncated (biased) power series.

    .. math::
        \log|\det(I + J_g)| \approx \sum_{k=1}^{n} \frac{(-1)^{k+1}}{k} v^T J_g^k v,
        \qquad v \sim \mathcal{N}(0, I)\ \text{(or Rademacher)},

    ``n = n_terms`` per block; the bias shrinks like :math:`\mathrm{coeff}^{n} / n`. Cost:
    ``num_layers`` blocks of ``n_terms`` vector-Jacobian products each.

    Example:
        >>> import torch
        >>> flow = iresnet(2, [16], num_layers=2, actnorm=False)
        >>> flow.forward_and_log_det(torch.randn(5, 2))[1].shape
        torch.Size([5])

    References:
        Behrmann, Grathwohl, Chen, Duvenaud & Jacobsen, "Invertible Residual Networks",
        ICML 2019, arXiv:1811.00995.
    """
    return residual(
        input_dim,
        hidden_dims,
        num_layers,
        coeff,
        log_det="series",
        actnorm=actnorm,
        n_terms=n_terms,
        probe=probe,
        activation=activation,
        atol=atol,
        rtol=rtol,
        max_iter=max_iter,
        anderson=anderson,
        context_dim=context_dim,
    )
