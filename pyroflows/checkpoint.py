"""Checkpoints: written atomically, read without unpickling code, checked against the model.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and
dicts, so :func:`load_checkpoint` can use ``torch.load(..., weights_only=True)``, which never
runs code from the file. :func:`save_checkpoint` writes to a temporary file in the same folder,
flushes it to disk and renames it over the target: a crash leaves either the old checkpoint
or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # imported by load_model only: the IO here needs no model classes
    from .distributions import Flow

__all__ = ["CheckpointMismatchError", "load_checkpoint", "load_model", "save_checkpoint"]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into (other flow, sizes or options).

    Example:
        >>> issubclass(CheckpointMismatchError, ValueError)
        True
    """


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, rename).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_checkpoint(folder / "state.pt", {"step": 3}).name
        'state.pt'
        >>> load_checkpoint(folder / "state.pt")["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file is ever run).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not
    a checkpoint (truncated, or holding pickled objects other than tensors and containers).

    Example:
        >>> import tempfile, pathlib, torch
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.pt"
        >>> _ = save_checkpoint(path, {"weights": torch.ones(2)})
        >>> load_checkpoint(path)["weights"]
        tensor([1., 1.])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated file, foreign pickle, ...
        raise ValueError(f"{path} is not a readable pyroflows checkpoint: {error}") from error


def check_config(expected: dict[str, Any] | None, found: dict[str, Any] | None, source: str):
    """Raise :class:`CheckpointMismatchError` naming every setting that differs."""
    if expected is None or found is None:
        return
    keys = sorted(set(expected) | set(found))
    differences = [
        f"{key}: model has {expected.get(key)!r}, checkpoint has {found.get(key)!r}"
        for key in keys
        if expected.get(key) != found.get(key)
    ]
    if differences:
        raise CheckpointMismatchError(
            f"{source} was written for a different model: " + "; ".join(differences)
        )


def load_state(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state)`` with a clear error on any mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointMismatchError(
            f"{source} does not fit this model's parameters: {error}"
        ) from None


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> Flow:
    """Rebuild the :class:`~pyroflows.distributions.Flow` saved at ``path``.

    ``path`` is a checkpoint, or a run folder holding ``model.pt``; the model is rebuilt from
    its stored recipe, then its weights are loaded.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from pyroflows.distributions import Flow
        >>> model = Flow.build("realnvp", 2, num_layers=2)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
        >>> _ = save_checkpoint(path, {"config": model.config, "model": model.state_dict()})
        >>> x = torch.randn(3, 2)
        >>> bool(torch.equal(load_model(path).log_prob(x), model.log_prob(x)))
        True
    """
    from .distributions import Flow

    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    payload = load_checkpoint(path, map_location)
    if "config" not in payload or "model" not in payload:
        raise ValueError(f"{path} holds no model (expected 'config' and 'model' entries)")
    model = Flow.from_config(payload["config"])
    load_state(model, payload["model"], str(path))
    return model
