r"""Continuous normalizing flows (FFJORD): a learned ODE, solved by torchdiffeq.

torchdiffeq is an optional dependency (``pip install 'pyroflows[ode]'``), imported on the first
solve: ``import pyroflows`` works without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..nn import MLP
from ._args import _check_hidden_dims
from ._base import FlowModule
from ._ode import _ADAPTIVE, SolverError, _check_solver, _draw_probe, _Dynamics, _RightHandSide
from ._ode import _solve as _solve_ode

__all__ = ["ContinuousFlow", "SolverError"]


class ContinuousFlow(FlowModule):
    r"""FFJORD: a free-form continuous normalizing flow, :math:`\dot z = f(z, t, c)`.

    The map :math:`y = z(T)` integrates the ODE from :math:`z(0) = x` over :math:`t \in [0, T]`,
    with :math:`f` an MLP of the concatenation :math:`[z, t, c]` (smooth activation, the output
    layer zero at the start, so the flow starts at the identity). By the instantaneous change of
    variables (Chen et al. 2018, theorem 1) the log-density obeys
    :math:`\frac{d}{dt} \log p(z(t)) = -\operatorname{tr} \frac{\partial f}{\partial z}`, so
    the state is augmented with :math:`l(t)` and

    .. math::
        \frac{d}{dt}\begin{pmatrix} z \\ l \end{pmatrix}
        = \begin{pmatrix} f(z, t, c) \\ \operatorname{tr} \partial f / \partial z
        \end{pmatrix}, \qquad
        y = z(T), \qquad
        \log\left|\det \frac{\partial y}{\partial x}\right|
        = \int_0^T \operatorname{tr} \frac{\partial f}{\partial z}(z(t), t, c)\, dt = l(T).

    The **inverse** integrates the same ODE backwards, from :math:`z(T) = y` to :math:`t = 0`
    (numerical: exact up to the solver's tolerance). **Traces**: ``trace="exact"`` forms the
    full :math:`D \times D` Jacobian per sample (:math:`D` vector-Jacobian products for
    :math:`D \le 4`, faster there; ``torch.func.vmap(jacrev)``, one vectorised pass, above);
    ``trace="hutchinson"`` (default) uses
    :math:`\operatorname{tr} A = \mathbb{E}[e^T A e]` with a probe :math:`e` (``"rademacher"``
    or ``"gaussian"``) drawn once per solve and fixed during it, :math:`e^T A` by one
    vector-Jacobian product: an unbiased log-det, so log-densities and ELBOs are unbiased too.
    **Adjoint** (``adjoint=True``, Chen et al. 2018, section 2): for a loss :math:`L` of the
    end state, the adjoint :math:`a(t) = \partial L / \partial s(t)` of the augmented state
    :math:`s = (z, l, \dots)` with right-hand side :math:`g(s, t, \theta)` is solved
    backwards from :math:`a(T) = \partial L / \partial s(T)`, together with the state itself,

    .. math::
        \frac{da}{dt} = -a^\top \frac{\partial g}{\partial s}, \qquad
        \frac{dL}{d\theta} = \int_0^T a^\top \frac{\partial g}{\partial \theta}\, dt,
        \qquad \frac{dL}{dx} = a(0),

    each right-hand side one vector-Jacobian product: memory constant in the number of
    solver steps, about twice the function evaluations (torchdiffeq's ``odeint_adjoint``;
    a failure of the backward solve raises :class:`SolverError` from ``backward()``).
    Otherwise (default) gradients backpropagate through the solver's steps (faster for
    small networks, memory growing with the steps).

    **Regularisers** (RNODE, Finlay et al. 2020): with ``kinetic_energy`` :math:`\lambda_K` or
    ``jacobian_norm`` :math:`\lambda_J` positive, the state also integrates
    :math:`\int_0^T \lVert f \rVert^2 dt` and :math:`\int_0^T \lVert \partial f / \partial z
    \rVert_F^2 dt` (Hutchinson: :math:`\lVert e^T \partial f / \partial z \rVert^2`; exact in
    exact mode), and :meth:`auxiliary_loss` returns :math:`\lambda_K \bar K + \lambda_J \bar J`
    (batch means) of the passes run with gradients enabled since its last call, which
    :func:`~pyroflows.transforms.auxiliary_loss` collects and ``fit()`` and
    ``train_guide`` add to their losses.

    **Counters**: ``nfe_forward`` is the number of evaluations of :math:`f` by the last forward
    or inverse solve; ``nfe_total`` the running total (the adjoint's backward solves included).
    A failed solve (step-size underflow, ``max_num_steps`` reached, a non-finite state) raises
    :class:`SolverError` naming the solver and tolerances; a non-finite result from a finite
    input too. Inputs with a NaN or inf stay NaN in their sample (the others are solved alone, so
    their steps, and values to the tolerance, may differ). On the ``meta`` device (shapes
    only) one Euler step of the augmented ODE is taken.

    Vectors only (``event_dim = 1``). Cost per sample: :math:`O(\text{NFE}\, H^2)` for hidden
    width :math:`H` (Hutchinson), :math:`O(\text{NFE}\, D H^2)` exact; the NFE is set by the
    tolerance and the stiffness of :math:`f`, and grows during training.

    Args:
        input_dim: event size :math:`D`.
        hidden_dims: hidden sizes of :math:`f` (default three layers of ``max(64, 4 D)``).
        context_dim: context size (``0``: unconditional); the context enters :math:`f`'s
            input. Keyword-only, as every option below.
        time: the integration time :math:`T` (fixed, not learned; default ``1.0``).
        trace: ``"hutchinson"`` (default) or ``"exact"``.
        probe: ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        solver: a torchdiffeq method: adaptive ``"dopri5"`` (default), ``"dopri8"``,
            ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``, or fixed-grid ``"euler"``,
            ``"midpoint"``, ``"rk4"``, ... (these need ``step_size``).
        rtol: relative tolerance of adaptive solvers (default ``1e-5``, as FFJORD trained:
            log-density errors well under the differences that matter).
        atol: absolute tolerance of adaptive solvers (default ``1e-5``).
        step_size: step of fixed-grid solvers.
        adjoint: gradients by the adjoint method (default ``False``).
        max_num_steps: step cap of adaptive solvers (default 1000; then :class:`SolverError`).
        kinetic_energy: weight :math:`\lambda_K` of the kinetic-energy regulariser.
        jacobian_norm: weight :math:`\lambda_J` of the Jacobian Frobenius regulariser.
        activation: module class between the layers of :math:`f` (smooth; default ``Tanh``).

    References:
        Grathwohl et al., "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
        Generative Models", 2019, arXiv:1810.01367.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = ContinuousFlow(2, [16, 16], trace="exact")
        >>> _ = torch.nn.init.normal_(flow.dynamics.net.output_layer.weight, std=0.5)
        >>> x = torch.randn(4, 2)
        >>> y, log_det = flow.forward_and_log_det(x)
        >>> y.shape, log_det.shape, flow.nfe_forward > 0
        (torch.Size([4, 2]), torch.Size([4]), True)
        >>> x_back, _ = flow.inverse_and_log_det(y)
        >>> bool(torch.allclose(x_back, x, atol=1e-4))
        True
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] | None = None,
        *,
        context_dim: int = 0,
        time: float = 1.0,
        trace: Literal["hutchinson", "exact"] = "hutchinson",
        probe: Literal["rademacher", "gaussian"] = "rademacher",
        solver: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        adjoint: bool = False,
        max_num_steps: int = 1000,
        kinetic_energy: float = 0.0,
        jacobian_norm: float = 0.0,
        activation: type[nn.Module] = nn.Tanh,
    ) -> None:
        super().__init__(input_dim, context_dim)
        if len(self.event_shape) != 1:
            raise ValueError(
                f"ContinuousFlow takes vectors: input_dim must be an int, got {input_dim!r}"
            )
        hidden = _check_hidden_dims(hidden_dims)
        hidden = [max(64, 4 * self.input_dim)] * 3 if hidden is None else hidden
        if trace not in ("hutchinson", "exact"):
            raise ValueError(f"trace must be 'hutchinson' or 'exact', got {trace!r}")
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        _check_solver(solver, step_size)
        if not time > 0:
            raise ValueError(f"time (the integration time T) must be positive, got {time!r}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol!r}, atol={atol!r}")
        if int(max_num_steps) < 1:
            raise ValueError(f"max_num_steps must be a positive int, got {max_num_steps!r}")
        if kinetic_energy < 0 or jacobian_norm < 0:
            raise ValueError(
                "kinetic_energy and jacobian_norm must be >= 0, got "
                f"{kinetic_energy!r} and {jacobian_norm!r}"
            )
        net = MLP(self.input_dim + 1 + self.context_dim, hidden, self.input_dim, activation)
        nn.init.zeros_(net.output_layer.weight)
        nn.init.zeros_(net.output_layer.bias)
        self.dynamics = _Dynamics(net)
        self.time, self.trace, self.probe = float(time), trace, probe
        self.solver, self.step_size = solver, step_size
        self.rtol, self.atol = float(rtol), float(atol)
        self.adjoint, self.max_num_steps = bool(adjoint), int(max_num_steps)
        self.kinetic_energy, self.jacobian_norm = float(kinetic_energy), float(jacobian_norm)
        self.nfe_forward = 0
        self.nfe_total = 0
        self._aux: tuple[Tensor, int] | None = None  # penalty sum, passes

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_aux"] = None  # a tensor of the last pass's graph: never travels
        return state

    # -- the estimator ------------------------------------------------------------------------
    _log_det_modes = ("exact", "unbiased")  # what set_log_det may switch this flow to

    def _set_log_det(self, mode: str) -> None:
        """``"exact"``: ``trace="exact"``; ``"unbiased"``: ``trace="hutchinson"``."""
        if mode not in self._log_det_modes:
            raise ValueError(
                f"ContinuousFlow takes log_det one of {self._log_det_modes}, got {mode!r}"
            )
        self.trace = "exact" if mode == "exact" else "hutchinson"

    def _get_log_det(self) -> str:
        return "exact" if self.trace == "exact" else "unbiased"

    # -- the auxiliary loss -------------------------------------------------------------------
    def auxiliary_loss(self) -> Tensor | None:
        r"""The RNODE penalty of the passes run with gradients since the last call, or ``None``.

        :math:`\lambda_K \bar K + \lambda_J \bar J` (batch means of the integrals, averaged
        over the passes, e.g. an ELBO's particles drawn one by one); ``None`` without a
        regulariser, or without such a pass since the last call. Consumed by the call (a
        second call returns ``None``), so a penalty is added once.
        """
        aux, self._aux = self._aux, None
        if aux is None:
            return None
        total, passes = aux
        return total / passes

    @property
    def has_auxiliary_loss(self) -> bool:
        """Whether a regulariser is on (``kinetic_energy`` or ``jacobian_norm`` positive)."""
        return self.kinetic_energy > 0 or self.jacobian_norm > 0

    # -- the passes ---------------------------------------------------------------------------
    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self._integrate(x, context, inverse=False)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, inverse_log_det = self._integrate(y, context, inverse=True)
        return x, -inverse_log_det

    def _integrate(
        self, value: Tensor, context: Tensor | None, *, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        """The end point of the solve from ``value`` over [0, T] (backwards if ``inverse``).

        With the log-det of the map solved; both have the broadcast batch shape.
        """
        batch = value.shape[:-1]
        if context is not None:
            batch = torch.broadcast_shapes(batch, context.shape[:-1])
        dim = self.input_dim
        z = value.expand(*batch, dim).reshape(-1, dim)
        if context is None:
            ctx = z.new_zeros(z.shape[0], 0)
        else:
            ctx = context.to(z.dtype).expand(*batch, self.context_dim).reshape(-1, self.context_dim)
        finite = torch.isfinite(z).all(-1)
        if z.is_meta or bool(finite.all()):
            end, log_det = self._solve(z, ctx, inverse)
        else:  # NaN/inf inputs stay in their samples; the others are solved alone
            end = torch.full_like(z, float("nan"))
            log_det = z.new_full(z.shape[:1], float("nan"))
            if bool(finite.any()):
                solved, solved_log_det = self._solve(z[finite], ctx[finite], inverse)
                end = end.index_put((finite,), solved)
                log_det = log_det.index_put((finite,), solved_log_det)
        return end.reshape(*batch, dim), log_det.reshape(batch)

    def _count(self) -> None:
        self.nfe_total += 1

    def _solve(self, z: Tensor, ctx: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """One solve of the augmented ODE for ``(N, D)`` states; ``(end, l(end))``."""
        kinetic, frobenius = self.kinetic_energy > 0, self.jacobian_norm > 0
        probe = None if self.trace == "exact" else _draw_probe(z, self.probe)
        rhs = _RightHandSide(self.dynamics, ctx, probe, kinetic, frobenius, self._count)
        zeros = z.new_zeros(z.shape[0])
        state = (z, zeros) + (zeros,) * (int(kinetic) + int(frobenius))
        ends = [0.0, self.time][:: -1 if inverse else 1]
        times = torch.tensor(ends, dtype=z.dtype, device=z.device)
        params = tuple(p for p in self.parameters() if p.requires_grad)
        final = _solve_ode(
            rhs,
            state,
            times,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            step_size=self.step_size,
            max_num_steps=self.max_num_steps,
            adjoint=self.adjoint,
            adjoint_params=params + ((ctx,) if ctx.requires_grad else ()),
        )
        self.nfe_forward = rhs.nfe
        if (kinetic or frobenius) and torch.is_grad_enabled():
            sign = -1.0 if inverse else 1.0  # backwards, the integrals accumulate negated
            penalties = iter(final[2:])
            aux = zeros.new_zeros(())
            if kinetic:
                aux = aux + self.kinetic_energy * sign * next(penalties).mean()
            if frobenius:
                aux = aux + self.jacobian_norm * sign * next(penalties).mean()
            # passes since the last call (the particles of an ELBO) are averaged
            total, passes = self._aux if self._aux is not None else (0.0, 0)
            self._aux = (total + aux, passes + 1)
        return final[0], final[1]

    def extra_repr(self) -> str:
        """Show the sizes and the solver settings in ``repr``."""
        text = f"{super().extra_repr()}, trace={self.trace!r}, solver={self.solver!r}"
        if self.solver in _ADAPTIVE:
            return text + f", rtol={self.rtol:g}, atol={self.atol:g}"
        return text + f", step_size={self.step_size:g}"
