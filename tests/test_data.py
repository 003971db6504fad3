"""The built-in 2-D toy datasets and the train/test split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyroflows.data import TOY_DATASETS, make_toy, train_test_split


@pytest.mark.parametrize("name", TOY_DATASETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_finite(name, dtype):
    for num_samples in (1, 7, 500):
        x = make_toy(name, num_samples, seed=3, dtype=dtype)
        assert x.shape == (num_samples, 2)
        assert x.dtype == dtype
        assert x.device.type == "cpu"
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_reproducible_for_a_seed_and_different_across_seeds(name):
    first = make_toy(name, 300, seed=11)
    assert torch.equal(first, make_toy(name, 300, seed=11))
    assert not torch.allclose(first, make_toy(name, 300, seed=12))


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_global_random_states_are_untouched(name):
    numpy_state = np.random.get_state()  # noqa: NPY002 (the legacy global RNG is the point)
    torch_state = torch.get_rng_state()
    make_toy(name, 50, seed=1)
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == numpy_state[0]
    assert np.array_equal(after[1], numpy_state[1])
    assert after[2:] == numpy_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown toy dataset 'swissroll'") as info:
        make_toy("swissroll", 10)
    for name in TOY_DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize("num_samples", [0, -3])
def test_non_positive_num_samples_raises(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        make_toy("moons", num_samples)


def test_ffjord_spellings_are_accepted():
    assert torch.equal(make_toy("8gaussians", 40), make_toy("eight_gaussians", 40))
    assert torch.equal(make_toy("2spirals", 40), make_toy("two_spirals", 40))


# -- the datasets have the geometry the conventions describe ------------------------------------
def test_moons_lie_on_the_scaled_and_shifted_half_circles():
    x = make_toy("moons", 4000)
    unscaled = (x - torch.tensor([-1.0, -0.2])) / 2
    # Distance to the nearer of the two unit half circles is the noise (std 0.1).
    outer = ((unscaled - torch.tensor([0.0, 0.0])).norm(dim=1) - 1).abs()
    inner = ((unscaled - torch.tensor([1.0, 0.5])).norm(dim=1) - 1).abs()
    distance = torch.minimum(outer, inner)
    assert float(distance.mean()) < 0.1
    assert float(x.mean(0)[0]) == pytest.approx(0.0, abs=0.1)


def test_circles_have_radii_three_and_one_and_a_half():
    radius = make_toy("circles", 4000).norm(dim=1)
    inner, outer = radius[radius < 2.25], radius[radius >= 2.25]
    assert len(inner) == pytest.approx(2000, abs=20)
    assert float(inner.mean()) == pytest.approx(1.5, abs=0.05)
    assert float(outer.mean()) == pytest.approx(3.0, abs=0.05)


def test_eight_gaussians_are_centred_on_the_circle_of_radius_4_over_1_414():
    x = make_toy("eight_gaussians", 8000)
    radius = 4 / 1.414
    assert float(x.norm(dim=1).median()) == pytest.approx(radius, abs=0.1)
    angle = torch.atan2(x[:, 1], x[:, 0]) / (math.pi / 4)
    assert float((angle - angle.round()).abs().mean()) < 0.15


def test_checkerboard_points_lie_on_the_black_squares():
    x = make_toy("checkerboard", 2000)
    assert float(x.abs().max()) <= 4.0
    parity = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2
    assert bool((parity == 0).all())  # the square [-4, -2]^2 is black, and so on


def test_pinwheel_has_five_arms():
    x = make_toy("pinwheel", 5000)
    radius = x.norm(dim=1)
    ring = x[(radius > 1.8) & (radius < 2.2)]
    counts = torch.histc(torch.atan2(ring[:, 1], ring[:, 0]), bins=40, min=-math.pi, max=math.pi)
    crowded = counts > 20
    # Going once around the ring, the arms are the runs of crowded angles: five of them.
    arm_starts = crowded & ~crowded.roll(1)
    assert int(arm_starts.sum()) == 5


def test_two_spirals_are_point_symmetric():
    x = make_toy("two_spirals", 6000)
    assert x.mean(0).abs().max() < 0.1
    assert float(x.norm(dim=1).max()) < 4.0


# -- train/test split ---------------------------------------------------------------------------
def test_split_sizes_disjoint_and_complete():
    data = torch.arange(100.0).reshape(50, 2)
    train, test = train_test_split(data, test_fraction=0.2, seed=1)
    assert train.shape == (40, 2)
    assert test.shape == (10, 2)
    rows = torch.cat([train, test])[:, 0].sort().values
    assert torch.equal(rows, data[:, 0])


def test_split_is_seeded():
    data = make_toy("moons", 100)
    first = train_test_split(data, seed=4)
    again = train_test_split(data, seed=4)
    other = train_test_split(data, seed=5)
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_split_keeps_both_parts_non_empty():
    train, test = train_test_split(torch.zeros(2, 2), test_fraction=0.01)
    assert len(train) == 1
    assert len(test) == 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(torch.zeros(10, 2), test_fraction=fraction)


def test_split_rejects_too_few_rows():
    with pytest.raises(ValueError, match="at least 2 rows"):
        train_test_split(torch.zeros(1, 2))
