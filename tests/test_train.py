"""fit(): learning, early stopping, non-finite guard, checkpoints, exact resume.

Distributed training (torchrun, 2 processes) is in ``integration/test_ddp.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyroflows.checkpoint import (
    CheckpointMismatchError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from pyroflows.data import make_toy
from pyroflows.distributions import Flow
from pyroflows.train import NonFiniteLossError, fit, validate_data

WORKER = Path(__file__).parent / "integration" / "fit_worker.py"
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}


def _small_model(seed: int = 0) -> Flow:
    torch.manual_seed(seed)
    return Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])


def _assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


def test_fit_lowers_the_validation_nll_and_keeps_the_best_epoch():
    model = _small_model()
    data = make_toy("moons", 1024, seed=0)
    validation = make_toy("moons", 512, seed=1)
    gaussian = torch.distributions.MultivariateNormal(data.mean(0), torch.cov(data.T))
    gaussian_nll = float(-gaussian.log_prob(validation).mean())  # about 3.3
    history = fit(
        model, data, val_data=validation, epochs=4, lr=1e-2, batch_size=64, progress=False
    )
    assert history.epoch == [1, 2, 3, 4]
    assert history.val_nll[-1] < history.val_nll[0] < gaussian_nll - 0.1
    assert history.best_val_nll == min(history.val_nll)
    assert history.best_epoch == 1 + history.val_nll.index(history.best_val_nll)
    assert len(history.seconds) == 4 and history.seconds == sorted(history.seconds)


def test_early_stopping_restores_the_best_parameters():
    model = _small_model()
    data = make_toy("moons", 512, seed=0)
    validation = make_toy("moons", 256, seed=1)
    history = fit(model, data, val_data=validation, epochs=30, lr=0.05, patience=2, progress=False)
    assert history.stopped_early and len(history.epoch) < 30
    assert history.best_epoch == len(history.epoch) - 2
    with torch.no_grad():
        nll = -model.log_prob(validation).mean()
    assert float(nll) == pytest.approx(history.best_val_nll, rel=1e-5)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_parameters():
    model = _small_model()
    data = make_toy("moons", 256, seed=0)
    calls = {"count": 0}
    original = model.forward

    def poisoned(x, context=None):
        calls["count"] += 1
        log_prob = original(x, context)
        return log_prob * float("nan") if calls["count"] == 3 else log_prob

    model.forward = poisoned
    snapshot = {}

    def remember(*_):
        snapshot.update({k: v.clone() for k, v in model.state_dict().items()})

    handle = torch.nn.Module.register_forward_pre_hook(model, remember)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3 .*not applied"):
        fit(model, data, batch_size=64, val_fraction=0, progress=False)
    handle.remove()
    _assert_same_state(model.state_dict(), snapshot)


def test_bad_data_is_refused_with_the_rows_named():
    model = _small_model()
    data = make_toy("moons", 64, seed=0)
    data[[5, 17]] = float("inf")
    with pytest.raises(ValueError, match=r"2 row\(s\): \[5, 17\]"):
        fit(model, data, progress=False)
    with pytest.raises(ValueError, match=r"shape \(N, 2\), got \(64, 3\)"):
        fit(model, torch.randn(64, 3), progress=False)
    with pytest.raises(ValueError, match="no rows"):
        validate_data(torch.zeros(0, 2), 2)


def test_checkpoints_are_atomic_and_refuse_another_architecture(tmp_path):
    path = tmp_path / "run" / "state.pt"
    model = _small_model()
    fit(model, make_toy("moons", 256), epochs=1, checkpoint=path, progress=False)
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temporary left over
    saved = load_checkpoint(path)
    assert saved["config"] == model.config and saved["state"]["epoch"] == 1
    other = Flow.build("realnvp", 2, num_layers=3, hidden_dims=[16])
    with pytest.raises(CheckpointMismatchError, match="num_layers"):
        fit(other, make_toy("moons", 256), epochs=2, checkpoint=path, resume=True)
    # Same recipe, other weights shape (config edited by hand): the state_dict check catches it.
    foreign = Flow(other.flow, config=model.config)
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        fit(foreign, make_toy("moons", 256), epochs=2, checkpoint=path, resume=True)
    rebuilt = load_model(path)
    _assert_same_state(rebuilt.state_dict(), model.state_dict())


def test_checkpoints_load_without_unpickling_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Path("x")}, path)  # a pickled class instance
    with pytest.raises(ValueError, match="not a readable pyroflows checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_after_max_steps_matches_an_uninterrupted_run(tmp_path):
    data = make_toy("moons", 640, seed=3)
    settings = {"epochs": 3, "batch_size": 64, "progress": False, "checkpoint_every": 2}
    straight = _small_model()
    fit(straight, data, checkpoint=tmp_path / "a.pt", **settings)
    interrupted = _small_model()
    fit(interrupted, data, checkpoint=tmp_path / "b.pt", max_steps=13, **settings)
    assert load_checkpoint(tmp_path / "b.pt")["state"]["batch"] == 4  # mid-epoch 2
    resumed = _small_model(seed=1)  # other initial weights: all must come from the checkpoint
    history = fit(resumed, data, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    _assert_same_state(resumed.state_dict(), straight.state_dict())
    reference = load_checkpoint(tmp_path / "a.pt")["history"]
    assert history.val_nll == reference["val_nll"] and history.train_nll == reference["train_nll"]


@pytest.mark.integration
def test_a_killed_run_resumes_to_the_same_parameters(tmp_path):
    """Kill a training process mid-epoch (SIGKILL), resume it in a new process."""
    checkpoint = tmp_path / "killed.pt"
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), str(checkpoint), str(tmp_path / "unused.pt"), "--slow"],
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if checkpoint.exists():
                state = load_checkpoint(checkpoint)["state"]
                if state["step"] >= 11 and state["batch"] > 0:  # mid-epoch 2
                    break
            assert worker.poll() is None, "the worker ended before it could be killed"
            time.sleep(0.05)
        worker.kill()
        worker.wait()
    finally:
        if worker.poll() is None:
            worker.kill()
    state = load_checkpoint(checkpoint)["state"]
    assert 0 < state["step"] < 27, state  # killed before the end
    run = [sys.executable, str(WORKER)]
    subprocess.run(
        [*run, str(checkpoint), str(tmp_path / "resumed.pt"), "--resume"], env=ENV, check=True
    )
    subprocess.run(
        [*run, str(tmp_path / "straight_ckpt.pt"), str(tmp_path / "straight.pt")],
        env=ENV,
        check=True,
    )
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    straight = torch.load(tmp_path / "straight.pt", weights_only=True)
    _assert_same_state(resumed, straight)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "state.pt", {"step": 1})

    def broken_save(payload, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def _compile_data() -> torch.Tensor:
    return make_toy("moons", 600, seed=4)  # 540 training rows: a ragged last batch of 28


_COMPILE_SETTINGS = {"epochs": 2, "batch_size": 64, "progress": False}


def _compiled_and_eager_runs(tmp_path, compile_option):
    data = _compile_data()
    eager = _small_model()
    eager_history = fit(eager, data, **_COMPILE_SETTINGS)
    compiled = _small_model()
    history = fit(compiled, data, compile=compile_option, **_COMPILE_SETTINGS)
    return eager, eager_history, compiled, history


def test_compiled_fit_follows_the_eager_loss_trajectory_and_resumes(tmp_path):
    # aot_eager: dynamo and AOTAutograd (the compiled forward and backward graphs) without
    # inductor's code generation, cheap enough for every CI run; inductor is the slow test.
    option = {"backend": "aot_eager"}
    eager, eager_history, compiled, history = _compiled_and_eager_runs(tmp_path, option)
    torch.testing.assert_close(history.train_nll, eager_history.train_nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(history.val_nll, eager_history.val_nll, rtol=1e-5, atol=1e-5)
    _assert_same_state(compiled.state_dict(), eager.state_dict(), atol=1e-5)
    # A compiled run stopped mid-epoch writes a plain checkpoint ...
    data = _compile_data()
    path = tmp_path / "run.pt"
    fit(_small_model(), data, checkpoint=path, max_steps=11, compile=option, **_COMPILE_SETTINGS)
    saved = load_checkpoint(path)
    assert saved["state"]["batch"] == 2  # mid-epoch 2
    assert saved["model"].keys() == eager.state_dict().keys()  # no "_orig_mod." prefix
    assert saved["best_model"].keys() == eager.state_dict().keys()
    # ... which an eager run resumes to the end of the uninterrupted run.
    resumed = _small_model(seed=1)
    fit(resumed, data, checkpoint=path, resume=True, **_COMPILE_SETTINGS)
    _assert_same_state(resumed.state_dict(), eager.state_dict(), atol=1e-5)


@pytest.mark.slow
def test_fit_compiled_with_inductor_follows_the_eager_loss_trajectory(tmp_path):
    eager, eager_history, compiled, history = _compiled_and_eager_runs(tmp_path, True)
    torch.testing.assert_close(history.train_nll, eager_history.train_nll, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(history.val_nll, eager_history.val_nll, rtol=1e-4, atol=1e-4)
    _assert_same_state(compiled.state_dict(), eager.state_dict(), atol=1e-4)
