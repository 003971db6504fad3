"""A ceiling on the tensor memory a block of code may allocate, checked before each allocation.

:func:`allocation_limit` runs the block under a ``TorchDispatchMode`` that works out the size
of every new tensor *before* the operation runs (the operation is first run on the ``meta``
device, which allocates nothing) and raises :class:`AllocationLimitError` as soon as the
total would pass the limit. ``load_model`` builds a stored recipe under it, so a hostile
recipe (hidden sizes of 20,000) is refused before its weights exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__: list[str] = []

_META = torch.device("meta")


class AllocationLimitError(MemoryError):
    """The block would allocate more tensor elements than its limit."""


def _to_meta(value: Any) -> Any:
    return value.to(_META) if isinstance(value, torch.Tensor) else value


def _new_elements(func: Any, args: tuple, kwargs: dict) -> int:
    """Elements of the new tensors ``func(*args, **kwargs)`` returns, found on ``meta``."""
    schema = func._schema
    if func.is_view or schema.is_mutable:  # no new storage: a view, or written in place
        return 0
    meta_kwargs = tree_map(_to_meta, kwargs)
    if any(argument.name == "device" for argument in schema.arguments):
        meta_kwargs["device"] = _META  # a factory: torch.empty(...), torch.arange(...), ...
    try:
        result = func(*tree_map(_to_meta, args), **meta_kwargs)
    except Exception:  # no meta kernel (e.g. .item(), torch.equal): nothing large comes back
        return 0
    return sum(t.numel() for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor))


class _Limit(TorchDispatchMode):
    def __init__(self, elements: int) -> None:
        super().__init__()
        self.left = elements

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.left -= _new_elements(func, args, kwargs)
        if self.left < 0:
            raise AllocationLimitError(f"{func} would pass the allocation limit")
        return func(*args, **kwargs)


@contextmanager
def allocation_limit(elements: int) -> Iterator[None]:
    """Raise :class:`AllocationLimitError` before the block allocates over ``elements``.

    Example:
        >>> with allocation_limit(1000):
        ...     small = torch.zeros(10, 10)
        >>> try:
        ...     with allocation_limit(1000):
        ...         huge = torch.zeros(20_000, 20_000)  # refused before its 1.6 GB exist
        ... except AllocationLimitError as error:
        ...     print(error)
        aten.zeros.default would pass the allocation limit
    """
    with _Limit(elements):
        yield
