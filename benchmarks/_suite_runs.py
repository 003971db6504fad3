"""What the suite runners share: seeds, JSON-lines records, --table and --resume handling.

Used by ``bench_posteriors.py`` (the posterior suite) and ``bench_density.py`` (the density
suite): each appends one JSON line per run to ``--json PATH``, skips the runs already there
with ``--resume``, and renders a file's runs as reStructuredText with ``--table OUT``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any


def finite(value: Any) -> Any:
    """JSON-safe: non-finite floats become ``None`` (strict JSON has no NaN or inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    return value


def record_failure(record: dict[str, Any], error: Exception, at: Any, nonfinite: bool) -> None:
    """Mark ``record`` as failed at stage (or step) ``at`` by ``error``: status, place, message.

    ``nonfinite`` says the failure came from NaN or infinite values (status ``nonfinite``,
    else ``error``); torch's argument checks report NaN parameters as "... invalid values",
    which counts as non-finite too.
    """
    nonfinite = nonfinite or "invalid values" in str(error)
    record.update(
        status="nonfinite" if nonfinite else "error",
        failed_at=at,
        error=f"{type(error).__name__}: {error}"[:500],
    )


def ordered(values: Iterable[str], first: Sequence[str] = ()) -> list[str]:
    """The distinct ``values``, those in ``first`` first (in its order), then as they come."""
    values = list(values)
    seen = dict.fromkeys(v for v in first if v in set(values))
    seen.update(dict.fromkeys(values))
    return list(seen)


def read_records(path: Path | None) -> list[dict[str, Any]]:
    """The runs of a JSON lines file (none if there is no file)."""
    if path is None or not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_record(path: Path | None, record: dict[str, Any]) -> None:
    """Append one run to the JSON lines file ``path`` (nothing without one)."""
    if path is not None:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"``, ``"0-9"`` or a mix (``"0-2,5"``) -> a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            seeds += list(range(int(first), int(last or first) + 1))
        except ValueError:
            raise ValueError(f"--seeds: expected e.g. 0,1,2 or 0-9, got {text!r}") from None
    return seeds


def table_only(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    render: Callable[[list[dict[str, Any]]], str],
) -> bool:
    """Handle ``--table`` (render ``--json``'s runs, run nothing) and check ``--resume``.

    Returns ``True`` when the tables were written and the runner has nothing else to do.
    """
    if args.table is not None:
        if args.json is None:
            parser.error("--table renders the runs of --json PATH: give it")
        records = read_records(args.json)
        if not records:
            parser.error(f"no runs in {args.json}")
        text = render(records)
        if args.table == "-":
            print(text)
        else:
            Path(args.table).write_text(text + "\n")
        return True
    if args.resume and args.json is None:
        parser.error("--resume needs --json PATH")
    return False
