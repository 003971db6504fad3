"""Networks used by flows: conditioners and hypernetworks."""

from .made import MADE, MaskedLinear
from .mlp import MLP
from .parameters import FlowParameters

__all__ = ["MADE", "MLP", "FlowParameters", "MaskedLinear"]
