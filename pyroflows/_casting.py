"""Data meeting a model: one rule for a dtype that differs from the model's.

NumPy arrays are float64 while models are float32 by default, so the most common Python path
hands a float32 model float64 rows. :func:`as_model_dtype` casts them, and says so once
(a :class:`~pyroflows.errors.DataWarning`) when the cast loses precision.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .errors import DataWarning

__all__ = ["as_model_dtype"]


def as_model_dtype(values: Tensor, dtype: torch.dtype, name: str = "data") -> Tensor:
    """``values`` cast to the model's floating ``dtype`` (gradients flow through the cast).

    A cast to a less precise dtype (float64 rows, float32 model) warns once per dtype pair;
    integer or less precise values are cast silently.

    Args:
        values: the rows (or contexts) given to a model.
        dtype: the model's floating dtype.
        name: what ``values`` are, for the warning.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     x = as_model_dtype(torch.zeros(2, 3, dtype=torch.float64), torch.float32)
        >>> x.dtype, caught[0].category.__name__
        (torch.float32, 'DataWarning')
    """
    values = torch.as_tensor(values)
    if values.dtype == dtype:
        return values
    if values.is_floating_point() and torch.finfo(values.dtype).bits > torch.finfo(dtype).bits:
        warnings.warn(
            f"{name} in {_short(values.dtype)}, model in {_short(dtype)}: cast to "
            f"{_short(dtype)} (for {_short(values.dtype)} precision, convert the model with "
            f"model.to({values.dtype}))",
            DataWarning,
            stacklevel=3,
        )
    return values.to(dtype)


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
