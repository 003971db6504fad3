"""Neural autoregressive flows: the deep sigmoidal transformer, its layer, the ``naf`` stack.

The cross-checks against Pyro use ``pyro.distributions.transforms.NeuralAutoregressive``
(activation ``"sigmoid"``, its default), which has no separate DSF class: its ``_call`` takes
``A, W_pre, b = arn(x)``, each ``(..., K, D)``, and computes

    A = softplus(A);  C = A x + b;  W = softmax(W_pre, dim=-2);  D = sum_k W sigmoid(C)
    y = SigmoidTransform().inv(D),
    log|dy/dx| = softplus(y) + softplus(-y) + logsumexp(log(A + eps) + log_softmax(W_pre)
                 - softplus(C) - softplus(-C), dim=-2)          (eps = 1e-8)

Parameter mapping: pyroflows' ``DeepSigmoid`` params ``(..., 3K, D)`` (depth 1) are, row-block
by row-block, Pyro's raw ``A`` (``[0:K]``), ``W_pre`` (``[K:2K]``) and ``b`` (``[2K:3K]``):
the same raw tensors, no transformation. Depth ``L`` is ``L`` such blocks, i.e. ``L`` Pyro
transforms applied one after another (log-dets add).

Where the two differ: Pyro computes ``D`` in linear space and clips it (torch's sigmoid is
clamped to ``[tiny, 1 - eps]``), so its ``y`` loses precision as ``|y|`` grows and saturates
at about 36 in float64; and it adds ``eps = 1e-8`` to ``A`` inside the log of the log-det.
The exact comparisons (1e-12) therefore use moderate inputs and pre-activations (``|C| < 30``,
``|y| < 10``, where the clipping is inactive and linear-space rounding is below 1e-12) and a Pyro
subclass with ``eps = 0``; the stock class is then checked to differ only by the ``eps`` term
(~``eps / A``). pyroflows also clamps ``a`` to ``[e^-5, e^3]`` and ``-b/a`` to ``[-10, 10]``
in value; the random parameters here are checked to lie inside, so the clamps are inactive.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import NeuralAutoregressive
from torch import Tensor, nn

from pyroflows.data import make_toy, train_test_split
from pyroflows.nn import MADE
from pyroflows.transforms import (
    DeepSigmoid,
    InverseNotConvergedError,
    InverseNotConvergedWarning,
    RootFinder,
    naf,
    neural_autoregressive,
)
from pyroflows.transforms.transformers.sigmoid import _LOG_SLOPE_MAX, _LOG_SLOPE_MIN

from .crosscheck_helpers import assert_close, seed_for

HIDDEN_UNITS = [1, 4, 16]
DEPTHS = [1, 2]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny float64 computations: one intra-op thread avoids thread start-up costs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_params(dsf: DeepSigmoid, dim: int, batch=(), scale: float = 1.0) -> Tensor:
    """Raw parameters ``(*batch, 3 K L, dim)`` inside the clamps (so they are inactive).

    Raw slopes ``N(0, scale)``, raw weights ``N(0, 2 scale)``, offsets ``b = -a c`` with
    transition points ``c`` uniform on ``[-3, 3]``.
    """
    count, depth = dsf.hidden_units, dsf.depth
    raw_slope = scale * torch.randn(*batch, depth, count, dim, dtype=torch.float64)
    raw_weight = 2 * scale * torch.randn(*batch, depth, count, dim, dtype=torch.float64)
    transition = 6 * torch.rand(*batch, depth, count, dim, dtype=torch.float64) - 3
    offset = -F.softplus(raw_slope) * transition
    params = torch.stack([raw_slope, raw_weight, offset], dim=-3)  # (..., L, 3, K, d)
    return params.flatten(-4, -2)


def assert_clamps_inactive(dsf: DeepSigmoid, params: Tensor) -> None:
    blocks = params.unflatten(-2, (dsf.depth, 3, dsf.hidden_units))
    raw_slope, _, offset = blocks.unbind(-3)
    log_slope = F.softplus(raw_slope).log()
    assert (log_slope > _LOG_SLOPE_MIN).all() and (log_slope < _LOG_SLOPE_MAX).all()
    assert (offset.abs() < dsf.bound * F.softplus(raw_slope)).all()


# -- the element-wise map ---------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("hidden_units", HIDDEN_UNITS)
@pytest.mark.parametrize("scale", [1.0, 30.0], ids=["moderate", "clamped"])
def test_strictly_increasing_and_finite_on_a_wide_grid(hidden_units, depth, scale):
    """Derivative > 0 and finite for |x| up to 1e3, and at least min a / 2 beyond the bound.

    ``scale=30`` puts most raw parameters far outside the clamps (as a ReLU conditioner does
    far from the data).
    """
    torch.manual_seed(seed_for("grid", hidden_units, depth, scale))
    dsf = DeepSigmoid(hidden_units, depth)
    dim = 5
    params = scale * torch.randn(dsf.params_per_dim, dim, dtype=torch.float64)
    near = torch.linspace(-20, 20, 801, dtype=torch.float64)
    far = torch.logspace(1, 3, 200, dtype=torch.float64)
    grid = torch.cat([-far.flip(0), near, far]).unique()  # sorted
    x = grid.unsqueeze(-1).expand(-1, dim)
    y, log_slope = dsf.forward(x, params)
    assert torch.isfinite(y).all() and torch.isfinite(log_slope).all()  # slope in (0, inf)
    assert (y.diff(dim=0) >= 0).all()
    # Beyond the bound every sublayer has slope >= min_k a_k / 2 >= e^-5 / 2 (the docstring's
    # bound), so one sublayer is strictly increasing there by at least that.
    if depth == 1:
        beyond = grid.abs() >= dsf.bound
        assert (log_slope[beyond] >= _LOG_SLOPE_MIN - math.log(2) - 1e-12).all()
    # Slopes never exceed max_k a_k <= e^3 per sublayer; far out (|x| = 1e3) the map is
    # linear with a slope in [e^-5 / 2, e^3] per sublayer.
    assert (log_slope <= depth * _LOG_SLOPE_MAX + 1e-12).all()
    assert (log_slope[[0, -1]] >= depth * (_LOG_SLOPE_MIN - math.log(2))).all()
    # The inverse converges everywhere on the grid (it raises otherwise) and hits the target;
    # x itself is recovered up to the conditioning, ulp(y) / slope.
    x_back, _ = dsf.inverse(y, params)
    y_again, _ = dsf.forward(x_back, params)
    torch.testing.assert_close(y_again, y, atol=1e-12, rtol=1e-12)
    conditioning = 1e-14 * (1 + y.abs()) / log_slope.exp()
    assert ((x_back - x).abs() <= conditioning + 1e-12 * (1 + x.abs())).all()


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("hidden_units", HIDDEN_UNITS)
def test_log_slope_is_the_autograd_derivative(hidden_units, depth):
    torch.manual_seed(seed_for("autograd", hidden_units, depth))
    dsf = DeepSigmoid(hidden_units, depth)
    params = random_params(dsf, 3, batch=(7,))
    assert_clamps_inactive(dsf, params)
    x = (3 * torch.randn(7, 3, dtype=torch.float64)).requires_grad_()
    y, log_slope = dsf.forward(x, params)
    (derivative,) = torch.autograd.grad(y.sum(), x)  # element-wise map: diagonal Jacobian
    assert_close(log_slope, derivative.log())
    # The inverse returns the forward log-slope at its result, and inverts.
    x_back, log_slope_back = dsf.inverse(y.detach(), params)
    assert_close(x_back, x.detach(), {"atol": 1e-10, "rtol": 1e-10})
    assert_close(log_slope_back, log_slope.detach(), {"atol": 1e-10, "rtol": 1e-10})


def test_identity_parameters():
    """The identity for K = 1; for K > 1 odd with f(0) = 0 and f'(0) = 1.

    ``identity_params`` come in the default dtype (float32, as the MADE bias they initialise),
    so slopes of 1 are 1 to float32 precision.
    """
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).unsqueeze(-1)
    single = DeepSigmoid(hidden_units=1, depth=2)
    y, log_slope = single.forward(x, single.identity_params(1).double())
    assert_close(y, x, {"atol": 1e-6, "rtol": 1e-6})
    assert_close(log_slope, torch.zeros_like(x), {"atol": 1e-6, "rtol": 0})
    dsf = DeepSigmoid(hidden_units=16, depth=2)
    params = dsf.identity_params(1).double()
    zero = torch.zeros(1, 1, dtype=torch.float64)
    y0, log_slope0 = dsf.forward(zero, params)
    assert_close(y0, zero, {"atol": 1e-15, "rtol": 0})
    assert_close(log_slope0, zero, {"atol": 1e-6, "rtol": 0})
    y, _ = dsf.forward(x, params)
    assert_close(y, -y.flip(0))  # odd
    assert ((y - x).abs() <= 0.02 * x.abs() ** 3 + 1e-6).all()  # identity to third order
    offsets = params.unflatten(0, (2, 3, 16))[:, 2, :, 0]
    assert len(offsets[0].unique()) == 16  # the hidden units start apart


def test_layer_starts_near_the_identity():
    flow = neural_autoregressive(3, hidden_dims=[16]).double()
    x = 0.1 * torch.randn(4, 3, dtype=torch.float64)
    assert_close(flow(x), x, {"atol": 1e-4, "rtol": 0})


# -- Pyro's NeuralAutoregressive ----------------------------------------------------------------


class ConstantARN(nn.Module):
    """Pyro's autoregressive network slot filled with fixed ``(A, W_pre, b)``."""

    def __init__(self, block: Tensor) -> None:
        super().__init__()
        self.block = block  # (..., 3, K, d)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(self.block.unbind(-3))


class MADEAsPyroARN(nn.Module):
    """A pyroflows MADE with ``3K`` outputs per dimension seen as Pyro's ``(A, W_pre, b)``."""

    def __init__(self, made: MADE, hidden_units: int) -> None:
        super().__init__()
        self.made, self.hidden_units = made, hidden_units

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(self.made(x).split(self.hidden_units, dim=-2))


class NeuralAutoregressiveWithoutEps(NeuralAutoregressive):
    """Pyro's transform with ``eps = 0`` in ``log(A + eps)`` (a class attribute there)."""

    eps = 0.0


def pyro_chain(params: Tensor, dsf: DeepSigmoid, x: Tensor, reference=NeuralAutoregressive):
    """Pyro's DSF applied ``depth`` times with each block's raw parameters; summed log-det."""
    blocks = params.unflatten(-2, (dsf.depth, 3, dsf.hidden_units)).unbind(-4)
    log_det = torch.zeros(x.shape[:-1], dtype=x.dtype)
    pre_activations = []
    for block in blocks:
        transform = reference(ConstantARN(block), hidden_units=dsf.hidden_units)
        y = transform(x)
        log_det = log_det + transform.log_abs_det_jacobian(x, y)
        pre_activations.append(transform._cached_C)
        x = y
    return x, log_det, torch.stack(pre_activations)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("hidden_units", HIDDEN_UNITS)
def test_deep_sigmoid_matches_pyro(hidden_units, depth):
    torch.manual_seed(seed_for("pyro", hidden_units, depth))
    dsf = DeepSigmoid(hidden_units, depth)
    dim = 3
    params = random_params(dsf, dim, batch=(20,))
    assert_clamps_inactive(dsf, params)
    x = torch.randn(20, dim, dtype=torch.float64)
    with torch.no_grad():
        y_ref, log_det_ref, pre_activations = pyro_chain(
            params, dsf, x, NeuralAutoregressiveWithoutEps
        )
        y, log_slope = dsf.forward(x, params)
        _, log_det_stock, _ = pyro_chain(params, dsf, x)
    # Pyro's clipping is inactive and its linear-space rounding small on these inputs.
    assert pre_activations.abs().max() < 30 and y_ref.abs().max() < 10
    assert (y - x).abs().max() > 1e-2  # not (close to) the identity map
    assert_close(y, y_ref, {"atol": 1e-12, "rtol": 1e-12})
    assert_close(log_slope.sum(-1), log_det_ref, {"atol": 1e-12, "rtol": 1e-12})
    # Stock Pyro adds eps = 1e-8 to A inside the log-det's log: a gap of order eps / A.
    gap = (log_det_stock - log_det_ref).abs().max()
    assert 0 < gap < 1e-8 * dim * depth / math.exp(_LOG_SLOPE_MIN)


@pytest.mark.parametrize("ordering", ["natural", "reverse"])
def test_neural_autoregressive_layer_matches_pyro(ordering):
    """The whole layer: pyroflows' MADE feeding Pyro's ``NeuralAutoregressive`` as its arn."""
    torch.manual_seed(seed_for("layer", ordering))
    dim, hidden_units = 4, 8
    flow = neural_autoregressive(dim, hidden_dims=[32], width=hidden_units, ordering=ordering)
    flow = flow.double()
    with torch.no_grad():  # random conditioner outputs around random in-bound parameters
        layer = flow.made.output_layer
        layer.weight.normal_(0.0, 0.05)
        layer.bias.copy_(random_params(flow.transformer, dim).flatten())
    reference = NeuralAutoregressiveWithoutEps(
        MADEAsPyroARN(flow.made, hidden_units), hidden_units=hidden_units
    )
    x = torch.randn(50, dim, dtype=torch.float64)
    with torch.no_grad():
        assert_clamps_inactive(flow.transformer, flow.made(x))
        y_ref = reference(x)
        log_det_ref = reference.log_abs_det_jacobian(x, y_ref)
        y = flow(x)
        log_det = flow.log_abs_det_jacobian(x, y)
        assert reference._cached_C.abs().max() < 30 and y_ref.abs().max() < 10
        assert_close(y, y_ref, {"atol": 1e-12, "rtol": 1e-12})
        assert_close(log_det, log_det_ref, {"atol": 1e-12, "rtol": 1e-12})
        # Pyro has no inverse; ours inverts its output.
        assert_close(flow.inv(y_ref.clone()), x, {"atol": 1e-10, "rtol": 1e-10})


# -- the numerical inverse fails loudly ---------------------------------------------------------


def test_inverse_not_converged_raises_or_warns():
    torch.manual_seed(0)
    y = 3 * torch.randn(6, 2, dtype=torch.float64)
    dsf = DeepSigmoid(8, depth=2, root_finder=RootFinder(max_iter=1))
    params = random_params(dsf, 2, batch=(6,))
    with pytest.raises(InverseNotConvergedError, match="did not converge"):
        dsf.inverse(y, params)
    flow = neural_autoregressive(2, hidden_dims=[8], root_finder=RootFinder(max_iter=1)).double()
    with pytest.raises(InverseNotConvergedError, match="did not converge"):
        flow.inv(y)
    warning = DeepSigmoid(8, depth=2, root_finder=RootFinder(max_iter=1, on_failure="warn"))
    with pytest.warns(InverseNotConvergedWarning):
        x, _ = warning.inverse(y, params)
    assert x.shape == y.shape
    assert "max_iter=1" in repr(dsf) and repr(DeepSigmoid()) == (
        "DeepSigmoid(hidden_units=16, depth=1, bound=10.0)"
    )


# -- the naf stack learns -----------------------------------------------------------------------


def test_naf_fits_two_moons_better_than_a_gaussian():
    torch.manual_seed(0)
    train, test = train_test_split(make_toy("moons", 800, seed=0), test_fraction=0.25, seed=0)
    gaussian = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    gaussian_nll = -gaussian.log_prob(test).mean()
    flow = naf(2, num_layers=2, hidden_dims=[32, 32], hidden_units=8)
    base = dist.Normal(torch.zeros(2), torch.ones(2)).to_event(1)
    model = dist.TransformedDistribution(base, [flow])
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(200):
        optimizer.zero_grad()
        loss = -model.log_prob(train).mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        test_nll = -model.log_prob(test).mean()
        samples = model.sample((200,))  # sequential root-finds, converged
    assert test_nll < gaussian_nll - 0.3, (float(test_nll), float(gaussian_nll))
    assert torch.isfinite(samples).all()
