"""Every element-wise transformer (``transforms/transformers/``), through one suite.

The suite is parametrized over instances of every ``ElementwiseTransformer`` subclass in
pyroflows; a completeness check fails when a new transformer has no instance here.
"""

from __future__ import annotations

import pytest
import torch

import pyroflows.transforms.transformers as transformers_package
from pyroflows.transforms import (
    Additive,
    Affine,
    Autoregressive,
    Coupling,
    DeepSigmoid,
    Elementwise,
    ElementwiseTransformer,
    PReLU,
    RationalQuadraticSpline,
)

F64 = torch.float64

# Instances covering each transformer's options. Identity parameters give exactly the identity
# for all but the deep sigmoid, which is the identity to third order at 0 (its docstring), and
# the gated affine map, which starts as y = sigmoid(2) x (it passes most of its input through).
TRANSFORMERS = [
    Affine(),
    Affine(stable=True),
    Affine(log_scale_min=None, log_scale_max=None),
    Additive(),
    PReLU(),
    RationalQuadraticSpline(count_bins=4, bound=2.0),
    DeepSigmoid(hidden_units=4, depth=2),
]
NEAR_IDENTITY = {DeepSigmoid: 0.02}
transformers = pytest.mark.parametrize("transformer", TRANSFORMERS, ids=repr)


def _start(transformer, x):
    """What the map is at its identity parameters."""
    if isinstance(transformer, Affine) and transformer.stable:
        return torch.sigmoid(torch.tensor(transformer.sigmoid_bias)) * x
    return x


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_transformer_is_in_the_suite():
    ours = {
        cls
        for cls in _subclasses(ElementwiseTransformer)
        if cls.__module__.startswith(transformers_package.__name__)
    }
    covered = {type(transformer) for transformer in TRANSFORMERS}
    assert ours - covered == set(), f"transformers with no instance in TRANSFORMERS: {ours}"
    exported = {getattr(transformers_package, name) for name in transformers_package.__all__}
    assert ours <= exported, "every transformer is exported from transforms.transformers"


def _inputs(transformer, shape=(6, 4), dtype=F64, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = 2.5 * torch.randn(*shape, dtype=dtype, generator=generator)  # inside and outside bounds
    params = torch.randn(
        shape[0], transformer.params_per_dim, shape[1], dtype=dtype, generator=generator
    )
    return x.to(device), params.to(device)


@transformers
def test_inverse_and_log_det(transformer, device):
    x, params = _inputs(transformer, device=device)
    y, log_det = transformer.forward(x, params)
    x_back, log_det_back = transformer.inverse(y, params)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(log_det_back, log_det)  # both give the forward log-slope


@transformers
def test_log_det_is_the_log_slope(transformer):
    x, params = _inputs(transformer)
    _, log_det = transformer.forward(x, params)
    slope = torch.func.vmap(torch.func.jacfwd(lambda v, p: transformer.forward(v, p)[0]))(
        x, params
    ).diagonal(dim1=-2, dim2=-1)
    assert (slope > 0).all(), "a transformer must be increasing"
    torch.testing.assert_close(slope.log(), log_det)


@transformers
def test_identity_parameters(transformer):
    x = torch.linspace(-1.5, 1.5, 7, dtype=torch.float32).unsqueeze(-1).expand(7, 3)
    params = transformer.identity_params(3)
    assert params.shape == (transformer.params_per_dim, 3)
    y, _ = transformer.forward(x, params)
    tol = NEAR_IDENTITY.get(type(transformer), 1e-6)
    torch.testing.assert_close(y, _start(transformer, x), atol=tol, rtol=tol)


@transformers
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_shapes_dtypes_and_broadcasting(transformer, dtype):
    x, params = _inputs(transformer, dtype=dtype)
    y, log_det = transformer.forward(x.expand(3, 6, 4), params)  # parameters broadcast
    assert y.shape == (3, 6, 4) and y.dtype == dtype
    assert torch.broadcast_shapes(log_det.shape, y.shape) == y.shape


@transformers
def test_far_inputs_stay_finite_and_invertible(transformer):
    x = torch.tensor([[-1e3, -30.0, 30.0, 1e3]], dtype=F64)
    params = _inputs(transformer, shape=(1, 4))[1]
    y, log_det = transformer.forward(x, params)
    assert torch.isfinite(y).all() and torch.isfinite(log_det).all()
    torch.testing.assert_close(transformer.inverse(y, params)[0], x, rtol=1e-9, atol=1e-9)


@transformers
def test_every_structure_takes_every_transformer(transformer):
    """The three structures start at (or near) the identity with any transformer."""
    x = torch.randn(5, 4)
    tol = NEAR_IDENTITY.get(type(transformer), 1e-6)
    for flow in (
        Elementwise(4, transformer=transformer),
        Coupling(4, transformer=transformer),
        Autoregressive(4, transformer=transformer),
    ):
        y, log_det = flow.forward_and_log_det(x)
        assert log_det.shape == (5,)
        if isinstance(transformer, Affine) and transformer.stable:
            # coordinates passed through keep ratio 1, transformed ones start at sigmoid(2)
            gate = float(torch.sigmoid(torch.tensor(transformer.sigmoid_bias)))
            ratio = y / x
            assert ((ratio - 1).abs().lt(1e-6) | (ratio - gate).abs().lt(1e-6)).all()
        else:
            torch.testing.assert_close(y, x, atol=tol * 3, rtol=tol * 3)


def test_identity_at_initialisation(device, dtype):
    x = torch.randn(5, 4, device=device, dtype=dtype)
    for flow in (Autoregressive(4), Coupling(4), Coupling(4, transformer=Additive())):
        flow = flow.to(device, dtype)
        torch.testing.assert_close(flow(x), x)
        assert torch.all(flow.log_abs_det_jacobian(x, flow(x)) == 0)


@pytest.mark.parametrize("stable", [False, True])
def test_affine_log_scale_bounds_stop_the_gradient(stable):
    """Beyond its bounds the raw log-scale gets no gradient (it cannot drift there)."""
    transformer = Affine(stable=stable, log_scale_min=-1.0, log_scale_max=1.0)
    raw = torch.tensor([-9.0, 0.0, 9.0], requires_grad=True)
    params = torch.stack([torch.zeros(3), raw])  # (mu, s)
    y, log_det = transformer.forward(torch.ones(3), params)
    (y.sum() + log_det.sum()).backward()
    if stable:  # log sigmoid(s + 2) is clamped below only
        assert float(log_det[0]) == -1.0 and raw.grad[0] == 0 and raw.grad[2] != 0
    else:
        assert log_det.tolist() == [-1.0, 0.0, 1.0]
        assert raw.grad[0] == 0 and raw.grad[2] == 0 and raw.grad[1] != 0
