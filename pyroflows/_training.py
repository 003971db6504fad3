"""The core shared by :func:`~pyroflows.train.fit` and :func:`~pyroflows.infer.train_guide`.

One implementation each of: the Adam kernel choice (:func:`adam`), the learning-rate schedule
(:class:`LearningRate`), the gradient norm and clipping (:func:`gradient_norm`), the non-finite
guard (:class:`NonFiniteGuard`), RNG state capture and restore (:func:`capture_rng`,
:func:`restore_rng`), the progress bar (:func:`progress_bar`) and the part of a checkpoint both
loops share (:func:`training_payload`, :func:`restore_training`). The loops themselves stay in
:mod:`pyroflows.train` and :mod:`pyroflows.infer.svi`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.graph import increment_version

__all__ = [
    "CHECK_EVERY",
    "LearningRate",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "adam",
    "adam_group_options",
    "adam_kernel_options",
    "capture_rng",
    "gradient_norm",
    "progress_bar",
    "restore_rng",
    "restore_training",
    "training_payload",
]

# Steps between two host reads of the non-finite flag when it lives on an accelerator.
CHECK_EVERY = 50


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss or gradient; the model keeps its last good state.

    Example:
        >>> issubclass(NonFiniteLossError, FloatingPointError)
        True
    """


# -- optimizer ------------------------------------------------------------------------------------

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def adam_kernel_options(parameters: list[Tensor]) -> dict[str, bool]:
    """``{"fused": True}`` when every tensor is a real float on one CPU or CUDA device.

    Fused Adam/AdamW updates all tensors in a few kernels (a per-tensor loop costs a
    noticeable share of a small step); elsewhere torch's default implementation is kept.

    Example:
        >>> adam_kernel_options([torch.zeros(2, requires_grad=True)])
        {'fused': True}
    """
    devices = {p.device for p in parameters}
    fusable = (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.dtype in _FUSED_DTYPES for p in parameters)
    )
    return {"fused": True} if fusable else {}


def adam_group_options(parameters: list[Tensor]) -> dict[str, Any]:
    """Kernel options of a parameter group added later to an :func:`adam` optimizer."""
    return {"fused": False, "foreach": None, **adam_kernel_options(parameters)}


def adam(
    parameters: list[Tensor],
    lr: float,
    kind: type[torch.optim.Optimizer] = torch.optim.Adam,
    **options: Any,
) -> torch.optim.Optimizer:
    """``kind(parameters, lr=lr, **options)`` (Adam or AdamW), fused where torch allows it.

    Example:
        >>> optimizer = adam([torch.zeros(2, requires_grad=True)], 1e-3, torch.optim.AdamW)
        >>> type(optimizer).__name__, optimizer.defaults["fused"]
        ('AdamW', True)
    """
    optimizer = kind(parameters, lr=lr, **options, **adam_kernel_options(parameters))
    optimizer.register_step_post_hook(_mark_updated)
    return optimizer


def _mark_updated(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Bump the version counters of every parameter after a step.

    torch's fused Adam/AdamW update parameters without bumping their version counters, which
    the flows' caches and the residual flows' spectral-norm refresh read to see an update.
    """
    increment_version([p for group in optimizer.param_groups for p in group["params"]])


def gradient_norm(parameters: Iterable[Tensor], max_norm: float | None = None) -> Tensor | None:
    """Total gradient norm, after clipping to ``max_norm`` when given; ``None`` without gradients.

    Computed with foreach kernels and no host read, so it costs no synchronisation on a GPU.
    """
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return None
    if max_norm is None:
        return torch.nn.utils.get_total_norm([p.grad for p in parameters], foreach=True)
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)


# -- learning-rate schedule -----------------------------------------------------------------------

SCHEDULES = (None, "constant", "cosine")


class LearningRate:
    r"""The learning rate of step :math:`t` (counted from 0) of a run ending at step :math:`T`.

    ``"cosine"``: :math:`\eta_t = \eta \cdot \tfrac12 (1 + \cos(\pi (t - s) / (T - s)))`,
    from ``lr`` at the segment's first step :math:`s` (``start_step``, 0 for a whole run)
    down to 0 at :math:`T`; ``"constant"`` or ``None``: ``lr`` throughout. A function of the
    step alone, so a resumed run needs no schedule state beyond :meth:`state`.

    Example:
        >>> rate = LearningRate(0.1, "cosine", total_steps=4)
        >>> [round(rate.at(t), 4) for t in range(5)]
        [0.1, 0.0854, 0.05, 0.0146, 0.0]
        >>> LearningRate.from_state(rate.state()).at(2) == rate.at(2)
        True
    """

    def __init__(self, lr: float, schedule: str | None, total_steps: int, start_step: int = 0):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be 'cosine', 'constant' or None, got {schedule!r}")
        self.lr = lr
        self.schedule = schedule
        self.cosine = schedule == "cosine"
        self.start_step = start_step
        self.total_steps = max(start_step + 1, total_steps)

    def at(self, step: int) -> float:
        """The learning rate of step ``step``."""
        if not self.cosine:
            return self.lr
        progress = (step - self.start_step) / (self.total_steps - self.start_step)
        return self.lr * (0.5 * (1.0 + math.cos(math.pi * progress)))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every parameter group's learning rate to that of ``step``."""
        value = self.at(step)
        for group in optimizer.param_groups:
            group["lr"] = value

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores to rebuild this schedule (:meth:`from_state`)."""
        return {
            "lr": self.lr,
            "schedule": self.schedule,
            "start_step": self.start_step,
            "total_steps": self.total_steps,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LearningRate:
        """The schedule :meth:`state` describes."""
        return cls(state["lr"], state["schedule"], state["total_steps"], state["start_step"])

    def state_dict(self, step: int) -> dict[str, Any] | None:
        """A :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` state after ``step`` steps.

        Older pyroflows versions resume from it; this one rebuilds the rate from :meth:`state`.
        """
        if not self.cosine:
            return None
        return {
            "T_max": self.total_steps - self.start_step,
            "eta_min": 0.0,
            "base_lrs": [self.lr],
            "last_epoch": step - self.start_step,
            "_step_count": step - self.start_step + 1,
            "_last_lr": [self.at(step)],
            "_get_lr_called_within_step": False,
        }


# -- non-finite guard -----------------------------------------------------------------------------


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` skips the update when ``optimizer.found_inf`` is non-zero.

    True for torch's fused Adam/AdamW (the mechanism ``GradScaler`` uses): the kernel leaves
    parameters and moments untouched and takes the step count back, all on the device.
    """
    return isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW) and all(
        group.get("fused") for group in optimizer.param_groups
    )


class NonFiniteGuard:
    """Stops a run at a NaN/inf loss or gradient norm; that update is never applied.

    Call :meth:`check` after the gradients and before ``optimizer.step()``, and :meth:`sync`
    wherever the run must be known good (before a checkpoint, at an epoch's end, at the end).

    * Immediate mode (``check_every=1``; the default on a CPU, where a host read costs
      nothing, and for optimizers that cannot skip a step): :meth:`check` reads the loss and
      norm and raises before the update.
    * Deferred mode (fused Adam/AdamW; the default on an accelerator, every
      :data:`CHECK_EVERY` steps): :meth:`check` folds the step into a sticky device flag that
      is the optimizer's ``found_inf``, so the fused kernel skips the bad update and every
      later one on the device; the flag is read back every ``check_every`` steps and at
      :meth:`sync`, which then raises naming the first bad step.

    Args:
        optimizer: the optimizer whose steps are guarded (``None``: no steps, only checks).
        device: where the loss and gradients live.
        describe: ``describe(step, loss, norm)`` returns the error message for the first bad
            ``step`` (as passed to :meth:`check`); ``loss`` and ``norm`` are ``None`` when
            unknown (deferred mode).
        check_every: steps between host reads (default: see above).

    Example:
        >>> guard = NonFiniteGuard(
        ...     adam([torch.zeros(1, requires_grad=True)], 0.1), torch.device("cpu"),
        ...     lambda step, loss, norm: f"step {step}")
        >>> guard.check(torch.tensor(1.0), torch.tensor(2.0), step=1)
        >>> guard.check(torch.tensor(float("nan")), None, step=2)
        Traceback (most recent call last):
        ...
        pyroflows._training.NonFiniteLossError: step 2
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None,
        device: torch.device,
        describe: Callable[[int, float | None, float | None], str],
        check_every: int | None = None,
    ):
        self.optimizer = optimizer
        self.device = torch.device(device)
        self.describe = describe
        if check_every is None:
            deferred = self.device.type != "cpu" and skips_on_device(optimizer)
            check_every = CHECK_EVERY if deferred else 1
        if check_every < 1:
            raise ValueError(f"check_every must be positive, got {check_every}")
        self.check_every = check_every
        self._pending = 0  # checks since the last host read
        self._first_step: int | None = None  # step of the first check since that read
        if self.deferred:
            self._arm()

    @property
    def deferred(self) -> bool:
        """Whether the flag lives on the device and is read every ``check_every`` steps."""
        return self.check_every > 1

    def _arm(self) -> None:
        if not skips_on_device(self.optimizer):
            raise ValueError("deferred non-finite checks need fused Adam or AdamW")
        self._found = torch.zeros((), dtype=torch.float32, device=self.device)
        self._clean = torch.zeros((), dtype=torch.int64, device=self.device)
        self.optimizer.found_inf = self._found

    def refresh(self) -> None:
        """Fall back to immediate mode if the optimizer can no longer skip steps on device."""
        if self.deferred and not skips_on_device(self.optimizer):
            self.sync()
            del self.optimizer.found_inf
            self.check_every = 1

    def check(self, loss: Tensor | float, norm: Tensor | None, step: int) -> None:
        """Guard the update about to be taken at ``step`` (consecutive integers)."""
        if not self.deferred or not isinstance(loss, Tensor):
            # A float already, or a host read that costs nothing here.
            value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
            if not math.isfinite(value):
                self.sync()  # an earlier bad step is the one to report
                raise NonFiniteLossError(self.describe(step, value, _host(norm)))
            if not self.deferred:
                if norm is not None and not math.isfinite(float(norm)):
                    raise NonFiniteLossError(self.describe(step, value, float(norm)))
                return
            total = norm
        else:
            total = loss.detach() if norm is None else loss.detach() + norm
        if self._pending == 0:
            self._first_step = step
        if total is not None:
            self._found.logical_or_(total.isfinite().logical_not_())  # sticky
        self._clean.add_(self._found == 0)  # stops counting at the first bad step
        self._pending += 1
        if self._pending >= self.check_every:
            self.sync()

    def sync(self) -> None:
        """Read the device flag back (one host synchronisation); raise if a step was bad."""
        if not self.deferred or self._pending == 0:
            return
        self._pending = 0
        if self._found.item():
            first = self._first_step + int(self._clean)
            raise NonFiniteLossError(self.describe(first, None, None))
        self._clean.zero_()


def shown_values(loss: float | None, norm: float | None) -> str:
    """`` (loss L, gradient norm N)`` for an error message; empty when the loss is unknown."""
    if loss is None:
        return ""
    return f" (loss {loss:.4g}" + ("" if norm is None else f", gradient norm {norm:.4g}") + ")"


def _host(value: Tensor | float | None) -> float | None:
    return None if value is None else float(value)


# -- RNG states, progress bar, checkpoint payload -------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every global RNG state (torch, CUDA, NumPy, Python) as ``weights_only``-loadable values."""
    state = np.random.get_state()  # noqa: NPY002 (the global state, saved as it is)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:]],
        "python": random.getstate(),
    }


def restore_rng(states: dict[str, Any]) -> None:
    """Set every global RNG state from :func:`capture_rng`'s output."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    random.setstate(states["python"])


def progress_bar(enabled: bool, total: int, initial: int = 0):
    """A tqdm bar counting steps, or ``None`` when not ``enabled``."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def training_payload(optimizer: torch.optim.Optimizer, **fields: Any) -> dict[str, Any]:
    """A checkpoint: ``fields`` plus the optimizer state (``"optimizer"``) and RNG states."""
    return {**fields, "optimizer": optimizer.state_dict(), "rng": capture_rng()}


def restore_training(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Load the optimizer state and RNG states of a :func:`training_payload` checkpoint."""
    optimizer.load_state_dict(saved["optimizer"])
    restore_rng(saved["rng"])
