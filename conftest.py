"""Test-wide settings: every test and every doctest starts from the same random state."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)
    yield
