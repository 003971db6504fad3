"""Networks used by flows: conditioners and hypernetworks."""

from .conv import ConvResNet
from .functional import clamp_in_value, inverse_softplus
from .lipschitz import (
    LipschitzMLP,
    LipSwish,
    SpectralNormConv2d,
    SpectralNormLinear,
    lipschitz_bound,
)
from .made import MADE, MaskedLinear, Ordering
from .mlp import MLP
from .parameters import FlowParameters

__all__ = [
    "MADE",
    "MLP",
    "ConvResNet",
    "FlowParameters",
    "LipSwish",
    "LipschitzMLP",
    "MaskedLinear",
    "Ordering",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "clamp_in_value",
    "inverse_softplus",
    "lipschitz_bound",
]
