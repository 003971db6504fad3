"""Variational dequantisation: q(u | k), its exact log-density, the bound and its training."""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows import DequantizedFlow, Flow, VariationalDequantizer, fit
from pyroflows.data import bits_per_dim, load_digits_images


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    """Move every parameter off its identity start (seeded by the caller)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


@pytest.mark.parametrize("shape", [(5,), (2, 4, 4)], ids=["vector", "image"])
def test_shapes_and_u_in_the_open_unit_cube(shape):
    torch.manual_seed(0)
    q = VariationalDequantizer(shape, levels=17, hidden=8)
    _perturb(q, 1.0)
    k = torch.randint(0, 17, (7, *shape)).float()
    u, log_q = q(k)
    assert u.shape == k.shape and log_q.shape == (7,)
    assert bool(((u > 0) & (u < 1)).all()) and bool(torch.isfinite(log_q).all())
    u2, _ = q(k.unsqueeze(0).expand(3, *k.shape))  # any leading batch dimensions
    assert u2.shape == (3, *k.shape)


@pytest.mark.parametrize("shape", [(3,), (1, 2, 2)], ids=["vector", "image"])
def test_log_q_is_the_change_of_variables_of_the_float64_jacobian(shape):
    torch.manual_seed(1)
    q = VariationalDequantizer(shape, levels=5, hidden=6).double()
    _perturb(q, 0.2)  # off the identity, with u away from 0 and 1 (where 1 - u loses digits)
    k = torch.randint(0, 5, (4, *shape)).double()
    noise = torch.rand(k.shape, dtype=torch.float64)
    u, log_q = q(k, noise=noise)
    for row in range(len(k)):
        eps = torch.log(noise[row]) - torch.log1p(-noise[row])
        context = (2.0 * k[row] / 4 - 1.0).flatten()

        def to_u(e, context=context):
            y = e.reshape(shape)
            for layer in q.layers:
                y, _ = layer.forward_and_log_det(y, context)
            return torch.sigmoid(y).flatten()

        jacobian = torch.autograd.functional.jacobian(to_u, eps.flatten())
        log_base = (
            torch.nn.functional.logsigmoid(eps) + torch.nn.functional.logsigmoid(-eps)
        ).sum()
        expected = log_base - torch.linalg.slogdet(jacobian)[1]
        torch.testing.assert_close(log_q[row], expected, rtol=0, atol=1e-9)
        torch.testing.assert_close(u[row].flatten(), to_u(eps.flatten()), rtol=0, atol=1e-12)
    assert float(log_q.detach().abs().min()) > 1e-3  # not the identity start, where log q = 0


def _small_vector_model(dim: int) -> Flow:
    torch.manual_seed(2)
    model = Flow.build("realnvp", dim, num_layers=2, hidden_dims=[16], logit_alpha=0.05)
    _perturb(model.flow, 0.1)
    return model


def test_identity_start_is_uniform_dequantisation():
    """At the start u = U (the noise given) and log q = 0: the bound is uniform's, point by point,
    and so, drawing fresh noise, equal in distribution (means within a 4-sigma band)."""
    dim, levels = 4, 9
    model = _small_vector_model(dim)
    q = VariationalDequantizer(dim, levels=levels, hidden=8)
    k = torch.randint(0, levels, (50, dim)).float()
    noise = torch.rand(k.shape)
    u, log_q = q(k, noise=noise)
    torch.testing.assert_close(u, noise, rtol=0, atol=1e-6)
    assert float(log_q.detach().abs().max()) < 1e-5
    dequantized = DequantizedFlow(model, q)
    with torch.no_grad():
        draws = 400
        rows = k.repeat(draws, 1)
        bound = dequantized.log_prob(rows)
        uniform = model.log_prob((rows + torch.rand(rows.shape)) / levels)
    difference = float(bound.mean() - uniform.mean())
    error = math.sqrt(float(bound.var() + uniform.var()) / len(rows))
    assert abs(difference) < 4 * error


def test_gradients_reach_the_dequantizer():
    torch.manual_seed(3)
    k = load_digits_images("train")[:32]
    model = Flow.build(
        "glow", (1, 8, 8), levels=1, steps_per_level=2, hidden_channels=8, logit_alpha=0.05
    )
    q = VariationalDequantizer((1, 8, 8), levels=17, hidden=8)
    dequantized = DequantizedFlow(model, q)
    dequantized.standardize_with(k)
    (-dequantized.log_prob(k).mean()).backward()
    for layer in q.layers:
        grads = [p.grad for p in layer.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().max()) > 0 for g in grads)


@pytest.mark.filterwarnings("ignore::pyroflows.errors.DataWarning")  # raw integer pixels
def test_fit_on_integers_improves_the_bound():
    torch.manual_seed(4)
    k = load_digits_images("train")[:200]
    model = Flow.build(
        "glow", (1, 8, 8), levels=1, steps_per_level=2, hidden_channels=16, logit_alpha=0.05
    )
    q = VariationalDequantizer((1, 8, 8), levels=17, hidden=8)
    dequantized = DequantizedFlow(model, q)
    dequantized.standardize_with(k)
    start = [p.detach().clone() for p in q.parameters()]

    def bits() -> float:
        torch.manual_seed(5)
        with torch.no_grad():
            bound = torch.stack([dequantized.log_prob(k) for _ in range(4)])
        return float(bits_per_dim(-bound.mean(), 64, 17))

    before = bits()
    history = fit(
        dequantized,
        k,
        epochs=15,
        batch_size=32,
        lr=3e-3,
        patience=None,
        val_fraction=0.0,
        progress=False,
        seed=0,
    )
    after = bits()
    assert len(history.epoch) == 15
    assert after < before - 0.15, (before, after)
    moved = max(
        float((p.detach() - s).abs().max()) for p, s in zip(q.parameters(), start, strict=True)
    )
    assert moved > 1e-3
    samples = dequantized.sample((4,))
    assert samples.shape == (4, 1, 8, 8)


def test_bad_input_raises_naming_expected_and_got():
    q = VariationalDequantizer((1, 2, 2), levels=4, hidden=4)
    with pytest.raises(ValueError, match=r"integer values in \[0, 3\], got values in \[0.0, 4.0\]"):
        q(torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]]))
    with pytest.raises(ValueError, match=r"integer values in \[0, 3\], got values in \[0.0, 2.5\]"):
        q(torch.tensor([[[[0.0, 1.0], [2.5, 1.0]]]]))
    with pytest.raises(ValueError, match=r"event shape \(1, 2, 2\), got shape \(3, 4\)"):
        q(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="noise must have the shape"):
        q(torch.zeros(2, 1, 2, 2), noise=torch.rand(3, 1, 2, 2))
    model = Flow.build("realnvp", 4, num_layers=2)
    with pytest.raises(
        ValueError, match=r"event shape \(1, 2, 2\) differs from the model's \(4,\)"
    ):
        DequantizedFlow(model, q)
    with pytest.raises(ValueError, match="event_shape must be"):
        VariationalDequantizer((2, 3), levels=4)
    with pytest.raises(ValueError, match="levels must be at least 1, got 0"):
        VariationalDequantizer(4, levels=0)


@pytest.mark.filterwarnings("ignore::pyroflows.errors.DataWarning")  # raw integer pixels
def test_fit_checkpoints_and_resumes_the_wrapper(tmp_path):
    k = load_digits_images("train")[:64]

    def make() -> DequantizedFlow:
        torch.manual_seed(6)
        model = Flow.build(
            "glow", (1, 8, 8), levels=1, steps_per_level=1, hidden_channels=8, logit_alpha=1e-3
        )
        return DequantizedFlow(model, VariationalDequantizer((1, 8, 8), 17, hidden=4))

    path = tmp_path / "run.pt"
    first = fit(make(), k, epochs=2, batch_size=32, checkpoint=path, progress=False)
    resumed = make()
    history = fit(
        resumed,
        k,
        epochs=2,
        batch_size=32,
        checkpoint=path,
        resume=True,
        override={"epochs": 3, "lr": 1e-4},
        progress=False,
    )
    assert history.epoch == [1, 2, 3] and history.val_nll[:2] == first.val_nll
    assert resumed.config["name"] == "dequantized"
    assert resumed.config["dequantizer"]["levels"] == 17
