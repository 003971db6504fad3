"""Padded (augmented) density models: the bound, zero vs Gaussian padding, recipes, the CLI.

Issue 15, item 2 (Koehler, Mehta & Risteski 2021, arXiv:2010.01155, section 5).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from pyroflows._recipe import read_recipe
from pyroflows.checkpoint import (
    CheckpointMismatchError,
    check_config,
    load_model,
    save_checkpoint,
)
from pyroflows.cli import main
from pyroflows.data import make_toy
from pyroflows.diagnostics import condition_numbers
from pyroflows.distributions import Flow, PaddedFlowDistribution, Padding
from pyroflows.errors import ModelFileError, OptionError
from pyroflows.train import fit

# Building a zero-padded model warns on purpose (tested once, below).
pytestmark = pytest.mark.filterwarnings("ignore:zero padding:UserWarning")


def _linear_padded_model(scale: float) -> Flow:
    """An LU-linear flow on 2 + 2 coordinates, moved away from its orthogonal start."""
    torch.manual_seed(0)
    model = Flow.build("lu_linear", 2, padding=Padding(2, scale=scale)).double()
    with torch.no_grad():
        for param in model.flow.parameters():
            param.add_(0.5 * torch.randn_like(param))
    return model


def test_gaussian_bound_is_below_the_exact_log_density_and_tightens_with_particles():
    """Linear flow: (x, e) is jointly Gaussian, so log p(x) and the ELBO are closed form."""
    scale = 0.7
    model = _linear_padded_model(scale)
    zero = torch.zeros(4, dtype=torch.float64)
    weight = torch.autograd.functional.jacobian(
        lambda z: model.flow.forward_and_log_det(z)[0], zero
    )
    bias = model.flow.forward_and_log_det(zero)[0].detach()
    cov = weight @ weight.T  # (x, e) ~ N(bias, W W^T)
    x = torch.tensor([[0.3, -0.5], [1.0, 1.0], [-1.5, 0.2]], dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(bias[:2], cov[:2, :2]).log_prob(x)
    # ELBO = E_q[log p(x, e)] + H(q), q = N(0, s^2 I_2)
    precision = torch.linalg.inv(cov)
    mean = torch.cat([x - bias[:2], (-bias[2:]).expand(3, 2)], 1)
    quadratic = torch.einsum("ni,ij,nj->n", mean, precision, mean)
    quadratic = quadratic + scale**2 * torch.trace(precision[2:, 2:])
    entropy = 1.0 + math.log(2.0 * math.pi * scale**2)  # two coordinates, half each
    elbo = -0.5 * quadratic - 0.5 * torch.logdet(2.0 * math.pi * cov) + entropy

    torch.manual_seed(1)
    repeats = 20_000
    means, errors = {}, {}
    with torch.no_grad():
        for particles in (1, 4, 64):
            draws = model.log_prob_bound(x.expand(repeats, 3, 2), particles=particles)
            means[particles] = draws.mean(0)
            errors[particles] = draws.std(0) / math.sqrt(repeats)
    # K = 1 is the ELBO, unbiased
    assert (means[1] - elbo).abs().le(4 * errors[1]).all(), (means[1], elbo, errors[1])
    assert (exact - elbo).min() > 0.3  # a real gap: KL(q(e) || p(e | x)) > 0
    for small, large in ((1, 4), (4, 64)):
        spread = 4 * torch.hypot(errors[small], errors[large])
        assert (means[large] - means[small] > spread).all(), (small, large, means)
    for particles, value in means.items():  # a lower bound (in expectation), at every K
        assert (value <= exact + 4 * errors[particles]).all(), (particles, value, exact)
    assert ((exact - means[64]) < 0.25 * (exact - means[1])).all()  # towards log p(x)
    # the model's default K is its spec's, and log_prob draws from torch's RNG
    torch.manual_seed(2)
    first = model.log_prob(x)
    torch.manual_seed(2)
    assert torch.equal(model.log_prob(x), first)
    assert not torch.equal(model.log_prob(x), first)


def _fitted(padding: Padding | None, data: torch.Tensor, seed: int) -> Flow:
    torch.manual_seed(seed)
    model = Flow.build("realnvp", 2, num_layers=4, hidden_dims=[16, 16], padding=padding)
    history = fit(
        model, data, epochs=50, batch_size=128, lr=3e-3, val_fraction=0.0, seed=seed,
        progress=False,
    )  # fmt: skip
    assert history.train_nll[-1] < history.train_nll[0]  # fit() trains it unchanged
    return model


def test_zero_padding_is_far_worse_conditioned_than_gaussian_padding():
    """KMR's claim as a trend: 200 Adam steps of affine couplings on moons padded to 4-D."""
    data = make_toy("moons", 512, seed=0)
    medians = {}
    for kind, padding in (("zero", Padding(2, "zero")), ("gaussian", Padding(2, scale=0.5))):
        model = _fitted(padding, data, seed=0)
        points = model.flow_points(data[:100])  # where log_prob inverts the flow
        assert points.shape == (100, 4)
        medians[kind] = float(condition_numbers(model.flow.inv, points).condition.median())
    # measured: about 100 (zero) against 2 (Gaussian); the trend with a wide margin
    assert medians["zero"] > 10 * medians["gaussian"], medians


def test_zero_padding_scores_the_slice_and_samples_the_data_dimension():
    with pytest.warns(UserWarning, match="not a normalised density of x"):
        model = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, "zero"))
    data = make_toy("moons", 64, seed=1)
    model.standardize_with(data)
    x = data[:8]
    u = (x - model.data_loc) / model.data_scale
    eps, log_det = model.flow.inverse_and_log_det(torch.cat([u, torch.zeros(8, 2)], 1))
    joint = (
        torch.distributions.Normal(0.0, 1.0).log_prob(eps).sum(-1)
        + log_det
        - model.data_scale.log().sum()
    )
    torch.testing.assert_close(model.log_prob(x), joint)  # log p(x, 0), deterministic
    assert torch.isfinite(model.log_prob(x)).all()
    assert model.sample((5,)).shape == (5, 2)
    with pytest.raises(ValueError, match="zero padding has no bound"):
        model.log_prob_bound(x)


def test_samples_drop_the_padding_with_and_without_context():
    torch.manual_seed(0)
    model = Flow.build("realnvp", 3, num_layers=2, padding=Padding(2, particles=3))
    assert model.input_dim == 3 and model.flow.input_dim == 5 and model.event_shape == (3,)
    assert model.sample().shape == (3,) and model.sample((4, 2)).shape == (4, 2, 3)
    x, bound = model.rsample_and_log_prob((6,))
    assert x.shape == (6, 3) and bound.shape == (6,) and x.requires_grad
    assert isinstance(model.distribution(), PaddedFlowDistribution)
    assert model.distribution().expand((2,)).log_prob(torch.zeros(2, 3)).shape == (2,)

    conditional = Flow.build("maf", 2, 3, num_layers=2, padding=Padding(1, particles=2))
    context = torch.randn(7, 3)
    assert conditional.sample((4,), context=context).shape == (4, 7, 2)
    assert conditional.log_prob(torch.randn(7, 2), context).shape == (7,)
    assert conditional.log_prob(torch.randn(2), context).shape == (7,)  # one row, 7 contexts
    with pytest.raises(ValueError, match="pass a context"):
        conditional.log_prob(torch.randn(7, 2))
    with pytest.raises(ValueError, match="event size 2"):
        conditional.log_prob(torch.randn(7, 4), context)  # padded rows are not data


def test_a_learned_scale_gets_a_gradient_and_a_fixed_one_is_a_buffer():
    torch.manual_seed(0)
    learned = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, learn_scale=True))
    assert "padding_log_scale" in dict(learned.named_parameters())
    (-learned.log_prob(torch.randn(32, 2)).mean()).backward()
    grad = learned.padding_log_scale.grad
    assert grad is not None and torch.isfinite(grad) and grad != 0
    fixed = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, scale=0.5))
    assert "padding_log_scale" not in dict(fixed.named_parameters())
    assert "padding_log_scale" in fixed.state_dict()
    assert float(fixed.padding_log_scale.exp()) == pytest.approx(0.5)


def test_standardisation_and_the_logit_map_act_on_the_data_coordinates_only():
    torch.manual_seed(0)
    data = torch.randn(200, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    model = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, scale=0.5))
    model.standardize_with(data)
    assert model.data_loc.shape == (2,)
    raw = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, scale=0.5))
    raw.load_state_dict(
        {**model.state_dict(), "data_loc": torch.zeros(2), "data_scale": torch.ones(2)}
    )
    x = data[:5]
    torch.manual_seed(3)
    standardised = model.log_prob(x)
    torch.manual_seed(3)  # the same padding draws, unscaled by the data's statistics
    expected = raw.log_prob((x - model.data_loc) / model.data_scale) - model.data_scale.log().sum()
    torch.testing.assert_close(standardised, expected)

    logit = Flow.build("realnvp", 2, num_layers=2, logit_alpha=0.05, padding=Padding(1))
    samples = logit.sample((50,))
    assert samples.shape == (50, 2) and logit.distribution().support.check(samples).all()
    assert torch.isfinite(logit.log_prob(torch.rand(10, 2))).all()


def test_model_files_rebuild_the_same_padded_density(tmp_path):
    torch.manual_seed(0)
    spec = Padding(2, scale=0.5, learn_scale=True, particles=2)
    model = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[8], padding=spec)
    with torch.no_grad():
        model.padding_log_scale.fill_(math.log(0.3))  # a "learned" value, not the recipe's
    model.standardize_with(torch.randn(50, 2) * 2.0)
    path = save_checkpoint(
        tmp_path / "model.pt", {"config": model.config, "model": model.state_dict()}
    )
    loaded = load_model(path)
    assert loaded.padding == spec and loaded.config == model.config
    assert loaded.config["padding"] == spec.to_dict()
    assert float(loaded.padding_log_scale.detach().exp()) == pytest.approx(0.3)
    x = torch.randn(6, 2)
    torch.manual_seed(5)
    expected = model.log_prob(x)
    torch.manual_seed(5)
    assert torch.equal(loaded.log_prob(x), expected)
    assert Flow.from_config(model.config).padding == spec

    # a checkpoint of a padded model does not fit an unpadded one, and says why
    plain = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[8])
    with pytest.raises(CheckpointMismatchError, match="padding: model has None"):
        check_config(plain.config, model.config, "padded.pt")


def test_a_recipe_without_padding_loads_as_an_unpadded_model():
    old = {"name": "nice", "input_dim": 2, "context_dim": 0, "options": {"num_layers": 2}}
    assert "padding" not in read_recipe(old)
    model = Flow.from_config(old)
    assert model.padding is None and model.flow.input_dim == 2
    assert "padding" not in model.config and "padding_log_scale" not in model.state_dict()
    assert read_recipe({**old, "padding": None}) == read_recipe(old)


@pytest.mark.parametrize(
    "spec,message",
    [
        (dict(extra=0), "extra must be an int >= 1, got 0"),
        (dict(extra=1.5), "extra must be an int >= 1, got 1.5"),
        (dict(extra=2, kind="uniform"), "kind must be one of 'gaussian', 'zero', got 'uniform'"),
        (dict(extra=2, scale=0.0), "scale must be a finite number > 0, got 0.0"),
        (dict(extra=2, scale=-1), "scale must be a finite number > 0, got -1"),
        (dict(extra=2, scale=math.inf), "scale must be a finite number > 0, got inf"),
        (dict(extra=2, particles=0), "particles must be an int >= 1, got 0"),
        (dict(extra=2, learn_scale="yes"), "learn_scale must be True or False, got 'yes'"),
        (dict(extra=2, kind="zero", scale=0.5), "kind 'zero' takes no scale=0.5"),
    ],
)
def test_bad_specs_name_what_is_expected_and_what_was_given(spec, message):
    with pytest.raises(OptionError, match="^Padding " + _escape(message)):
        Padding(**spec)
    with pytest.raises(OptionError, match=_escape(message)):
        Flow.build("realnvp", 2, num_layers=2, padding=spec)


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_bad_padding_elsewhere_gives_short_errors():
    with pytest.raises(OptionError, match=r"no field.*'size'"):
        Padding.from_dict({"extra": 2, "size": 3})
    with pytest.raises(ValueError, match="padding needs vector data"):
        Flow.build("elementwise_affine", (1, 4, 4), padding=Padding(1))
    recipe = {"name": "nice", "input_dim": 2, "context_dim": 0, "options": {}}
    with pytest.raises(ModelFileError, match=r"old\.pt: recipe field 'padding': Padding extra"):
        read_recipe({**recipe, "padding": {"extra": -1}}, "old.pt")
    with pytest.raises(ValueError, match="particles must be an int >= 1"):
        Flow.build("nice", 2, padding=Padding(1)).log_prob_bound(torch.zeros(2), particles=0)


def test_cli_fits_a_padded_model_and_evaluate_reports_the_bound(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["fit", "--data", "moons", "--pad", "2", "--epochs", "1", "--num-samples", "300"]
    assert main([*args, "--pad-scale", "0.5", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["padding"] == Padding(2, scale=0.5).to_dict()
    assert sorted(metrics["test"]) == ["nll_bound"]
    assert load_model(out).config["padding"] == metrics["padding"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--data", "moons"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated == metrics["test"]  # the same seeded draws of the padding
    samples = tmp_path / "s.npy"
    assert main(["sample", "--model", str(out), "-n", "20", "--out", str(samples)]) == 0
    assert np.load(samples).shape == (20, 2)
    assert main([*args, "--pad-kind", "zero", "--out", str(tmp_path / "zero"), "--quiet"]) == 0
    assert sorted(json.loads((tmp_path / "zero" / "metrics.json").read_text())["test"]) == [
        "nll_at_zero_padding"
    ]
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = main([*args[:3], "--pad-kind", "zero", "--out", str(tmp_path / "x"), "--quiet"])
    assert status == 2 and "add --pad N" in capsys.readouterr().err


def test_diagnostics_of_a_padded_model_say_how_to_measure_its_flow():
    from pyroflows.diagnostics import condition_numbers, layer_report

    model = Flow.build("realnvp", 2, num_layers=2, padding=Padding(2, "gaussian", scale=0.5))
    x = torch.randn(6, 2)
    for diagnose in (condition_numbers, layer_report):
        with pytest.raises(ValueError, match=r"model\.flow\.inv at model\.flow_points\(x\)"):
            diagnose(model, x)
    assert condition_numbers(model.flow.inv, model.flow_points(x)).condition.shape == (6,)
