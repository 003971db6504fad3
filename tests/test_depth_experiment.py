"""The depth experiment (Koehler, Mehta & Risteski): its estimates, its reference, its trend."""

from __future__ import annotations

import math

import pytest
import torch

from pyroflows.data import sphere_mixture, sphere_mixture_distribution
from pyroflows.experiments.depth import (
    DepthResult,
    depth_needed,
    depth_run,
    depth_table,
    generator_run,
    kl_table,
)

SMALL = {"train_rows": 4000, "test_rows": 2000, "hidden_dims": [32, 32]}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_generator_recovers_the_mixture_it_can_represent():
    result = generator_run(6, 5, train_rows=3000, test_rows=3000)
    assert result.flow == "generator" and result.depth == 1
    assert result.num_params == 5 * (6 + 2) - 1
    # the estimate of KL(p || q) is about zero, within its noise and a small fitting error
    assert abs(result.kl) < 3 * result.kl_se + 0.02
    assert result.test_nll == pytest.approx(result.true_nll + result.kl)


def test_the_true_nll_is_the_mixtures_own_on_fresh_test_points():
    result = depth_run("realnvp", 4, 3, 1, steps=5, train_rows=200, test_rows=500, seed=2)
    test = sphere_mixture(500, 4, num_components=3, seed=10_002)
    expected = -sphere_mixture_distribution(4, 3, dtype=torch.float64).log_prob(test.double())
    assert result.true_nll == pytest.approx(float(expected.mean()), rel=1e-9)
    assert result.kl == pytest.approx(result.test_nll - result.true_nll, abs=1e-9)
    assert result.kl_se > 0 and math.isfinite(result.kl)
    assert result.steps >= 5 and result.num_params > 0


def test_depth_is_needed_for_many_modes_and_not_for_one():
    rows = depth_table(["realnvp"], [4], [1, 8], [1, 4], steps=600, generator=False, **SMALL)
    kl = {(row.num_components, row.depth): row.kl for row in rows}
    # one Gaussian: standardised by fit(), the identity-initialised flow is exact at any depth
    assert kl[1, 1] < 0.05 and kl[1, 4] < 0.05
    # eight modes: one coupling layer (identity on half the coordinates) is far off, and
    # four layers are far closer
    assert kl[8, 1] > 1.0
    assert kl[8, 4] < 0.6 * kl[8, 1]
    needed = depth_needed(rows, tolerance=0.1)
    assert needed["realnvp", 4, 1] == 1
    assert needed["realnvp", 4, 8] is None or needed["realnvp", 4, 8] > 1


def test_depth_needed_takes_the_median_over_seeds_and_reports_misses():
    def row(depth, kl, seed):
        return DepthResult("nsf", 8, 4, depth, seed, 10, 0.0, 0.0, kl, 0.01, 1, 0.1)

    rows = [row(1, 0.5, 0), row(1, 0.05, 1), row(1, 0.6, 2), row(2, 0.08, 0), row(2, 0.2, 1)]
    rows += [row(2, 0.01, 2)]
    assert depth_needed(rows, 0.1) == {("nsf", 8, 4): 2}
    assert depth_needed(rows, 0.001) == {("nsf", 8, 4): None}
    table = kl_table(rows, 0.001)
    assert "needed" in table and ">2" in table.splitlines()[1]
    with pytest.raises(ValueError, match="tolerance"):
        depth_needed(rows, 0.0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"dim": 1}, "dim must be an int >= 2"),
        ({"depth": 0}, "depth must be an int >= 1"),
        ({"num_components": 0}, "num_components must be an int >= 1"),
        ({"train_rows": 5}, "train_rows must be an int >= 20"),
    ],
)
def test_bad_input_is_named(options, match):
    arguments = {"flow": "realnvp", "dim": 4, "num_components": 2, "depth": 2, **options}
    with pytest.raises(ValueError, match=match):
        depth_run(**arguments, steps=1)
