"""Model files: versioned recipes, checksums, hostile and corrupt files, NaN weights, contexts.

Each test names the row of the reliability probe (shared/reviews/reliability-2026-12.md) it
covers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import time
import warnings
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from pyroflows import _recipe
from pyroflows._allocation import AllocationLimitError, allocation_limit
from pyroflows._version import __version__
from pyroflows.checkpoint import (
    CheckpointMismatchError,
    check_config,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from pyroflows.cli import main
from pyroflows.distributions import Flow
from pyroflows.errors import ModelFileError, OptionError
from pyroflows.runs import evaluate_run, sample_run
from pyroflows.transforms import REGISTRY

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _save(path: Path, model: Flow) -> Path:
    return save_checkpoint(path, {"config": model.config, "model": model.state_dict()})


def _nsf() -> Flow:
    model = Flow.build("nsf", 2, num_layers=2, hidden_dims=[8])
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model


def _patch_default(monkeypatch, name: str, **defaults) -> None:
    """Pretend a later release changed builder defaults of ``name``."""
    spec = REGISTRY[name]
    monkeypatch.setitem(
        REGISTRY, name, dataclasses.replace(spec, builder=partial(spec.builder, **defaults))
    )


# -- row 38: versioned recipes -----------------------------------------------------------------
def test_recipe_records_every_resolved_option_and_the_version_row_38():
    """Row 38: the recipe pins the defaults the user did not pass (nsf bound, iaf stable)."""
    nsf = Flow.build("nsf", 2, num_layers=2, hidden_dims=[8]).config
    assert nsf["options"]["bound"] == 3.0 and nsf["options"]["count_bins"] == 8
    assert nsf["pyroflows_version"] == __version__
    iaf = Flow.build("iaf", 2, num_layers=2).config
    assert iaf["options"]["stable"] is True and iaf["logit_alpha"] is None


def test_a_later_default_change_does_not_change_a_saved_model_row_38(tmp_path, monkeypatch):
    """Row 38: a model saved today loads as the same density after a default changes."""
    model = _nsf()
    _save(tmp_path / "model.pt", model)
    x = torch.randn(6, 2) * 2
    _patch_default(monkeypatch, "nsf", bound=5.0)
    assert Flow.build("nsf", 2, num_layers=2).config["options"]["bound"] == 5.0  # it took
    loaded = load_model(tmp_path)
    assert loaded.config["options"]["bound"] == 3.0
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))


def test_files_before_versioned_recipes_take_the_frozen_defaults_row_38(tmp_path, monkeypatch):
    """Row 38: a recipe without version or resolved options (old files) takes the defaults
    of its time, silently, even after today's defaults change."""
    model = _nsf()
    legacy = {
        "name": "nsf",
        "input_dim": 2,
        "context_dim": 0,
        "options": {"num_layers": 2, "hidden_dims": [8]},
    }
    save_checkpoint(tmp_path / "model.pt", {"config": legacy, "model": model.state_dict()})
    _patch_default(monkeypatch, "nsf", bound=5.0)
    x = torch.randn(6, 2) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_model(tmp_path)
        for name in ("logit", "conditional"):  # files written at 082736b
            load_model(FIXTURES / f"flow_{name}_082736b.pt")
    assert loaded.config["options"]["bound"] == 3.0
    assert loaded.config["pyroflows_version"] == __version__
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x))
    # Resuming an old checkpoint: its recipe fits a model built with the same options today.
    check_config(Flow.build("nsf", 2, num_layers=2, hidden_dims=[8], bound=3.0).config, legacy, "c")
    with pytest.raises(CheckpointMismatchError, match="bound"):
        check_config(Flow.build("nsf", 2, num_layers=2, hidden_dims=[8]).config, legacy, "c")


def test_old_file_of_a_flow_without_frozen_defaults_warns_row_38(tmp_path, monkeypatch):
    """Row 38: where the old defaults cannot be known, loading warns that the file predates
    versioned recipes."""
    model = _nsf()
    legacy = {"name": "nsf", "input_dim": 2, "context_dim": 0, "options": {"num_layers": 2}}
    legacy["options"]["hidden_dims"] = [8]
    save_checkpoint(tmp_path / "model.pt", {"config": legacy, "model": model.state_dict()})
    monkeypatch.delitem(_recipe._LEGACY_DEFAULTS, "nsf")
    with pytest.warns(UserWarning, match="model.pt predates versioned recipes"):
        load_model(tmp_path)


def test_version_and_unknown_option_checks_row_38(tmp_path, caplog):
    """Row 38: a newer major version or an unknown option is refused by name; another
    version of the same major loads (with a debug note)."""
    model = _nsf()
    path = tmp_path / "model.pt"
    for change, match in [
        ({"pyroflows_version": "7.0.0"}, "pyroflows 7.0.0, a newer major version"),
        ({"options": {**model.config["options"], "tails": "linear"}}, "option 'tails'"),
    ]:
        save_checkpoint(path, {"config": {**model.config, **change}, "model": model.state_dict()})
        with pytest.raises(ModelFileError, match=match):
            load_model(path)
    config = {**model.config, "pyroflows_version": "0.0.9"}
    save_checkpoint(path, {"config": config, "model": model.state_dict()})
    with caplog.at_level(logging.DEBUG, logger="pyroflows._recipe"):
        assert load_model(path).config["pyroflows_version"] == __version__
    assert "written by pyroflows 0.0.9" in caplog.text


# -- row 37: checksums -------------------------------------------------------------------------
def _flip_a_bit_in_a_tensor(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        name = max(
            (n for n in archive.namelist() if "/data/" in n and not n.endswith(".pkl")),
            key=lambda n: archive.getinfo(n).file_size,
        )
        stored = archive.read(name)
    raw = bytearray(path.read_bytes())
    start = raw.find(stored)
    assert start > 0 and raw.find(stored, start + 1) < 0  # the tensor's bytes, once
    raw[start + len(stored) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_in_the_weights_is_refused_row_37(tmp_path):
    """Row 37: a bit flipped inside a stored tensor fails the checksum (torch alone loads it)."""
    path = _save(tmp_path / "model.pt", _nsf())
    _flip_a_bit_in_a_tensor(path)
    torch.load(path, weights_only=True)  # torch does not notice
    with pytest.raises(ModelFileError, match=r"model.pt: weights corrupted: checksum mismatch"):
        load_checkpoint(path)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(path)


def test_files_without_a_checksum_still_load_row_37(tmp_path):
    """Row 37: files written before checksums (plain torch.save) load unchecked."""
    model = _nsf()
    torch.save({"config": model.config, "model": model.state_dict()}, tmp_path / "model.pt")
    x = torch.randn(4, 2)
    torch.testing.assert_close(load_model(tmp_path).log_prob(x), model.log_prob(x))
    saved = save_checkpoint(tmp_path / "state.pt", {"step": 1})
    assert load_checkpoint(saved) == {"step": 1}  # the checksum is checked, then dropped


# -- row 36: malformed recipes -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input_dim": -5}, "'input_dim'"),
        ({"input_dim": "2"}, "'input_dim'"),
        ({"context_dim": -1}, "'context_dim'"),
        ({"name": "logit"}, "'name'"),
        ({"name": 3}, "'name'"),
        ({"options": {"num_layers": "2"}}, "'num_layers'"),
        ({"options": {"bound": float("nan")}}, "'bound'"),
        ({"options": {"hidden_dims": [8, -3]}}, "hidden_dims"),
        ({"options": {"hidden_dim": [8]}}, "'hidden_dim'"),
        ({"options": []}, "'options'"),
        ({"logit_alpha": 0.9}, "'logit_alpha'"),
        ({"pyroflows_version": 1}, "'pyroflows_version'"),
    ],
)
def test_malformed_recipes_give_our_error_naming_the_field_row_36(tmp_path, change, field):
    """Row 36: bad recipe values are ModelFileError naming the field, not torch errors."""
    model = _nsf()
    config = {**model.config, **change}
    if isinstance(change.get("options"), dict):
        config["options"] = {**model.config["options"], **change["options"]}
    save_checkpoint(tmp_path / "model.pt", {"config": config, "model": model.state_dict()})
    with pytest.raises(ModelFileError, match=field) as caught:
        load_model(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "model.pt"))


# -- row 34: hostile sizes ---------------------------------------------------------------------
def test_the_hostile_recipe_of_the_probe_is_refused_before_allocating_row_34(tmp_path):
    """Row 34: the probe's 1.4 KB file (hidden_dims [20000, 20000], no weights) and the same
    recipe over real weights fail fast, without building 1.8 GB of weights."""
    recipe = {"name": "realnvp", "input_dim": 2, "context_dim": 0,
              "options": {"num_layers": 1, "hidden_dims": [20000, 20000]}}  # fmt: skip
    torch.save({"config": recipe, "model": {}}, tmp_path / "empty.pt")
    small = Flow.build("realnvp", 2, num_layers=1, hidden_dims=[300, 300])  # 92k values
    torch.save({"config": recipe, "model": small.state_dict()}, tmp_path / "small.pt")
    layers = {**small.config, "options": {**small.config["options"], "num_layers": 10**9}}
    torch.save({"config": layers, "model": small.state_dict()}, tmp_path / "layers.pt")
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ModelFileError, match="holds no weights"):
        load_model(tmp_path / "empty.pt")
    with pytest.raises(ModelFileError, match="refused before allocating"):
        load_model(tmp_path / "small.pt")
    with pytest.raises(ModelFileError, match="'num_layers' is 1000000000, more than"):
        load_model(tmp_path / "layers.pt")
    assert time.perf_counter() - start < 10
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500  # the 20000 x 20000 layer alone is 1.6 GB


def test_recipe_sizes_are_checked_against_the_weights_row_34(tmp_path):
    """Row 34: a recipe whose event size differs from its weights' is refused up front, and
    weights that do not fit their recipe give our error."""
    model = _nsf()
    wide = {**model.config, "input_dim": 3}
    save_checkpoint(tmp_path / "a.pt", {"config": wide, "model": model.state_dict()})
    with pytest.raises(ModelFileError, match="'input_dim' is 3, its weights are for events"):
        load_model(tmp_path / "a.pt")
    other = {**model.config, "options": {**model.config["options"], "count_bins": 6}}
    save_checkpoint(tmp_path / "b.pt", {"config": other, "model": model.state_dict()})
    with pytest.raises(ModelFileError, match="weights do not fit its recipe"):
        load_model(tmp_path / "b.pt")


# -- row 39: our own error text ----------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_hostile_and_corrupt_files_get_our_message_row_39(tmp_path, capsys):
    """Row 39: a pickle attack or a truncated file names the file and says it is not a
    pyroflows file or is unsafe, and never relays torch's advice to set weights_only=False."""
    torch.save({"config": {}, "model": _Evil()}, tmp_path / "evil.pt")
    good = _save(tmp_path / "good.pt", _nsf())
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:700])
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelFileError) as caught:
        load_model(tmp_path / "evil.pt")
    message = str(caught.value)
    assert "evil.pt is not a readable pyroflows" in message and "unsafe" in message
    assert "the Python object print" in message and "weights_only" not in message
    for name in ("cut.pt", "empty.pt"):
        with pytest.raises(ModelFileError, match="truncated or corrupted") as caught:
            load_model(tmp_path / name)
        assert name in str(caught.value) and "weights_only" not in str(caught.value)
    assert "must never run" not in capsys.readouterr().out


# -- row 35: non-finite weights and samples ----------------------------------------------------
def test_nan_weights_are_refused_and_sample_writes_nothing_row_35(tmp_path, capsys):
    """Row 35: NaN weights give ModelFileError; `sample` exits non-zero without "wrote"."""
    model = _nsf()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(float("nan"))
    _save(tmp_path / "model.pt", model)
    with pytest.raises(ModelFileError, match="NaN or infinite values"):
        load_model(tmp_path)
    out = tmp_path / "x.npy"
    status = main(["sample", "--model", str(tmp_path), "-n", "5", "--out", str(out)])
    printed = capsys.readouterr()
    assert status == ModelFileError.exit_code and not out.exists() and "wrote" not in printed.out
    assert "NaN or infinite" in printed.err


def test_non_finite_samples_are_not_written_row_35(tmp_path):
    """Row 35: finite weights that give inf samples (a scale of 3e38): nothing is written."""
    model = Flow.build("nice", 2, num_layers=2)
    model.data_scale.fill_(3e38)
    _save(tmp_path / "model.pt", model)
    out = tmp_path / "x.csv"
    with pytest.raises(ModelFileError, match="non-finite samples"):
        sample_run(tmp_path, 50, out)
    assert not out.exists()
    model.data_scale.fill_(0.0)
    _save(tmp_path / "model.pt", model)
    with pytest.raises(ModelFileError, match="zero data_scale"):
        load_model(tmp_path)


# -- row 41: conditional models through the command line ---------------------------------------
@pytest.fixture
def conditional(tmp_path) -> Flow:
    model = Flow.build("maf", 2, context_dim=3, num_layers=1, hidden_dims=[8])
    _save(tmp_path / "run" / "model.pt", model)
    return model


def test_conditional_model_needs_context_and_says_how_row_41(tmp_path, conditional, capsys):
    """Row 41: without --context, sample/evaluate refuse up front, saying what to pass."""
    out = tmp_path / "s.npy"
    argv = ["sample", "--model", str(tmp_path / "run"), "-n", "4", "--out", str(out)]
    assert main(argv) == OptionError.exit_code and not out.exists()
    (line,) = capsys.readouterr().err.splitlines()
    assert "pass --context FILE" in line and "in Python:" in line and "context=" in line
    with pytest.raises(OptionError, match="pass --context"):
        sample_run(tmp_path / "run", 4, out)
    np.save(tmp_path / "data.npy", np.random.default_rng(0).normal(size=(6, 2)))
    with pytest.raises(OptionError, match="--context"):
        evaluate_run(tmp_path / "run", str(tmp_path / "data.npy"))
    unconditional = Flow.build("nice", 2, num_layers=2)
    _save(tmp_path / "plain" / "model.pt", unconditional)
    np.save(tmp_path / "c.npy", np.zeros((1, 3)))
    with pytest.raises(OptionError, match="not conditional"):
        sample_run(tmp_path / "plain", 4, out, context=tmp_path / "c.npy")


def test_sample_and_evaluate_take_a_context_file_row_41(tmp_path, conditional, capsys):
    """Row 41: --context with one row (for all) or one row per sample / data row."""
    run, rng = tmp_path / "run", np.random.default_rng(0)
    np.save(tmp_path / "one.npy", rng.normal(size=(1, 3)))
    np.savetxt(tmp_path / "rows.csv", rng.normal(size=(5, 3)), delimiter=",")
    out = tmp_path / "s.npy"
    argv = ["sample", "--model", str(run), "-n", "5", "--out", str(out), "--seed", "3",
            "--overwrite"]  # fmt: skip
    assert main([*argv, "--context", str(tmp_path / "one.npy")]) == 0
    one = torch.from_numpy(np.load(tmp_path / "one.npy")).float()[0]
    torch.manual_seed(3)
    expected = conditional.sample((5,), context=one).double().numpy()
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-6)
    assert main([*argv, "--context", str(tmp_path / "rows.csv")]) == 0
    rows = torch.from_numpy(np.loadtxt(tmp_path / "rows.csv", delimiter=",")).float()
    torch.manual_seed(3)
    np.testing.assert_allclose(np.load(out), conditional.sample((), context=rows).double(), 1e-6)
    assert "wrote 5 samples" in capsys.readouterr().out
    with pytest.raises(OptionError, match="has 5 rows for 4 samples"):
        sample_run(run, 4, out, context=tmp_path / "rows.csv", overwrite=True)
    data = rng.normal(size=(5, 2))
    np.save(tmp_path / "data.npy", data)
    x = torch.from_numpy(data).float()
    for context, c in [("one.npy", one), ("rows.csv", rows)]:
        assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "data.npy"),
                     "--context", str(tmp_path / context)]) == 0  # fmt: skip
        with torch.no_grad():
            nll = float(-conditional.log_prob(x, c).double().mean())
        assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(nll, rel=1e-6)


def test_hand_made_configs_are_still_compared_as_they_are_row_38():
    """Row 38: check_config normalises registry recipes only; a hand-made config compares
    as it is (same dict fits, another is named)."""
    check_config({"note": "mine"}, {"note": "mine"}, "c.pt")
    with pytest.raises(CheckpointMismatchError, match="note"):
        check_config({"note": "mine"}, {"note": "theirs"}, "c.pt")


def test_allocation_limit_sizes_every_operation_before_it_runs_row_34():
    """Row 34: the build's allocation limit knows each new tensor's size before it exists:
    factories, broadcasting, repeat, and other operations (run on meta first)."""
    column, row = torch.ones(3000, 1), torch.ones(1, 3000)
    for make in (
        lambda: torch.zeros(3000, 3000),
        lambda: column >= row,  # a broadcast comparison, as MADE's masks
        lambda: column.repeat(1, 3000),
        lambda: column @ row,  # no rule of its own: sized on the meta device
    ):
        with pytest.raises(AllocationLimitError), allocation_limit(100_000):
            make()
    with allocation_limit(100_000):
        assert (column[:10] @ row[:, :10]).shape == (10, 10)
