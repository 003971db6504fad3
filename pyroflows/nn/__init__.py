"""Networks used by flows: conditioners and hypernetworks."""

from .mlp import MLP
from .parameters import FlowParameters

__all__ = ["MLP", "FlowParameters"]
