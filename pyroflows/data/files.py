"""Load a user's dataset from a ``.npy``, ``.npz`` or ``.csv`` file, with checks.

Bad data fails loudly: every problem raises :class:`~pyroflows.errors.DataError` (a
:class:`ValueError`) with a message that names the file and what is wrong where (row and
column indices are 0-based, counting data rows only; CSV messages give the file's line number
too). No row is ever dropped or repaired.
"""

from __future__ import annotations

import csv
import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

__all__ = ["load_array"]

SUPPORTED_SUFFIXES = (".npy", ".npz", ".csv")
_SHOWN = 10  # indices listed in a message before "... (N in all)"


def load_array(
    path: str | os.PathLike[str],
    expected_dim: int | None = None,
    *,
    key: str | None = None,
    header: bool | None = None,
    allow_constant_columns: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Load an ``(N, D)`` numeric array from a file and check it is fit for density estimation.

    Formats, chosen by the file extension (case-insensitive):

    * ``.npy``: one array, read with ``allow_pickle=False``.
    * ``.npz``: an archive read with ``allow_pickle=False``; the array named ``key``, or its
      only array when ``key`` is not given.
    * ``.csv``: comma-separated numbers, one example per line (UTF-8, a byte-order mark is
      fine; blank lines are skipped). A first line with no number in it is a header and is
      skipped; ``header=True`` or ``header=False`` overrides the detection. ``nan`` and
      ``inf`` parse as numbers (and are then rejected below).

    Checks, each raising :class:`~pyroflows.errors.DataError` (a :class:`ValueError`):
    unsupported extension; a directory or a symlink loop instead of a file; empty file;
    a ``.npy`` header (also inside an ``.npz``) declaring more data than the file holds,
    refused before anything is allocated; unreadable content (not an array, pickled objects,
    non-numeric dtype); CSV cells that are not
    numbers and rows with the wrong number of cells; an array that is not 2-D; zero rows or
    zero columns; a number of columns other than ``expected_dim``; rows holding NaN or
    infinite values (listed by index); values too large for ``dtype``; constant columns
    (listed; a density is degenerate along them) unless ``allow_constant_columns`` or the
    file has a single row.

    Args:
        path: the file.
        expected_dim: number of columns :math:`D` the data must have, or ``None`` for any.
        key: name of the array in an ``.npz`` archive (only for ``.npz``).
        header: CSV only: whether the first line is a header (``None``: detect it).
        allow_constant_columns: accept columns with a single value (e.g. test data).
        dtype: floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        A tensor of shape ``(N, D)``, rows in file order.

    Raises:
        FileNotFoundError: if ``path`` does not exist (or is a symlink to nothing).
        DataError: for any of the problems above.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> path = os.path.join(folder, "points.csv")
        >>> with open(path, "w") as f:
        ...     _ = f.write("x,y\n0.5,1\n2,-3\n")
        >>> load_array(path)
        tensor([[ 0.5000,  1.0000],
                [ 2.0000, -3.0000]])
        >>> with open(path, "a") as f:
        ...     _ = f.write("nan,4\n")
        >>> load_array(path)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: ...points.csv: rows holding NaN or infinite values (1 row), ...
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file extension {path.suffix or '(none)'!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if key is not None and suffix != ".npz":
        raise DataError(f"{path}: key={key!r} only applies to .npz archives")
    if header is not None and suffix != ".csv":
        raise DataError(f"{path}: header={header!r} only applies to .csv files")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    if _file_size(path) == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    if suffix == ".csv":
        array = _read_csv(path, header)
    elif suffix == ".npy":
        array = _read_npy(path)
    else:
        array = _read_npz(path, key)
    return _validate(array, path, expected_dim, allow_constant_columns, dtype, device)


def _file_size(path: Path) -> int:
    """The size of the regular file at ``path``; a clear error for anything else there."""
    try:
        status = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise FileNotFoundError(
                f"no such file: {path} (a symlink to {os.readlink(path)}, which does not exist)"
            ) from None
        raise FileNotFoundError(f"no such file: {path}") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DataError(f"{path}: a symlink loop (the links never reach a file)") from None
        raise
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    return status.st_size


def _check_declared_size(file, available: int, where: str) -> None:
    """Refuse a ``.npy`` header that declares more bytes than ``available`` after it.

    Read before the array, so that a tiny file declaring terabytes costs nothing.
    """
    try:
        version = np.lib.format.read_magic(file)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(file)
    except ValueError:
        return  # not a .npy header: reading the array reports it
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    remaining = available - file.tell()
    if declared > remaining:
        raise DataError(
            f"{where}: the header declares an array of shape {tuple(shape)} and dtype {dtype} "
            f"({declared:,} bytes), but only {max(remaining, 0):,} bytes follow it: "
            "a truncated or forged file"
        )


def _read_npy(path: Path) -> np.ndarray:
    with path.open("rb") as file:
        _check_declared_size(file, path.stat().st_size, str(path))
        file.seek(0)
        try:
            return np.lib.format.read_array(file, allow_pickle=False)
        except ValueError as error:
            raise DataError(
                f"{path}: cannot read a numeric array from this .npy file ({error})"
            ) from error


def _read_npz(path: Path, key: str | None) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        # numpy's own message for a file that is no archive is about pickles: not helpful.
        raise DataError(f"{path}: not a valid .npz archive ({type(error).__name__})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not a .npz archive (it holds a single .npy array)")
    with archive:
        names = list(archive.files)
        if not names:
            raise DataError(f"{path}: the archive holds no arrays")
        if key is None:
            if len(names) > 1:
                raise DataError(
                    f"{path}: the archive holds {len(names)} arrays ({', '.join(names)}); "
                    "choose one with key=NAME"
                )
            key = names[0]
        elif key not in names:
            raise DataError(
                f"{path}: the archive has no array {key!r}; it holds: {', '.join(names)}"
            )
        member = f"{key}.npy" if f"{key}.npy" in archive.zip.namelist() else key
        try:
            with archive.zip.open(member) as file:
                size = archive.zip.getinfo(member).file_size
                _check_declared_size(file, size, f"{path}: array {key!r}")
            array = archive[key]
        except DataError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: cannot read array {key!r} as numbers ({error})") from error
    if not isinstance(array, np.ndarray):  # a member that is not a .npy file comes as bytes
        raise DataError(f"{path}: the archive member {key!r} is not a .npy array")
    return array


def _parse_number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _read_csv(path: Path, header: bool | None) -> np.ndarray:
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            lines = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text file ({error})") from error
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV ({error})") from error
    # Blank (or all-space) lines are not rows; a line of empty cells such as ",," is one.
    lines = [(number, row) for number, row in lines if len(row) > 1 or (row and row[0].strip())]
    if lines and (
        header if header is not None else all(_parse_number(cell) is None for cell in lines[0][1])
    ):
        width = len(lines[0][1])
        lines = lines[1:]
    else:
        width = len(lines[0][1]) if lines else 0
    ragged = [
        (index, number, len(row)) for index, (number, row) in enumerate(lines) if len(row) != width
    ]
    if ragged:
        raise DataError(
            f"{path}: rows whose number of cells differs from the {width} of the first line "
            f"({_plural(len(ragged), 'row')}): "
            + _listing([f"row {i} (line {n}) has {w}" for i, n, w in ragged], "; ")
        )
    values = np.empty((len(lines), width), dtype=np.float64)
    bad, first_row_bad = [], False
    for index, (number, row) in enumerate(lines):
        for column, cell in enumerate(row):
            value = _parse_number(cell)
            if value is None:
                bad.append(f"row {index} (line {number}), column {column}: {cell!r}")
                first_row_bad |= index == 0
            else:
                values[index, column] = value
    if bad:
        header_hint = first_row_bad and header is None
        hint = "; if the first line is a header, pass header=True" if header_hint else ""
        raise DataError(
            f"{path}: cells that are not numbers ({_plural(len(bad), 'cell')}): "
            f"{_listing(bad, '; ')}{hint}"
        )
    return values


def _validate(
    array: np.ndarray,
    path: Path,
    expected_dim: int | None,
    allow_constant_columns: bool,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> Tensor:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected numbers, got an array of dtype {array.dtype}")
    if array.ndim != 2:
        hint = {
            0: "",
            1: "; save one-dimensional data with shape (N, 1)",
        }.get(array.ndim, "; flatten each example first, e.g. array.reshape(len(array), -1)")
        raise DataError(
            f"{path}: expected a 2-D array of shape (N, D), got shape {array.shape}{hint}"
        )
    num_rows, num_columns = array.shape
    if num_rows == 0:
        raise DataError(f"{path}: no data rows (shape {array.shape})")
    if num_columns == 0:
        raise DataError(f"{path}: the rows have no columns (shape {array.shape})")
    if expected_dim is not None and num_columns != expected_dim:
        raise DataError(
            f"{path}: wrong dimensionality: expected {expected_dim} columns, got {num_columns}"
        )
    values = array.astype(np.float64)
    rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if rows.size:
        raise DataError(
            f"{path}: rows holding NaN or infinite values ({_plural(rows.size, 'row')}), "
            f"0-based indices: {_indices(rows)}"
        )
    limit = torch.finfo(dtype).max
    rows = np.flatnonzero((np.abs(values) > limit).any(axis=1))
    if rows.size:
        raise DataError(
            f"{path}: rows holding values beyond the range of {dtype} (+-{limit:.3g}) "
            f"({_plural(rows.size, 'row')}), 0-based indices: {_indices(rows)}"
        )
    if num_rows > 1 and not allow_constant_columns:
        columns = np.flatnonzero(values.max(axis=0) == values.min(axis=0))
        if columns.size:
            raise DataError(
                f"{path}: constant columns, one value in every row "
                f"({_plural(columns.size, 'column')}), 0-based indices: {_indices(columns)}; "
                "a density is degenerate along them: drop them, or pass "
                "allow_constant_columns=True"
            )
    return torch.as_tensor(values, dtype=dtype, device=device)


def _plural(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _listing(items: list[str], separator: str = ", ") -> str:
    """The first few items, then how many more."""
    more = f"{separator}... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return separator.join(items[:_SHOWN]) + more


def _indices(indices: np.ndarray) -> str:
    return _listing([str(int(i)) for i in indices])
