"""The registry's errors (``transforms/registry.py``); its metadata is checked by the
conformance suite."""

from __future__ import annotations

import pytest
import torch

from pyroflows.transforms import REGISTRY, Affine, Elementwise, build


def test_build_errors_are_helpful():
    with pytest.raises(KeyError, match="registered"):
        build("no_such_flow", 2)
    with pytest.raises(ValueError, match="no conditional form"):
        REGISTRY["lu_linear"].build(2, context_dim=3)
    with pytest.raises(ValueError, match="input_dim"):
        build("planar", 0)


def test_an_event_shape_the_flow_does_not_take_is_refused_by_name():
    with pytest.raises(ValueError, match=r"'maf' takes events of rank \(1,\).*\(2, 4, 4\)"):
        build("maf", (2, 4, 4))
    assert build("spline", (2, 4, 4)).event_shape == (2, 4, 4)


def test_elementwise_init_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"init must have shape \(2, 3\).*got \(3,\)"):
        Elementwise(3, transformer=Affine(), init=torch.zeros(3))
