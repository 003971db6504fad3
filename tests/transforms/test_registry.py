"""The registry's errors (``transforms/registry.py``); its metadata is checked by the
conformance suite."""

from __future__ import annotations

import pytest

from pyroflows.transforms import REGISTRY, build


def test_build_errors_are_helpful():
    with pytest.raises(KeyError, match="registered"):
        build("no_such_flow", 2)
    with pytest.raises(ValueError, match="no conditional form"):
        REGISTRY["lu_linear"].build(2, context_dim=3)
    with pytest.raises(ValueError, match="input_dim"):
        build("planar", 0)
