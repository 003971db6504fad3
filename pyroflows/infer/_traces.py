"""Helpers shared by the guide diagnostics and the posterior draws of :mod:`pyroflows.infer`."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch


def model_and_guide_traces(model: Callable, guide: Callable, args, kwargs):
    """One guide trace and the model replayed on it, without side effects on other handlers."""
    with torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return model_trace, guide_trace


def vectorized_or_loop(
    vectorized: Callable[[], Any],
    sequential: Callable[[], Any],
    vectorize: bool | None,
    what: str,
    hint: str = "",
) -> Any:
    """Run ``vectorized`` (``vectorize`` True/None) or ``sequential`` (False).

    With ``vectorize=None`` a failing vectorized run warns and falls back to the loop.
    """
    if vectorize is False:
        return sequential()
    try:
        return vectorized()
    except Exception as error:
        if vectorize:
            raise
        warnings.warn(
            f"vectorized {what} failed ({type(error).__name__}: {error}); falling back to a "
            "Python loop over draws, which is slower. Declare every batch dimension with "
            f"pyro.plate{hint} to vectorize, or pass vectorize=False to skip this attempt.",
            stacklevel=3,
        )
        return sequential()
