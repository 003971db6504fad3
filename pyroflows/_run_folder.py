"""A run folder that one process at a time writes: lock, manifest, overwrite rules, clean-up.

:func:`open_run_folder` is what ``pyroflows fit --out FOLDER`` (:func:`~pyroflows.runs.fit_run`)
goes through before it trains:

* a folder that holds a run is refused unless the call resumes it or overwrites it (an
  overwrite first removes the old run's files, so that two runs never mix);
* the folder is created only now, after the data and options were checked, and removed
  again if the start fails before the first checkpoint;
* ``run.lock`` (created with ``O_EXCL``, holding the pid, host and start time, and held with an
  OS file lock where the platform has one) keeps a second process out; a lock whose process
  has ended is stale and taken over with a warning. Creating it also proves the folder
  writable before any training;
* temporary files of writes killed half-way are removed;
* ``run.json``, the manifest, ties the files to one run: its id (also stored in every
  checkpoint, checked on resume), the pyroflows version, the data settings and, once the run
  is written completely, every file's size and SHA-256 (checked on resume).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._atomic import atomic_write, file_sha256, remove_stray_temporaries
from ._outputs import json_text
from ._resume import changed_settings
from .checkpoint import load_checkpoint
from .errors import RunFolderError

try:  # POSIX: the lock is also an OS file lock, released by the kernel when its process dies
    import fcntl
except ImportError:  # pragma: no cover (Windows: the recorded pid decides)
    fcntl = None

__all__ = ["CHECKPOINT", "LOCK", "MANIFEST", "RUN_FILES", "RunFolder", "RunLock", "open_run_folder"]

CHECKPOINT = "checkpoint.pt"
RUN_FILES = (CHECKPOINT, "model.pt", "history.json", "metrics.json")
MANIFEST = "run.json"
LOCK = "run.lock"
_MANIFEST_FORMAT = "pyroflows.run/1"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _version() -> str:
    from . import __version__  # here: the package may still be initialising at import

    return __version__


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as JSON (no NaN: :func:`~pyroflows._outputs.json_text`), atomically."""
    text = json_text(payload)
    return atomic_write(path, lambda file: file.write(text.encode()))


# -- lock -----------------------------------------------------------------------------------------


def _holder(path: Path) -> dict[str, Any]:
    """What a lock file says about its owner (empty when unreadable or being written)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that recorded no pid"
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"


def _running_here(holder: dict[str, Any]) -> bool:
    """Whether the holder may still run: another host, or a live pid on this one."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _os_lock(handle: int) -> bool:
    """Take the OS lock of an open lock file without waiting; ``False`` if another holds it."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunLock:
    """The lock of one run folder: ``run.lock``, created with ``O_EXCL`` and OS-locked.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> lock = RunLock.acquire(folder)
        >>> try:
        ...     RunLock.acquire(folder)
        ... except RunFolderError as error:
        ...     print(str(error).split(" (")[0])
        ... finally:
        ...     lock.release()
        ... # doctest: +ELLIPSIS
        /... is in use by another pyroflows process
    """

    def __init__(self, path: Path, handle: int):
        self.path = path
        self._handle: int | None = handle

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> RunLock:
        """Lock ``folder``, taking over a stale lock; :class:`RunFolderError` if in use."""
        path = Path(folder) / LOCK
        for _ in range(5):  # retried only when the lock file vanished under us
            try:
                handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                handle = cls._take_over(path)
                if handle is None:
                    continue
            except OSError as error:
                raise RunFolderError(
                    f"cannot write to the run folder {path.parent}: {error.strerror}"
                ) from error
            else:
                if not _os_lock(handle):  # another process took it over in between
                    os.close(handle)
                    raise cls._in_use(path)
            lock = cls(path, handle)
            lock._record()
            return lock
        raise cls._in_use(path)

    @classmethod
    def _take_over(cls, path: Path) -> int | None:
        """An OS-locked handle on a stale lock file, or ``None`` if the file went away."""
        holder = _holder(path)
        try:
            handle = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        stale = _os_lock(handle) if fcntl is not None else not _running_here(holder)
        if stale and fcntl is not None:
            try:
                same = os.path.samestat(os.fstat(handle), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:  # released and removed by its owner meanwhile: start over
                os.close(handle)
                return None
        if not stale:
            os.close(handle)
            raise cls._in_use(path, holder)
        warnings.warn(
            f"{path.parent}: taking over the stale lock of {_describe(holder)}, which is no "
            "longer running",
            UserWarning,
            stacklevel=5,  # the caller of open_run_folder
        )
        return handle

    @staticmethod
    def _in_use(path: Path, holder: dict[str, Any] | None = None) -> RunFolderError:
        holder = _holder(path) if holder is None else holder
        return RunFolderError(
            f"{path.parent} is in use by another pyroflows process ({_describe(holder)}): wait "
            f"for it to end or choose another folder; if no such process runs, remove {path}"
        )

    def _record(self) -> None:
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()})
        os.ftruncate(self._handle, 0)
        os.pwrite(self._handle, text.encode(), 0)
        os.fsync(self._handle)

    def release(self) -> None:
        """Remove the lock file and drop the OS lock (idempotent)."""
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(self._handle), os.stat(self.path)):
                self.path.unlink()
        os.close(self._handle)
        self._handle = None


# -- manifest and folder --------------------------------------------------------------------------


class RunFolder:
    """A locked run folder and its manifest ``run.json``; made by :func:`open_run_folder`.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> with open_run_folder(out, settings={"data": "moons"}) as folder:
        ...     _ = folder.write_json("metrics.json", {"nll": 1.0})
        ...     folder.finish()
        >>> sorted(p.name for p in out.iterdir())
        ['metrics.json', 'run.json']
    """

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @property
    def run_id(self) -> str:
        """The run's id, also stored in its checkpoints and ``metrics.json``."""
        return self.manifest["run_id"]

    def file(self, name: str) -> Path:
        """The path of one of the run's files."""
        return self.path / name

    def write_json(self, name: str, payload: dict[str, Any]) -> Path:
        """Write one of the run's JSON files atomically."""
        return write_json(self.file(name), payload)

    def save_manifest(self, complete: bool) -> None:
        """Write ``run.json``; ``complete``: with every run file's size and SHA-256."""
        files = {}
        if complete:
            for name in RUN_FILES:
                path = self.file(name)
                if path.is_file():
                    files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        self.manifest.update(
            pyroflows_version=_version(), complete=complete, updated=_now(), files=files
        )
        write_json(self.file(MANIFEST), self.manifest)

    def finish(self) -> None:
        """Record the finished run's files in the manifest (the last write of a run)."""
        self.save_manifest(complete=True)

    def verify(self) -> None:
        """Refuse a complete run whose files changed since it was written (SHA-256)."""
        if not self.manifest.get("complete"):
            return  # being written: its checkpoint's run id ties it to the manifest
        for name, entry in self.manifest.get("files", {}).items():
            path = self.file(name)
            if path.is_file() and file_sha256(path) != entry.get("sha256"):
                raise RunFolderError(
                    f"{path} changed after run {self.run_id} wrote it (its SHA-256 differs from "
                    f"{self.file(MANIFEST)}): the file is corrupt or from another run"
                )


def _new_manifest(settings: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    return {
        "format": _MANIFEST_FORMAT,
        "run_id": run_id or uuid.uuid4().hex,
        "created": _now(),
        "created_by": _version(),
        "settings": settings,
    }


def _read_manifest(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run to resume; one adopted from its checkpoint for older folders."""
    file = path / MANIFEST
    if not file.is_file():  # written by a pyroflows version without manifests
        run_id = load_checkpoint(path / CHECKPOINT).get("run_id")
        return _new_manifest(settings, run_id)
    try:
        manifest = json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{file} is not a readable run manifest: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        raise RunFolderError(f"{file} is not a pyroflows run manifest ({_MANIFEST_FORMAT})")
    return manifest


def _prepare(path: Path, resume: bool, overwrite: bool, settings: dict[str, Any]) -> RunFolder:
    """Check and set up the (locked) folder for a resumed, overwritten or new run."""
    remove_stray_temporaries(path, [*RUN_FILES, MANIFEST])
    held = [name for name in RUN_FILES if (path / name).exists()]
    if resume:
        if not (path / CHECKPOINT).is_file():
            raise FileNotFoundError(
                f"resume=True but there is no checkpoint at {path / CHECKPOINT}"
            )
        folder = RunFolder(path, _read_manifest(path, settings))
        folder.verify()
        saved = folder.manifest.get("settings", {})
        changed_settings(saved, settings, {}, f"the run in {path}", fixed=settings)
        folder.save_manifest(complete=False)  # being written again
        return folder
    if held and not overwrite:
        raise RunFolderError(
            f"{path} holds a run ({', '.join(held)}): resume it (resume=True) or replace it "
            "(overwrite=True), or choose another folder"
        )
    for name in (*held, MANIFEST):
        (path / name).unlink(missing_ok=True)
    folder = RunFolder(path, _new_manifest(settings))
    folder.save_manifest(complete=False)
    return folder


@contextlib.contextmanager
def open_run_folder(
    path: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    settings: dict[str, Any] | None = None,
) -> Iterator[RunFolder]:
    """Create (if needed), lock and check a run folder for writing; see the module's rules.

    ``settings`` (the data source and size) are stored in the manifest and must be the same
    when the run is resumed (:class:`~pyroflows.errors.SettingsChangedError`). If the body
    fails before the run has a checkpoint, the new manifest is removed, and the folder too
    when this call created it.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> with open_run_folder(out) as folder:
        ...     _ = folder.write_json("metrics.json", {})
        >>> try:
        ...     with open_run_folder(out):
        ...         pass
        ... except RunFolderError as error:
        ...     print(str(error).split(": ")[0].endswith("holds a run (metrics.json)"))
        True
    """
    path = Path(path)
    settings = dict(settings or {})
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file, not a run folder")
    if resume and not path.exists():
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {path / CHECKPOINT}")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create the run folder {path}: {error.strerror}") from error
    lock = None
    try:
        lock = RunLock.acquire(path)
        folder = _prepare(path, resume, overwrite, settings)
        try:
            yield folder
        except BaseException:
            if not resume and not (path / CHECKPOINT).exists():
                (path / MANIFEST).unlink(missing_ok=True)  # nothing to resume: no run here
            raise
    finally:
        if lock is not None:
            lock.release()
        if created and not any(path.iterdir()):
            path.rmdir()
