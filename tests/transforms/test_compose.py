"""Flow sequences (``transforms/compose.py``)."""

from __future__ import annotations

import pytest
import torch

from pyroflows.transforms import FlowSequence, build, planar, radial


def test_flow_sequence_checks_and_mixing_conditional_layers():
    with pytest.raises(ValueError, match="input_dim"):
        FlowSequence([planar(2), radial(3)])
    with pytest.raises(ValueError, match="context_dim"):
        FlowSequence([planar(2, context_dim=1), radial(2, context_dim=3)])
    mixed = FlowSequence([planar(2, context_dim=3), build("lu_linear", 2), radial(2)])
    assert mixed.context_dim == 3
    y = mixed.condition(torch.zeros(5, 3))(torch.randn(5, 2))
    assert y.shape == (5, 2)
