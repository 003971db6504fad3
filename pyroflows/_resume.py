"""Resume semantics shared by :func:`~pyroflows.train.fit` and :func:`~pyroflows.infer.train_guide`.

A checkpoint stores the settings its run was started with. On resume the request is compared
with them (:func:`changed_settings`): a changed setting is refused with
:class:`~pyroflows.errors.SettingsChangedError` naming it, unless the caller overrides it
explicitly (``override={"lr": 1e-3}``, on the command line ``--override lr=1e-3``); an
override then takes effect from the resume point and is recorded with its step. Settings that
define the data (the rows themselves, the seed of their split) can never change.

A new learning rate, schedule or length starts a new schedule segment at the resume point
(:func:`rescheduled`): it starts from the new rate (or, if only the length or batch size
changed, from the rate the run had reached) and decays over the remaining steps only, so it
never climbs back to the run's initial rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from ._training import LearningRate
from .errors import OptionError, SettingsChangedError

__all__ = ["apply_override", "changed_settings", "fingerprint", "override_record", "rescheduled"]


def fingerprint(*tensors: torch.Tensor | None) -> dict[str, Any]:
    """Rows and SHA-256 of tensors' shapes, dtypes and bytes: what "the same data" means.

    Example:
        >>> a = fingerprint(torch.zeros(3, 2))
        >>> a["rows"], a == fingerprint(torch.zeros(3, 2)), a == fingerprint(torch.ones(3, 2))
        (3, True, False)
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none;")
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    first = tensors[0]
    return {"rows": 0 if first is None else len(first), "sha256": digest.hexdigest()}


def _shown(value: Any) -> str:
    if isinstance(value, dict) and "sha256" in value:
        return f"{value['rows']} rows (sha256 {value['sha256'][:12]})"
    return repr(value)


def apply_override(
    requested: Mapping[str, Any],
    override: Mapping[str, Any] | None,
    *,
    resume: bool,
    overridable: Iterable[str],
) -> dict[str, Any]:
    """The requested settings with ``override``'s values put in (they win over the request).

    Raises :class:`~pyroflows.errors.OptionError` for an override without a resume, of an
    unknown setting, or of one that cannot change (the data, the seed, ...).

    Example:
        >>> apply_override({"lr": 0.1, "seed": 0}, {"lr": 0.01}, resume=True, overridable=["lr"])
        {'lr': 0.01, 'seed': 0}
    """
    if not override:
        return dict(requested)
    if not resume:
        raise OptionError("override applies when resuming a run (resume=True)")
    allowed = sorted(overridable)
    unknown = sorted(set(override) - set(requested))
    if unknown:
        raise OptionError(
            f"override: unknown setting {', '.join(unknown)}; these can be overridden: "
            + ", ".join(allowed)
        )
    fixed = sorted(set(override) - set(allowed))
    if fixed:
        raise OptionError(
            f"override: {', '.join(fixed)} cannot change when a run is resumed (they define its "
            "data or its random stream); start a new run. These can be overridden: "
            + ", ".join(allowed)
        )
    return {**requested, **override}


def changed_settings(
    saved: Mapping[str, Any],
    requested: Mapping[str, Any],
    override: Mapping[str, Any] | None,
    source: str,
    *,
    fixed: Iterable[str] = (),
) -> dict[str, tuple[Any, Any]]:
    """The settings that differ from the checkpoint's, as ``{name: (old, new)}``.

    Only settings present in both are compared (older checkpoints store fewer). A difference
    not in ``override`` raises :class:`~pyroflows.errors.SettingsChangedError` naming every
    such setting with its old and new value and how to apply it; ``fixed`` settings are
    said to need a new run instead.

    Example:
        >>> changed_settings({"lr": 0.1, "epochs": 3}, {"lr": 0.01, "epochs": 3}, {"lr": 0.01},
        ...                  "run/checkpoint.pt")
        {'lr': (0.1, 0.01)}
    """
    override = override or {}
    changed = {
        name: (saved[name], value)
        for name, value in requested.items()
        if name in saved and saved[name] != value
    }
    refused = {name: pair for name, pair in changed.items() if name not in override}
    if refused:
        raise SettingsChangedError(_refusal(refused, set(fixed), source))
    return changed


def _refusal(refused: dict[str, tuple[Any, Any]], fixed: set[str], source: str) -> str:
    listed = ", ".join(
        f"{name} {_shown(old)} -> {_shown(new)}" for name, (old, new) in refused.items()
    )
    text = f"{source} was written with other settings: {listed}."
    open_ = {name: new for name, (_, new) in refused.items() if name not in fixed}
    if open_:
        python = ", ".join(f"{name!r}: {value!r}" for name, value in open_.items())
        cli = ",".join(f"{name}={value}" for name, value in open_.items())
        text += (
            " Resume with the run's own settings, or apply the new ones from the resume point "
            f"with override={{{python}}} (command line: --override {cli})."
        )
    closed = sorted(set(refused) & fixed)
    if closed:
        text += f" {', '.join(closed)} cannot change in a resumed run: start a new run."
    return text


def rescheduled(
    current: LearningRate, step: int, end_step: int, lr: float | None, schedule: str | None
) -> LearningRate:
    """The learning rate from ``step`` on after an override of rate, schedule or length.

    A new segment from ``step`` to ``end_step``: it starts at ``lr`` (the overridden rate) or,
    when ``lr`` is ``None``, at the rate ``current`` has reached at ``step``, and follows
    ``schedule`` (a cosine decays to 0 at ``end_step``), so it never climbs back.

    Example:
        >>> old = LearningRate(0.1, "cosine", total_steps=10)
        >>> new = rescheduled(old, step=5, end_step=15, lr=None, schedule="cosine")
        >>> round(new.at(5), 4), round(new.at(10), 4), new.at(15)
        (0.05, 0.025, 0.0)
    """
    start = current.at(step) if lr is None else lr
    if start == 0:
        raise SettingsChangedError(
            f"the learning rate has decayed to 0 by step {step}: a longer run needs a rate to "
            "go on with, e.g. override={'lr': 1e-4, ...} (command line: --override lr=1e-4,...)"
        )
    return LearningRate(start, schedule, end_step, start_step=step)


def override_record(step: int, changed: Mapping[str, tuple[Any, Any]], **where: Any) -> dict:
    """The history entry of an override: the step it took effect and ``{name: [old, new]}``.

    Example:
        >>> override_record(21, {"lr": (0.3, 0.001)}, epoch=0)
        {'step': 21, 'epoch': 0, 'settings': {'lr': [0.3, 0.001]}}
    """
    return {
        "step": step,
        **where,
        "settings": {name: [old, new] for name, (old, new) in changed.items()},
    }
