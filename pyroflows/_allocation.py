"""A ceiling on the tensor memory a block of code may allocate, checked before each allocation.

:func:`allocation_limit` runs the block under a ``TorchDispatchMode`` that works out the size
of every new tensor *before* the operation runs, and raises :class:`AllocationLimitError` as
soon as the total would pass the limit. ``load_model`` builds a stored recipe under it, so a
hostile recipe (hidden sizes of 20,000) is refused before its weights exist.

The sizes come from the arguments for the operations a flow's construction uses (factories,
element-wise operations with broadcasting, reductions, ``cat``, ``repeat``, ...); any other
operation is first run on the ``meta`` device, which allocates nothing (but loads PyTorch's
meta kernels, about a second, on first use).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__: list[str] = []

_META = torch.device("meta")
# Operations whose every output is no larger than all their tensor inputs together.
_NO_LARGER = {
    "aten::_to_copy", "aten::argsort", "aten::cat", "aten::linalg_lu", "aten::linalg_qr",
    "aten::searchsorted", "aten::sort", "aten::stack", "aten::tril", "aten::triu",
}  # fmt: skip


class AllocationLimitError(MemoryError):
    """The block would allocate more tensor elements than its limit."""


def _to_meta(value: Any) -> Any:
    return value.to(_META) if isinstance(value, torch.Tensor) else value


def _on_meta(func: Any, args: tuple, kwargs: dict) -> int:
    """Elements of the tensors ``func`` returns, found by running it on ``meta``."""
    meta_kwargs = tree_map(_to_meta, kwargs)
    if any(argument.name == "device" for argument in func._schema.arguments):
        meta_kwargs["device"] = _META
    try:
        result = func(*tree_map(_to_meta, args), **meta_kwargs)
    except Exception:  # no meta kernel: nothing large comes back
        return 0
    return sum(t.numel() for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor))


def _arange_length(named: dict[str, Any]) -> int:
    start, end, step = named.get("start", 0), named["end"], named.get("step", 1)
    return max(math.ceil((float(end) - float(start)) / float(step)), 0)


def _broadcast_numel(shapes: list[torch.Size]) -> int:
    """An upper bound on the elements of the broadcast of ``shapes`` (exact if they broadcast)."""
    rank = max(len(shape) for shape in shapes)
    padded = [(1,) * (rank - len(shape)) + tuple(shape) for shape in shapes]
    return math.prod(max(sizes) for sizes in zip(*padded, strict=True))


def _new_elements(func: Any, args: tuple, kwargs: dict) -> int:
    """Elements of the new tensors ``func(*args, **kwargs)`` would return, before it runs."""
    schema = func._schema
    if func.is_view or schema.is_mutable:  # no new storage: a view, or written in place
        return 0
    named = {**dict(zip((a.name for a in schema.arguments), args, strict=False)), **kwargs}
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    tags = func.tags
    if "size" in named:  # torch.empty, zeros, ones, full, randn, new_zeros, ...
        return math.prod(named["size"])
    if schema.name == "aten::arange":
        return _arange_length(named)
    if schema.name == "aten::randperm":
        return int(named["n"])
    if torch.Tag.data_dependent_output in tags:  # .item(), torch.equal: a Python value
        return 0
    if torch.Tag.pointwise in tags and tensors:
        return _broadcast_numel([t.shape for t in tensors])
    if torch.Tag.reduction in tags or schema.name in _NO_LARGER:
        return len(schema.returns) * sum(t.numel() for t in tensors)
    if schema.name == "aten::nonzero":  # at most every element's index
        return named["self"].numel() * max(named["self"].dim(), 1)
    if schema.name == "aten::repeat":
        return named["self"].numel() * math.prod(named["repeats"])
    return _on_meta(func, args, kwargs)


class _Limit(TorchDispatchMode):
    def __init__(self, elements: int) -> None:
        super().__init__()
        self.left = elements

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never compiled; skipping it would import torch._dynamo (seconds)

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
