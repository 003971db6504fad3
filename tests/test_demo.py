"""The demo and the command line, in smoke mode."""

from __future__ import annotations

import json
import math
import sys

import pytest

from pyroflows import demo
from pyroflows.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_cli_demo_smoke_writes_a_png_and_metrics(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    image, metrics = tmp_path / "d.png", tmp_path / "d.json"
    assert (
        main(["demo", "--smoke", "--quiet", "--output", str(image), "--metrics", str(metrics)]) == 0
    )
    assert json.loads(metrics.read_text())["image"] == str(image)
    assert image.stat().st_size > 0
    assert image.read_bytes().startswith(PNG_SIGNATURE)
    assert capsys.readouterr().out == ""


def test_run_demo_smoke_returns_finite_numbers(tmp_path):
    result = demo.run_demo(
        "eight_gaussians", smoke=True, quiet=True, output=None, device="cpu", metrics=None
    )
    assert result["steps"] == demo.SMOKE_STEPS
    assert result["image"] is None
    assert math.isfinite(result["test_nll"])
    assert math.isfinite(result["gaussian_test_nll"])
    assert result["seconds"] > 0
    assert result["device"] == "cpu"


def test_smoke_mode_from_the_environment_and_progress_output(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PYROFLOWS_SMOKE", "1")
    result = demo.run_demo("circles", steps=500, output=None, device="cpu", metrics=None)
    assert result["steps"] == demo.SMOKE_STEPS
    out = capsys.readouterr().out
    assert f"step {demo.SMOKE_STEPS:5d}/{demo.SMOKE_STEPS}" in out
    assert "full-covariance Gaussian" in out


def test_missing_matplotlib_skips_the_image(monkeypatch, tmp_path, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    image = tmp_path / "none.png"
    result = demo.run_demo(smoke=True, quiet=True, output=image, device="cpu", metrics=None)
    assert result["image"] is None
    assert not image.exists()
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "demo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [[], ["demo", "--dataset", "swissroll"], ["demo", "--steps", "0"], ["fit"]]
)
def test_bad_arguments_exit_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_unknown_dataset_raises():
    with pytest.raises(ValueError, match="known datasets"):
        demo.run_demo("swissroll", smoke=True, quiet=True, output=None, metrics=None)


def test_metrics_are_written_as_json(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    result = demo.run_demo(smoke=True, quiet=True, output=None, device="cpu", metrics=path)
    written = json.loads(path.read_text())
    assert written == result
    assert written["test_nll"] < written["gaussian_test_nll"] + 1.0  # finite, sensible
