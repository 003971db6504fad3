"""Data files and arrays that are hostile or degenerate: refused clearly, or warned about.

Each test names the row of the December 2026 reliability probe it covers.
"""

from __future__ import annotations

import io
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch

from pyroflows.data import load_array
from pyroflows.data.degenerate import warn_if_degenerate
from pyroflows.errors import DataError, DataWarning


def _forged_header(shape=(400_000, 500_000)) -> bytes:
    """A valid .npy header declaring ``shape`` float64 (1.6 TB by default), and no data."""
    buffer = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def test_row20_a_directory_is_named_as_one(tmp_path):
    (tmp_path / "adir.npy").mkdir()
    with pytest.raises(DataError, match=r"adir\.npy: is a directory, not a data file"):
        load_array(tmp_path / "adir.npy")


def test_row20_a_symlink_loop_is_named_as_one(tmp_path):
    loop = tmp_path / "loop.npy"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="a symlink loop"):
        load_array(loop)


def test_row20_a_dangling_symlink_names_its_target(tmp_path):
    (tmp_path / "link.npy").symlink_to(tmp_path / "gone.npy")
    with pytest.raises(FileNotFoundError, match=r"a symlink to .*gone\.npy, which does not exist"):
        load_array(tmp_path / "link.npy")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_row21_a_header_declaring_terabytes_is_refused_before_allocating(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    if suffix == ".npy":
        path.write_bytes(_forged_header())
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.npy", _forged_header())
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"declares an array of shape \(400000, 500000\)"):
        load_array(path)
    assert time.perf_counter() - started < 1.0


def test_row21_a_truncated_npy_names_the_missing_bytes(tmp_path):
    np.save(tmp_path / "full.npy", np.arange(200.0).reshape(100, 2))
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:300])
    with pytest.raises(DataError, match=r"\(1,600 bytes\), but only 172 bytes follow it"):
        load_array(tmp_path / "cut.npy")
    assert load_array(tmp_path / "full.npy").shape == (100, 2)  # a sound file still loads


def test_errors_stay_value_errors_for_python_callers(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_array(tmp_path / "empty.csv")


def _caught(data: torch.Tensor) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_if_degenerate(data)
    assert all(issubclass(w.category, DataWarning) for w in caught)
    return [str(w.message) for w in caught]


def test_row18_collinear_columns_warn_and_name_the_columns():
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    x[:, 3] = x[:, 1] - 2 * x[:, 2]
    (message,) = _caught(x)
    assert "linearly dependent" in message and "rank 3 < 4" in message
    assert "columns 1, 2, 3" in message


def test_row18_fewer_rows_than_columns_warn():
    (message,) = _caught(torch.randn(10, 20))
    assert "10 rows for 20 columns" in message


def test_row23_a_sentinel_value_warns_with_its_row():
    x = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    x[17, 1] = 1e30
    (message,) = _caught(x)
    assert "1 column whose spread comes from a few extreme rows (1;" in message
    assert "row 17 = 1e+30" in message


@pytest.mark.parametrize(
    "name, data",
    [
        ("gaussian", torch.randn(1000, 5, generator=torch.Generator().manual_seed(1))),
        ("sparse binary", (torch.rand(1000, 3, generator=torch.Generator().manual_seed(2)) < 0.02)),
        ("wide scale", torch.randn(500, 2, generator=torch.Generator().manual_seed(3)) * 1e30),
    ],
)
def test_rows18_23_ordinary_data_do_not_warn(name, data):
    assert _caught(data.double()) == []
