"""Experiment (b) of issue 15: no, zero and Gaussian padding (pyroflows.experiments.padding).

Koehler, Mehta & Risteski 2021 (arXiv:2010.01155): zero padding trains badly conditioned flows
with poor samples; Gaussian padding does not. The trend is tested at a small size.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows.distributions import Padding
from pyroflows.experiments.padding import (
    PADDINGS,
    PaddingResult,
    degenerate_line,
    energy_distance,
    make_dataset,
    make_padding,
    padding_run,
    padding_table,
    summary_table,
)

SMALL = {"num_layers": 4, "hidden_dims": [32, 32], "every": 50, "particles": 8, "eval_rows": 200}


def test_energy_distance_is_zero_for_identical_samples_and_grows_with_a_shift():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(400, 2, generator=gen)
    b = torch.randn(400, 2, generator=gen)  # the same distribution, other draws
    assert energy_distance(a, a) == 0.0
    same = energy_distance(a, b)
    shifts = [energy_distance(a, a + torch.tensor([s, 0.0])) for s in (0.1, 0.25, 0.5, 1.0, 2.0)]
    assert 0.0 < shifts[0] and shifts == sorted(shifts) and shifts[-1] > 100 * shifts[0]
    assert 0.0 <= same < shifts[3] / 5  # other draws: the V-statistic's small positive bias
    assert energy_distance(a, b + 1.0) == pytest.approx(energy_distance(b + 1.0, a))
    # the V-statistic, written out for 1-D samples of sizes 2 and 3
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0], [4.0]])
    cross = sum(abs(p - q) for p in (0, 1) for q in (0, 2, 4)) / 6
    within = sum(abs(p - q) for p in (0, 1) for q in (0, 1)) / 4
    within += sum(abs(p - q) for p in (0, 2, 4) for q in (0, 2, 4)) / 9
    assert energy_distance(x, y) == pytest.approx(2 * cross - within)


def test_the_noisy_line_is_seeded_and_has_the_stated_spread():
    x = degenerate_line(20_000, noise=0.1, seed=3)
    assert torch.equal(x, degenerate_line(20_000, noise=0.1, seed=3))
    assert not torch.equal(x, degenerate_line(20_000, noise=0.1, seed=4))
    across = (x[:, 1] - x[:, 0]) / math.sqrt(2)
    along = (x[:, 1] + x[:, 0]) / math.sqrt(2)
    assert across.std().item() == pytest.approx(0.1, rel=0.03)
    assert along.std().item() == pytest.approx(math.sqrt(2), rel=0.03)
    assert make_dataset("moons", 7).shape == (7, 2)


def test_zero_padding_is_far_worse_conditioned_than_gaussian_padding():
    """The trend at a small size (4 couplings, 150 steps); measured ratio about 50."""
    train, test = make_dataset("line", 1000, 0), make_dataset("line", 200, 10_000)
    zero = padding_run(train, "zero", 150, 0, test_data=test, **SMALL)
    gaussian = padding_run(train, "gaussian", 150, 0, test_data=test, **SMALL)
    assert zero.cond_median > 10 * gaussian.cond_median, (zero, gaussian)
    assert zero.sigma_min < gaussian.sigma_min / 5, (zero, gaussian)  # a nearly singular map
    # zero padding has no NLL, only -log p(x, 0); Gaussian padding a bound and its scale
    assert math.isnan(zero.nll) and math.isfinite(zero.slice_nll) and math.isnan(zero.scale)
    assert math.isfinite(gaussian.nll) and math.isnan(gaussian.slice_nll)
    assert gaussian.scale == 0.5
    assert gaussian.curve["step"] == [50, 100, 150]
    assert all(len(values) == 3 for values in gaussian.curve.values())
    # repeatable from the seed
    again = padding_run(train, "gaussian", 150, 0, test_data=test, **SMALL)
    assert again.cond_median == gaussian.cond_median and again.nll == gaussian.nll


def test_the_grid_labels_its_rows_and_the_summary_takes_medians_over_seeds():
    rows = padding_table(
        ["moons"], ["none", "learned"], [0], steps=3, train_rows=200, test_rows=50,
        num_layers=2, hidden_dims=[8], particles=2,
    )  # fmt: skip
    assert [(row.dataset, row.padding, row.steps) for row in rows] == [
        ("moons", "none", 3),
        ("moons", "learned", 3),
    ]
    assert math.isfinite(rows[0].nll) and math.isnan(rows[0].scale)
    assert rows[1].scale != 0.5  # learned: it moved
    made = [
        PaddingResult("zero", seed, 1, cond, 2 * cond, 0.1, math.nan, -3.0, 0.2, math.nan, 0.0, "d")
        for seed, cond in enumerate([10.0, 30.0, 20.0])
    ]
    table = summary_table(made)
    assert "| d | zero | 20 | 40 | 0.1 | - | -3.00 | 0.2000 | - | 3 |" in table.splitlines()


def test_make_padding_names_the_four_paddings():
    assert PADDINGS == ("none", "zero", "gaussian", "learned")
    assert make_padding("none") is None
    assert make_padding("zero") == Padding(2, "zero")
    assert make_padding("gaussian") == Padding(2, scale=0.5)
    assert make_padding("learned", extra=1, scale=1.0) == Padding(1, learn_scale=True)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: energy_distance(torch.zeros(3, 2), torch.zeros(3, 3)), "same number of col"),
        (lambda: energy_distance(torch.zeros(3), torch.zeros(3, 1)), r"shape \(N >= 1, D >= 1\)"),
        (lambda: energy_distance(torch.zeros(0, 2), torch.zeros(3, 2)), r"got \(0, 2\)"),
        (lambda: energy_distance(torch.full((2, 2), math.nan), torch.zeros(2, 2)), "NaN or inf"),
        (lambda: degenerate_line(0), "n must be an int >= 1"),
        (lambda: degenerate_line(5, noise=0.0), "noise must be a number > 0"),
        (lambda: degenerate_line(5, noise=math.inf), "finite"),
        (lambda: make_padding("ones"), "padding must be one of 'none', 'zero'"),
        (lambda: padding_run(torch.zeros(20, 2), "ones"), "padding must be one of"),
        (lambda: padding_run(torch.zeros(20, 2), 0.5), "a Padding or None, got float"),
        (lambda: padding_run(torch.zeros(20, 2), "zero", steps=0), "steps must be an int >= 1"),
        (lambda: padding_run(torch.zeros(5, 2), "zero"), "at least 10 rows"),
        (
            lambda: padding_run(torch.zeros(20, 2), "zero", test_data=torch.zeros(5, 3)),
            "test_data must have the data's 2 columns",
        ),
        (lambda: padding_table(["line"], ["zeros"], [0], steps=1), "padding must be one of"),
        (lambda: padding_table(["line"], ["zero"], [0], train_rows=1), "train_rows must be"),
    ],
)
def test_bad_input_names_what_is_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
