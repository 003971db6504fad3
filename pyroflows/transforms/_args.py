"""Argument checks shared by the flow constructors (hidden sizes, the keyword-only context)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__: list[str] = []


def _check_hidden_dims(hidden_dims: Any) -> list[int] | None:
    """``hidden_dims`` as a list of positive ints (``None`` stays ``None``), or a clear error.

    An int here is almost always a ``context_dim`` passed in the second position, where it
    was before 0.2: the error says so instead of building another flow.
    """
    if hidden_dims is None:
        return None
    if isinstance(hidden_dims, bool) or not isinstance(hidden_dims, Sequence):
        hint = (
            f"; context_dim is keyword-only: pass context_dim={hidden_dims}"
            if isinstance(hidden_dims, int) and not isinstance(hidden_dims, bool)
            else ""
        )
        raise TypeError(f"hidden_dims must be a sequence of ints, got {hidden_dims!r}{hint}")
    sizes = list(hidden_dims)
    if not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
        raise TypeError(f"hidden_dims must be a sequence of positive ints, got {hidden_dims!r}")
    return sizes


def _conditioner_hidden_dims(hidden_dims: Any, input_dim: int) -> list[int]:
    """Checked hidden sizes of a conditioner, default two layers of ``max(32, 4 D)``."""
    checked = _check_hidden_dims(hidden_dims)
    return [max(32, 4 * input_dim)] * 2 if checked is None else checked


def _check_spline_order(order: str) -> None:
    """Accept Pyro's ``order="quadratic"`` (our splines); refuse ``"linear"`` with the reason."""
    if order == "quadratic":
        return
    if order == "linear":
        raise NotImplementedError(
            "order='linear' (linear rational splines, Dolatabadi et al. 2020; Pyro's default) "
            "is not in pyroflows yet: its splines are rational-quadratic (Durkan et al. 2019). "
            "Pass order='quadratic', or use pyro.distributions.transforms for linear splines"
        )
    raise ValueError(f"order must be 'quadratic' (or Pyro's 'linear'), got {order!r}")
