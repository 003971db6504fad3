"""The CLI's options of the multi-scale image flows and the PNG grid's zoom (issue 16)."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from pyroflows.cli import main
from pyroflows.errors import OptionError
from pyroflows.runs import sample_run

pytest.importorskip("sklearn")


def _png_size(path) -> tuple[int, int, int]:
    """Width, height and colour type of a PNG, after checking the IHDR CRC and the IDAT size."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    body = data[16 : 16 + length]
    assert kind == b"IHDR" and struct.unpack(">I", data[16 + length : 20 + length])[0] == (
        zlib.crc32(kind + body) & 0xFFFFFFFF
    )
    width, height, _, colour = struct.unpack(">IIBB", body[:10])
    start = 20 + length
    idat_length, idat = struct.unpack(">I4s", data[start : start + 8])
    assert idat == b"IDAT"
    raw = zlib.decompress(data[start + 8 : start + 8 + idat_length])
    assert len(raw) == height * (1 + width * {0: 1, 2: 3}[colour])
    return width, height, colour


def test_glow_sized_from_the_cli_on_digit_images(tmp_path, capsys):
    run = tmp_path / "glow"
    fit = ["fit", "--data", "digits-images", "--flow", "glow", "--quiet", "--epochs", "1"]
    sizes = ["--scales", "2", "--steps-per-level", "2", "--hidden-channels", "8"]
    assert main([*fit, *sizes, "--out", str(run)]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    options = metrics["options"]
    assert (options["levels"], options["steps_per_level"], options["hidden_channels"]) == (2, 2, 8)
    assert np.isfinite(metrics["test"]["bits_per_dim"])
    # 2 x 2 samples of 8 x 8 pixels, each pixel 3 x 3, gaps of 1
    grid = tmp_path / "grid.png"
    sample = ["sample", "--model", str(run), "-n", "4", "--png", str(grid), "--scale", "3"]
    assert main(sample) == 0, capsys.readouterr().err
    assert _png_size(grid) == (2 * 24 + 1, 2 * 24 + 1, 0)
    samples = sample_run(run, 4, None, png=tmp_path / "one.png", overwrite=True)
    assert samples.shape == (4, 1, 8, 8) and np.isfinite(samples).all()
    assert _png_size(tmp_path / "one.png") == (17, 17, 0)  # scale 1 by default
    with pytest.raises(OptionError, match="scale must be a positive integer, got 0"):
        sample_run(run, 4, None, png=tmp_path / "zero.png", scale=0)


def test_multiscale_options_are_refused_by_other_flows(tmp_path, capsys):
    fit = ["fit", "--data", "digits-images", "--flow", "realnvp", "--quiet"]
    assert main([*fit, "--steps-per-level", "2", "--out", str(tmp_path / "r")]) != 0
    assert "--steps-per-level does not apply to --flow realnvp" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_image_flows_get_the_image_rule_and_a_coupling_from_the_cli(tmp_path, capsys):
    run = tmp_path / "spline"
    fit = ["fit", "--data", "digits-images", "--flow", "glow", "--quiet", "--epochs", "1"]
    sizes = ["--scales", "1", "--steps-per-level", "1", "--hidden-channels", "4"]
    assert main([*fit, *sizes, "--coupling", "spline", "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["options"]["coupling"] == "spline"
    # the image rule's training settings, not the vector rule's (batch 256, weight decay 1.0)
    assert (metrics["fit"]["batch_size"], metrics["fit"]["weight_decay"]) == (64, 0.0)
    assert np.isfinite(metrics["test"]["bits_per_dim"])
    assert main(["fit", "--data", "digits", "--coupling", "spline", "--quiet",
                 "--out", str(tmp_path / "v")]) != 0  # fmt: skip
    assert "--coupling does not apply to --flow nsf_autoregressive" in capsys.readouterr().err
