"""The datasets: 2-D toys, the sphere mixture, the digits helpers, file loading, the split."""

from __future__ import annotations

import math
import sys
import zipfile

import numpy as np
import pyro.distributions as dist
import pytest
import torch

from pyroflows.data import (
    TOY_DATASETS,
    bits_per_dim,
    dataset,
    dequantize,
    inverse_logit_transform,
    load_array,
    load_digits,
    logit_transform,
    make_toy,
    sphere_mixture,
    sphere_mixture_distribution,
    train_test_split,
)


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


# -- swiss roll ----------------------------------------------------------------------------------
def test_swiss_roll_range_and_shape_of_the_roll():
    x = make_toy("swiss_roll", 4000, seed=0)
    # t in [1.5 pi, 4.5 pi], plus N(0, 1) noise per coordinate, all divided by 5.
    assert float(x.abs().max()) < (4.5 * math.pi + 5.0) / 5
    radius = x.norm(dim=1)
    assert float(radius.min()) > (1.5 * math.pi - 5.0) / 5
    assert float(radius.max()) < (4.5 * math.pi + 5.0) / 5


def test_swiss_roll_matches_sklearn_in_distribution():
    datasets = pytest.importorskip("sklearn.datasets")
    ours = make_toy("swiss_roll", 40000, seed=0, dtype=torch.float64).numpy()
    theirs = datasets.make_swiss_roll(40000, noise=1.0, random_state=0)[0][:, [0, 2]] / 5
    np.testing.assert_allclose(ours.mean(0), theirs.mean(0), atol=0.03)
    np.testing.assert_allclose(np.cov(ours.T), np.cov(theirs.T), atol=0.05)
    quantiles = [0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_allclose(
        np.quantile(np.linalg.norm(ours, axis=1), quantiles),
        np.quantile(np.linalg.norm(theirs, axis=1), quantiles),
        atol=0.03,
    )


# -- sphere mixture ------------------------------------------------------------------------------
def _means(mixture):
    return mixture.component_distribution.base_dist.loc


@pytest.mark.parametrize("dim", [1, 2, 7, 64])
def test_sphere_mixture_means_lie_on_the_sphere(dim):
    mixture = sphere_mixture_distribution(dim, num_components=5, radius=2.5, dtype=torch.float64)
    means = _means(mixture)
    assert means.shape == (5, dim)
    torch.testing.assert_close(means.norm(dim=1), torch.full((5,), 2.5, dtype=torch.float64))
    assert isinstance(mixture, dist.MixtureSameFamily)
    assert mixture.event_shape == (dim,)
    torch.testing.assert_close(
        mixture.mixture_distribution.probs, torch.full((5,), 0.2, dtype=torch.float64)
    )


def test_sphere_mixture_means_are_spread_over_the_sphere():
    # Uniform directions: the mean of many unit means is near 0 and pairwise distances are
    # concentrated around sqrt(2) in high dimension.
    means = _means(sphere_mixture_distribution(200, num_components=400, dtype=torch.float64))
    assert float(means.mean(0).norm()) < 0.1
    distances = torch.cdist(means, means)[~torch.eye(400, dtype=torch.bool)]
    assert float(distances.mean()) == pytest.approx(math.sqrt(2), abs=0.01)
    assert float(distances.std()) < 0.1


def test_sphere_mixture_is_seeded_and_means_seed_fixes_the_distribution():
    first = sphere_mixture(300, dim=6, seed=3)
    assert first.shape == (300, 6)
    assert first.dtype == torch.float32
    assert torch.equal(first, sphere_mixture(300, dim=6, seed=3))
    assert not torch.equal(first, sphere_mixture(300, dim=6, seed=4))
    same = _means(sphere_mixture_distribution(6, means_seed=0))
    assert torch.equal(same, _means(sphere_mixture_distribution(6, means_seed=0)))
    assert not torch.allclose(same, _means(sphere_mixture_distribution(6, means_seed=1)))


def test_sphere_mixture_samples_come_from_the_distribution():
    dim, k, std = 8, 4, 0.05
    mixture = sphere_mixture_distribution(dim, num_components=k, std=std, dtype=torch.float64)
    x = sphere_mixture(8000, dim, num_components=k, std=std, seed=2, dtype=torch.float64)
    means = _means(mixture)
    nearest = torch.cdist(x, means).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=k).double()
    torch.testing.assert_close(
        counts / len(x), torch.full((k,), 1 / k, dtype=torch.float64), atol=0.02, rtol=0
    )
    residual = x - means[nearest]
    assert float(residual.std()) == pytest.approx(std, rel=0.02)
    assert float(residual.mean(0).abs().max()) < 0.005


def test_sphere_mixture_log_prob_is_the_hand_written_mixture_density():
    dim, k, radius, std = 3, 5, 1.5, 0.4
    mixture = sphere_mixture_distribution(dim, k, radius, std, dtype=torch.float64)
    x = sphere_mixture(200, dim, k, radius, std, seed=5, dtype=torch.float64)
    x = torch.cat(
        [x, torch.randn(50, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))]
    )
    means = _means(mixture).numpy()
    squared = ((x.numpy()[:, None, :] - means[None]) ** 2).sum(-1)
    density = np.exp(-squared / (2 * std**2)).mean(1) / (2 * np.pi * std**2) ** (dim / 2)
    np.testing.assert_allclose(mixture.log_prob(x).numpy(), np.log(density), rtol=1e-10)


def test_sphere_mixture_density_integrates_to_one_in_2d():
    mixture = sphere_mixture_distribution(2, num_components=6, std=0.2, dtype=torch.float64)
    grid = torch.linspace(-2.5, 2.5, 501, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    mass = mixture.log_prob(points).exp().sum() * (grid[1] - grid[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


def test_sphere_mixture_density_is_normalised_by_importance_sampling_in_3d():
    mixture = sphere_mixture_distribution(3, num_components=7, std=0.3, dtype=torch.float64)
    proposal = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=torch.float64), 1.5**2 * torch.eye(3, dtype=torch.float64)
    )
    z = 1.5 * torch.randn(
        200_000, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    weights = (mixture.log_prob(z) - proposal.log_prob(z)).exp()
    assert float(weights.mean()) == pytest.approx(1.0, abs=0.02)


def test_sphere_mixture_log_prob_takes_batch_shapes_and_dtypes():
    mixture = sphere_mixture_distribution(4, num_components=3, dtype=torch.float64)
    assert mixture.log_prob(torch.zeros(2, 5, 4, dtype=torch.float64)).shape == (2, 5)
    assert sphere_mixture(10, 4, dtype=torch.float64).dtype == torch.float64
    assert sphere_mixture_distribution(4).sample((7,)).shape == (7, 4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 0}, "dim"),
        ({"dim": 2, "num_components": 0}, "num_components"),
        ({"dim": 2, "radius": 0.0}, "radius"),
        ({"dim": 2, "std": -1.0}, "std"),
    ],
)
def test_sphere_mixture_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sphere_mixture_distribution(**kwargs)
    with pytest.raises(ValueError, match=match):
        sphere_mixture(10, **kwargs)


def test_sphere_mixture_rejects_no_samples():
    with pytest.raises(ValueError, match="num_samples"):
        sphere_mixture(0, dim=3)


# -- digits --------------------------------------------------------------------------------------
def _rows(x):
    return sorted(map(tuple, x.tolist()))


def test_digits_split_sizes_values_and_partition():
    pytest.importorskip("sklearn")
    train, test, everything = load_digits("train"), load_digits("test"), load_digits("all")
    assert train.shape == (1437, 64)
    assert test.shape == (360, 64)
    assert everything.shape == (1797, 64)
    assert train.dtype == torch.float32
    assert torch.equal(everything, everything.round())
    assert float(everything.min()) == 0.0
    assert float(everything.max()) == 16.0
    assert _rows(torch.cat([train, test])) == _rows(everything)


def test_digits_split_follows_random_state_and_test_fraction():
    pytest.importorskip("sklearn")
    assert torch.equal(load_digits("test"), load_digits("test", random_state=0))
    assert not torch.equal(load_digits("test"), load_digits("test", random_state=1))
    assert load_digits("test", test_fraction=0.5).shape == (899, 64)
    assert load_digits("train", test_fraction=0.5, dtype=torch.float64).dtype == torch.float64


def test_digits_split_is_sklearn_train_test_split_with_random_state_0():
    datasets = pytest.importorskip("sklearn.datasets")
    selection = pytest.importorskip("sklearn.model_selection")
    train, test = selection.train_test_split(
        datasets.load_digits().data, test_size=0.2, random_state=0
    )
    assert torch.equal(load_digits("train", dtype=torch.float64), torch.as_tensor(train))
    assert torch.equal(load_digits("test", dtype=torch.float64), torch.as_tensor(test))


@pytest.mark.parametrize(
    "kwargs, match", [({"split": "valid"}, "split"), ({"test_fraction": 1.0}, "test_fraction")]
)
def test_digits_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_digits(**kwargs)


def test_digits_without_sklearn_names_the_extra(monkeypatch):
    for name in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "pyroflows\[digits\]"'):
        load_digits()


def test_full_covariance_gaussian_scores_the_reference_bits_per_dim():
    # REFERENCES.md: on the digits protocol a full-covariance Gaussian scores 2.975 bits/dim.
    pytest.importorskip("sklearn")
    train = dequantize(load_digits("train", dtype=torch.float64), seed=0)
    test = dequantize(load_digits("test", dtype=torch.float64), seed=1)
    gaussian = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    nll = -gaussian.log_prob(test).mean()
    assert float(bits_per_dim(nll, dim=64)) == pytest.approx(2.975, abs=0.01)


# -- dequantisation ------------------------------------------------------------------------------
def test_dequantize_range_bins_and_seed():
    k = torch.arange(17.0).repeat(40, 1)
    x = dequantize(k, seed=0)
    assert x.shape == k.shape
    assert x.dtype == torch.float32
    assert bool(((x >= 0) & (x < 1)).all())
    assert torch.equal(torch.floor(17 * x), k)
    assert torch.equal(x, dequantize(k, seed=0))
    assert not torch.equal(x, dequantize(k, seed=1))
    # The noise is uniform on each bin: its mean within a bin is one half.
    assert float((17 * x - k).mean()) == pytest.approx(0.5, abs=0.02)


def test_dequantize_keeps_float_dtypes_and_converts_integers():
    assert dequantize(torch.tensor([1.0, 2.0], dtype=torch.float64)).dtype == torch.float64
    assert dequantize(torch.tensor([1, 2])).dtype == torch.float32
    assert dequantize(torch.tensor([0, 255]), levels=256).max() < 1


def test_dequantize_stays_below_one_after_rounding_to_float32():
    # With this seed a draw of u rounds to 1.0 in float32; the result must stay below 1.
    x = dequantize(torch.zeros(2**16), levels=1, seed=479)
    assert float(x.max()) < 1.0


@pytest.mark.parametrize("values", [[17.0], [-1.0], [0.5]])
def test_dequantize_rejects_values_off_the_levels(values):
    with pytest.raises(ValueError, match=r"integer values in \[0, 16\]"):
        dequantize(torch.tensor(values))


def test_dequantize_does_not_touch_global_random_states():
    torch_state = torch.get_rng_state()
    numpy_state = np.random.get_state()  # noqa: NPY002
    dequantize(torch.zeros(10, 3))
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002


# -- logit transform -----------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 1e-6, 0.05, 0.3])
def test_logit_log_det_matches_autograd(alpha):
    x = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = 0.01 + 0.98 * x
    y, log_det = logit_transform(x, alpha)
    assert y.shape == x.shape
    assert log_det.shape == (6,)
    for row, expected in zip(x, log_det, strict=True):
        jacobian = torch.autograd.functional.jacobian(lambda v: logit_transform(v, alpha)[0], row)
        torch.testing.assert_close(torch.linalg.slogdet(jacobian)[1], expected)


def test_logit_transform_round_trip_and_batch_shapes():
    x = torch.rand(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, log_det = logit_transform(x)
    assert log_det.shape == (3, 4)
    torch.testing.assert_close(inverse_logit_transform(y), x)
    torch.testing.assert_close(logit_transform(inverse_logit_transform(y))[0], y)


def test_logit_density_converts_to_a_density_on_the_unit_interval():
    # A standard normal in logit space, carried back to [0, 1) with the log-det, has the mass
    # the normal puts on [logit(alpha), logit(1 - alpha)].
    alpha = 0.05
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)[1:-1].unsqueeze(-1)
    y, log_det = logit_transform(x, alpha)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(y).squeeze(-1) + log_det
    mass = torch.trapezoid(log_p.exp(), x.squeeze(-1))
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    edge = math.log(alpha / (1 - alpha))
    expected = normal.cdf(torch.tensor(-edge)) - normal.cdf(torch.tensor(edge))
    assert float(mass) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 0.5, 1.0])
def test_logit_transform_rejects_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        logit_transform(torch.rand(3), alpha)
    with pytest.raises(ValueError, match="alpha"):
        inverse_logit_transform(torch.rand(3), alpha)


# -- bits per dimension --------------------------------------------------------------------------
def test_bits_per_dim_of_the_uniform_density_is_log2_of_the_levels():
    assert bits_per_dim(0.0, dim=64) == pytest.approx(math.log2(17))
    assert bits_per_dim(0.0, dim=3, levels=256) == pytest.approx(8.0)
    assert isinstance(bits_per_dim(0.0, dim=64), float)


def test_bits_per_dim_is_exact_for_a_density_constant_on_each_bin():
    # p(x) = 17 P(k) on the bin of level k: the Jensen bound is tight, so the bits/dim of the
    # dequantised data equal -log2 P(k), the bits of the discrete data.
    probs = torch.softmax(torch.linspace(-2, 2, 17, dtype=torch.float64), 0)
    levels = torch.arange(17)
    nll = -torch.log(17 * probs[levels])
    torch.testing.assert_close(bits_per_dim(nll, dim=1), -torch.log2(probs[levels]))


def test_bits_per_dim_with_one_level_is_the_nll_in_bits():
    torch.testing.assert_close(
        bits_per_dim(torch.tensor([10.0, 20.0]), dim=10, levels=1),
        torch.tensor([10.0, 20.0]) / (10 * math.log(2)),
    )


@pytest.mark.parametrize("kwargs", [{"dim": 0}, {"dim": 4, "levels": 0}])
def test_bits_per_dim_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bits_per_dim(1.0, **kwargs)


# -- loading users' files ------------------------------------------------------------------------
def _write(path, text):
    path.write_text(text)
    return path


def test_load_npy_npz_and_csv(tmp_path):
    data = np.arange(12.0).reshape(4, 3) ** 1.5
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "one.npz", data)
    np.savez(tmp_path / "two.npz", train=data, test=data[:2])
    np.savetxt(tmp_path / "a.csv", data, delimiter=",")
    expected = torch.as_tensor(data, dtype=torch.float32)
    assert torch.equal(load_array(tmp_path / "a.npy"), expected)
    assert torch.equal(load_array(str(tmp_path / "one.npz")), expected)
    assert torch.equal(load_array(tmp_path / "two.npz", key="test"), expected[:2])
    torch.testing.assert_close(load_array(tmp_path / "a.csv", expected_dim=3), expected)
    as_double = load_array(tmp_path / "a.npy", dtype=torch.float64)
    assert as_double.dtype == torch.float64
    assert torch.equal(as_double, torch.as_tensor(data))


def test_load_integer_and_upper_case_extension(tmp_path):
    with (tmp_path / "ints.NPY").open("wb") as file:  # np.save(path) would append ".npy"
        np.save(file, np.array([[1, 2], [3, 5]], dtype=np.int16))
    assert torch.equal(load_array(tmp_path / "ints.NPY"), torch.tensor([[1.0, 2.0], [3.0, 5.0]]))


def test_csv_header_detection(tmp_path):
    with_header = _write(tmp_path / "h.csv", "x,y\n1,2\n3,4\n")
    without = _write(tmp_path / "n.csv", "1,2\n3,4\n")
    expected = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(load_array(with_header), expected)
    assert torch.equal(load_array(without), expected)
    numeric_header = _write(tmp_path / "nh.csv", "0,1\n1,2\n3,4\n")
    assert torch.equal(load_array(numeric_header, header=True), expected)
    assert load_array(numeric_header).shape == (3, 2)
    with pytest.raises(ValueError, match=r"row 0 \(line 1\), column 0: 'x'"):
        load_array(with_header, header=False)


def test_csv_skips_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffa,b\n1,2\n\n3, 4\n\n".encode())
    assert torch.equal(load_array(path), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_csv_non_numeric_cells_name_row_and_column(tmp_path):
    path = _write(tmp_path / "bad.csv", "a,b,c\n1,2,3\n4,oops,6\n7,8,\n")
    with pytest.raises(ValueError) as info:
        load_array(path)
    message = str(info.value)
    assert "bad.csv" in message
    assert "cells that are not numbers (2 cells)" in message
    assert "row 1 (line 3), column 1: 'oops'" in message
    assert "row 2 (line 4), column 2: ''" in message
    assert "header" not in message  # the first line was a header, and was taken as one
    mixed = _write(tmp_path / "mixed.csv", "x,1\n2,3\n")
    with pytest.raises(ValueError, match="if the first line is a header, pass header=True"):
        load_array(mixed)


def test_csv_rows_of_empty_cells_are_not_dropped(tmp_path):
    path = _write(tmp_path / "holes.csv", "1,2\n,\n3,4\n")
    with pytest.raises(ValueError, match=r"\(2 cells\): row 1 \(line 2\), column 0: ''; "):
        load_array(path)


def test_csv_many_bad_cells_lists_ten_and_counts_the_rest(tmp_path):
    path = _write(tmp_path / "many.csv", "1,2\n" + "x,2\n" * 15)
    with pytest.raises(ValueError, match=r"\(15 cells\).*row 10 \(line 11\).*and 5 more") as info:
        load_array(path)
    assert "row 11 " not in str(info.value)


def test_csv_ragged_rows_are_reported(tmp_path):
    path = _write(tmp_path / "ragged.csv", "1,2,3\n4,5\n6,7,8\n9,10,11,12\n")
    with pytest.raises(
        ValueError,
        match=r"3 of the first line \(2 rows\): row 1 \(line 2\) has 2; "
        r"row 3 \(line 4\) has 4",
    ):
        load_array(path)


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_rows_with_nan_or_inf_are_listed(tmp_path, suffix):
    data = np.ones((8, 2)) * np.arange(8.0)[:, None] + np.array([0.0, 1.0])
    data[2, 0] = np.nan
    data[5, 1] = np.inf
    data[6, 0] = -np.inf
    path = tmp_path / f"nan{suffix}"
    if suffix == ".npy":
        np.save(path, data)
    else:
        np.savetxt(path, data, delimiter=",")
    with pytest.raises(
        ValueError, match=r"NaN or infinite values \(3 rows\), 0-based indices: 2, 5, 6$"
    ):
        load_array(path)


def test_many_nan_rows_list_the_first_ten_and_count(tmp_path):
    data = np.random.default_rng(0).normal(size=(40, 3))
    data[5:30, 1] = np.nan
    np.save(tmp_path / "many.npy", data)
    with pytest.raises(
        ValueError,
        match=r"\(25 rows\), 0-based indices: 5, 6, 7, 8, 9, 10, 11, "
        r"12, 13, 14, \.\.\. and 15 more$",
    ):
        load_array(tmp_path / "many.npy")


def test_wrong_dimension_says_expected_and_got(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(5, 2)))
    with pytest.raises(ValueError, match="wrong dimensionality: expected 3 columns, got 2"):
        load_array(tmp_path / "a.npy", expected_dim=3)


def test_constant_columns_are_named(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 4))
    data[:, 1] = 7.0
    data[:, 3] = 0.0
    np.save(tmp_path / "c.npy", data)
    with pytest.raises(
        ValueError, match=r"constant columns.*\(2 columns\), 0-based indices: 1, 3;"
    ):
        load_array(tmp_path / "c.npy")
    assert load_array(tmp_path / "c.npy", allow_constant_columns=True).shape == (6, 4)
    np.save(tmp_path / "single.npy", data[:1])
    assert load_array(tmp_path / "single.npy").shape == (1, 4)


@pytest.mark.parametrize("name, content", [("e.csv", b""), ("e.npy", b""), ("e.npz", b"")])
def test_empty_files_are_rejected(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=r"the file is empty \(0 bytes\)"):
        load_array(tmp_path / name)


def test_files_without_rows_are_rejected(tmp_path):
    header_only = _write(tmp_path / "h.csv", "x,y\n\n")
    with pytest.raises(ValueError, match=r"no data rows \(shape \(0, 2\)\)"):
        load_array(header_only)
    np.save(tmp_path / "zero.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="no data rows"):
        load_array(tmp_path / "zero.npy")
    np.save(tmp_path / "nocols.npy", np.zeros((4, 0)))
    with pytest.raises(ValueError, match="no columns"):
        load_array(tmp_path / "nocols.npy")


def test_arrays_that_are_not_2d_are_rejected(tmp_path):
    np.save(tmp_path / "flat.npy", np.arange(5.0))
    with pytest.raises(
        ValueError, match=r"got shape \(5,\); save one-dimensional data with shape \(N, 1\)"
    ):
        load_array(tmp_path / "flat.npy")
    np.save(tmp_path / "images.npy", np.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="flatten each example"):
        load_array(tmp_path / "images.npy")


@pytest.mark.parametrize("name", ["data.txt", "data.json", "data"])
def test_unsupported_extensions_are_rejected(tmp_path, name):
    _write(tmp_path / name, "1,2\n")
    with pytest.raises(
        ValueError, match=r"unsupported file extension.*expected one of \.npy, \.npz, \.csv"
    ):
        load_array(tmp_path / name)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_array(tmp_path / "absent.npy")


def test_npz_key_selection(tmp_path):
    np.savez(tmp_path / "two.npz", train=np.ones((2, 2)), test=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"holds 2 arrays \(train, test\); choose one with key="):
        load_array(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="has no array 'valid'; it holds: train, test"):
        load_array(tmp_path / "two.npz", key="valid")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="holds no arrays"):
        load_array(tmp_path / "none.npz")


def test_pickled_and_non_numeric_arrays_are_refused(tmp_path):
    objects = np.array([[1, "a"], [2, None]], dtype=object)
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read a numeric array from this \.npy file"):
        load_array(tmp_path / "objects.npy")
    np.savez(tmp_path / "objects.npz", x=objects)
    with pytest.raises(ValueError, match="cannot read array 'x' as numbers"):
        load_array(tmp_path / "objects.npz")
    np.save(tmp_path / "strings.npy", np.array([["1", "2"]]))
    with pytest.raises(ValueError, match="expected numbers, got an array of dtype <U1"):
        load_array(tmp_path / "strings.npy")
    _write(tmp_path / "text.npy", "not an array")
    with pytest.raises(ValueError, match="cannot read a numeric array"):
        load_array(tmp_path / "text.npy")
    with zipfile.ZipFile(tmp_path / "plain.npz", "w") as archive:
        archive.writestr("notes.txt", "1,2")
    with pytest.raises(ValueError, match=r"member 'notes\.txt' is not a \.npy array"):
        load_array(tmp_path / "plain.npz")
    _write(tmp_path / "text.npz", "not an archive")
    with pytest.raises(ValueError, match=r"not a valid \.npz archive"):
        load_array(tmp_path / "text.npz")


def test_values_beyond_the_dtype_range_are_refused(tmp_path):
    data = np.random.default_rng(0).normal(size=(4, 2))
    data[3, 1] = 1e300
    np.save(tmp_path / "big.npy", data)
    with pytest.raises(ValueError, match=r"beyond the range of torch.float32.*indices: 3$"):
        load_array(tmp_path / "big.npy")
    assert load_array(tmp_path / "big.npy", dtype=torch.float64)[3, 1] == 1e300


def test_options_that_do_not_fit_the_format_are_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.eye(2))
    with pytest.raises(ValueError, match=r"key='x' only applies to \.npz"):
        load_array(tmp_path / "a.npy", key="x")
    with pytest.raises(ValueError, match=r"header=True only applies to \.csv"):
        load_array(tmp_path / "a.npy", header=True)
    with pytest.raises(ValueError, match="floating dtype"):
        load_array(tmp_path / "a.npy", dtype=torch.int64)


# -- the single entry point ----------------------------------------------------------------------
def test_dataset_resolves_toys_sphere_mixture_and_files(tmp_path):
    assert torch.equal(dataset("moons", 50, seed=2), make_toy("moons", 50, seed=2))
    assert torch.equal(dataset("8gaussians", 20), make_toy("eight_gaussians", 20))
    assert torch.equal(
        dataset("sphere_mixture", 30, seed=1, dim=5, std=0.2),
        sphere_mixture(30, 5, std=0.2, seed=1),
    )
    np.save(tmp_path / "a.npy", np.arange(6.0).reshape(3, 2))
    assert torch.equal(dataset(tmp_path / "a.npy"), load_array(tmp_path / "a.npy"))
    assert torch.equal(
        dataset(str(tmp_path / "a.npy"), expected_dim=2), load_array(tmp_path / "a.npy")
    )


def test_dataset_digits_is_dequantised():
    pytest.importorskip("sklearn")
    x = dataset("digits", split="test", seed=3)
    assert torch.equal(x, dequantize(load_digits("test"), seed=3))
    assert dataset("digits", split="all").shape == (1797, 64)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: dataset("moons"), ValueError, "pass num_samples"),
        (lambda: dataset("moons", 10, dim=3), ValueError, "options dim do not apply to 'moons'"),
        (lambda: dataset("digits", 100), ValueError, "num_samples does not apply"),
        (lambda: dataset("sphere_mixture", 10), ValueError, "pass dim="),
        (lambda: dataset("missing.csv"), FileNotFoundError, "no such file"),
        (lambda: dataset("missing.csv", 10), ValueError, "num_samples does not apply to a file"),
        (lambda: dataset(3), TypeError, "dataset name or a path"),
    ],
)
def test_dataset_rejects_misuse(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_dataset_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as info:
        dataset("mnist")
    for name in (*TOY_DATASETS, "digits", "sphere_mixture", ".npy, .npz, .csv"):
        assert name in str(info.value)
