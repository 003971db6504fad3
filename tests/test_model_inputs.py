"""Data handed to a model or to fit(): dtype, autograd, device and shape misuse.

Each test names the row of the December 2026 reliability probe it covers.
"""

from __future__ import annotations

import pytest
import torch

from pyroflows import Flow, fit
from pyroflows.errors import DataWarning, OptionError
from pyroflows.train import resolve_device


def _moons(dtype=torch.float32):
    from pyroflows.data import make_toy

    return make_toy("moons", 300, seed=0, dtype=dtype)


def test_row74_float64_data_fit_a_float32_model_with_one_warning():
    model = Flow.build("realnvp", 2, num_layers=1, hidden_dims=[8])
    with pytest.warns(DataWarning, match="data in float64, model in float32: cast to float32"):
        history = fit(model, _moons(torch.float64), epochs=1, progress=False)
    assert len(history.epoch) == 1 and next(model.parameters()).dtype == torch.float32


def test_row74_log_prob_casts_float64_rows_for_a_float32_model():
    model = Flow.build("maf", 2, num_layers=1, hidden_dims=[8])
    x = _moons(torch.float64)[:5]
    with pytest.warns(DataWarning, match="cast to float32"):
        log_prob = model.log_prob(x)
    assert torch.equal(log_prob, model.log_prob(x.float()))


def test_row74_a_float64_model_takes_float32_rows_silently(recwarn):
    model = Flow.build("maf", 2, num_layers=1, hidden_dims=[8]).double()
    assert model.log_prob(_moons()[:5]).dtype == torch.float64
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]


def test_row75_data_that_require_grad_are_detached():
    model = Flow.build("realnvp", 2, num_layers=1, hidden_dims=[8])
    data = _moons().requires_grad_()
    history = fit(model, data, epochs=2, batch_size=100, progress=False)
    assert len(history.epoch) == 2 and data.grad is None


def test_row61_val_fraction_zero_fits_and_negative_is_refused():
    model = Flow.build("realnvp", 2, num_layers=1, hidden_dims=[8])
    assert fit(model, _moons(), val_fraction=0, epochs=1, progress=False).best_val_nll is None
    with pytest.raises(OptionError, match=r"val_fraction must be in \[0, 1\), got -0.1"):
        fit(model, _moons(), val_fraction=-0.1, epochs=1, progress=False)


def test_row76_a_flow_without_parameters_is_refused_by_fit():
    with pytest.raises(OptionError, match="'permutation' has no trainable parameters"):
        fit(Flow.build("permutation", 2), _moons(), epochs=1, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_row77_cuda_without_cuda_is_one_clear_error():
    with pytest.raises(OptionError, match="device 'cuda': CUDA is not available"):
        resolve_device("cuda")


def test_row77_meta_and_malformed_devices_are_refused():
    with pytest.raises(OptionError, match="'meta' holds no values"):
        fit(Flow.build("realnvp", 2, num_layers=1), _moons(), device="meta", progress=False)
    with pytest.raises(OptionError, match="'blah' is not a torch device"):
        resolve_device("blah")


def test_row77_data_on_another_device_names_both():
    model = Flow.build("realnvp", 2, num_layers=1)
    with pytest.raises(ValueError, match="device mismatch: data on meta, the model on cpu"):
        model.log_prob(torch.empty(3, 2, device="meta"))


def test_row77_a_numerical_inverse_on_meta_says_so():
    model = Flow.build("planar", 2).to("meta")
    with pytest.raises(ValueError, match=r"numerical inverse needs values.*meta device"):
        model.log_prob(torch.empty(3, 2, device="meta"))


def test_row77_a_context_batch_mismatch_names_both_shapes():
    model = Flow.build("realnvp", 2, context_dim=3, num_layers=1)
    with pytest.raises(ValueError, match=r"context's batch shape \(5,\) does not broadcast with "
                       r"the data's \(10,\) \(data \(10, 2\), context \(5, 3\)\)"):  # fmt: skip
        model.log_prob(torch.randn(10, 2), torch.randn(5, 3))
    assert model.log_prob(torch.randn(4, 10, 2), torch.randn(10, 3)).shape == (4, 10)
