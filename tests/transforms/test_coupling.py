"""Coupling layers: masks and argument checks (``transforms/coupling.py``)."""

from __future__ import annotations

import pytest
import torch

from pyroflows.transforms import Coupling, coupling_mask


def test_coupling_masks_and_validation():
    assert coupling_mask(4).tolist() == [True, True, False, False]
    assert coupling_mask(4, flip=True).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="no coordinate"):
        Coupling(3, mask=torch.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="kind"):
        coupling_mask(3, "checker")
    with pytest.raises(ValueError, match="needs input_dim >= 2"):
        Coupling(1)
