"""A plain multilayer perceptron, the conditioner network of conditional flows."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn

__all__ = ["MLP"]


class MLP(nn.Sequential):
    r"""Fully connected network ``in_features -> hidden_dims... -> out_features``.

    .. math::
        h_0 = c, \qquad h_{k+1} = \sigma(W_k h_k + b_k), \qquad
        \text{out} = W_K h_K + b_K .

    Args:
        in_features: input size.
        hidden_dims: sizes of the hidden layers (may be empty: one linear layer).
        out_features: output size.
        activation: module class used between layers.

    References:
        Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors",
        Nature, 1986.

    Example:
        >>> import torch
        >>> net = MLP(3, [16, 16], 5)
        >>> net(torch.zeros(7, 3)).shape
        torch.Size([7, 5])
    """

    def __init__(
        self,
        in_features: int,
        hidden_dims: Sequence[int],
        out_features: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        sizes = [in_features, *hidden_dims]
        layers: list[nn.Module] = []
        for size_in, size_out in itertools.pairwise(sizes):
            layers += [nn.Linear(size_in, size_out), activation()]
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)

    @property
    def output_layer(self) -> nn.Linear:
        """The last linear layer (flows initialise it so that they start near a chosen map)."""
        return self[-1]
