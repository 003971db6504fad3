"""What the command line writes: files checked before any work, JSON that is always valid.

* :func:`check_output`: an output file's extension (case-insensitive), that it is not a
  directory, that it is not replaced unless asked, and that its folder is writable, all
  checked *before* training or sampling, so that a bad path fails in a second, not after an
  hour's work.
* :func:`json_text`: JSON text with no ``NaN``/``Infinity`` (which are not JSON: ``jq`` reads
  ``Infinity`` as 1.8e308 and strict parsers refuse it). A non-finite number is written as
  ``null``, and a top-level object gains a ``"non_finite"`` entry saying what each ``null``
  stood for: ``{"nll": null, "non_finite": {"nll": "Infinity"}}``. Paths are dotted keys, with
  ``[]`` for the entries of a list (``"val_nll[]": "NaN"``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import OptionError, RunFolderError

__all__ = ["check_output", "json_text"]


def check_output(
    path: str | os.PathLike[str],
    suffixes: Sequence[str] | None = None,
    *,
    overwrite: bool = True,
    what: str = "the output",
) -> Path:
    """Check that ``path`` can be written; return it as a :class:`~pathlib.Path`.

    Args:
        path: the file to write (its folder may not exist yet).
        suffixes: the accepted extensions, lower case with the dot (``None``: any).
        overwrite: whether an existing file may be replaced.
        what: what the file is, for the messages.

    Raises:
        OptionError: for an extension not in ``suffixes``.
        RunFolderError: for a directory, an existing file without ``overwrite``, or a folder
            that cannot be written (read-only, no permission, or a file in the way).

    Example:
        >>> import tempfile
        >>> check_output(tempfile.mkdtemp() + "/samples.NPY", (".npy", ".csv")).suffix
        '.NPY'
        >>> check_output("samples.txt", (".npy", ".csv"))
        Traceback (most recent call last):
        ...
        pyroflows.errors.OptionError: samples.txt: the output must be a .npy or .csv file, ...
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        shown = " or ".join(suffixes) if len(suffixes) <= 2 else ", ".join(suffixes[:4])
        more = ", ..." if len(suffixes) > 4 else ""
        raise OptionError(
            f"{path}: {what} must be a {shown}{more} file, got {path.suffix or 'no extension'!r}"
        )
    if path.is_dir():
        raise RunFolderError(f"{path}: is a directory; {what} needs a file name")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise RunFolderError(f"{path} already exists; pass overwrite=True to replace it")
        if not os.access(path, os.W_OK):
            raise RunFolderError(f"{path}: the existing file cannot be written (permission)")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest existing folder, where new ones would be made
    if not folder.is_dir():
        raise RunFolderError(f"{path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunFolderError(f"{path}: cannot write in {folder} (read-only or no permission)")
    return path


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON text (ending in a newline), non-finite numbers as ``null``.

    Args:
        payload: dicts, lists, strings, numbers, booleans and ``None``.

    Example:
        >>> print(json_text({"nll": float("inf"), "epochs": 2}), end="")
        {
          "nll": null,
          "epochs": 2,
          "non_finite": {
            "nll": "Infinity"
          }
        }
    """
    notes: dict[str, str] = {}
    clean = _finite(payload, "", notes)
    if notes and isinstance(clean, dict):
        clean = {**clean, "non_finite": notes}
    return json.dumps(clean, indent=2, allow_nan=False) + "\n"


def _finite(value: Any, path: str, notes: dict[str, str]) -> Any:
    """``value`` with non-finite floats replaced by ``None``, noted in ``notes`` by path."""
    if isinstance(value, float) and not math.isfinite(value):
        kind = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        seen = set(filter(None, notes.get(path, "").split(", ")))
        notes[path] = ", ".join(sorted(seen | {kind}))
        return None
    if isinstance(value, dict):
        return {
            key: _finite(item, f"{path}.{key}" if path else str(key), notes)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_finite(item, f"{path}[]", notes) for item in value]
    return value
