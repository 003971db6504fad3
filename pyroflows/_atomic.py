"""Atomic, durable file writes: the one way pyroflows writes a file it must not lose.

:func:`atomic_write` writes to a temporary file with a unique name in the target's folder,
flushes it and ``fsync`` s it, renames it over the target, then ``fsync`` s the folder, so
that after a crash or a power cut the target holds either its old content or the new one,
never a mix or an empty file. The temporary file is created with mode ``0o666`` minus the
umask, like any new file (``0644`` under the usual umask ``022``). A write killed half-way
leaves its temporary file behind; :func:`remove_stray_temporaries` removes them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "file_sha256", "fsync_folder", "remove_stray_temporaries"]


def _temporary_path(path: Path) -> Path:
    """``.NAME.PID-RANDOM.tmp`` next to ``path``: unique to one write of one process."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; no-op off POSIX."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(file)`` on a temporary file, then make it ``path`` atomically and durably.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
        >>> atomic_write(target, lambda file: file.write(b"hello")).read_text()
        'hello'
    """
    path = Path(path)
    temporary = _temporary_path(path)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)
    return path


def remove_stray_temporaries(folder: str | os.PathLike, names: Iterable[str]) -> list[str]:
    """Remove the temporary files that killed writes of ``names`` left in ``folder``.

    Matches this module's ``.NAME.*`` files (and the ``.NAME.XXXXXXXX`` and ``NAME.tmp`` of
    older pyroflows versions). Call it only while no other process writes to ``folder``.
    Returns the names removed.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".model.pt.123-abcd.tmp").write_bytes(b"half")
        >>> remove_stray_temporaries(folder, ["model.pt"])
        ['.model.pt.123-abcd.tmp']
    """
    folder = Path(folder)
    removed = []
    for name in names:
        for stray in [*folder.glob(f".{name}.*"), folder / f"{name}.tmp"]:
            if stray.is_file():
                stray.unlink(missing_ok=True)
                removed.append(stray.name)
    return sorted(removed)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty"
        >>> _ = path.write_bytes(b"")
        >>> file_sha256(path)[:16]
        'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
