"""train_guide() and ElboTrace: Pyro-identical SVI with one optimizer, known posteriors.

The conjugate model mu ~ N(0, 1), y_i ~ N(mu, 1), i = 1..20 has the posterior
N(sum(y) / 21, 1 / 21) (sd 0.218) and the evidence y ~ N(0, I + 11^T); AutoNormal can
represent the posterior exactly, so SVI should find it and its ELBO should reach log p(y).
Tolerances are 2-4x the largest error measured over 6 seeds (noted at each test).
"""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    RenyiELBO,
    ReweightedWakeSleep,
    Trace_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal

from pyroflows.infer import svi as svi_module
from pyroflows.infer.svi import ElboTrace, NonFiniteLossError, train_guide

N = 20
Y = torch.randn(N, generator=torch.Generator().manual_seed(0)) + 1.0
POST_LOC = float(Y.sum()) / (N + 1)
POST_SD = (1.0 / (N + 1)) ** 0.5
LOG_EVIDENCE = float(
    dist.MultivariateNormal(torch.zeros(N), torch.eye(N) + torch.ones(N, N)).log_prob(Y)
)


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def model_with_prior_mean(y):
    """Empirical Bayes: the prior mean b is a model parameter; argmax_b log p(y | b) = mean(y)."""
    b = pyro.param("b", torch.tensor(0.0))
    mu = pyro.sample("mu", dist.Normal(b, 1.0))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def _guide_loc_scale(guide) -> tuple[float, float]:
    if isinstance(guide, AutoNormal):
        return guide.locs.mu.item(), guide.scales.mu.item()
    return guide.loc.item(), guide.scale.item()


def test_autonormal_finds_the_conjugate_posterior_and_the_elbo_reaches_the_evidence():
    guide = AutoNormal(model)
    trace = train_guide(
        model,
        guide,
        Y,
        num_steps=200,
        lr=0.08,
        schedule="cosine",
        num_particles=4,
        vectorize_particles=True,
        seed=0,
        progress=False,
    )
    loc, scale = _guide_loc_scale(guide)
    # measured over 6 seeds: |loc error| <= 0.016, |scale error| <= 0.015, ELBO gap <= 0.015
    assert abs(loc - POST_LOC) < 0.05
    assert abs(scale - POST_SD) < 0.03
    assert abs(trace.smoothed(50)[-1] + LOG_EVIDENCE) < 0.05
    assert len(trace.loss) == len(trace.seconds) == 200 and not trace.stopped_early
    assert trace.seconds == sorted(trace.seconds) and trace.seconds_per_step > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("make_loss", "guide_class"),
    [
        (lambda: TraceGraph_ELBO(num_particles=4, vectorize_particles=True), AutoNormal),
        (lambda: TraceMeanField_ELBO(num_particles=4, vectorize_particles=True), AutoNormal),
        (lambda: RenyiELBO(alpha=0.5, num_particles=4, vectorize_particles=True), AutoNormal),
        (
            lambda: JitTrace_ELBO(
                num_particles=4, vectorize_particles=True, ignore_jit_warnings=True
            ),
            AutoDiagonalNormal,
        ),
    ],
    ids=["TraceGraph", "TraceMeanField", "Renyi0.5", "JitTrace+AutoDiagonalNormal"],
)
def test_every_pyro_elbo_converges(make_loss, guide_class):
    guide = guide_class(model)
    train_guide(
        model,
        guide,
        Y,
        num_steps=200,
        lr=0.08,
        loss=make_loss(),
        schedule="cosine",
        seed=1,
        progress=False,
    )
    loc, scale = _guide_loc_scale(guide)
    # measured over 6 seeds: loc error <= 0.027, scale error <= 0.023 (Renyi; others <= 0.016)
    assert abs(loc - POST_LOC) < 0.08
    assert abs(scale - POST_SD) < 0.06


def test_same_trajectory_as_pyro_svi():
    """Adam is element-wise: one optimizer over all tensors steps exactly as one per tensor."""
    steps = 25
    pyro.set_rng_seed(3)
    guide = AutoNormal(model_with_prior_mean)
    pyro_svi = SVI(model_with_prior_mean, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    pyro_losses = [pyro_svi.step(Y) for _ in range(steps)]
    expected = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    # Pyro keeps one torch optimizer per parameter tensor: b, locs.mu, scales.mu
    assert len(pyro_svi.optim.optim_objs) == 3

    pyro.clear_param_store()
    guide = AutoNormal(model_with_prior_mean)
    trace = train_guide(
        model_with_prior_mean, guide, Y, num_steps=steps, lr=0.05, seed=3, progress=False
    )
    assert trace.loss == pytest.approx(pyro_losses, rel=1e-5)
    got = dict(pyro.get_param_store().items())
    assert got.keys() == expected.keys() == {"b", "AutoNormal.locs.mu", "AutoNormal.scales.mu"}
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_plain_callable_loss_and_reweighted_wake_sleep():
    reference = train_guide(model, AutoNormal(model), Y, num_steps=10, seed=4, progress=False)
    pyro.clear_param_store()
    callable_loss = Trace_ELBO().differentiable_loss  # loss(model, guide, *args) -> tensor
    same = train_guide(
        model, AutoNormal(model), Y, num_steps=10, loss=callable_loss, seed=4, progress=False
    )
    assert same.loss == pytest.approx(reference.loss, rel=1e-6)

    pyro.clear_param_store()

    def guide(y):
        loc = pyro.param("loc", torch.tensor(0.0))
        scale = pyro.param("scale", torch.tensor(0.5), constraint=dist.constraints.positive)
        pyro.sample("mu", dist.Normal(loc, scale))

    rws = ReweightedWakeSleep(num_particles=8, vectorize_particles=True, max_plate_nesting=1)
    trace = train_guide(
        model,
        guide,
        Y,
        num_steps=150,
        lr=0.1,
        loss=rws,
        schedule="cosine",
        seed=0,
        progress=False,
    )
    assert all(isinstance(value, float) for value in trace.loss)  # the model's (wake) loss
    # measured over 6 seeds: loc error <= 0.039, scale error <= 0.022
    assert abs(pyro.param("loc").item() - POST_LOC) < 0.08
    assert abs(pyro.param("scale").item() - POST_SD) < 0.06


def test_one_fused_optimizer_trains_guide_and_model_parameters(monkeypatch):
    made = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            made.append(self)

    monkeypatch.setitem(svi_module._OPTIMIZERS, "adam", RecordingAdam)
    guide = AutoNormal(model_with_prior_mean)
    train_guide(
        model_with_prior_mean,
        guide,
        Y,
        num_steps=200,
        lr=0.1,
        schedule="cosine",
        num_particles=4,
        vectorize_particles=True,
        seed=0,
        progress=False,
    )
    assert len(made) == 1
    (optimizer,) = made
    assert optimizer.defaults["fused"] is True  # float32 on the CPU
    stepped = {id(p) for group in optimizer.param_groups for p in group["params"]}
    store = pyro.get_param_store()
    assert stepped == {id(store.get_param(name).unconstrained()) for name in store.keys()}
    assert len(stepped) == 3  # the model's b and the guide's loc and scale
    # argmax_b log p(y | b) = mean(y); measured over 6 seeds: b error <= 0.039, loc error
    # (given b) <= 0.011, scale error <= 0.017
    b = pyro.param("b").item()
    assert abs(b - float(Y.mean())) < 0.1
    loc, scale = _guide_loc_scale(guide)
    assert abs(loc - (float(Y.sum()) + b) / (N + 1)) < 0.04
    assert abs(scale - POST_SD) < 0.05


def test_parameters_created_on_a_later_step_are_trained_as_pyro_svi_trains_them():
    def make_guide():
        calls = {"n": 0}

        def guide(y):
            calls["n"] += 1
            loc = pyro.param("loc", torch.tensor(0.0))
            if calls["n"] >= 4:  # created lazily on the 4th step
                loc = loc + pyro.param("late", torch.tensor(0.0))
            pyro.sample("mu", dist.Normal(loc, POST_SD))

        return guide

    pyro.set_rng_seed(0)
    pyro_svi = SVI(model, make_guide(), pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(12):
        pyro_svi.step(Y)
    expected = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}

    pyro.clear_param_store()
    train_guide(model, make_guide(), Y, num_steps=12, lr=0.1, seed=0, progress=False)
    got = dict(pyro.get_param_store().items())
    assert got.keys() == {"loc", "late"}
    assert got["late"].item() != 0.0
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.filterwarnings(r"ignore:Encountered \+inf:UserWarning")
@pytest.mark.parametrize("gradient_only", [False, True], ids=["inf-loss", "nan-gradient"])
def test_non_finite_loss_raises_naming_the_step_and_keeps_the_last_good_parameters(
    gradient_only,
):
    poison = {"on": False}

    def poisoned(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        if poison["on"]:
            # sqrt(mu - mu) = 0 has a NaN gradient; the other factor makes the loss infinite
            pyro.factor("boom", torch.sqrt(mu - mu) if gradient_only else mu + math.inf)

    snapshots = {}

    def remember(step, loss):
        snapshots[step] = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        poison["on"] = step == 4

    guide = AutoNormal(poisoned)
    with pytest.raises(NonFiniteLossError, match="step 5 of 10"):
        train_guide(poisoned, guide, Y, num_steps=10, progress=False, seed=0, callback=remember)
    assert sorted(snapshots) == [1, 2, 3, 4]
    assert snapshots[4].keys() == {"AutoNormal.locs.mu", "AutoNormal.scales.mu"}
    for name, value in pyro.get_param_store().items():
        assert torch.isfinite(value).all()
        torch.testing.assert_close(value, snapshots[4][name], rtol=0, atol=0, msg=name)
        assert not torch.equal(value, snapshots[1][name])  # it did train before step 5


def test_callback_stops_early():
    seen = []

    def callback(step, loss):
        seen.append((step, loss))
        return step == 7

    trace = train_guide(
        model, AutoNormal(model), Y, num_steps=50, progress=False, callback=callback
    )
    assert [step for step, _ in seen] == list(range(1, 8))
    assert [loss for _, loss in seen] == trace.loss
    assert len(trace.loss) == 7 and trace.stopped_early


def test_cosine_schedule_custom_optimizer_and_clipping():
    made = []

    def factory(params, lr):
        made.append(torch.optim.SGD(params, lr=lr))
        return made[-1]

    trace = train_guide(
        model,
        AutoNormal(model),
        Y,
        num_steps=20,
        lr=0.01,
        optimizer=factory,
        schedule="cosine",
        clip_grad_norm=1.0,
        seed=0,
        progress=False,
    )
    assert len(made) == 1 and len(trace.loss) == 20
    last_lr = 0.01 * 0.5 * (1 + math.cos(math.pi * 19 / 20))
    assert made[0].param_groups[0]["lr"] == pytest.approx(last_lr)


def test_progress_bar_runs(capsys):
    trace = train_guide(model, AutoNormal(model), Y, num_steps=12, progress=True, seed=0)
    assert len(trace.loss) == 12
    assert "12/12" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "linear"}, "schedule"),
        ({"loss": Trace_ELBO(), "num_particles": 4}, "num_particles"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"num_steps": -1}, "num_steps"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_guide(model, AutoNormal(model), Y, progress=False, **kwargs)


def test_elbo_trace_smoothing_serialisation_and_plot():
    losses = [float(v) for v in torch.linspace(10.0, 1.0, 120)]
    trace = ElboTrace(loss=losses, seconds=[0.1 * (i + 1) + (i == 0) for i in range(120)])
    smoothed = trace.smoothed(window=50)
    windows = [losses[max(0, i - 49) : i + 1] for i in range(120)]
    naive = [sum(window) / len(window) for window in windows]
    assert smoothed.tolist() == pytest.approx(naive)
    assert trace.elbo == [-v for v in losses]
    assert trace.seconds_per_step == pytest.approx(0.1)  # the slow first step is excluded
    restored = ElboTrace(**json.loads(json.dumps(trace.to_dict())))
    assert restored == trace

    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = trace.plot(window=20, log_x=True)
    assert ax.get_ylabel() == "-ELBO" and ax.get_xscale() == "log"
    raw, smooth = ax.get_lines()
    assert raw.get_alpha() < 1 and list(smooth.get_ydata()) == pytest.approx(
        trace.smoothed(20).tolist()
    )
    plt.close(ax.figure)


# -- checkpoints ----------------------------------------------------------------------------------
def _resumable_run(path, num_steps, stop_after=None, resume=False, lr=0.02, **options):
    """AutoFlow on a conjugate model; optionally stopped early by the callback."""
    from pyroflows.infer import AutoFlow

    def model(y):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0).to_event(1), obs=y)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    y = torch.linspace(-1.0, 2.0, 24).reshape(12, 2)
    guide = AutoFlow(model, "iaf", num_layers=2, hidden_dims=[8])
    trace = train_guide(
        model,
        guide,
        y,
        num_steps=num_steps,
        lr=lr,
        schedule="cosine",
        num_particles=2,
        vectorize_particles=True,
        progress=False,
        checkpoint=path,
        checkpoint_every=3,
        resume=resume,
        callback=(lambda step, loss: step == stop_after) if stop_after else None,
        **options,
    )
    return guide, trace


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    whole, whole_trace = _resumable_run(tmp_path / "whole.pt", 20)
    _, stopped_trace = _resumable_run(tmp_path / "run.pt", 20, stop_after=8)
    assert len(stopped_trace.loss) == 8 and stopped_trace.stopped_early
    resumed, resumed_trace = _resumable_run(tmp_path / "run.pt", 20, resume=True)
    assert not resumed_trace.stopped_early
    assert resumed_trace.loss == whole_trace.loss  # the same 20 losses, bit for bit
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(resumed_trace.seconds) == 20


def test_resume_without_a_file_raises_and_a_foreign_checkpoint_is_refused(tmp_path):
    """Row 40: resume=True with a missing file raises as fit() does (it used to start afresh)."""
    from pyroflows.checkpoint import CheckpointMismatchError, save_checkpoint

    with pytest.raises(FileNotFoundError, match="resume=True but there is no checkpoint at"):
        _resumable_run(tmp_path / "new.pt", 4, resume=True)
    assert not (tmp_path / "new.pt").exists()
    save_checkpoint(tmp_path / "other.pt", {"format": "something else"})
    with pytest.raises(CheckpointMismatchError, match="not a train_guide checkpoint"):
        _resumable_run(tmp_path / "other.pt", 4, resume=True)
    with pytest.raises(ValueError, match="resume=True needs the checkpoint file"):
        train_guide(lambda: None, lambda: None, resume=True)


def test_a_checkpoint_of_other_parameters_is_refused(tmp_path):
    from pyroflows.checkpoint import CheckpointMismatchError

    def model():
        pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    def run(guide, resume):
        pyro.clear_param_store()
        train_guide(
            model, guide, num_steps=2, progress=False, checkpoint=tmp_path / "c.pt", resume=resume
        )

    run(AutoNormal(model), resume=False)
    with pytest.raises(CheckpointMismatchError, match="holds parameters"):
        run(AutoDiagonalNormal(model), resume=True)


def test_a_truncated_checkpoint_is_a_model_file_error_naming_the_file_row_40(tmp_path):
    from pyroflows.errors import ModelFileError

    path = tmp_path / "run.pt"
    _resumable_run(path, 3)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match=rf"{path.name} is not a readable .*truncated") as info:
        _resumable_run(path, 6, resume=True)
    assert "Errno" not in str(info.value)


def _scale_model(data):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 5.0).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("obs", dist.Normal(loc, scale[..., None]).to_event(1), obs=data)


@pytest.mark.filterwarnings(r"ignore:Encountered \+inf:UserWarning")
@pytest.mark.parametrize("guide_kind", ["AutoNormal", "AutoFlow"])
def test_a_huge_rate_raises_non_finite_and_restores_the_last_good_parameters_row_63(guide_kind):
    """Row 63: lr=1e6 made Pyro's validation fail at step 2 with parameters left at 1e6."""
    from pyroflows.infer import AutoFlow

    data = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
    guide = (
        AutoNormal(_scale_model) if guide_kind == "AutoNormal" else AutoFlow(_scale_model, "iaf")
    )
    pyro.set_rng_seed(0)
    guide(data)  # creates the parameters at their initial values
    initial = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    with pytest.raises(
        NonFiniteLossError, match=r"invalid values at step 2 of 50 .*step 1"
    ) as info:
        train_guide(_scale_model, guide, data, num_steps=50, lr=1e6, progress=False)
    assert isinstance(info.value.__cause__, ValueError)  # Pyro's own error, chained
    for name, value in pyro.get_param_store().items():
        torch.testing.assert_close(value, initial[name], rtol=0, atol=0, msg=name)


def test_resume_refuses_changed_settings_and_applies_overrides(tmp_path):
    """Issue 13 item 6: train_guide's resume compares settings as fit's does (cf. row 64)."""
    from pyroflows.checkpoint import load_checkpoint
    from pyroflows.errors import OptionError, SettingsChangedError

    path = tmp_path / "run.pt"
    _resumable_run(path, 20, stop_after=8)
    with pytest.raises(SettingsChangedError, match=r"lr 0\.02 -> 0\.1.*override=\{'lr': 0\.1\}"):
        _resumable_run(path, 20, resume=True, lr=0.1)
    with pytest.raises(SettingsChangedError, match=r"num_steps 20 -> 30"):
        _resumable_run(path, 30, resume=True)
    with pytest.raises(OptionError, match="seed cannot change"):
        _resumable_run(path, 20, resume=True, override={"seed": 3})
    _, trace = _resumable_run(path, 20, resume=True, override={"lr": 0.01, "num_steps": 30})
    assert len(trace.loss) == 30
    assert trace.overrides == [{"step": 8, "settings": {"num_steps": [20, 30], "lr": [0.02, 0.01]}}]
    saved = load_checkpoint(path)
    assert saved["rate"] == {"lr": 0.01, "schedule": "cosine", "start_step": 8, "total_steps": 30}
    assert saved["settings"]["num_steps"] == 30 and saved["settings"]["lr"] == 0.01
