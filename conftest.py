"""Test-wide settings: a fixed random state, and the device and dtype of device-generic tests.

Every test and every doctest starts from the same random state. Tests that take the
``device`` and ``dtype`` fixtures run where ``--device`` and ``--dtype`` say (default: cpu,
float32), so ``pytest --device cuda --dtype float64`` reruns them on a GPU in double precision;
tests whose checks need a given dtype (float64 cross-checks, say) take only ``device``.
"""

import pytest
import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def pytest_addoption(parser):
    """``--device`` and ``--dtype``, read by the fixtures of the same names."""
    group = parser.getgroup("pyroflows")
    group.addoption(
        "--device",
        default="cpu",
        help="torch device of the device-generic tests, e.g. cpu, cuda, cuda:1 (default: cpu)",
    )
    group.addoption(
        "--dtype",
        default="float32",
        choices=sorted(DTYPES),
        help="floating-point dtype of the dtype-generic tests (default: float32)",
    )


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The ``--device`` option; tests that take it skip when that device is not available."""
    name = request.config.getoption("--device")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise pytest.UsageError(f"--device {name}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            pytest.skip(f"--device {name}: no CUDA device (torch.cuda.is_available() is False)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            pytest.skip(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        pytest.skip(f"--device {name}: MPS is not available")
    return device


@pytest.fixture(scope="session")
def dtype(request) -> torch.dtype:
    """The ``--dtype`` option."""
    return DTYPES[request.config.getoption("--dtype")]
