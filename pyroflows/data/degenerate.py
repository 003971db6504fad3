"""Warnings for data a flow can fit but whose density would mislead: collinear or outlier-led.

Neither problem is refused (the data may be what the user means to model), but each makes the
negative log-likelihood meaningless or the standardisation useless, silently:

* **Collinear columns** (a duplicated column, one column the sum of others, fewer rows than
  columns): the data lie on a lower-dimensional subspace, where a density is infinite; the
  validation NLL drifts without bound.
* **Extreme values that dominate a column's spread** (a sentinel such as ``1e30`` among
  ordinary values): standardisation divides by a standard deviation set by a few rows and
  squeezes every other row to nearly one point.

:func:`warn_if_degenerate` checks both and issues one :class:`~pyroflows.errors.DataWarning`
per problem; :func:`pyroflows.train.fit` calls it on the training rows.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..errors import DataWarning

__all__ = ["warn_if_degenerate"]

# A column is outlier-led when its few most extreme rows (one per 1000, at least one) hold more
# than this share of its sum of squared deviations from the median (so that its standard
# deviation is over 100 times that of the other rows), or when a value lies more than MAX_Z
# standard deviations out.
VARIANCE_SHARE = 1 - 1e-4
MAX_Z = 1e3
MIN_ROWS_FOR_OUTLIERS = 20
# The rank check forms the D x D correlation matrix of at most 4 D + 1000 rows (sampled with a
# fixed seed), and is skipped for more columns than RANK_MAX_COLUMNS (unless rows <= columns).
RANK_MAX_COLUMNS = 1024
RANK_RTOL = 1e-10  # eigenvalue of the correlation matrix, relative to the largest
_SHOWN = 10
_CHUNK = 1 << 22  # elements per block of columns in the outlier check
_MEDIAN_ROWS = 10_000  # the outlier check's centre: the median of this many evenly spaced rows


def warn_if_degenerate(data: Tensor, name: str = "data") -> None:
    """Warn (:class:`~pyroflows.errors.DataWarning`) if ``data`` ``(N, D)`` are degenerate.

    Two checks, neither of which refuses the data: the numerical rank of the standardised
    data is below ``D`` (collinear or duplicated columns, or ``N <= D``); a column's standard
    deviation is dominated by a few extreme rows (a sentinel value, say). Rows with NaN and
    constant columns are not looked at: those are refused elsewhere.

    Args:
        data: rows ``(N, D)`` on any device.
        name: what the rows are, for the message.

    Example:
        >>> import warnings
        >>> x = torch.randn(200, 3)
        >>> x[:, 2] = x[:, 1]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_degenerate(x)
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        data: the columns are linearly dependent: ... rank 2 < 3 (involving columns 1, 2)...
    """
    if data.dim() != 2 or len(data) < 2:
        return
    _warn_outliers(data, name)
    _warn_rank(data, name)


def _warn_outliers(data: Tensor, name: str) -> None:
    rows, columns = data.shape
    if rows < MIN_ROWS_FOR_OUTLIERS:
        return
    extreme = max(1, rows // 1000)
    found = []  # (column, its most extreme row)
    step = max(1, _CHUNK // rows)
    for start in range(0, columns, step):
        block = data[:, start : start + step].double()
        squares = (block - block[:: max(1, rows // _MEDIAN_ROWS)].median(0).values).square_()
        total = squares.sum(0)
        top = squares.topk(extreme, dim=0)
        largest_z2 = top.values[0] * (rows - 1) / total
        dominated = top.values.sum(0) > VARIANCE_SHARE * total
        led = (total > 0) & (dominated | (largest_z2 > MAX_Z**2))
        for column in torch.nonzero(led).flatten().tolist():
            found.append((start + column, int(top.indices[0, column])))
    if not found:
        return
    column, row = found[0]
    values = data[:, column].double()
    spread = float(values.std())
    centre = values[:: max(1, rows // _MEDIAN_ROWS)].median()
    rest = float(values[values.sub(centre).abs().argsort()[: rows - extreme]].std())
    warnings.warn(
        f"{name}: {_columns(len(found))} whose spread comes from a few extreme rows "
        f"({_listing([str(c) for c, _ in found])}; e.g. column {column}: standard deviation "
        f"{spread:.3g}, {rest:.3g} without its {extreme} most extreme row(s), such as "
        f"row {row} = {float(values[row]):.6g}); standardisation squeezes the other rows "
        "together. Check for sentinel values or outliers, or transform the column (e.g. a "
        "logarithm)",
        DataWarning,
        stacklevel=3,
    )


def _warn_rank(data: Tensor, name: str) -> None:
    rows, columns = data.shape
    if rows <= columns:
        warnings.warn(
            f"{name}: {rows} rows for {columns} columns: the centred rows span at most "
            f"{rows - 1} dimensions, so a density fitted to them is degenerate (its NLL "
            "falls without bound); use more rows or fewer columns",
            DataWarning,
            stacklevel=3,
        )
        return
    if columns > RANK_MAX_COLUMNS or columns < 2:
        return
    sample, most = data, 4 * columns + 1000
    if rows > most:
        generator = torch.Generator().manual_seed(0)
        sample = data[torch.randperm(rows, generator=generator)[:most].to(data.device)]
    sample = sample.detach().to("cpu", torch.float64)
    spread = sample.std(0)
    kept = torch.nonzero(spread > 0).flatten()  # constant columns are refused elsewhere
    if len(kept) < 2:
        return
    standard = (sample[:, kept] - sample[:, kept].mean(0)) / spread[kept]
    eigenvalues, eigenvectors = torch.linalg.eigh(standard.T @ standard / len(standard))
    rank = int((eigenvalues > RANK_RTOL * eigenvalues[-1]).sum())
    if rank == len(kept):
        return
    involved = kept[eigenvectors[:, 0].abs() > 0.1].tolist()
    warnings.warn(
        f"{name}: the columns are linearly dependent: the standardised data have numerical "
        f"rank {rank} < {len(kept)} (involving columns {_listing([str(c) for c in involved])}),"
        " so a density fitted to them is degenerate and its NLL meaningless; drop the "
        "redundant columns",
        DataWarning,
        stacklevel=3,
    )


def _columns(count: int) -> str:
    return f"{count} column{'' if count == 1 else 's'}"


def _listing(items: list[str]) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more
