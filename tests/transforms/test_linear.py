"""Linear flows: ActNorm's data-dependent start, permutations (``transforms/linear.py``)."""

from __future__ import annotations

import io

import pytest
import torch

from pyroflows.transforms import ActNorm, Permutation, permutation


@pytest.mark.parametrize("side", ["input", "output"])
def test_actnorm_standardises_its_first_batch(side):
    torch.manual_seed(0)
    data = 3.0 + torch.tensor([2.0, 0.5]) * torch.randn(500, 2)
    data[7, 1] = float("nan")  # ignored by the statistics
    flow = ActNorm(2)
    out = flow(data) if side == "input" else flow.inv(data)
    finite = torch.isfinite(out).all(-1)
    torch.testing.assert_close(out[finite].mean(0), torch.zeros(2), atol=1e-2, rtol=0)
    torch.testing.assert_close(out[finite].std(0), torch.ones(2), atol=1e-2, rtol=0)
    assert flow.initialized


def test_actnorm_is_not_reinitialised_after_loading():
    flow = ActNorm(2)
    flow.inv(torch.randn(100, 2) * 4 + 1)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    restored = ActNorm(2)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.initialized
    probe = torch.randn(5, 2) * 100  # would move the parameters if it initialised them
    torch.testing.assert_close(restored.inv(probe), flow.inv(probe))


def test_permutation_validation_and_helpers():
    with pytest.raises(ValueError, match="not a permutation"):
        Permutation([0, 0, 1])
    assert permutation(4, "reverse").permutation.tolist() == [3, 2, 1, 0]
    assert torch.equal(permutation(6, seed=3).permutation, permutation(6, seed=3).permutation)
    with pytest.raises(ValueError, match="kind"):
        permutation(3, "sorted")


def test_random_permutations_differ_per_call_and_follow_manual_seed():
    """seed=None draws from torch's global RNG: three layers get distinct permutations (they
    were all seed 0's before) and torch.manual_seed reproduces them."""
    torch.manual_seed(1)
    drawn = [permutation(6).permutation.tolist() for _ in range(3)]
    assert len({tuple(p) for p in drawn}) == 3
    torch.manual_seed(1)
    assert [permutation(6).permutation.tolist() for _ in range(3)] == drawn


def test_saved_random_permutation_loads_exactly():
    torch.manual_seed(2)
    saved = permutation(8)
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    restored = permutation(8)  # another draw until the saved one is loaded
    assert not torch.equal(restored.permutation, saved.permutation)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.permutation, saved.permutation)
    x = torch.randn(4, 8)
    assert torch.equal(restored(x), saved(x)) and torch.equal(restored.inv(saved(x)), x)
