"""The conformance suite runs on ``--device`` (see the root conftest.py)."""

import pytest

from . import cases


@pytest.fixture(autouse=True, scope="session")
def _suite_device(device):
    """Put ``cases.DEVICE`` on the ``--device`` option (skipped where it is unavailable)."""
    cases.DEVICE = device
    yield
