"""Interleaved timing of competing callables in one process: medians and ratios."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch


def interleaved_medians(
    contenders: dict[str, Callable[[], object]], repeats: int = 30, warmup: int = 3
) -> dict[str, float]:
    """Run the contenders round-robin ``repeats`` times; return median seconds per call."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def machine_line() -> str:
    """Describe the machine and thread count the numbers came from."""
    return (
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
