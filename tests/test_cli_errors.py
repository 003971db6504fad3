"""The command line's expected errors: one line on stderr, an exit status per class, no traceback.

Each test names the row of the December 2026 reliability probe it covers
(``shared/reviews/reliability-2026-12.md``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyroflows.runs
from pyroflows import errors
from pyroflows.checkpoint import CheckpointMismatchError
from pyroflows.cli import EXIT_STATUSES, main
from pyroflows.train import NonFiniteLossError
from pyroflows.transforms import InverseNotConvergedError

ROOT = Path(__file__).parents[1]
TINY = ("--flow", "realnvp", "--layers", "1", "--hidden", "8", "--epochs", "1", "--quiet")


def _fit(out, *extra: str) -> int:
    return main(
        ["fit", "--data", "moons", "--num-samples", "200", *TINY, "--out", str(out), *extra]
    )


def _error_line(capsys) -> str:
    """The one line main() printed on stderr (asserting there is exactly one)."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyroflows: error: "), lines
    return lines[0]


def _nan_csv(folder: Path) -> Path:
    path = folder / "nan.csv"
    path.write_text("x,y\n0,1\nnan,2\n3,4\n")
    return path


# -- row 25: every CLI error is one line with its own status, no traceback ----------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pyroflows", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_row25_a_data_error_is_one_line_with_status_3_and_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    result = _cli("fit", "--data", str(_nan_csv(tmp_path)), "--out", str(out))
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"pyroflows: error: {tmp_path / 'nan.csv'}: rows holding NaN or infinite values "
        "(1 row), 0-based indices: 1"
    ]
    assert not out.exists()  # a failed start leaves no empty run folder


def test_row25_debug_shows_the_traceback(tmp_path):
    result = _cli("--debug", "fit", "--data", str(_nan_csv(tmp_path)), "--out", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "pyroflows.errors.DataError" in result.stderr


def test_row25_debug_also_works_after_the_command(tmp_path):
    with pytest.raises(errors.DataError, match="NaN"):
        main(["fit", "--data", str(_nan_csv(tmp_path)), "--out", str(tmp_path), "--debug"])


@pytest.mark.parametrize(
    "error, status",
    [
        (errors.OptionError("bad option"), 2),
        (errors.DataError("bad data"), 3),
        (errors.RunFolderError("folder in use"), 4),
        (errors.SettingsChangedError("lr changed"), 5),
        (errors.ModelFileError("corrupt model"), 6),
        (CheckpointMismatchError("other model"), 6),
        (NonFiniteLossError("loss nan"), 7),
        (FileNotFoundError("no such file: x.npy"), 8),
        (InverseNotConvergedError("did not converge"), 9),
        (ImportError("no module named sklearn"), 10),
        (PermissionError("permission denied"), 11),
        (ValueError("bad value"), 12),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_row25_each_error_class_has_its_status_and_one_line(error, status, monkeypatch, capsys):
    def failing_fit_run(*args, **kwargs):
        raise error

    monkeypatch.setattr(pyroflows.runs, "fit_run", failing_fit_run)
    assert main(["fit", "--data", "moons", "--out", "unused"]) == status
    assert _error_line(capsys) == f"pyroflows: error: {error}"


def test_row25_a_multi_line_message_takes_two_lines(monkeypatch, capsys):
    def failing_fit_run(*args, **kwargs):
        raise CheckpointMismatchError("does not fit:\n\tMissing key(s): a\n\tUnexpected: b")

    monkeypatch.setattr(pyroflows.runs, "fit_run", failing_fit_run)
    assert main(["fit", "--data", "moons", "--out", "unused"]) == 6
    assert capsys.readouterr().err.splitlines() == [
        "pyroflows: error: does not fit:",
        "  Missing key(s): a Unexpected: b",
    ]


def test_row25_interrupt_exits_130_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyroflows.runs, "fit_run", interrupted)
    assert main(["fit", "--data", "moons", "--out", "unused"]) == 130
    assert capsys.readouterr().err == "pyroflows: interrupted\n"

    def buggy(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(pyroflows.runs, "fit_run", buggy)
    with pytest.raises(RuntimeError, match="a bug"):  # not an expected error: Python reports it
        main(["fit", "--data", "moons", "--out", "unused"])


def test_row25_real_errors_map_to_their_statuses(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path / "none"), "--data", "moons"]) == 8
    assert "no checkpoint at" in _error_line(capsys)
    assert _fit(tmp_path / "a") == 0
    resume = ["--resume", "--layers", "2"]
    assert main(["fit", "--data", "moons", "--num-samples", "200", *TINY, *resume,
                 "--out", str(tmp_path / "a")]) == 6  # fmt: skip
    assert "different model" in _error_line(capsys)
    diverging = ["--flow", "maf", "--lr", "1e6", "--epochs", "2", "--quiet"]
    assert main(["fit", "--data", "moons", "--num-samples", "300", *diverging,
                 "--out", str(tmp_path / "b")]) == 7  # fmt: skip
    assert "non-finite loss" in _error_line(capsys)


def test_row25_the_exit_statuses_are_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "exit statuses:" in text and "--debug" in text
    for cls, status in EXIT_STATUSES:
        assert f"  {status:<5}{cls.__name__}: " in text
    statuses = [
        status for cls, status in EXIT_STATUSES if not issubclass(cls, errors.PyroflowsError)
    ]
    assert len(set(statuses)) == len(statuses)  # one status per built-in class
    assert main.__doc__ and all(str(status) in main.__doc__ for _, status in EXIT_STATUSES)


def test_warnings_print_as_one_line(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(200, 3))
    rows[:, 2] = rows[:, 1]
    np.save(tmp_path / "collinear.npy", rows)
    assert main(["fit", "--data", str(tmp_path / "collinear.npy"), *TINY,
                 "--out", str(tmp_path / "run")]) == 0  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyroflows: warning: data: the columns are")


# -- rows 17, 19: the hints name the command line's options -------------------------------------


def test_row17_npz_with_several_arrays_asks_for_key_and_key_works(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "multi.npz", a=rng.normal(size=(60, 2)), b=rng.normal(size=(60, 3)))
    data = ["--data", str(tmp_path / "multi.npz")]
    assert main(["fit", *data, *TINY, "--out", str(tmp_path / "r")]) == 3
    line = _error_line(capsys)
    assert "choose one with --key NAME" in line and "key=" not in line
    assert main(["fit", *data, "--key", "b", *TINY, "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["data_options"] == {"key": "b"}
    assert main(["evaluate", "--model", str(tmp_path / "r"), *data, "--key", "b"]) == 0


def test_row17_csv_with_a_numeric_header_asks_for_header_and_header_works(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(60, 2))
    text = "temp,2020\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n"
    (tmp_path / "h.csv").write_text(text)
    data = ["--data", str(tmp_path / "h.csv")]
    assert main(["fit", *data, *TINY, "--out", str(tmp_path / "r")]) == 3
    line = _error_line(capsys)
    assert "pass --header yes" in line and "header=" not in line
    assert main(["fit", *data, "--header", "yes", *TINY, "--out", str(tmp_path / "r")]) == 0


def test_row17_file_options_are_refused_for_named_datasets(tmp_path, capsys):
    assert _fit(tmp_path, "--key", "a") == 2
    assert "--key applies to data files" in _error_line(capsys)
    assert _fit(tmp_path, "--dim", "3") == 2
    assert "--dim applies to --data sphere_mixture only" in _error_line(capsys)


def test_row17_fit_refuses_constant_columns_without_a_python_hint(tmp_path, capsys):
    (tmp_path / "c.csv").write_text("x,y\n0,1\n0,2\n0,3\n")
    assert main(["fit", "--data", str(tmp_path / "c.csv"), *TINY, "--out", str(tmp_path)]) == 3
    line = _error_line(capsys)
    assert "constant columns" in line and "allow_constant_columns" not in line


def test_row19_evaluate_accepts_test_rows_with_a_constant_column(tmp_path, capsys):
    assert _fit(tmp_path) == 0
    (tmp_path / "s.csv").write_text("x,y\n0,1\n0,2\n0,3\n")
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "s.csv")]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out)["nll"])


# -- row 22: JSON output is always valid JSON ---------------------------------------------------


def _strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_row22_evaluate_prints_null_and_a_note_for_an_infinite_nll(tmp_path, capsys):
    assert _fit(tmp_path) == 0
    np.save(tmp_path / "far.npy", np.full((5, 2), 1e30))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "far.npy")]) == 0
    scored = _strict_json(capsys.readouterr().out)
    assert scored == {"nll": None, "non_finite": {"nll": "Infinity"}}


def test_row22_run_files_hold_no_nan_without_validation(tmp_path):
    assert _fit(tmp_path, "--val-fraction", "0") == 0
    history = _strict_json((tmp_path / "history.json").read_text())
    assert history["val_nll"] == [None] and history["non_finite"] == {"val_nll[]": "NaN"}
    metrics = _strict_json((tmp_path / "metrics.json").read_text())
    assert metrics["best_val_nll"] is None


# -- row 24: the datasets dataset() accepts work from the command line --------------------------


def test_row24_toy_aliases_take_num_samples(tmp_path, capsys):
    assert main(["fit", "--data", "8gaussians", "--num-samples", "200", *TINY,
                 "--out", str(tmp_path)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path), "--data", "8gaussians"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(metrics["test"]["nll"])


def test_row24_sphere_mixture_needs_and_takes_dim(tmp_path, capsys):
    sphere = ["fit", "--data", "sphere_mixture", "--num-samples", "200", *TINY]
    assert main([*sphere, "--out", str(tmp_path)]) == 2
    assert "pass --dim D" in _error_line(capsys)
    assert not tmp_path.joinpath("metrics.json").exists()
    assert main([*sphere, "--dim", "3", "--out", str(tmp_path)]) == 0
    assert main(["evaluate", "--model", str(tmp_path), "--data", "sphere_mixture"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out)["nll"] == pytest.approx(metrics["test"]["nll"])


# -- row 61: --val-fraction 0 ------------------------------------------------------------------


def test_row61_val_fraction_zero_prints_a_summary_and_negative_is_refused(tmp_path, capsys):
    loud = [arg for arg in TINY if arg != "--quiet"]
    assert main(["fit", "--data", "moons", "--num-samples", "200", *loud,
                 "--val-fraction", "0", "--out", str(tmp_path / "a")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "no validation rows (--val-fraction 0): kept epoch 1" in out and "wrote" in out
    with pytest.raises(SystemExit) as info:
        _fit(tmp_path / "b", "--val-fraction", "-0.1")
    assert info.value.code == 2
    assert "--val-fraction: must be in [0, 1)" in capsys.readouterr().err


# -- row 76: options that do not apply to the flow, refused before anything runs ----------------


@pytest.mark.parametrize(
    "flow, option, message",
    [
        ("neural_autoregressive", ["--layers", "3"], "--layers does not apply to --flow "
         "neural_autoregressive; of these options it takes --hidden"),
        ("realnvp", ["--count-bins", "4", "--bound", "3"], "--count-bins, --bound do not apply "
         "to --flow realnvp; of these options it takes --layers, --hidden"),
        ("lu_linear", ["--hidden", "8"], "--hidden does not apply to --flow lu_linear; of these "
         "options it takes none"),
    ],
)  # fmt: skip
def test_row76_options_the_flow_does_not_take_are_refused_by_name(
    flow, option, message, tmp_path, monkeypatch, capsys
):
    def never(*args, **kwargs):
        raise AssertionError("fit_run ran")

    monkeypatch.setattr(pyroflows.runs, "fit_run", never)
    argv = ["fit", "--data", "moons", "--flow", flow, *option, "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert _error_line(capsys) == f"pyroflows: error: {message}"


def test_row76_a_flow_without_parameters_is_refused(tmp_path, capsys):
    argv = ["fit", "--data", "moons", "--num-samples", "200", "--flow", "permutation"]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "flow 'permutation' has no trainable parameters" in _error_line(capsys)
    assert not (tmp_path / "r").exists()


def test_row77_an_unusable_device_is_refused_before_the_data_are_read(monkeypatch, capsys):
    def never(*args, **kwargs):
        raise AssertionError("fit_run ran")

    monkeypatch.setattr(pyroflows.runs, "fit_run", never)
    assert main(["fit", "--data", "moons", "--device", "meta", "--out", "unused"]) == 2
    assert "device 'meta' holds no values" in _error_line(capsys)


# -- row 78: the demo checks its outputs before training ----------------------------------------


@pytest.mark.parametrize(
    "option, status, message",
    [
        (["--output", "d.txt"], 2, "the image must be a .png"),
        (["--metrics", "DIR"], 4, "is a directory"),
        (["--metrics", "d.csv"], 2, "the metrics must be a .json file"),
    ],
)
def test_row78_demo_checks_output_and_metrics_before_training(
    option, status, message, tmp_path, monkeypatch, capsys
):
    pytest.importorskip("matplotlib")
    import pyroflows.demo

    def never(*args, **kwargs):
        raise AssertionError("the demo started")

    monkeypatch.setattr(pyroflows.demo, "make_toy", never)
    (tmp_path / "DIR.json").mkdir()
    option = [option[0], str(tmp_path / (option[1] + (".json" if option[1] == "DIR" else "")))]
    assert main(["demo", "--smoke", "--quiet", *option]) == status
    assert message in _error_line(capsys)


# -- row 79: sample --out -----------------------------------------------------------------------


def test_row79_sample_takes_upper_case_suffixes_and_does_not_overwrite(tmp_path, capsys):
    assert _fit(tmp_path) == 0
    sample = ["sample", "--model", str(tmp_path), "-n", "4"]
    assert main([*sample, "--out", str(tmp_path / "s.NPY")]) == 0
    assert np.load(tmp_path / "s.NPY").shape == (4, 2)
    assert not (tmp_path / "s.NPY.npy").exists()
    training = tmp_path / "train.csv"
    training.write_text("1,2\n3,4\n")
    capsys.readouterr()
    assert main([*sample, "--out", str(training)]) == 4
    assert _error_line(capsys).endswith("train.csv already exists; pass --overwrite to replace it")
    assert training.read_text() == "1,2\n3,4\n"
    assert main([*sample, "--out", str(training), "--overwrite"]) == 0
    assert np.loadtxt(training, delimiter=",").shape == (4, 2)


# -- row 80: evaluate scores the run's own test split -------------------------------------------


@pytest.mark.parametrize("dataset", ["eight_gaussians", "digits"])
def test_row80_evaluate_on_the_runs_dataset_gives_its_test_nll(dataset, tmp_path, capsys):
    if dataset == "digits":
        pytest.importorskip("sklearn")
    argv = ["fit", "--data", dataset, "--num-samples", "400", "--seed", "3", *TINY]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path), "--data", dataset]) == 0
    scored = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert scored == pytest.approx(metrics["test"], rel=1e-6)
    assert metrics["seed"] == 3
