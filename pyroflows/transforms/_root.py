"""A vectorized root finder for the numerical inverses of monotone scalar maps.

Flows whose inverse has no closed form but reduces to one increasing scalar equation per sample
(planar along ``w``, deep sigmoidal flows per dimension) share :class:`RootFinder`: a bracketed
Newton iteration with a bisection fallback, run on every element of a tensor at once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["InverseNotConvergedError", "InverseNotConvergedWarning", "RootFinder"]

ScalarMap = Callable[[Tensor], tuple[Tensor, Tensor]]


class InverseNotConvergedError(RuntimeError):
    r"""A numerical inverse stopped at its iteration cap before reaching its tolerance.

    Raised when some element's bracket or step is still above
    :math:`\text{xtol}\,(1 + |x|)` after ``max_iter`` iterations.

    References:
        Press et al., "Numerical Recipes", 3rd ed., 2007, section 9.4 (``rtsafe``).

    Example:
        >>> import torch
        >>> solve = RootFinder(max_iter=1)
        >>> f = lambda x: (x + torch.tanh(x), 2 - torch.tanh(x) ** 2)
        >>> t = torch.tensor([3.0])
        >>> solve(f, t, t - 10, t + 10)
        Traceback (most recent call last):
        ...
        pyroflows.transforms._root.InverseNotConvergedError: numerical inverse did not converge ...
    """


class InverseNotConvergedWarning(RuntimeWarning):
    r"""Warning counterpart of :class:`InverseNotConvergedError` (``on_failure="warn"``).

    Issued when some element is not within :math:`\text{xtol}\,(1 + |x|)` after
    ``max_iter`` iterations; the last iterate is returned.

    References:
        Press et al., "Numerical Recipes", 3rd ed., 2007, section 9.4 (``rtsafe``).

    Example:
        >>> import torch, warnings
        >>> solve = RootFinder(max_iter=1, on_failure="warn")
        >>> f = lambda x: (x + torch.tanh(x), 2 - torch.tanh(x) ** 2)
        >>> t = torch.tensor([3.0])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     x = solve(f, t, t - 10, t + 10)
        >>> caught[0].category.__name__
        'InverseNotConvergedWarning'
    """


@dataclass(frozen=True)
class RootFinder:
    r"""Solve :math:`f(x) = t` element-wise for an increasing scalar map :math:`f`.

    Each element starts from the midpoint of its bracket :math:`[l, u]` (which must contain the
    root) and takes Newton steps :math:`x \leftarrow x - (f(x) - t) / f'(x)`; a step that leaves
    the current bracket, or is not at least half as long as the step before last, is replaced
    by bisection (the safeguard of Numerical Recipes' ``rtsafe``), and every evaluation shrinks
    the bracket, so the iteration neither diverges nor ping-pongs. An element has converged
    when its step or its bracket is below ``xtol * (1 + |x|)``, or its residual is zero.

    The iteration runs without autograd. One final Newton step is then taken *with* autograd
    from the converged point, which makes the result differentiable with respect to the target
    and to any parameter of :math:`f` with the implicit-function gradient
    :math:`\partial x / \partial \theta = -(\partial f / \partial \theta) / f'(x)`.

    Elements whose target or bracket is NaN or infinite come out as NaN and do not count as
    failures; they never affect other elements.

    Checking convergence synchronises with the device once per iteration, which is the price
    of a numerical inverse; forward passes of flows never do this.

    Args:
        xtol: relative tolerance on :math:`x`. ``None`` picks ``eps ** 0.75`` of the dtype
            (about 1.8e-12 in float64 and 6.4e-6 in float32; the final Newton step then refines
            to nearly machine precision).
        max_iter: iteration cap.
        on_failure: ``"raise"`` (default) raises :class:`InverseNotConvergedError` when any
            element has not converged after ``max_iter`` iterations; ``"warn"`` issues an
            :class:`InverseNotConvergedWarning` and returns the last iterate.

    References:
        Press et al., "Numerical Recipes", 3rd ed., 2007, section 9.4 (``rtsafe``: Newton
        safeguarded by bisection).

    Example:
        >>> import torch
        >>> solve = RootFinder()
        >>> target = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
        >>> f = lambda x: (x + torch.tanh(x), 2 - torch.tanh(x) ** 2)
        >>> x = solve(f, target, target - 1, target + 1)
        >>> bool(torch.allclose(f(x)[0], target, atol=1e-12))
        True
    """

    xtol: float | None = None
    max_iter: int = 100
    on_failure: Literal["raise", "warn"] = "raise"

    def __post_init__(self) -> None:
        if self.on_failure not in ("raise", "warn"):
            raise ValueError(f"on_failure must be 'raise' or 'warn', got {self.on_failure!r}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")
        if self.xtol is not None and not self.xtol > 0:
            raise ValueError(f"xtol must be positive, got {self.xtol}")

    def __call__(self, func: ScalarMap, target: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
        """Return ``x`` with ``func(x)[0] == target`` element-wise.

        Args:
            func: maps ``x`` to ``(f(x), f'(x))``, both shaped like ``x``; increasing in ``x``.
            target: the values :math:`t`, any shape.
            lower: lower end of a bracket of the root, broadcastable to ``target``.
            upper: upper end of the bracket, broadcastable to ``target``.

        Returns:
            The roots, shaped like the broadcast of ``target``, ``lower`` and ``upper``.

        Raises:
            InverseNotConvergedError: when ``on_failure="raise"`` and an element did not
                converge within ``max_iter`` iterations.
        """
        if target.device.type == "meta":
            raise ValueError(
                "a numerical inverse needs values, and tensors on the meta device have none: "
                "move the model and the data to a real device (e.g. model.to_empty(device='cpu') "
                "then load weights)"
            )
        target, lower, upper = torch.broadcast_tensors(target, lower, upper)
        xtol = self.xtol if self.xtol is not None else torch.finfo(target.dtype).eps ** 0.75
        with torch.no_grad():
            lo, hi, goal = lower.detach(), upper.detach(), target.detach()
            valid = torch.isfinite(goal) & torch.isfinite(lo) & torch.isfinite(hi)
            x = torch.where(valid, 0.5 * (lo + hi), torch.zeros_like(goal))
            done = ~valid
            step_before_last = last_step = torch.where(valid, hi - lo, torch.zeros_like(goal))
            for _ in range(self.max_iter):
                value, slope = func(x)
                residual = value - goal
                lo = torch.where(residual < 0, x, lo)
                hi = torch.where(residual > 0, x, hi)
                newton = x - residual / slope
                # Newton is taken only inside the bracket and only while it converges: a step
                # larger than half the step before last (ping-pong across a kink of tanh-like
                # maps) is replaced by bisection, as in Numerical Recipes' rtsafe.
                shrinking = (newton - x).abs() <= 0.5 * step_before_last
                inside = torch.isfinite(newton) & (newton > lo) & (newton < hi) & shrinking
                proposal = torch.where(inside, newton, 0.5 * (lo + hi))
                step = (proposal - x).abs()
                scale = xtol * (1 + x.abs())
                converged = (step <= scale) | (residual == 0) | ((hi - lo) <= scale)
                x = torch.where(done, x, proposal)
                step_before_last, last_step = last_step, step
                done = done | converged
                if bool(done.all()):
                    break
            else:
                self._report_failure(~done, hi - lo)
            x = torch.where(valid, x, torch.full_like(x, float("nan")))
        # One Newton step with autograd: exact value to first order, implicit-function gradient.
        value, slope = func(x)
        return x - (value - target) / slope

    def _report_failure(self, failed: Tensor, width: Tensor) -> None:
        count = int(failed.sum())
        worst = float(width[failed].max())
        message = (
            f"numerical inverse did not converge for {count} of {failed.numel()} elements "
            f"after {self.max_iter} iterations (largest remaining bracket {worst:.3g}); "
            "raise max_iter or xtol of the flow's RootFinder, or use on_failure='warn'"
        )
        if self.on_failure == "raise":
            raise InverseNotConvergedError(message)
        warnings.warn(message, InverseNotConvergedWarning, stacklevel=4)
