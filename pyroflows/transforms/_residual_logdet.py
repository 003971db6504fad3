r"""The numerics of :class:`Residual` blocks: spectral refresh, log-dets, fixed-point inverse.

Private helpers of :mod:`pyroflows.transforms.residual`; the maths is documented on
:class:`~pyroflows.transforms.Residual`. Functions take ``g`` as a callable on batches
``(N, D) -> (N, D)`` (the context already bound) and work on flattened batches.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import LipSwish
from ..nn.lipschitz import SpectralNormLinear
from ._root import InverseNotConvergedError, InverseNotConvergedWarning

__all__: list[str] = []

GFunction = Callable[[Tensor], Tensor]
Slope = Callable[[Tensor], tuple[Tensor, Tensor]]
_EXACT_MAX, _POWER_RTOL, _POWER_MAX = 128, 1e-6, 500


def refresh_spectral_norm(layer: SpectralNormLinear) -> None:
    """Set the layer's vectors ``u, v`` to its weight's top singular pair.

    The layer's estimate of its spectral norm is then exact: by one eigensolve for layers up to
    ``_EXACT_MAX`` wide on their short side, else by power steps until the estimate changes by
    less than ``_POWER_RTOL`` (at most ``_POWER_MAX`` steps).

    One power step per update (the layer's own refresh) lags a moving weight whenever the top
    two singular values are close (measured on 2-D data, 4 blocks of [32, 32], ``coeff=0.9``,
    200 Adam steps at lr 1e-2: per-layer estimates up to 11% low and block bounds up to 1.15,
    i.e. non-invertible; five steps per update still gave 1.002 to 1.05); the eigenvector of a
    64 x 64 Gram matrix costs about 0.15 ms on one core, once per update.
    """
    weight = layer.weight.detach()
    if weight.device.type == "meta":
        return
    if min(weight.shape) <= _EXACT_MAX:
        # top eigenvector (unit) of the Gram matrix of the short side: half an SVD's cost
        if weight.shape[0] >= weight.shape[1]:
            v = torch.linalg.eigh(weight.T @ weight)[1][:, -1]
            u = weight @ v
            layer.u.copy_(u.div_(u.norm().clamp_min(1e-30)))
            layer.v.copy_(v)
        else:
            u = torch.linalg.eigh(weight @ weight.T)[1][:, -1]
            v = weight.T @ u
            layer.v.copy_(v.div_(v.norm().clamp_min(1e-30)))
            layer.u.copy_(u)
        return
    layer.power_iteration(layer.n_power_iterations)
    if torch.compiler.is_compiling():
        return  # the convergence check reads host values: compiled code takes the fixed steps
    sigma = float(torch.dot(layer.u, weight @ layer.v))
    for _ in range(_POWER_MAX):
        layer.power_iteration(1)
        new = float(torch.dot(layer.u, weight @ layer.v))
        if abs(new - sigma) <= _POWER_RTOL * abs(new):
            return
        sigma = new


def with_slope(module: nn.Module) -> Slope:
    """The activation ``module`` as ``a -> (phi(a), phi'(a))``.

    Covers the 1-Lipschitz activations of :class:`~pyroflows.nn.LipschitzMLP`.
    """
    if isinstance(module, LipSwish):
        beta = F.softplus(module.rho)

        def lipswish(a: Tensor) -> tuple[Tensor, Tensor]:
            s = torch.sigmoid(beta * a)
            out = a * s / 1.1  # slope (s + beta a s (1 - s)) / 1.1:
            return out, torch.addcmul(s / 1.1, beta * out, 1 - s)

        return lipswish
    if isinstance(module, nn.ELU):
        alpha = module.alpha

        def elu(a: Tensor) -> tuple[Tensor, Tensor]:
            out = F.elu(a, alpha)
            return out, torch.where(a > 0, torch.ones_like(a), out + alpha)

        return elu
    if isinstance(module, nn.Tanh):

        def tanh(a: Tensor) -> tuple[Tensor, Tensor]:
            out = torch.tanh(a)
            return out, 1 - out * out

        return tanh
    if isinstance(module, nn.ReLU):
        return lambda a: (F.relu(a), (a > 0).to(a.dtype))
    raise TypeError(f"no derivative known for the activation {type(module).__name__}")


def _probe(like: Tensor, kind: str) -> Tensor:
    """A Hutchinson probe with :math:`E[v v^T] = I`: standard normal or Rademacher."""
    if kind == "gaussian":
        return torch.randn_like(like)
    return torch.randint_like(like, 0, 2).mul_(2).sub_(1)


def _series_weights(n_exact: int, n_extra: int, p: float | None) -> list[float]:
    r"""Weights :math:`w_k` of the terms :math:`k = 1..n` of the power series.

    :math:`w_k = 1` for :math:`k \le n_{\text{exact}}`, and
    :math:`1 / P(N \ge k - n_{\text{exact}}) = (1 - p)^{-(k - n_{\text{exact}})}` beyond
    (Russian roulette with :math:`N \sim \mathrm{Geometric}(p)` on :math:`\{0, 1, \dots\}`).
    ``p=None``: a plain truncation (all weights 1).
    """
    weights = [1.0] * n_exact
    for m in range(1, n_extra + 1):
        weights.append(1.0 if p is None else (1.0 - p) ** -m)
    return weights


class MLPJacobian:
    r"""One pass of an MLP :math:`g`, keeping what its Jacobian products need.

    :math:`g(x) = W_K \phi(\cdots \phi(W_0 [x, c] + b_0) \cdots) + b_K` and

    .. math::
        J_g = W_K D_{K-1} W_{K-1} \cdots D_0 W_0^{(x)}, \qquad
        D_i = \operatorname{diag} \phi'(a_i),

    with :math:`a_i` the pre-activations and :math:`W_0^{(x)}` the columns of :math:`W_0` that
    multiply :math:`x`. :meth:`vjp` (:math:`r^T J`) and :meth:`jvp` (:math:`J v`) are
    :math:`K + 1` matrix products and :math:`K` element-wise products each, with no autograd
    engine in between; :meth:`jvp` stays differentiable in :math:`x` and the parameters
    (through :math:`W_i` and :math:`D_i`), so one ordinary backward gives the gradient of
    :math:`u^T J v` (no double backward).

    Args:
        layers: ``(weight, bias)`` of each linear layer, in order.
        activations: the derivative-aware activation of each hidden layer: a callable
            ``a -> (phi(a), phi'(a))``.
        x: input ``(N, D)``.
        context: ``(N, C)`` or ``None``.
    """

    def __init__(self, layers, activations, x: Tensor, context: Tensor | None) -> None:
        self.dim = x.shape[-1]
        h = x if context is None else torch.cat([x, context], dim=-1)
        self.weights = [weight for weight, _ in layers]
        self.slopes: list[Tensor] = []
        for (weight, bias), activation in zip(layers[:-1], activations, strict=True):
            h, slope = activation(torch.nn.functional.linear(h, weight, bias))
            self.slopes.append(slope)
        weight, bias = layers[-1]
        self.output = torch.nn.functional.linear(h, weight, bias)
        self._fixed = [w.detach() for w in self.weights], [d.detach() for d in self.slopes]

    def vjp(self, row: Tensor) -> Tensor:
        """:math:`r^T J_g`, shape ``(N, D)``, without a graph."""
        weights, slopes = self._fixed
        for weight, slope in zip(weights[:0:-1], slopes[::-1], strict=True):
            row = (row @ weight) * slope
        return row @ weights[0][:, : self.dim]

    def jvp(self, vector: Tensor) -> Tensor:
        """:math:`J_g v`, shape ``(N, D)``, differentiable."""
        out = vector @ self.weights[0][:, : self.dim].T
        for weight, slope in zip(self.weights[1:], self.slopes, strict=True):
            out = (out * slope) @ weight.T
        return out


def series_log_det(
    jacobian: MLPJacobian, probe: Tensor, weights: list[float], attach_gradient: bool
) -> Tensor:
    r"""Weighted power series of :math:`\log\det(I + J_g)` with one Hutchinson probe.

    .. math::
        \widehat{L} = \sum_{k=1}^{n} \frac{(-1)^{k+1}}{k} w_k\, v^T J^k v, \qquad
        \nabla \widehat{L} \approx \nabla\big(u^T J v\big),\quad
        u^T = \sum_{k=0}^{n-1} (-1)^k w_{k+1}\, v^T J^k \ \text{(held constant)}.

    The products :math:`v^T J^k` (:math:`k < n`) run without a graph, so memory does not grow
    with :math:`n`; the gradient is attached by the one differentiable product :math:`J v`
    (the Neumann-series gradient, Chen et al. 2019, section 3.2). Over the probe its
    expectation is the gradient of the (weighted) series, since
    :math:`\nabla \operatorname{tr} J^k = k \operatorname{tr}(J^{k-1} \nabla J)`. The last
    term :math:`v^T J^n v = (v^T J^{n-1})(J v)` reuses that product, so the estimate costs
    :math:`n - 1` vector-Jacobian products and one Jacobian-vector product.

    Args:
        jacobian: the pass of :math:`g` at the inputs.
        probe: :math:`v`, ``(N, D)``.
        weights: :math:`w_1, \dots, w_n`.
        attach_gradient: make the result differentiable (False under ``no_grad``).

    Returns:
        The estimate, shape ``(N,)``: its value is :math:`\widehat{L}`, its gradient the one
        above.
    """
    with torch.no_grad():
        rows = [probe]  # v^T J^k, k = 0 .. n - 1
        for _ in range(len(weights) - 1):
            rows.append(jacobian.vjp(rows[-1]))
        neumann = sum((-1) ** k * weights[k] * row for k, row in enumerate(rows))
    j_v = jacobian.jvp(probe)
    with torch.no_grad():
        fixed = j_v.detach()
        estimate = sum(
            (-1) ** (k + 1) * weight / k * (rows[k - 1] * fixed).sum(-1)
            for k, weight in enumerate(weights, start=1)
        )
    if not attach_gradient:
        return estimate
    surrogate = (neumann * j_v).sum(-1)
    return estimate + (surrogate - surrogate.detach())


def roulette_weights(n_exact: int, p: float) -> list[float]:
    r"""Draw :math:`N \sim \mathrm{Geometric}(p)` (torch's RNG) and return the term weights."""
    extra = int(torch.empty(()).geometric_(p).item()) - 1  # support {0, 1, ...}
    return _series_weights(n_exact, extra, p)


def exact_log_det(g_single: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, context):
    r""":math:`\log|\det(I + J_g(x))|` per sample, with the Jacobian from ``torch.func``."""
    from torch.func import jacrev, vmap

    if context is None:
        jac = vmap(jacrev(lambda v: g_single(v, None)))(x)
    else:
        jac = vmap(jacrev(g_single), in_dims=(0, 0))(x, context)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.linalg.slogdet(eye + jac).logabsdet


def fixed_point(
    g: GFunction,
    y: Tensor,
    atol: float,
    rtol: float,
    max_iter: int,
    coeff: float,
    memory: int = 0,
) -> tuple[Tensor, Tensor]:
    r"""Solve :math:`x = y - g(x)` from :math:`x_0 = y`, per sample; Anderson-accelerated.

    With :math:`G(x) = y - g(x)` and the residual :math:`F(x) = G(x) - x`, ``memory = 0`` is
    Banach's iteration :math:`x_{k+1} = G(x_k)`; ``memory = m > 0`` is Anderson's (type II,
    Walker & Ni 2011): with the last :math:`n \le m` iterates,

    .. math::
        x_{k+1} = \sum_i \alpha_i G(x_i), \qquad
        \alpha = \arg\min_{\sum_i \alpha_i = 1} \Big\lVert \sum_i \alpha_i F(x_i) \Big\rVert,

    an :math:`n \times n` (ridge-regularised) solve per sample. A sample whose squared residual
    grew past 4 times the smallest it has had drops its history and takes a Banach step from
    its current iterate (a safeguard: the contraction guarantees that step). A sample stops
    (its iterate is frozen) once every element satisfies
    :math:`|F(x_k)| \le \text{atol} + \text{rtol}\,|G(x_k)|` and returns :math:`G(x_k)`;
    samples with a non-finite input are left as they are. ``g`` is evaluated on the whole
    batch each iteration, so each sample's result does not depend on the others.

    Returns:
        The solution ``(N, D)`` and the evaluations of ``g`` each sample took ``(N,)`` (on
        ``y``'s device).

    Raises:
        InverseNotConvergedError: naming the iterations and the largest remaining step.
    """
    x = y
    done = ~torch.isfinite(y).all(-1)
    counts = torch.zeros(y.shape[:-1], dtype=torch.long, device=y.device)
    step = torch.zeros_like(y)
    history_g: list[Tensor] = []  # G(x_i) and F(x_i) of the last iterates
    history_f: list[Tensor] = []
    best = torch.full(y.shape[:-1], math.inf, dtype=y.dtype, device=y.device)
    for _ in range(max_iter):
        g_x = y - g(x)
        residual = g_x - x
        step = residual.abs()
        converged = (step <= atol + rtol * g_x.abs()).all(-1)
        active = ~done
        counts = counts + active.long()
        finished = active & converged
        x = torch.where(finished.unsqueeze(-1), g_x, x)
        done = done | converged
        if bool(done.all()):
            return x, counts
        if memory == 0:
            x = torch.where(done.unsqueeze(-1), x, g_x)
            continue
        size = residual.pow(2).sum(-1)
        restart = size > _RESTART * best  # it grew: a Banach step from here, a fresh history
        best = torch.minimum(best, size)
        history_g = [torch.where(restart.unsqueeze(-1), g_x, h) for h in history_g]
        history_f = [torch.where(restart.unsqueeze(-1), residual, h) for h in history_f]
        history_g = ([*history_g, g_x])[-memory:]
        history_f = ([*history_f, residual])[-memory:]
        x = torch.where(done.unsqueeze(-1), x, _anderson_step(history_g, history_f))
    left = ~done
    worst = float((step.amax(-1) * left).max())
    raise InverseNotConvergedError(
        f"Residual inverse did not converge: {int(left.sum())} of {left.numel()} samples still "
        f"moved by up to {worst:.3g} after {max_iter} fixed-point iterations (atol={atol}, "
        f"rtol={rtol}); the error shrinks like coeff^k = {coeff}^k: raise max_iter or tolerance"
    )


_RIDGE = 1e-6  # Tikhonov weight of Anderson's Gram matrix, relative to its mean diagonal
_RESTART = 4.0  # a residual (squared) this many times its best so far restarts Anderson


def _anderson_step(history_g: list[Tensor], history_f: list[Tensor]) -> Tensor:
    r""":math:`\sum_i \alpha_i G_i` with the constrained least-squares weights, per sample."""
    if len(history_g) == 1:
        return history_g[0]
    f = torch.stack(history_f, -2)  # (N, n, D)
    gram = f @ f.transpose(-1, -2)
    n = gram.shape[-1]
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1, keepdim=True).unsqueeze(-1)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    ones = gram.new_ones((*gram.shape[:-1], 1))
    tiny = torch.finfo(gram.dtype).tiny
    regularised = gram + (_RIDGE * scale + tiny / torch.finfo(gram.dtype).eps) * eye
    weights, info = torch.linalg.solve_ex(regularised, ones)
    weights = weights.squeeze(-1)
    weights = weights / weights.sum(-1, keepdim=True)
    result = (weights.unsqueeze(-1) * torch.stack(history_g, -2)).sum(-2)
    ok = (torch.isfinite(result).all(-1) & (info == 0)).unsqueeze(-1)
    return torch.where(ok, result, history_g[-1])  # a degenerate solve: the Banach step


def implicit_gradient_hook(g: GFunction, x_star: Tensor, atol: float, max_iter: int):
    r"""A gradient hook turning the gradient of :math:`x = y - g(x^*)` into the implicit one.

    With :math:`x^* = y - g(x^*)`, the gradient of a loss through the one differentiable step
    :math:`x = y - g(x^*)` (``x_star`` constant) must be preconditioned by
    :math:`(I + J_g)^{-T}`: the hook replaces the incoming :math:`\bar x` by the solution of
    :math:`a = \bar x - J_g^T a` (fixed-point iteration, contracting like :math:`c^k`).
    """
    x0 = x_star.detach()

    def hook(grad: Tensor) -> Tensor:
        with torch.enable_grad():
            xr = x0.requires_grad_(True)
            g_x = g(xr)
            a = grad
            for _ in range(max_iter):
                a_new = grad - torch.autograd.grad(g_x, xr, a, retain_graph=True)[0]
                step = (a_new - a).abs().max()
                a = a_new
                if bool(step <= atol * (1 + a_new.abs().max())):
                    return a.detach()
        warnings.warn(
            f"Residual inverse's implicit gradient did not converge: the last of {max_iter} "
            f"fixed-point iterations moved it by {float(step):.3g} (atol={atol}); raise max_iter",
            InverseNotConvergedWarning,
            stacklevel=2,
        )
        return a.detach()

    return hook
