"""A seeded random split of a dataset's rows into a training and a test set."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["train_test_split"]


def train_test_split(
    data: Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split the rows of ``data`` at random into a training and a test set.

    Args:
        data: tensor of shape ``(N, ...)`` with ``N >= 2``.
        test_fraction: share of the rows in the test set, strictly between 0 and 1; the test
            set gets ``round(N * test_fraction)`` rows, clipped to ``[1, N - 1]``.
        seed: seed of the shuffle (a local generator; global state is untouched).

    Returns:
        ``(train, test)``: disjoint subsets of the rows of ``data``, on its device.

    Raises:
        ValueError: if ``test_fraction`` is not in ``(0, 1)`` or ``data`` has fewer than 2
            rows.

    Example:
        >>> train, test = train_test_split(torch.randn(100, 2), test_fraction=0.2)
        >>> train.shape, test.shape
        (torch.Size([80, 2]), torch.Size([20, 2]))
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    if data.dim() < 1 or data.shape[0] < 2:
        raise ValueError(f"need at least 2 rows to split, got shape {tuple(data.shape)}")
    total = data.shape[0]
    num_test = min(max(round(total * test_fraction), 1), total - 1)
    order = torch.as_tensor(np.random.default_rng(seed).permutation(total), device=data.device)
    return data[order[num_test:]], data[order[:num_test]]
