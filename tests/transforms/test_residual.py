"""Residual flows (``transforms/residual.py``): log-det estimators, fixed-point inverse, bounds.

The statistical checks draw N independent estimates (one roulette draw and one probe per pass)
and accept the mean within 5 standard errors, the standard error taken from the draws
themselves; seeds are fixed, so each check is one deterministic run sized not to flake.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows.nn import lipschitz_bound
from pyroflows.nn.lipschitz import SpectralNormLinear
from pyroflows.transforms import (
    InverseNotConvergedError,
    Residual,
    iresnet,
    residual,
    set_log_det,
)
from tests.helpers import jacobian_log_det

F64 = torch.float64


def _block(dim=4, coeff=0.9, seed=0, scale=2.0, **options):
    """A float64 block with every spectral norm at its clamp (weights moved by ``scale``, hidden
    biases at 2 so the ELUs are near their linear part): ``|J_g|`` about 0.25 at N(0, 1)."""
    torch.manual_seed(seed)
    block = Residual(dim, [16, 16], coeff, activation="elu", **options).double()
    generator = torch.Generator().manual_seed(seed)
    layers = [m for m in block.modules() if isinstance(m, SpectralNormLinear)]
    with torch.no_grad():
        for k, layer in enumerate(layers):
            noise = torch.randn(layer.weight.shape, generator=generator, dtype=F64)
            layer.weight.add_(scale * noise / math.sqrt(layer.weight.shape[1]))
            if k < len(layers) - 1:
                layer.bias.fill_(2.0)
            layer.power_iteration(1000)
    return block


def _exact(block, x, context=None):
    mode = block.log_det_mode
    set_log_det(block, "exact")
    _, log_det = block.forward_and_log_det(x, context)
    set_log_det(block, mode)
    return log_det


def _draws(block, x, passes, repeats=50, statistic=None):
    """``passes`` independent estimates of ``statistic(x repeated)``; each pass averages
    ``repeats`` probes and shares one roulette draw (the passes are i.i.d.)."""
    out = []
    for _ in range(passes):
        _, log_det = block.forward_and_log_det(x.repeat(repeats, 1))
        out.append(
            log_det.reshape(repeats, -1).mean(0) if statistic is None else statistic(log_det)
        )
    return torch.stack(out)


def _within_five_standard_errors(draws, expected):
    mean, error = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
    assert (error > 0).all()
    assert ((mean - expected).abs() <= 5 * error).all(), (mean, expected, error)


# -- the exact log-det ---------------------------------------------------------------------------
@pytest.mark.parametrize("context_dim", [0, 3])
def test_exact_log_det_matches_the_autograd_jacobian(context_dim):
    block = _block(context_dim=context_dim, log_det="exact")
    x = torch.randn(4, 4, dtype=F64)
    context = torch.randn(4, 3, dtype=F64) if context_dim else None
    _, log_det = block.forward_and_log_det(x, context)
    for i in range(4):
        c = None if context is None else context[i]
        expected = jacobian_log_det(lambda v, c=c: block.forward_and_log_det(v, c)[0], x[i])
        torch.testing.assert_close(log_det[i], expected, atol=1e-12, rtol=1e-12)
    assert float(log_det.detach().abs().min()) > 1e-2  # a map far from the identity


# -- the estimators ------------------------------------------------------------------------------
@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_unbiased_estimator_mean_is_the_exact_log_det(probe):
    block = _block(log_det="unbiased", probe=probe)
    x = torch.randn(3, 4, dtype=F64)
    expected = _exact(block, x)
    torch.manual_seed(1)
    with torch.no_grad():
        _within_five_standard_errors(_draws(block, x, 600), expected)
    block.eval()  # 20 exact terms before the roulette: unbiased too, with less variance
    with torch.no_grad():
        _within_five_standard_errors(_draws(block, x, 200), expected)


def test_unbiased_estimator_gradient_mean_is_the_exact_gradient():
    block = _block(log_det="unbiased")
    x = torch.randn(3, 4, dtype=F64)
    # the last layer's bias does not enter J_g: every other parameter of g does
    params = [p for name, p in block.named_parameters() if name.startswith("g.net")][:-1]

    def gradient():
        _, log_det = block.forward_and_log_det(x.repeat(20, 1))
        grads = torch.autograd.grad(log_det.sum() / 20, params)
        return torch.cat([g.reshape(-1) for g in grads])

    set_log_det(block, "exact")
    exact = gradient()
    set_log_det(block, "unbiased")
    # the exact gradient's direction and a fixed random one: two scalar statistics
    generator = torch.Generator().manual_seed(3)
    directions = torch.stack([exact / exact.norm(), torch.randn(exact.shape, generator=generator)])
    torch.manual_seed(2)
    draws = torch.stack([directions @ gradient() for _ in range(400)])
    _within_five_standard_errors(draws, directions @ exact)


def _scaled_identity_block(dim, coeff):
    """A block with ``J_g = coeff * I`` near 0: weights Q, I, Q^T (scaled), ELUs kept linear."""
    block = Residual(dim, [dim, dim], coeff, activation="elu", probe="rademacher").double()
    q = torch.linalg.qr(torch.randn(dim, dim, dtype=F64))[0]
    layers = [m for m in block.modules() if isinstance(m, SpectralNormLinear)]
    root = coeff ** (1 / 3)
    with torch.no_grad():
        for layer, weight in zip(layers, (q, torch.eye(dim, dtype=F64), q.T), strict=True):
            layer.weight.copy_(root * weight)
            layer.bias.fill_(10.0)
            layer.power_iteration(100)
    return block


def test_truncated_series_bias_shrinks_with_the_number_of_terms():
    # J = 0.9 I, Rademacher probes: v^T J^k v = 0.9^k D exactly, so each estimate is its mean
    torch.manual_seed(0)
    dim, coeff = 4, 0.9
    block = _scaled_identity_block(dim, coeff)
    x = 0.1 * torch.randn(5, dim, dtype=F64)
    exact = _exact(block, x)
    torch.testing.assert_close(exact, torch.full((5,), dim * math.log(1 + coeff), dtype=F64))
    biases = []
    for n in (1, 2, 4, 8):
        block.n_terms = n
        set_log_det(block, "series")
        with torch.no_grad():
            estimate = block.forward_and_log_det(x)[1]
        partial = dim * sum((-1) ** (k + 1) * coeff**k / k for k in range(1, n + 1))
        torch.testing.assert_close(estimate, torch.full_like(estimate, partial))
        biases.append(float((estimate - exact).detach().abs().max()))
    assert biases == sorted(biases, reverse=True) and biases[-1] < biases[0] / 5


def test_truncated_series_mean_is_the_truncated_trace_series():
    block = _block(log_det="series", n_terms=3)
    x = torch.randn(2, 4, dtype=F64)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: block._network()(v, None)))(x).detach()
    powers = [torch.linalg.matrix_power(jac, k) for k in (1, 2, 3)]
    expected = sum((-1) ** (k + 1) / k * p.diagonal(dim1=-2, dim2=-1).sum(-1)
                   for k, p in enumerate(powers, start=1))  # fmt: skip
    torch.manual_seed(4)
    with torch.no_grad():
        _within_five_standard_errors(_draws(block, x, 400), expected)


def test_draws_are_reproducible_with_torch_manual_seed():
    block = _block(log_det="unbiased")
    x = torch.randn(6, 4, dtype=F64)
    torch.manual_seed(5)
    first = block.forward_and_log_det(x)[1]
    torch.manual_seed(5)
    torch.testing.assert_close(block.forward_and_log_det(x)[1], first, atol=0, rtol=0)


# -- the fixed-point inverse ---------------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 8])
def test_inverse_reconstructs_to_its_tolerance_within_50_iterations(dim):
    block = _block(dim=dim, log_det="exact")
    x = 2 * torch.randn(1000, dim, dtype=F64)
    y = block.forward_and_log_det(x)[0].detach()
    x_back, _ = block.inverse_and_log_det(y)
    # the stop |step| <= atol + rtol |x| bounds the error by L / (1 - L) step, L <= 0.9
    tolerance = block.coeff / (1 - block.coeff) * (block.atol + block.rtol * x.abs())
    assert ((x_back - x).abs() <= tolerance).all()
    counts = block.last_inverse_iteration_counts
    assert counts.shape == (1000,) and int(counts.max()) == block.last_inverse_iterations <= 50


@pytest.mark.parametrize("slope", [0.9, -0.9])
def test_anderson_acceleration_cuts_the_iterations_to_the_same_solution(slope):
    from pyroflows.transforms._residual_logdet import fixed_point

    def g(v):  # a contraction with constant 0.9 near 0, the slow case of the plain iteration
        return slope * torch.sin(v)

    y = 2 * torch.randn(2000, 8, dtype=F64, generator=torch.Generator().manual_seed(0))
    solutions, counts = {}, {}
    for memory in (0, 5):
        solutions[memory], counts[memory] = fixed_point(g, y, 1e-10, 1e-10, 500, 0.9, memory)
        residual = solutions[memory] + g(solutions[memory]) - y
        assert residual.abs().max() < 1e-8
    torch.testing.assert_close(solutions[5], solutions[0], rtol=0, atol=1e-8)
    assert int(counts[5].max()) < 0.4 * int(counts[0].max()), (counts[5].max(), counts[0].max())
    assert float(counts[5].double().mean()) < 0.5 * float(counts[0].double().mean())


def test_plain_iteration_is_an_option_and_a_negative_memory_is_refused():
    block = _block(log_det="exact", anderson=0)
    x = torch.randn(50, 4, dtype=F64)
    y = block.forward_and_log_det(x)[0].detach()
    torch.testing.assert_close(block.inverse_and_log_det(y)[0], x, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="anderson must be >= 0"):
        _block(anderson=-1)


def test_inverse_reports_non_convergence():
    block = _block(max_iter=1)
    y = 2 * torch.randn(10, 4, dtype=F64)
    with pytest.raises(InverseNotConvergedError, match=r"after 1 fixed-point iterations"):
        block.inverse_and_log_det(y)


def test_gradient_through_the_inverse_is_the_implicit_one():
    block = _block(log_det="exact")
    y = torch.randn(3, 4, dtype=F64)
    bias = block.g.net[-1].bias
    loss = lambda: block.inverse_and_log_det(y)[0].pow(2).sum()  # noqa: E731
    (grad,) = torch.autograd.grad(loss(), bias)
    step = 1e-6
    numeric = torch.zeros_like(bias)
    with torch.no_grad():
        for i in range(bias.numel()):
            bias[i] += step
            up = loss()
            bias[i] -= 2 * step
            down = loss()
            bias[i] += step
            numeric[i] = (up - down) / (2 * step)
    torch.testing.assert_close(grad, numeric, atol=1e-6, rtol=1e-5)


# -- arguments, context, training ------------------------------------------------------------------
@pytest.mark.parametrize("coeff", [1.0, 1.5, 0.0, -0.5])
def test_coeff_outside_zero_one_raises(coeff):
    with pytest.raises(ValueError, match=rf"coeff must be in \(0, 1\).*got {coeff}"):
        Residual(2, coeff=coeff)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="log_det must be one of"):
        Residual(2, log_det="roulette")
    with pytest.raises(ValueError, match="probe must be one of"):
        Residual(2, probe="uniform")


def test_conditional_block():
    block = _block(context_dim=2, log_det="exact")
    x = torch.randn(5, 4, dtype=F64)
    c1, c2 = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    y1, _ = block.forward_and_log_det(x, c1)
    assert not torch.allclose(y1, block.forward_and_log_det(x, c2)[0])
    x_back, _ = block.inverse_and_log_det(y1.detach(), c1)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=1e-4)
    stack = residual(4, [8], num_layers=2, context_dim=2).double()
    assert stack.condition(c1)(x).shape == (5, 4)


def test_training_mode_map_is_fixed_between_updates():
    block = _block(log_det="unbiased")
    x = torch.randn(5, 4, dtype=F64)
    first = block.forward_and_log_det(x)[0]
    torch.testing.assert_close(block.forward_and_log_det(x)[0], first, atol=0, rtol=0)
    layer = block.g.net[0]
    u = layer.u.clone()
    with torch.no_grad():
        layer.weight.add_(0.1)  # an update: the next pass advances the power iteration
    block.forward_and_log_det(x)
    assert not torch.equal(layer.u, u)


@pytest.mark.parametrize(
    ("builder", "fused"), [(residual, False), (iresnet, False), (residual, True)]
)
def test_lipschitz_bounds_hold_after_maximum_likelihood_training(builder, fused):
    torch.manual_seed(0)
    coeff = 0.9
    flow = builder(2, [32, 32], num_layers=4, coeff=coeff)
    data = torch.cat([torch.randn(256, 2) * 0.3 + 2.0, torch.randn(256, 2) * 0.3 - 2.0])
    # torch's fused Adam does not bump version counters: the refresh compares values too
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2, fused=fused)
    for _ in range(200):
        batch = data[torch.randint(0, len(data), (128,))]
        z, log_det = flow.forward_and_log_det(batch)
        loss = (0.5 * z.pow(2).sum(-1) - log_det).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        flow.forward_and_log_det(data[:4])  # the pass after the last update refreshes the norms
    blocks = [m for m in flow.modules() if isinstance(m, Residual)]
    bounds = [lipschitz_bound(block.g) for block in blocks]
    assert len(bounds) == 4 and max(bounds) <= coeff * (1 + 1e-5), bounds
    raw = max(float(torch.linalg.matrix_norm(m.weight.detach(), ord=2)) for m in flow.modules()
              if isinstance(m, SpectralNormLinear))  # fmt: skip
    assert raw > coeff  # the constraint was active, not vacuous


@pytest.mark.parametrize("activation", ["lipswish", "elu", "tanh", "relu"])
def test_explicit_jacobian_products_match_autograd(activation):
    from pyroflows.transforms import _residual_logdet as ld

    torch.manual_seed(0)
    block = Residual(3, [8, 8], 0.9, activation=activation, context_dim=2).double()
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    x, context = torch.randn(4, 3, dtype=F64), torch.randn(4, 2, dtype=F64)
    layers, activations = block._layers()
    jacobian = ld.MLPJacobian(layers, activations, x, context)
    g = block._network()
    torch.testing.assert_close(jacobian.output, g(x, context))
    expected = torch.func.vmap(torch.func.jacrev(g))(x, context)  # (N, D, D)
    eye = torch.eye(3, dtype=F64)
    columns = torch.stack([jacobian.jvp(eye[i].expand(4, 3)) for i in range(3)], -1)
    rows = torch.stack([jacobian.vjp(eye[i].expand(4, 3)) for i in range(3)], -2)
    torch.testing.assert_close(columns, expected)
    torch.testing.assert_close(rows, expected.detach())


def test_memory_saving_backward_saves_the_same_whatever_the_number_of_terms():
    block = Residual(2, [32, 32], 0.9, log_det="series")
    x = torch.randn(64, 2)

    def saved_bytes(n_terms):
        block.n_terms = n_terms
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            block.forward_and_log_det(x)
        return sum(storages.values())

    assert saved_bytes(2) == saved_bytes(16) > 0


def test_set_log_det_rejects_unknown_modes():
    with pytest.raises(ValueError, match="log_det must be one of"):
        set_log_det(residual(2, [4], num_layers=1), "roulette")


def test_implicit_gradient_reports_non_convergence():
    from pyroflows.transforms import InverseNotConvergedWarning
    from pyroflows.transforms._residual_logdet import implicit_gradient_hook

    x_star = torch.ones(3, 2, dtype=torch.float64)
    hook = implicit_gradient_hook(lambda v: 0.9 * v, x_star, atol=1e-12, max_iter=2)
    with pytest.warns(InverseNotConvergedWarning, match="implicit gradient did not converge"):
        hook(torch.ones(3, 2, dtype=torch.float64))
    converged = implicit_gradient_hook(lambda v: 0.9 * v, x_star, atol=1e-12, max_iter=500)
    # a = 1 - 0.9 a  =>  a = 1 / 1.9
    torch.testing.assert_close(converged(torch.ones(3, 2, dtype=torch.float64)),
                               torch.full((3, 2), 1 / 1.9, dtype=torch.float64))  # fmt: skip


def test_exact_log_det_restores_each_block_and_runs_report_exact_test_metrics(tmp_path):
    from pyroflows.runs import evaluate_run, fit_run
    from pyroflows.transforms import ContinuousFlow, FlowSequence, exact_log_det

    flow = FlowSequence([Residual(2, [8], log_det="series"), ContinuousFlow(2, [8])])
    with pytest.raises(RuntimeError, match="inside"), exact_log_det(flow):
        assert flow[0].log_det_mode == "exact" and flow[1].trace == "exact"
        raise RuntimeError("inside")
    assert flow[0].log_det_mode == "series" and flow[1].trace == "hutchinson"

    options = {"num_layers": 2, "hidden_dims": [8]}
    metrics = fit_run("moons", tmp_path, "residual", options, num_samples=300, epochs=1,
                      progress=False)  # fmt: skip
    first, second = evaluate_run(tmp_path, "moons"), evaluate_run(tmp_path, "moons")
    assert first == second == metrics["test"]  # exact: no estimator noise


def test_fit_keeps_the_lipschitz_bound_with_its_fused_optimizer():
    from pyroflows import Flow, fit
    from pyroflows._training import adam

    optimizer = adam([torch.zeros(2, requires_grad=True)], 0.1)
    parameter = optimizer.param_groups[0]["params"][0]
    parameter.grad = torch.ones(2)
    before = parameter._version
    optimizer.step()
    assert optimizer.defaults["fused"] and parameter._version > before  # caches see updates

    torch.manual_seed(0)
    model = Flow.build("residual", 2, hidden_dims=[32, 32], num_layers=2)
    data = torch.cat([torch.randn(256, 2) * 0.3 + 2.0, torch.randn(256, 2) * 0.3 - 2.0])
    fit(model, data, epochs=40, batch_size=128, lr=1e-2, progress=False, device="cpu")
    model.train()
    model.log_prob(data[:4])  # refreshes the norms at the final weights
    bounds = [lipschitz_bound(m.g) for m in model.modules() if isinstance(m, Residual)]
    assert max(bounds) <= 0.9 * (1 + 1e-5), bounds


def test_a_density_model_scores_with_the_cheap_forward_map():
    from pyroflows import Flow
    from pyroflows.transforms import REGISTRY

    assert {name for name, spec in REGISTRY.items() if spec.density_inverted} == {
        "residual",
        "iresnet",
    }
    model = Flow.build("residual", 2, hidden_dims=[8], num_layers=2)
    model.log_prob(torch.randn(5, 2))
    blocks = [m for m in model.modules() if isinstance(m, Residual)]
    assert all(block.last_inverse_iterations is None for block in blocks)  # no fixed point
    model.sample((5,))
    assert all(block.last_inverse_iterations for block in blocks)  # sampling iterates
