"""Checkpoints: written atomically, read without unpickling code, checked before use.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and
dicts, so :func:`load_checkpoint` can use ``torch.load(..., weights_only=True)``, which never
runs code from the file. :func:`save_checkpoint` writes to a temporary file in the same folder,
flushes it to disk, renames it over the target and flushes the folder: a crash or a power cut
leaves either the old checkpoint or the new one, never half of one. It also stores a SHA-256
of the whole payload (every tensor's dtype, shape and bytes, and every other value, in a
defined order), which :func:`load_checkpoint` checks: a flipped bit is refused instead of
loaded.

``weights_only`` protects against code execution, not against wrong numbers or huge sizes:
:func:`load_model` also checks the recipe (fields, types, known options, version), refuses
non-finite weights, and builds the model under an allocation limit set by the weights the
file actually holds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ._allocation import AllocationLimitError, allocation_limit
from ._atomic import atomic_write
from ._recipe import read_recipe
from .errors import ModelFileError

if TYPE_CHECKING:  # imported by load_model only: the IO here needs no model classes
    from .distributions import Flow

__all__ = ["CheckpointMismatchError", "load_checkpoint", "load_model", "save_checkpoint"]

CHECKSUM_KEY = "sha256"
# A model file's build may allocate this many times the elements its weights hold, plus a
# fixed allowance for small temporaries (masks, degrees).
_BUILD_FACTOR, _BUILD_ALLOWANCE = 4, 2**18


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into (other flow, sizes or options).

    Example:
        >>> issubclass(CheckpointMismatchError, ValueError)
        True
    """


def _digest(value: Any, sha: Any) -> None:
    """Feed ``value`` to ``sha`` in a defined order (dict keys sorted by their ``repr``)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        sha.update(f"tensor {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        sha.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        sha.update(f"dict {len(value)}\n".encode())
        for key in sorted(value, key=repr):
            sha.update(f"{key!r}\n".encode())
            _digest(value[key], sha)
    elif isinstance(value, list | tuple):
        sha.update(f"{type(value).__name__} {len(value)}\n".encode())
        for item in value:
            _digest(item, sha)
    else:
        sha.update(f"{value!r}\n".encode())


def checksum(payload: dict[str, Any]) -> str:
    """The SHA-256 (hex) :func:`save_checkpoint` stores: tensors' bytes, then all else.

    Example:
        >>> a = checksum({"w": torch.zeros(2)})
        >>> a == checksum({"w": torch.zeros(2)}), a == checksum({"w": torch.tensor([0.0, 1e-45])})
        (True, False)
    """
    sha = hashlib.sha256()
    _digest({key: value for key, value in payload.items() if key != CHECKSUM_KEY}, sha)
    return sha.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically and durably (temporary file, fsync, rename).

    The folder is created if needed and ``fsync`` ed after the rename; the file gets the
    usual mode of a new file (``0644`` under umask ``022``). See :mod:`pyroflows._atomic`.
    The file also holds the payload's SHA-256 (``checksum``, under ``"sha256"``), which
    :func:`load_checkpoint` checks and removes.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_checkpoint(folder / "state.pt", {"step": 3}).name
        'state.pt'
        >>> load_checkpoint(folder / "state.pt")["step"]
        3
    """
    path = Path(path)
    payload = {**payload, CHECKSUM_KEY: checksum(payload)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda file: torch.save(payload, file))


def _unreadable(path: Path, error: Exception) -> ModelFileError:
    """Our message for a file ``torch.load`` refused: never torch's advice to turn off safety."""
    if isinstance(error, pickle.UnpicklingError):
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"the Python object {found.group(1)}" if found else "pickled Python objects"
        return ModelFileError(
            f"{path} is not a readable pyroflows checkpoint or model file, or it is unsafe: "
            f"it asks for {what}, and pyroflows loads only tensors, numbers, strings, lists "
            "and dicts (nothing in the file was run)"
        )
    first = str(error).split(". ")[0].strip() or "the file ends too early"
    return ModelFileError(
        f"{path} is not a readable pyroflows checkpoint or model file: truncated or "
        f"corrupted ({type(error).__name__}: {first})"
    )


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code from the file is ever run).

    Raises ``FileNotFoundError`` for a missing file and
    :class:`~pyroflows.errors.ModelFileError` (a ``ValueError``) for a file that is not a
    checkpoint (truncated, or holding pickled objects other than tensors and containers) or
    whose stored SHA-256 does not match its contents ("weights corrupted"). Files
    written before checksums load unchecked.

    Example:
        >>> import tempfile, pathlib, torch
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "state.pt"
        >>> _ = save_checkpoint(path, {"weights": torch.ones(2)})
        >>> load_checkpoint(path)
        {'weights': tensor([1., 1.])}
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as error:
        if error.errno != errno.EINVAL:  # permission denied, ...: not the file's fault
            raise
        # A truncated zip archive: torch seeks past its end ("[Errno 22] Invalid argument").
        raise ModelFileError(
            f"{path} is not a readable pyroflows checkpoint or model file: truncated or "
            "corrupted (the archive ends too early)"
        ) from None
    except Exception as error:  # truncated file, foreign pickle, ...
        raise _unreadable(path, error) from None
    if not isinstance(payload, dict):
        raise ModelFileError(
            f"{path} is not a pyroflows checkpoint or model file: it holds a "
            f"{type(payload).__name__}, not a dict"
        )
    stored = payload.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != checksum(payload):
        raise ModelFileError(
            f"{path}: weights corrupted: checksum mismatch (the file changed after it was "
            "written: copy it again from its source)"
        )
    return payload


def check_config(expected: dict[str, Any] | None, found: dict[str, Any] | None, source: str):
    """Raise :class:`CheckpointMismatchError` naming every setting that differs.

    Both recipes are compared as this release writes them (every option resolved, the
    version aside), so a file written before versioned recipes fits the model built from the
    same options today.

    Example:
        >>> from pyroflows.distributions import Flow
        >>> model = Flow.build("nice", 2, num_layers=2)
        >>> old = {"name": "nice", "input_dim": 2, "context_dim": 0, "options": {"num_layers": 2}}
        >>> check_config(model.config, old, "old.pt")  # fits
        >>> check_config(model.config, {**old, "options": {}}, "old.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyroflows.checkpoint.CheckpointMismatchError: old.pt was ... num_layers: model has 2, ...
    """
    if expected is None or found is None:
        return
    try:
        expected = _flat(read_recipe(expected, "the model"))
    except ModelFileError:  # a hand-made config, not a registry recipe: compared as it is
        pass
    else:
        found = _flat(read_recipe(found, source))
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


def _flat(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's fields with its options beside them, for comparing."""
    return {**{k: v for k, v in recipe.items() if k != "options"}, **recipe["options"]}


def load_state(model: torch.nn.Module, state: dict[str, Any], source: str) -> None:
    """``model.load_state_dict(state)`` with a clear error on any mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointMismatchError(
            f"{source} does not fit this model's parameters: {error}"
        ) from None


def _tensors(state: Any, source: Path) -> dict[str, torch.Tensor]:
    """The stored weights, refused when absent, malformed, non-finite or with a zero scale."""
    if not isinstance(state, dict) or not state:
        raise ModelFileError(f"{source} holds no weights (its 'model' entry is empty)")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{source} holds no weights (no tensors in its 'model' entry)")
    bad = [
        key
        for key, value in tensors.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ModelFileError(f"{source}: weights hold NaN or infinite values (in {shown})")
    scale = tensors.get("data_scale")
    if scale is not None and bool((scale == 0).any()):
        raise ModelFileError(f"{source}: weights hold a zero data_scale (a degenerate model)")
    return tensors


def _check_sizes(recipe: dict[str, Any], tensors: dict[str, torch.Tensor], source: Path) -> int:
    """Refuse sizes no model stored here can have; return the elements the weights hold.

    Every size in a recipe (the event size, the context size, a layer count, a hidden width,
    a bin count) is at most the number of stored values, since each adds at least one.
    """
    stored = sum(tensor.numel() for tensor in tensors.values())
    event = recipe["input_dim"]
    loc = tensors.get("data_loc")
    if loc is not None and list(loc.shape) != ([event] if isinstance(event, int) else event):
        raise ModelFileError(
            f"{source}: recipe field 'input_dim' is {event}, its weights are for events of "
            f"shape {tuple(loc.shape)}"
        )
    sizes = {"input_dim": event, "context_dim": recipe["context_dim"]}
    if recipe.get("padding"):
        sizes["padding"] = recipe["padding"]["extra"]
    sizes.update((k, v) for k, v in recipe["options"].items() if k != "seed")
    for name, value in sizes.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and v > stored for v in values):
            raise ModelFileError(
                f"{source}: recipe field {name!r} is {value}, more than the {stored} values its "
                "weights hold: the file is not a model pyroflows wrote"
            )
    return stored


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> Flow:
    """Rebuild the :class:`~pyroflows.distributions.Flow` saved at ``path``.

    ``path`` is a checkpoint, or a run folder holding ``model.pt``; the model is rebuilt from
    its stored recipe, then its weights are loaded. Before anything is built the file is
    checked (:class:`~pyroflows.errors.ModelFileError` names the file and the problem): its
    checksum (:func:`load_checkpoint`), its recipe (fields, types, known options, version),
    its weights (present, finite, a non-zero scale), and the recipe's sizes against the
    weights. The model is then built under an allocation limit of a few times the stored
    weights, so a hostile recipe is refused before it allocates more than the file holds.

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
        raise ModelFileError(f"{path} holds no model (expected 'config' and 'model' entries)")
    recipe = read_recipe(payload["config"], str(path))
    tensors = _tensors(payload["model"], path)
    stored = _check_sizes(recipe, tensors, path)
    try:
        with allocation_limit(_BUILD_FACTOR * stored + _BUILD_ALLOWANCE):
            model = Flow.from_config(recipe)
    except AllocationLimitError:
        raise ModelFileError(
            f"{path}: its recipe would build a model far larger than the {stored} values its "
            "weights hold: refused before allocating it"
        ) from None
    except (TypeError, ValueError, RuntimeError) as error:
        raise ModelFileError(f"{path}: its recipe does not build a model: {error}") from None
    try:
        load_state(model, payload["model"], str(path))
    except CheckpointMismatchError as error:
        raise ModelFileError(f"{path}: its weights do not fit its recipe: {error}") from None
    return model
