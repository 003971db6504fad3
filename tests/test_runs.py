"""Run folders and resume semantics (issue 13, probe rows 40-65 of the December 2026 review).

Resume compares settings and applies explicit overrides; a run folder is locked, never
overwritten silently, written atomically and durably, tied together by its manifest.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pyroflows.runs as runs
from pyroflows import _run_folder
from pyroflows._atomic import file_sha256
from pyroflows._run_folder import RunLock
from pyroflows._training import LearningRate, NonFiniteLossError
from pyroflows.checkpoint import load_checkpoint, save_checkpoint
from pyroflows.data import make_toy
from pyroflows.distributions import Flow
from pyroflows.errors import OptionError, RunFolderError, SettingsChangedError
from pyroflows.train import fit

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
SMALL = {"num_layers": 2, "hidden_dims": [8]}


def _run(out, data="moons", **options):
    """A tiny fit_run: 270 training rows, 5 steps per epoch."""
    settings = {"num_samples": 300, "epochs": 2, "batch_size": 64, "progress": False}
    return runs.fit_run(data, out, "realnvp", SMALL, **{**settings, **options})


def _metrics(out) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text())


def _model(seed: int = 0) -> Flow:
    torch.manual_seed(seed)
    return Flow.build("realnvp", 2, **SMALL)


DATA = make_toy("moons", 320, seed=3)  # 288 training rows: 9 steps of 32 per epoch
FIT = {"batch_size": 32, "progress": False, "lr": 0.01}


# -- resume semantics -----------------------------------------------------------------------------


def test_resume_refuses_every_changed_setting_and_names_it_row_64(tmp_path):
    _run(tmp_path, lr=0.01)
    before = (tmp_path / "metrics.json").read_text()
    with pytest.raises(SettingsChangedError, match=r"lr 0\.01 -> 0\.1.*override=\{'lr': 0\.1\}"):
        _run(tmp_path, lr=0.1, resume=True)
    with pytest.raises(SettingsChangedError, match=r"epochs 2 -> 6, batch_size 64 -> 32"):
        _run(tmp_path, lr=0.01, epochs=6, batch_size=32, resume=True)
    with pytest.raises(SettingsChangedError, match=r"--override epochs=6"):
        _run(tmp_path, lr=0.01, epochs=6, resume=True)
    with pytest.raises(SettingsChangedError, match=r"seed 0 -> 1.*cannot change"):
        _run(tmp_path, lr=0.01, seed=1, resume=True)
    with pytest.raises(SettingsChangedError, match=r"data 'moons' -> 'circles'.*cannot change"):
        _run(tmp_path, "circles", lr=0.01, resume=True)
    with pytest.raises(SettingsChangedError, match="num_samples 300 -> 600"):
        _run(tmp_path, lr=0.01, num_samples=600, resume=True)
    with pytest.raises(OptionError, match="seed cannot change"):
        _run(tmp_path, lr=0.01, resume=True, override={"seed": 1})
    with pytest.raises(OptionError, match="unknown setting colour"):
        _run(tmp_path, lr=0.01, resume=True, override={"colour": 1})
    with pytest.raises(OptionError, match="when resuming"):
        fit(_model(), DATA, epochs=1, override={"lr": 0.1}, progress=False)
    assert (tmp_path / "metrics.json").read_text() == before  # nothing was recorded


def test_fit_refuses_other_data_on_resume_row_64(tmp_path):
    path = tmp_path / "c.pt"
    fit(_model(), DATA, epochs=1, checkpoint=path, **FIT)
    with pytest.raises(SettingsChangedError, match=r"data 288 rows \(sha256 \w+\) -> 288 rows"):
        fit(
            _model(),
            make_toy("circles", 320, seed=3),
            epochs=1,
            checkpoint=path,
            resume=True,
            **FIT,
        )
    with pytest.raises(OptionError, match="data cannot change"):
        fit(_model(), DATA, epochs=1, checkpoint=path, resume=True, override={"data": 0}, **FIT)


def test_an_epochs_override_extends_the_schedule_without_climbing_back_row_64(tmp_path):
    path = tmp_path / "c.pt"
    fit(_model(), DATA, epochs=4, checkpoint=path, max_steps=18, **FIT)  # 2 of 4 epochs
    old = LearningRate(0.01, "cosine", 36)
    history = fit(
        _model(1), DATA, epochs=4, checkpoint=path, resume=True, override={"epochs": 6}, **FIT
    )
    segment = [history.lr[1], *history.lr[2:]]
    assert history.epoch == [1, 2, 3, 4, 5, 6]
    assert segment == sorted(segment, reverse=True) and history.lr[-1] == 0.0  # never climbs
    assert history.lr[2] == pytest.approx(LearningRate(old.at(18), "cosine", 54, 18).at(27))
    assert history.overrides == [{"step": 18, "epoch": 2, "settings": {"epochs": [4, 6]}}]
    # The checkpoint holds the settings as used: resuming it again needs no override.
    assert load_checkpoint(path)["settings"]["epochs"] == 6
    with pytest.warns(UserWarning, match=r"complete \(6 of 6 epochs\)"):
        fit(_model(1), DATA, epochs=6, checkpoint=path, resume=True, **FIT)


def test_an_override_is_reproduced_exactly_by_a_later_resume_row_64(tmp_path):
    fit(_model(), DATA, epochs=3, checkpoint=tmp_path / "a.pt", max_steps=9, **FIT)
    (tmp_path / "b.pt").write_bytes((tmp_path / "a.pt").read_bytes())
    change = {"lr": 0.003, "epochs": 4}
    whole = _model(1)
    fit(whole, DATA, epochs=3, checkpoint=tmp_path / "a.pt", resume=True, override=change, **FIT)
    # The same override, stopped half-way, then resumed with the new settings as they are.
    fit(_model(1), DATA, epochs=3, checkpoint=tmp_path / "b.pt", resume=True, override=change,
        max_steps=22, **FIT)  # fmt: skip
    parts = _model(2)
    history = fit(parts, DATA, **{**FIT, **change}, checkpoint=tmp_path / "b.pt", resume=True)
    for key, value in whole.state_dict().items():
        assert torch.equal(value, parts.state_dict()[key]), key
    assert history.lr[1] == pytest.approx(0.003 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 3))))


def test_a_batch_size_override_applies_from_the_next_epoch_row_64(tmp_path):
    path = tmp_path / "c.pt"
    fit(_model(), DATA, epochs=4, checkpoint=path, max_steps=13, **FIT)  # epoch 2, step 4 of 9
    history = fit(_model(1), DATA, epochs=4, checkpoint=path, resume=True,
                  override={"batch_size": 96, "weight_decay": 0.01}, **FIT)  # fmt: skip
    saved = load_checkpoint(path)
    # Epoch 2 ends with batches of 32 (5 more steps), epochs 3 and 4 take 3 steps of 96.
    assert saved["state"]["step"] == 13 + 5 + 2 * 3 and saved["state"]["batch_size"] == 96
    assert history.epoch == [1, 2, 3, 4] and history.lr[-1] == 0.0
    group = saved["optimizer"]["param_groups"][0]
    assert group["weight_decay"] == 0.01 and group["decoupled_weight_decay"]  # AdamW now
    assert history.overrides[0]["settings"] == {"batch_size": [32, 96], "weight_decay": [0.0, 0.01]}


def test_a_finished_cosine_run_needs_a_rate_to_be_extended_row_64(tmp_path):
    path = tmp_path / "c.pt"
    fit(_model(), DATA, epochs=1, checkpoint=path, **FIT)
    with pytest.raises(SettingsChangedError, match="decayed to 0"):
        fit(_model(), DATA, epochs=1, checkpoint=path, resume=True, override={"epochs": 2}, **FIT)
    history = fit(_model(), DATA, epochs=1, checkpoint=path, resume=True,
                  override={"epochs": 2, "lr": 0.001}, **FIT)  # fmt: skip
    assert history.epoch == [1, 2]
    rate = {"lr": 0.001, "schedule": "cosine", "start_step": 9, "total_steps": 18}
    assert load_checkpoint(path)["rate"] == rate


def _poison_after(monkeypatch, steps: int) -> None:
    """Make runs.fit's training steps return NaN after ``steps`` of them (a divergence)."""
    real_fit = runs.fit

    def diverging_fit(model, data, **options):
        original, calls = model.forward, [0]

        def forward(x, context=None):
            calls[0] += 1
            value = original(x, context)
            return value * float("nan") if calls[0] > steps else value

        model.forward = forward
        return real_fit(model, data, **options)

    monkeypatch.setattr(runs, "fit", diverging_fit)


def test_a_diverged_run_keeps_its_best_model_and_resumes_with_a_lower_rate_row_65(
    tmp_path, monkeypatch
):
    _poison_after(monkeypatch, 7)  # step 8, in epoch 2
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 8.*override=\{'lr'.*epoch 1\)"):
        _run(tmp_path, lr=0.01)
    assert _metrics(tmp_path)["best_epoch"] == 1 and "step 8" in _metrics(tmp_path)["diverged"]
    best = load_checkpoint(tmp_path / "model.pt")["model"]
    for key, value in load_checkpoint(tmp_path / "checkpoint.pt")["best_model"].items():
        assert torch.equal(value, best[key]), key
    monkeypatch.undo()
    with pytest.raises(SettingsChangedError, match=r"lr 0\.01 -> 0\.001"):
        _run(tmp_path, lr=0.001, resume=True)  # as the old error message advised: refused
    metrics = _run(tmp_path, lr=0.01, resume=True, override={"lr": 0.001})
    assert metrics["epochs_run"] == 2 and "diverged" not in metrics
    assert metrics["fit"]["lr"] == 0.001
    assert metrics["overrides"] == [{"step": 5, "epoch": 1, "settings": {"lr": [0.01, 0.001]}}]


def test_a_run_that_stopped_early_is_final_unless_overridden_row_62(tmp_path):
    settings = {"epochs": 50, "patience": 1, "lr": 0.5}
    _run(tmp_path, **settings)
    epochs = _metrics(tmp_path)["epochs_run"]
    assert epochs < 50
    model = file_sha256(tmp_path / "model.pt")
    for _ in range(2):
        with pytest.warns(UserWarning, match="stopped early at epoch .* is final"):
            _run(tmp_path, resume=True, **settings)
        assert _metrics(tmp_path)["epochs_run"] == epochs
        assert file_sha256(tmp_path / "model.pt") == model
    metrics = _run(tmp_path, resume=True, override={"patience": 3}, **settings)
    assert metrics["epochs_run"] > epochs and metrics["overrides"][0]["settings"] == {
        "patience": [1, 3]
    }


# -- run folders ----------------------------------------------------------------------------------


def test_a_folder_holding_a_run_is_not_overwritten_silently_row_51(tmp_path, monkeypatch):
    _run(tmp_path)
    held = r"holds a run \(checkpoint.pt, model.pt.*\(overwrite=True\)"
    with pytest.raises(RunFolderError, match=held):
        _run(tmp_path, "circles")
    with pytest.raises(OptionError, match="not both"):
        _run(tmp_path, resume=True, overwrite=True)
    real_fit = runs.fit

    def killed_fit(model, data, **options):  # run B writes a checkpoint, then dies
        real_fit(model, data, **{**options, "max_steps": 2, "checkpoint_every": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "fit", killed_fit)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "circles", overwrite=True)
    # Run A's files went first: nothing of A is left beside B's checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "run.json"]
    monkeypatch.undo()
    assert _run(tmp_path, "circles", resume=True)["data"] == "circles"


def test_a_second_process_is_locked_out_and_a_dead_ones_lock_taken_over_row_52(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pyroflows._run_folder import RunLock; "
         "RunLock.acquire(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
         str(tmp_path)],
        env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"in use by another .*pid {holder.pid} on"):
            _run(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock"]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=rf"stale lock of pid {holder.pid} on .* no longer"):
        _run(tmp_path)
    assert not (tmp_path / "run.lock").exists()


def test_the_lock_refuses_while_held_in_this_process_and_the_json_has_unique_temporaries(
    tmp_path,
):
    lock = RunLock.acquire(tmp_path)
    try:
        with pytest.raises(RunFolderError, match="in use"):
            _run(tmp_path)
    finally:
        lock.release()
    assert not (tmp_path / "run.lock").exists()
    from pyroflows._atomic import _temporary_path

    assert _temporary_path(tmp_path / "metrics.json") != _temporary_path(tmp_path / "metrics.json")


def test_stray_temporary_files_are_removed_at_the_next_start_row_49(tmp_path):
    _run(tmp_path)
    strays = [".checkpoint.pt.123-abcd1234.tmp", ".checkpoint.pt.k3j_x9aa", "metrics.json.tmp"]
    for name in strays:
        (tmp_path / name).write_bytes(b"half a file")
    with pytest.warns(UserWarning, match="complete"):
        _run(tmp_path, resume=True)
    assert not any((tmp_path / name).exists() for name in strays)


def test_run_files_get_the_mode_of_new_files_row_42(tmp_path):
    old = os.umask(0o022)
    try:
        _run(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(modes, 0o644) and "model.pt" in modes


def test_an_unwritable_folder_is_refused_before_training_row_50(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith("run.lock") and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(_run_folder.os, "open", read_only)
    monkeypatch.setattr(runs, "fit", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(RunFolderError, match=r"cannot write to the run folder .*Permission denied"):
        _run(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # and no empty folder is left


def test_a_failed_start_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="batch_size and epochs must be positive"):
        _run(tmp_path / "a", batch_size=0)
    with pytest.raises(FileNotFoundError):
        runs.fit_run(str(tmp_path / "missing.npy"), tmp_path / "b", epochs=1, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _run(tmp_path / "c", resume=True)
    assert sorted(tmp_path.iterdir()) == []


def test_every_run_file_is_fsynced_with_its_folder_power_loss(tmp_path, monkeypatch):
    """Not tested by the probe (power loss): file and folder fsync for every file of a run."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name the synced files")
    synced, real_fsync = [], os.fsync

    def recording(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    _run(tmp_path)
    names = [Path(path).name for path in synced]
    for name in ("checkpoint.pt", "model.pt", "history.json", "metrics.json", "run.json"):
        assert any(n.startswith(f".{name}.") and n.endswith(".tmp") for n in names), name
    assert names.count(tmp_path.name) >= 5  # the folder, after each rename


def test_the_manifest_ties_the_files_to_one_run(tmp_path):
    metrics = _run(tmp_path)
    manifest = json.loads((tmp_path / "run.json").read_text())
    run_id = manifest["run_id"]
    assert metrics["run_id"] == run_id and manifest["complete"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["run_id"] == run_id
    assert load_checkpoint(tmp_path / "model.pt")["run_id"] == run_id
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == file_sha256(tmp_path / name), name
    # A checkpoint of another run, put in by hand: refused on resume.
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    manifest["complete"] = False
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    save_checkpoint(tmp_path / "checkpoint.pt", {**saved, "run_id": "another"})
    with pytest.raises(RunFolderError, match=r"belongs to run another.*mixes two runs"):
        _run(tmp_path, epochs=3, resume=True, override={"epochs": 3})
    # A complete run whose file changed afterwards: refused.
    save_checkpoint(tmp_path / "checkpoint.pt", saved)
    manifest.update(complete=True, files={"checkpoint.pt": {"sha256": "0" * 64}})
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match=r"changed after run .* wrote it"):
        _run(tmp_path, resume=True)
