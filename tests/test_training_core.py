"""The training core shared by fit() and train_guide(): schedule, guard, RNG, run state."""

from __future__ import annotations

import math
import random
from functools import partial

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoNormal

from pyroflows import train
from pyroflows._training import (
    LearningRate,
    NonFiniteGuard,
    NonFiniteLossError,
    adam,
    capture_rng,
    restore_rng,
    skips_on_device,
)
from pyroflows.checkpoint import load_checkpoint, save_checkpoint
from pyroflows.data import make_toy
from pyroflows.distributions import Flow
from pyroflows.infer import NonFiniteLossError as InferNonFiniteLossError
from pyroflows.infer import svi as svi_module
from pyroflows.infer.svi import train_guide
from pyroflows.train import fit


def _small_model(seed: int = 0) -> Flow:
    torch.manual_seed(seed)
    return Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])


def _message(step, loss, norm):
    return f"bad step {step}"


def test_one_error_class_everywhere():
    assert train.NonFiniteLossError is NonFiniteLossError is InferNonFiniteLossError
    assert svi_module.NonFiniteLossError is NonFiniteLossError


def test_cosine_rate_is_the_closed_form_and_bad_schedules_are_refused():
    rate = LearningRate(0.2, "cosine", total_steps=10)
    for step in range(11):
        assert rate.at(step) == pytest.approx(0.1 * (1 + math.cos(math.pi * step / 10)), abs=1e-15)
    assert LearningRate(0.2, "constant", 10).at(7) == LearningRate(0.2, None, 10).at(7) == 0.2
    with pytest.raises(ValueError, match="schedule must be"):
        LearningRate(0.2, "linear", 10)
    old = LearningRate(0.2, "cosine", 10).state_dict(4)  # what older versions resume from
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.2), T_max=10
    )
    assert old.keys() <= scheduler.state_dict().keys()
    assert old["last_epoch"] == 4 and old["_last_lr"] == [rate.at(4)]


def test_fit_records_the_shared_schedule():
    model = _small_model()
    data = make_toy("moons", 256, seed=0)
    history = fit(model, data, epochs=3, batch_size=64, lr=0.01, val_fraction=0, progress=False)
    rate = LearningRate(0.01, "cosine", total_steps=12)
    assert history.lr == [rate.at(4), rate.at(8), rate.at(12)]


@pytest.mark.parametrize("kind", [torch.optim.Adam, torch.optim.AdamW])
def test_fused_adam_skips_the_update_on_device_when_found_inf_is_set(kind):
    """The mechanism of the deferred guard (torch's _fused_adam honours found_inf)."""
    weight = torch.nn.Parameter(torch.randn(5, generator=torch.Generator().manual_seed(0)))
    optimizer = adam([weight], 0.1, kind, weight_decay=0.1)
    assert skips_on_device(optimizer)
    optimizer.found_inf = torch.zeros(())
    (weight**2).sum().backward()
    optimizer.step()
    before = weight.detach().clone()
    moments = {k: v.clone() for k, v in optimizer.state[weight].items()}
    optimizer.zero_grad()
    (weight * math.nan).sum().backward()
    optimizer.found_inf.fill_(1.0)
    optimizer.step()
    assert torch.equal(weight, before)
    for key, value in moments.items():  # moments and step count are left as they were
        assert torch.equal(optimizer.state[weight][key], value), key
    assert not skips_on_device(torch.optim.Adam([weight], lr=0.1))  # not fused


def test_deferred_guard_raises_at_the_read_back_naming_the_first_bad_step():
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = adam([weight], 0.1)
    guard = NonFiniteGuard(optimizer, torch.device("cpu"), _message, check_every=4)
    assert guard.deferred and optimizer.found_inf is not None
    values = [1.0, 2.0, math.inf, 3.0]  # step 12 is bad; 13 is fine but must not apply either
    for step, value in zip(range(10, 13), values, strict=False):
        guard.check(torch.tensor(value), torch.tensor(1.0), step)  # no raise: not read yet
    assert float(optimizer.found_inf) == 1.0
    with pytest.raises(NonFiniteLossError, match="bad step 12"):
        guard.check(torch.tensor(values[3]), torch.tensor(1.0), 13)
    with pytest.raises(ValueError, match="fused"):
        NonFiniteGuard(torch.optim.SGD([weight], lr=0.1), torch.device("cpu"), _message, 4)


def test_immediate_guard_raises_at_once_and_refresh_falls_back():
    weight = torch.nn.Parameter(torch.ones(2))
    guard = NonFiniteGuard(adam([weight], 0.1), torch.device("cpu"), _message)
    assert guard.check_every == 1  # on a CPU a host read costs nothing
    with pytest.raises(NonFiniteLossError, match="bad step 3"):
        guard.check(torch.tensor(1.0), torch.tensor(math.nan), 3)
    optimizer = adam([weight], 0.1)
    deferred = NonFiniteGuard(optimizer, torch.device("cpu"), _message, check_every=10)
    deferred.check(torch.tensor(1.0), None, 1)
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "fused": False})
    deferred.refresh()
    assert not deferred.deferred and not hasattr(optimizer, "found_inf")
    optimizer.zero_grad()
    weight.grad = torch.ones(2)
    optimizer.step()  # a non-fused group with found_inf set would fail here


def test_fit_with_deferred_checks_never_applies_a_non_finite_update(monkeypatch):
    """The GPU path, forced on the CPU: the bad step and later ones are skipped on device."""
    monkeypatch.setattr(train, "NonFiniteGuard", partial(NonFiniteGuard, check_every=4))
    reads = []
    original_sync = NonFiniteGuard.sync

    def counted_sync(self):
        reads.append(self._pending)
        return original_sync(self)

    monkeypatch.setattr(NonFiniteGuard, "sync", counted_sync)
    model = _small_model()
    data = make_toy("moons", 512, seed=0)
    calls = {"count": 0}
    original = model.forward
    snapshots = []

    def poisoned(x, context=None):
        calls["count"] += 1
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        log_prob = original(x, context)
        return log_prob * math.nan if calls["count"] == 6 else log_prob

    model.forward = poisoned
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 6;.*not applied"):
        fit(model, data, batch_size=64, val_fraction=0, progress=False)
    assert calls["count"] == 8  # read back after steps 4 and 8, not after every step
    assert [r for r in reads if r] == [4, 4]
    assert not all(torch.equal(snapshots[4][k], snapshots[0][k]) for k in snapshots[0])
    for key, value in model.state_dict().items():  # as before the bad step 6
        assert torch.equal(value, snapshots[5][key]), key


def test_deferred_fit_matches_immediate_fit_exactly(monkeypatch, tmp_path):
    data = make_toy("moons", 320, seed=2)
    settings = {"epochs": 2, "batch_size": 64, "progress": False, "checkpoint_every": 3}
    immediate = _small_model()
    history = fit(immediate, data, checkpoint=tmp_path / "a.pt", **settings)
    monkeypatch.setattr(train, "NonFiniteGuard", partial(NonFiniteGuard, check_every=50))
    deferred = _small_model()
    deferred_history = fit(deferred, data, checkpoint=tmp_path / "b.pt", **settings)
    for key, value in immediate.state_dict().items():
        assert torch.equal(value, deferred.state_dict()[key]), key
    assert history.train_nll == deferred_history.train_nll


def test_train_guide_with_deferred_checks_keeps_the_last_good_parameters(monkeypatch):
    def deferred(optimizer, device, describe):
        every = 3 if optimizer is not None else None
        return NonFiniteGuard(optimizer, device, describe, check_every=every)

    monkeypatch.setattr(svi_module, "NonFiniteGuard", deferred)
    poison = {"on": False}
    y = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 1.0

    def poisoned(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
        if poison["on"]:
            pyro.factor("boom", torch.sqrt(mu - mu))  # finite loss, NaN gradient

    snapshots = {}

    def remember(step, loss):
        snapshots[step] = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        poison["on"] = step == 4

    pyro.clear_param_store()
    with pytest.raises(NonFiniteLossError, match="step 5 of 10"):
        train_guide(poisoned, AutoNormal(poisoned), y, num_steps=10, progress=False, seed=0,
                    callback=remember)  # fmt: skip
    assert sorted(snapshots) == [1, 2, 3, 4, 5]  # step 5 ran; its update was skipped
    for name, value in pyro.get_param_store().items():
        assert torch.equal(value, snapshots[4][name]), name
        assert value.unconstrained().grad is None
    pyro.clear_param_store()


def test_rng_states_round_trip(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    states = capture_rng()
    path = save_checkpoint(tmp_path / "rng.pt", {"rng": states})
    first = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    restore_rng(load_checkpoint(path)["rng"])  # through a weights_only file
    second = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_run_state_round_trips_through_the_checkpoint_entries():
    state = train._RunState(epoch=2, batch=3, step=11, best=1.5, since_best=1, loss_sum=4.0)
    state.history.epoch.append(2)
    state.best_model = {"w": torch.ones(1)}
    saved = state.state_dict()
    assert set(saved) == {"state", "best_model", "history"}
    assert list(saved["state"]) == list(train._POSITION)
    again = train._RunState()
    again.load_state_dict(saved)
    assert again.state_dict()["state"] == saved["state"] and again.history.epoch == [2]


def test_a_checkpoint_with_an_old_scheduler_entry_resumes_exactly(tmp_path):
    """Checkpoints written by CosineAnnealingLR-based versions (scheduler state, initial_lr)."""
    data = make_toy("moons", 320, seed=3)
    settings = {"epochs": 2, "batch_size": 64, "progress": False}
    straight = _small_model()
    fit(straight, data, **settings)
    fit(_small_model(), data, checkpoint=tmp_path / "old.pt", max_steps=7, **settings)
    saved = load_checkpoint(tmp_path / "old.pt")
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3), T_max=10
    )
    for _ in range(7):
        scheduler.optimizer.step()
        scheduler.step()
    saved["scheduler"] = scheduler.state_dict()
    saved["optimizer"]["param_groups"][0]["initial_lr"] = 1e-3
    save_checkpoint(tmp_path / "old.pt", saved)
    resumed = _small_model(seed=1)
    fit(resumed, data, checkpoint=tmp_path / "old.pt", resume=True, **settings)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
