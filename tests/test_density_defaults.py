"""The density defaults (issue 14): the rule, and fit_run / the command line applying it."""

from __future__ import annotations

import json

import pytest

from pyroflows.cli import main
from pyroflows.runs import fit_run
from pyroflows.train import density_defaults


def test_the_rule_scales_width_with_the_dimension_and_epochs_with_the_rows():
    toys = density_defaults(10_000, 2)
    assert toys.flow == "nsf_autoregressive"
    assert toys.options == {
        "num_layers": 5,
        "hidden_dims": [32, 32],
        "count_bins": 8,
        "orders": "alternate",
    }
    assert toys.fit["epochs"] == 100  # 40 steps per epoch already give 4,000 steps
    digits = density_defaults(1437, 64, image=True)
    assert digits.options["hidden_dims"] == [256, 256]
    assert (digits.options["count_bins"], digits.options["orders"]) == (8, "random")
    assert density_defaults(1437, 64).options["count_bins"] == 4  # not images: 4 above 4-D
    assert density_defaults(1437, 4).options["count_bins"] == 8
    assert digits.fit["epochs"] == 334  # 6 steps per epoch: about 2,000 steps
    assert density_defaults(100, 13).fit["epochs"] == 1000  # capped
    assert density_defaults(100, 1000).options["hidden_dims"] == [512, 512]  # capped
    settings = density_defaults(1437, 64).fit
    assert set(settings) == {"epochs", "batch_size", "lr", "weight_decay", "patience"}


def test_the_image_flow_rule_is_glow_with_splines_and_glows_training_settings():
    rule = density_defaults(4000, 784, image=True, image_flow=True)
    assert (rule.flow, rule.options) == ("glow", {"coupling": "spline"})
    assert rule.fit == {
        "epochs": 100,  # 63 steps an epoch: the 100-epoch floor
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "patience": 20,
    }
    assert density_defaults(300, 64, image_flow=True).fit["epochs"] == 400  # ~2,000 steps
    rule.options["coupling"] = "affine"  # a copy: the rule itself does not change
    assert density_defaults(4000, 784, image_flow=True).options == {"coupling": "spline"}


def test_the_rule_refuses_empty_data():
    with pytest.raises(ValueError, match="at least one row and one coordinate, got 0 x 3"):
        density_defaults(0, 3)


def test_fit_run_takes_the_defaults_unless_told_and_records_them(tmp_path):
    metrics = fit_run(
        "moons", tmp_path / "a", num_samples=300, epochs=1, progress=False, device="cpu"
    )
    chosen = density_defaults(300, 2)
    assert metrics["flow"] == chosen.flow
    assert metrics["options"] == chosen.options
    assert metrics["fit"] == {**chosen.fit, "epochs": 1}  # the caller's setting wins
    # options change single keys of the default flow's; a named flow takes only its own
    metrics = fit_run(
        "moons", tmp_path / "b", None, {"num_layers": 2}, num_samples=300, epochs=1,
        progress=False, device="cpu",
    )  # fmt: skip
    assert metrics["options"] == {**chosen.options, "num_layers": 2}
    metrics = fit_run(
        "moons", tmp_path / "c", "realnvp", {"num_layers": 2}, num_samples=300, epochs=1,
        progress=False, device="cpu",
    )  # fmt: skip
    assert (metrics["flow"], metrics["options"]) == ("realnvp", {"num_layers": 2})
    assert metrics["fit"]["patience"] == chosen.fit["patience"]


def test_the_command_line_fits_the_default_flow_and_resumes_it(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["fit", "--data", "moons", "--num-samples", "300", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["flow"] == "nsf_autoregressive"
    assert metrics["options"]["orders"] == "alternate"  # two coordinates
    assert metrics["fit"]["epochs"] == 1
    assert metrics["fit"]["batch_size"] == density_defaults(300, 2).fit["batch_size"]
    # the same command resumes: the defaults resolve to the same flow and settings
    resumed = [*argv, "--out", str(out), "--device", "cpu", "--resume"]
    assert main([*resumed, "--override", "epochs=2,lr=1e-4"]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 2
    refused = [*argv, "--out", str(tmp_path / "x"), "--count-bins", "4", "--flow", "maf"]
    assert main(refused) == 2
    assert "--count-bins does not apply to --flow maf" in capsys.readouterr().err
