"""The fit / sample / evaluate commands, end to end on small runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pyroflows.checkpoint import CheckpointMismatchError, load_model
from pyroflows.cli import main


def _fit(out, *extra: str) -> int:
    return main(
        ["fit", "--data", "moons", "--flow", "realnvp", "--layers", "2", "--hidden", "16", "16",
         "--epochs", "2", "--num-samples", "400", "--out", str(out), "--quiet", *extra]
    )  # fmt: skip


def test_fit_writes_a_complete_run_folder(tmp_path):
    assert _fit(tmp_path) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint.pt", "history.json", "metrics.json", "model.pt", "run.json"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["flow"] == "realnvp" and metrics["options"]["hidden_dims"] == [16, 16]
    assert np.isfinite(metrics["test"]["nll"]) and metrics["epochs_run"] == 2
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["val_nll"]) == 2
    model = load_model(tmp_path)
    assert model.config["options"] == {
        "num_layers": 2,
        "hidden_dims": [16, 16],
        "transformer": None,
    }


def test_resume_continues_the_run_and_refuses_another_flow(tmp_path, capsys):
    assert _fit(tmp_path) == 0
    capsys.readouterr()
    assert _fit(tmp_path, "--resume", "--epochs", "3") == 5  # row 64: never silently ignored
    error = capsys.readouterr().err
    assert "epochs 2 -> 3" in error and "--override epochs=3" in error
    assert "override={" not in error  # the command line's option, not Python's keyword
    assert _fit(tmp_path, "--resume", "--override", "epochs=3,lr=1e-4") == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["fit"]["epochs"] == 3
    # 3e-3: the density defaults' rate for 2-D data
    assert metrics["overrides"][0]["settings"] == {"epochs": [2, 3], "lr": [0.003, 0.0001]}
    with pytest.raises(CheckpointMismatchError, match="num_layers"):  # --debug: it propagates
        main(["--debug", "fit", "--data", "moons", "--flow", "realnvp", "--layers", "3",
              "--hidden", "16", "16", "--num-samples", "400", "--out", str(tmp_path), "--quiet",
              "--resume"])  # fmt: skip


def test_sample_and_evaluate(tmp_path, capsys):
    assert _fit(tmp_path) == 0
    assert (
        main(["sample", "--model", str(tmp_path), "-n", "50", "--out", str(tmp_path / "s.npy")])
        == 0
    )
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    assert (
        main(["sample", "--model", str(tmp_path), "-n", "7", "--out", str(tmp_path / "s.csv")]) == 0
    )
    assert np.loadtxt(tmp_path / "s.csv", delimiter=",").shape == (7, 2)
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "s.npy")]) == 0
    scored = json.loads(capsys.readouterr().out)
    model = load_model(tmp_path)
    with torch.no_grad():
        expected = -model.log_prob(torch.from_numpy(samples).float()).double().mean()
    assert scored["nll"] == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match=r"\.npy or \.csv"):
        main(["--debug", "sample", "--model", str(tmp_path), "--out", str(tmp_path / "s.txt")])


def test_evaluate_refuses_data_of_another_dimension(tmp_path):
    assert _fit(tmp_path) == 0
    np.save(tmp_path / "wide.npy", np.random.default_rng(0).normal(size=(20, 3)))
    with pytest.raises(ValueError, match="2"):
        wide = str(tmp_path / "wide.npy")
        main(["--debug", "evaluate", "--model", str(tmp_path), "--data", wide])


def test_fit_on_a_csv_file_and_on_the_digits(tmp_path):
    rows = np.random.default_rng(0).normal(size=(300, 3)) @ np.array(
        [[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2.0]]
    )
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",", header="a,b,c", comments="")
    assert main(["fit", "--data", str(tmp_path / "rows.csv"), "--flow", "maf", "--layers", "2",
                 "--epochs", "1", "--out", str(tmp_path / "csv"), "--quiet"]) == 0  # fmt: skip
    assert load_model(tmp_path / "csv").input_dim == 3
    pytest.importorskip("sklearn")
    assert main(["fit", "--data", "digits", "--flow", "realnvp", "--layers", "2", "--hidden", "32",
                 "--epochs", "1", "--out", str(tmp_path / "digits"), "--quiet"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "digits" / "metrics.json").read_text())
    assert 1.0 < metrics["test"]["bits_per_dim"] < 6.0
    assert metrics["logit_alpha"] == 1e-3  # the digits are modelled in logit space
    assert load_model(tmp_path / "digits").logit_alpha == 1e-3


@pytest.mark.parametrize("command", ["fit", "sample", "evaluate"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--out" in text or "--data" in text
    if command == "fit":
        options = ("--flow", "--layers", "--hidden", "--epochs", "--device", "--resume")
        for option in (*options, "--compile"):
            assert option in text
        assert "(default: 10000)" in text  # defaults are shown
        assert "density_defaults" in text  # and where the data chooses them, the rule


def test_compile_reaches_fit(tmp_path, monkeypatch):
    import pyroflows.runs

    real_fit, seen = pyroflows.runs.fit, []

    def recording_fit(model, data, **options):
        seen.append(options["compile"])
        cheap = {"backend": "eager"} if options["compile"] else False  # dynamo only
        return real_fit(model, data, **{**options, "compile": cheap})

    monkeypatch.setattr(pyroflows.runs, "fit", recording_fit)
    assert _fit(tmp_path / "eager") == 0
    assert _fit(tmp_path / "compiled", "--compile") == 0
    assert seen == [False, True]  # fit's default, then --compile


def test_override_and_overwrite_options(tmp_path, capsys):
    """Rows 51 and 64 on the command line: --overwrite replaces a run, --override parses."""
    from pyroflows.cli import _overrides
    from pyroflows.errors import OptionError

    assert _overrides(["lr=1e-3,epochs=200", "batch-size=64", "patience=none"]) == {
        "lr": 1e-3,
        "epochs": 200,
        "batch_size": 64,
        "patience": None,
    }
    assert _overrides(["schedule=constant"]) == {"schedule": "constant"}
    with pytest.raises(OptionError, match="NAME=VALUE pairs"):
        _overrides(["lr"])
    assert _fit(tmp_path) == 0
    capsys.readouterr()
    assert _fit(tmp_path) == 4
    error = capsys.readouterr().err
    assert "holds a run" in error and "(--resume)" in error and "(--overwrite)" in error
    assert _fit(tmp_path, "--overwrite", "--epochs", "1") == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_run"] == 1
