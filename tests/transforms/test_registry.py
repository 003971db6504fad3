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


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_unknown_options_are_rejected_naming_the_accepted_ones(name):
    """Issue 12: a misspelt option (``hidden_dim``) must fail with a clear error."""
    spec = REGISTRY[name]
    with pytest.raises(TypeError, match=rf"flow '{name}' got unknown option 'hidden_dim'"):
        spec.check_options(hidden_dim=[10])
    with pytest.raises(TypeError, match="it accepts: "):
        spec.build(2, hidden_dim=[10])
    spec.check_options(**dict.fromkeys(spec.options()))  # every accepted name passes


def test_unknown_option_error_suggests_the_close_name_and_lists_all():
    with pytest.raises(TypeError) as info:
        build("iaf", 3, hidden_dim=[10], num_layer=2)
    message = str(info.value)
    assert "'hidden_dim' (did you mean 'hidden_dims'?)" in message
    assert "'num_layer' (did you mean 'num_layers'?)" in message
    assert message.endswith("it accepts: hidden_dims, num_layers, stable, transformer, activation")
    with pytest.raises(TypeError, match="unknown option 'context_dim'"):
        REGISTRY["iaf"].check_options(context_dim=2)  # given to build() on its own
