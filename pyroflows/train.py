r"""Maximum-likelihood training of a :class:`~pyroflows.distributions.Flow`: :func:`fit`.

:func:`fit` minimises the mean negative log-likelihood

.. math::
    \mathcal{L}(\theta) = -\frac{1}{|B|} \sum_{x \in B} \log p_\theta(x)

over minibatches :math:`B` with Adam, a learning-rate schedule and gradient-norm clipping,
scores a held-out validation split after every epoch, stops early when it stops improving,
and restores the best epoch's parameters. Checkpoints (atomic, ``weights_only`` loading)
hold everything needed to resume *exactly*: a run killed mid-epoch and resumed ends with the
same parameters as one that never stopped. Under ``torchrun`` the same call trains with
``DistributedDataParallel`` (see :func:`fit`).
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch import distributed as torch_dist

from ._casting import as_model_dtype
from ._density_defaults import DensityDefaults, density_defaults
from ._resume import (
    apply_override,
    changed_settings,
    fingerprint,
    override_record,
    rescheduled,
)
from ._training import (
    LearningRate,
    NonFiniteGuard,
    NonFiniteLossError,
    adam,
    gradient_norm,
    progress_bar,
    restore_training,
    shown_values,
    training_payload,
)
from .checkpoint import check_config, load_checkpoint, load_state, save_checkpoint
from .data.degenerate import warn_if_degenerate
from .distributions import Flow
from .errors import DataError, ModelSizeWarning, OptionError, RunFolderError
from .transforms import auxiliary_loss

__all__ = [
    "Augment",
    "Callback",
    "DensityDefaults",
    "History",
    "NonFiniteLossError",
    "density_defaults",
    "fit",
    "resolve_device",
    "validate_data",
    "validation_split",
]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; anything else as ``torch.device``, checked.

    Raises :class:`~pyroflows.errors.OptionError` (a ``ValueError``) for a device that cannot
    run a model: a malformed name, ``"meta"`` (it holds no values), CUDA where there is none,
    or a CUDA index beyond the devices present.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("meta")
        Traceback (most recent call last):
        ...
        pyroflows.errors.OptionError: device 'meta' holds no values: ...
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise OptionError(f"device {str(device)!r} is not a torch device ({error})") from None
    if device.type == "meta":
        raise OptionError(
            "device 'meta' holds no values: training, sampling and scoring need a real "
            "device, such as 'cpu' or 'cuda'"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError(f"device {str(device)!r}: CUDA is not available; use 'cpu' or 'auto'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise OptionError(
                f"device {str(device)!r}: there are {torch.cuda.device_count()} CUDA devices, "
                "numbered from 0"
            )
    return device


def validate_data(
    data: Tensor,
    dim: int | Sequence[int],
    name: str = "data",
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Return ``data`` as a float tensor ``(N, dim)``, or raise ``DataError`` naming the problem.

    ``dim`` is the event size :math:`D`, or an event shape such as ``(C, H, W)`` (images:
    the rows then have shape ``(N, C, H, W)``).

    Problems (:class:`~pyroflows.errors.DataError`, a ``ValueError``): wrong shape, no rows,
    rows with NaN/inf (listed by index). Nothing is dropped. The result is detached from any
    autograd graph (data are constants of a fit) and, with ``dtype`` (the model's), cast to
    it, with a :class:`~pyroflows.errors.DataWarning` when that loses precision (float64 rows,
    float32 model).

    Example:
        >>> validate_data(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), 2)
        Traceback (most recent call last):
        ...
        pyroflows.errors.DataError: data has non-finite values (NaN or inf) in 1 row(s): [1]
    """
    data = torch.as_tensor(data).detach()
    if dtype is not None:
        data = as_model_dtype(data, dtype, name)
    elif not data.is_floating_point():
        data = data.float()
    event = (dim,) if isinstance(dim, int) else tuple(int(n) for n in dim)
    if data.dim() != 1 + len(event) or tuple(data.shape[1:]) != event:
        expected = ", ".join(str(n) for n in event)
        raise DataError(f"{name} must have shape (N, {expected}), got {tuple(data.shape)}")
    if len(data) == 0:
        raise DataError(f"{name} has no rows")
    bad = torch.nonzero(~torch.isfinite(data.flatten(1)).all(1)).flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise DataError(
            f"{name} has non-finite values (NaN or inf) in {len(bad)} row(s): [{shown}]"
        )
    return data


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run.

    Mean train and validation NLL (nats per example), learning rate and elapsed seconds per
    epoch; ``best_epoch`` is the epoch whose parameters were kept; ``overrides`` lists the
    settings changed on resume (``fit(..., override=...)``), each as ``{"step": s, "epoch": e,
    "settings": {name: [old, new]}}``, ``s`` the steps and ``e`` the epochs done before it.
    ``logs`` holds one dict per epoch of the numbers ``fit``'s ``callbacks`` returned (e.g.
    :class:`~pyroflows.diagnostics.ConditioningMonitor`'s), ``{}`` where none did.

    Example:
        >>> history = History(epoch=[1, 2], train_nll=[2.0, 1.5], val_nll=[2.1, 1.7])
        >>> history.best_val_nll
        1.7
    """

    epoch: list[int] = field(default_factory=list)
    train_nll: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    overrides: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, float]] = field(default_factory=list)

    @property
    def best_val_nll(self) -> float | None:
        """Lowest validation NLL seen (``None`` without validation data)."""
        finite = [v for v in self.val_nll if math.isfinite(v)]
        return min(finite) if finite else None

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON- and ``weights_only``-checkpoint-friendly)."""
        return asdict(self)

    def plot(self, ax=None):
        """Plot the train and validation NLL curves (needs matplotlib); returns the axes."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.subplots(figsize=(5, 3.5))[1]
        ax.plot(self.epoch, self.train_nll, label="train")
        if any(math.isfinite(v) for v in self.val_nll):
            ax.plot(self.epoch, self.val_nll, label="validation")
        if self.best_epoch is not None:
            ax.axvline(self.best_epoch, color="grey", linestyle=":", label="kept")
        ax.set_xlabel("epoch")
        ax.set_ylabel("NLL (nats per example)")
        ax.legend()
        return ax


@dataclass(frozen=True)
class _Distributed:
    rank: int = 0
    world: int = 1
    owned: bool = False  # fit() joined the process group, so fit() leaves it at the end

    @property
    def main(self) -> bool:
        return self.rank == 0


def _distributed_setup(device: torch.device) -> _Distributed:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return _Distributed(torch_dist.get_rank(), torch_dist.get_world_size())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend)
        return _Distributed(torch_dist.get_rank(), torch_dist.get_world_size(), owned=True)
    return _Distributed()


@dataclass
class _Data:
    """Training rows and contexts, and validation rows and contexts (or ``None``)."""

    train: Tensor
    context: Tensor | None
    val: Tensor | None
    val_context: Tensor | None

    def to(self, device: torch.device) -> _Data:
        parts = (self.train, self.context, self.val, self.val_context)
        return _Data(*(None if part is None else part.to(device) for part in parts))


def _event(model: Flow) -> int | tuple[int, ...]:
    """The shape of one data row of ``model``: ``D`` for vectors, ``(C, H, W)`` for images."""
    shape = tuple(model.event_shape)
    return model.input_dim if len(shape) == 1 else shape


def _prepare_data(
    model, data, context, val_data, val_context, val_fraction, seed, augmented: bool
) -> _Data:
    """Check the rows and contexts; split off validation rows when none are given.

    Rows to be ``augmented`` are checked for degeneracy once drawn (:func:`_augmentation`).
    """
    if not 0 <= val_fraction < 1:
        raise OptionError(f"val_fraction must be in [0, 1), got {val_fraction}")
    dtype = model.data_loc.dtype
    data = validate_data(data, _event(model), dtype=dtype)
    if not augmented:
        warn_if_degenerate(data.flatten(1))
    if model.context_dim:
        if context is None:
            raise DataError(f"the model is conditional: pass context (N, {model.context_dim})")
        context = validate_data(context, model.context_dim, "context", dtype)
        if len(context) != len(data):
            raise DataError(f"context has {len(context)} rows, data has {len(data)}")
    if val_data is None and val_fraction > 0:
        return _Data(*validation_split(data, context, val_fraction, seed))
    if val_data is not None:
        val_data = validate_data(val_data, _event(model), "val_data", dtype)
    if val_context is not None:
        val_context = validate_data(val_context, model.context_dim, "val_context", dtype)
    return _Data(data, context, val_data, val_context)


def validation_split(
    data: Tensor, context: Tensor | None = None, fraction: float = 0.1, seed: int = 0
) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
    """The rows :func:`fit` holds out: ``(train, train_context, val, val_context)``.

    ``round(fraction * N)`` rows chosen by a seeded permutation (a local generator), the rest
    for training; contexts (``None`` for none) are split alike. ``fit(..., val_fraction,
    seed)`` validates on exactly these rows.

    Example:
        >>> train, _, val, _ = validation_split(torch.arange(10.0).unsqueeze(-1), fraction=0.2)
        >>> train.shape, val.shape
        (torch.Size([8, 1]), torch.Size([2, 1]))
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    count = round(fraction * len(data))
    if fraction > 0 and (count < 1 or count >= len(data)):
        raise DataError(
            f"val_fraction={fraction} leaves no validation or no training rows of {len(data)}"
        )
    val, train = order[:count], order[count:]
    pick = lambda t, i: None if t is None else t[i]  # noqa: E731
    return data[train], pick(context, train), data[val], pick(context, val)


def _epoch_order(count: int, seed: int, epoch: int) -> Tensor:
    """The data order of one epoch, a function of (seed, epoch) only.

    A resumed run therefore replays exactly the batches it would have seen.
    """
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


Augment = Callable[[Tensor, torch.Generator], Tensor]
"""The type of :func:`fit`'s ``augment``: ``augment(rows, generator) -> rows`` of one shape."""

Callback = Callable[[Flow, "History"], Mapping[str, float] | None]
"""The type of :func:`fit`'s ``callbacks``: ``callback(model, history) -> {name: number}``."""


def _stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed of the random stream named ``stream`` in a run seeded with ``seed``."""
    digest = hashlib.sha256(f"pyroflows:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _augment_setting(augment: Augment | None) -> str | None:
    """What checkpoints record of ``augment``: its ``repr`` (a function's qualified name).

    Memory addresses (``at 0x...``) are dropped: they differ between processes.
    """
    if augment is None:
        return None
    if inspect.isfunction(augment):
        text = f"{augment.__module__}.{augment.__qualname__}"
    else:
        text = repr(augment)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


@dataclass(frozen=True)
class _Augmentation:
    """:func:`fit`'s ``augment`` with the run's seed: draws that are functions of (seed, epoch)."""

    function: Augment
    seed: int

    def draw(self, rows: Tensor, stream: int | str) -> Tensor:
        """``function(rows, generator)``, the generator seeded from the seed and ``stream``.

        ``stream`` is an epoch (counted from 0) or ``"validation"``; ``rows`` and the result
        are on the CPU, checked like the data (shape, finite values, the model's dtype).
        """
        seed = _stream_seed(self.seed, f"augment:{stream}")
        drawn = self.function(rows, torch.Generator().manual_seed(seed))
        what = f"epoch {stream + 1}" if isinstance(stream, int) else stream
        what = f"augment's {what} rows"
        if not isinstance(drawn, Tensor) or drawn.shape != rows.shape:
            shape = tuple(drawn.shape) if isinstance(drawn, Tensor) else type(drawn).__name__
            raise DataError(
                f"{what}: augment must return a tensor of its input's shape {tuple(rows.shape)}"
                f", got {shape}"
            )
        return validate_data(drawn.to("cpu"), rows.shape[1:], what, rows.dtype)


def _augmentation(
    augment: Augment | None, parts: _Data, seed: int, val_given: bool
) -> tuple[_Augmentation | None, Tensor]:
    """The augmentation, and the rows of the first epoch (checked for degeneracy).

    A validation split of ``data`` (``val_given`` false) gets one fixed draw, in place.
    """
    if augment is None:
        return None, parts.train
    augmentation = _Augmentation(augment, seed)
    first = augmentation.draw(parts.train.to("cpu"), 0)
    warn_if_degenerate(first.flatten(1))
    if parts.val is not None and not val_given:
        parts.val = augmentation.draw(parts.val.to("cpu"), "validation")
    return augmentation, first


@torch.no_grad()
def _mean_nll(model: Flow, data: Tensor, context: Tensor | None, batch_size: int) -> float:
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    for start in range(0, len(data), batch_size):
        ctx = None if context is None else context[start : start + batch_size]
        total += -model.log_prob(data[start : start + batch_size], ctx).double().sum()
    return float(total) / len(data)


def _copy_state(model: torch.nn.Module) -> dict[str, Any]:
    """A copy of ``model.state_dict()``: tensors cloned, extra states (e.g. ActNorm's) copied."""
    return {
        k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
        for k, v in model.state_dict().items()
    }


_POSITION = (
    "epoch",
    "batch",
    "step",
    "best",
    "since_best",
    "loss_sum",
    "loss_rows",
    "batch_size",
)


@dataclass
class _RunState:
    """Where a :func:`fit` run stands: all a resume needs besides the model and optimizer."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # steps taken in the current epoch
    step: int = 0  # steps taken in the run
    best: float = math.inf  # best validation (or training) NLL so far
    since_best: int = 0  # epochs since then
    loss_sum: float = 0.0  # summed loss of the current epoch's rows
    loss_rows: int = 0
    batch_size: int = 0  # the current epoch's batch size (0: unknown, older checkpoints)
    best_model: dict[str, Tensor] = field(default_factory=dict)
    history: History = field(default_factory=History)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint entries ``state``, ``best_model`` and ``history``."""
        return {
            "state": {name: getattr(self, name) for name in _POSITION},
            "best_model": self.best_model,
            "history": self.history.to_dict(),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Take the entries :meth:`state_dict` wrote from a checkpoint."""
        for name in _POSITION:
            setattr(self, name, saved["state"].get(name, getattr(_RunState, name)))
        self.best_model = saved["best_model"]
        self.history = History(**saved["history"])
        logs = self.history.logs  # checkpoints from before callbacks: no logs per epoch
        logs.extend({} for _ in range(len(self.history.epoch) - len(logs)))


@dataclass
class _Loop:
    """The fixed parts of a :func:`fit` run."""

    model: Flow
    # What the training step calls: the model, or its DistributedDataParallel wrapper, either
    # one compiled with torch.compile when asked (checkpoints read `model`, never this).
    trained: torch.nn.Module
    parameters: list[Tensor]  # listed once, not per step
    optimizer: torch.optim.Optimizer
    rate: LearningRate
    guard: NonFiniteGuard
    data: _Data
    ranks: _Distributed
    clip_grad_norm: float | None
    patience: int | None
    seed: int
    max_steps: int | None
    checkpoint: Path | None
    checkpoint_every: int | None  # None: once per epoch
    settings: dict[str, Any]  # as used, with the overrides applied; saved in checkpoints
    run_id: str | None
    # With `augment`: the training rows as given (on the CPU); `data.train` then holds the
    # rows drawn for epoch `drawn_epoch` (counted from 0), on the device.
    augment: _Augmentation | None = None
    raw_train: Tensor | None = None
    drawn_epoch: int = 0
    callbacks: tuple[Callback, ...] = ()

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self.data.train) / batch_size)

    def draw_epoch(self, epoch: int) -> None:
        """Make ``data.train`` the rows of ``epoch`` (a resumed epoch gets the same draw)."""
        if self.augment is not None and self.drawn_epoch != epoch:
            device = self.data.train.device
            self.data.train = self.augment.draw(self.raw_train, epoch).to(device)
            self.drawn_epoch = epoch

    def out_of_steps(self, state: _RunState) -> bool:
        return self.max_steps is not None and state.step >= self.max_steps

    def save(self, state: _RunState) -> None:
        """Write the checkpoint (rank 0), once the steps taken are known to be good."""
        self.guard.sync()
        if self.checkpoint is None or not self.ranks.main:
            return
        payload = training_payload(
            self.optimizer,
            config=self.model.config,
            model=self.model.state_dict(),
            scheduler=self.rate.state_dict(state.step),
            rate=self.rate.state(),
            settings=self.settings,
            run_id=self.run_id,
            **state.state_dict(),
        )
        save_checkpoint(self.checkpoint, payload)


def _resume(path: Path | None, model: Flow, optimizer, state: _RunState, device, run_id):
    """Load the model, optimizer, RNG states and run state saved at ``path``; return it all."""
    if path is None or not path.is_file():
        raise FileNotFoundError(f"resume=True but there is no checkpoint at {path}")
    saved = load_checkpoint(path, map_location=device)
    check_config(model.config, saved.get("config"), str(path))
    if run_id is not None and saved.get("run_id") not in (None, run_id):
        raise RunFolderError(
            f"{path} belongs to run {saved['run_id']}, not to run {run_id}: the folder mixes "
            "two runs"
        )
    load_state(model, saved["model"], str(path))
    restore_training(saved, optimizer)
    for group in optimizer.param_groups:  # the requested weight decay, not the saved one
        group.update({key: optimizer.defaults[key] for key in _DECAY if key in optimizer.defaults})
    state.load_state_dict(saved)
    if not state.batch_size:  # an older checkpoint: its epochs had the saved batch size
        state.batch_size = saved.get("settings", {}).get("batch_size", 0)
    return saved


_DECAY = ("weight_decay", "decoupled_weight_decay")
# The settings compared on resume (fit's "Resuming"): these can be overridden ...
_OVERRIDABLE = (
    "epochs",
    "batch_size",
    "lr",
    "schedule",
    "weight_decay",
    "clip_grad_norm",
    "patience",
)
# ... these start a new schedule segment when they change ...
_RESCHEDULING = frozenset({"epochs", "batch_size", "lr", "schedule"})
# ... and these never change: they define the data, its split and the epochs' order.
_FIXED = ("seed", "val_fraction", "standardize", "augment", "data", "val_data")

# The model-size check at the end of fit() ("Model size" in its docstring): more trainable
# parameters than numbers in the training rows (N x D), and the validation NLL best within the
# first EARLY_EPOCHS epochs of a run that early stopping ended.
PARAMETERS_PER_VALUE = 1.0
EARLY_EPOCHS = 5


def _size_warning(model: Flow, parts: _Data, history: History, augmented: bool) -> str | None:
    """The :class:`~pyroflows.errors.ModelSizeWarning` message of a run, or ``None``."""
    rows, dim = len(parts.train), parts.train[0].numel()
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    best = history.best_epoch
    if (
        parts.val is None
        or not history.stopped_early
        or best is None
        or best > EARLY_EPOCHS
        or parameters <= PARAMETERS_PER_VALUE * rows * dim
    ):
        return None
    redraw = (
        ""
        if augmented
        else ", or, for discrete data, dequantisation noise redrawn every epoch (in Python: "
        "fit(..., augment=pyroflows.data.Dequantize(levels)) on the integers)"
    )
    return (
        f"the model has {parameters:,} parameters for {rows:,} training rows of {dim} values "
        f"({parameters / (rows * dim):.3g} parameters per value), and early stopping kept epoch "
        f"{best} of {len(history.epoch)}: the model overfits the training rows. Try fewer or "
        "narrower layers (num_layers, hidden_dims), weight decay (weight_decay=1e-4 or "
        f"more), more training rows{redraw}"
    )


def _resumed_rate(loop: _Loop, state: _RunState, saved, changed, epochs: int) -> LearningRate:
    """The schedule of a resumed run, with the ``changed`` settings applied."""
    rate = LearningRate.from_state(saved["rate"]) if "rate" in saved else loop.rate
    if {"patience", "epochs"} & changed.keys():
        state.history.stopped_early = False  # a new patience or length: training goes on
    if not changed.keys() & _RESCHEDULING:
        return rate
    # The last step: the epoch in progress at its batch size, then the remaining epochs.
    settings = loop.settings
    in_progress = loop.steps_per_epoch(state.batch_size) - state.batch if state.batch else 0
    whole = max(epochs - state.epoch - (1 if state.batch else 0), 0)
    end = state.step + in_progress + whole * loop.steps_per_epoch(settings["batch_size"])
    lr = settings["lr"] if "lr" in changed else None
    return rescheduled(rate, state.step, end, lr, settings["schedule"])


def _nothing_to_do(state: _RunState, epochs: int, patience: int | None) -> str | None:
    """Why a resumed run trains no further, or ``None`` when it goes on."""
    if state.history.stopped_early:
        return (
            f"the run stopped early at epoch {state.epoch} (no better validation NLL for "
            f"{patience} epochs) and is final: nothing was trained. To train on, raise patience "
            "or epochs: override={'patience': ...} (command line: --override patience=...)"
        )
    if state.epoch >= epochs:
        return (
            f"the run is complete ({state.epoch} of {epochs} epochs): nothing was trained. To "
            "train longer: override={'epochs': ..., 'lr': ...} (command line: --override "
            "epochs=...,lr=...)"
        )
    return None


def _non_finite_message(state: _RunState, checkpoint: Path | None, step: int, loss, norm) -> str:
    text = (
        f"non-finite loss or gradient at epoch {state.epoch + 1}, step {step + 1}"
        f"{shown_values(loss, norm)}; the update was not applied, the model keeps its last "
        "good parameters. Lower lr, or check the data."
    )
    if checkpoint is not None:
        text += (
            f" To go on from the last checkpoint ({checkpoint}), resume it with a lower rate, "
            "e.g. override={'lr': 1e-4} (command line: --resume --override lr=1e-4)"
        )
    return text


def _step(loop: _Loop, rows: Tensor, step: int) -> Tensor:
    """One optimizer step on the global batch ``rows``; returns this rank's loss tensor."""
    local = rows[loop.ranks.rank :: loop.ranks.world]
    context = None if loop.data.context is None else loop.data.context[local]
    loop.optimizer.zero_grad(set_to_none=True)
    auxiliary_loss(loop.trained)  # drops penalties left by passes from outside this step
    log_prob = loop.trained(loop.data.train[local], context)
    loss = -log_prob.sum() * (loop.ranks.world / len(rows))
    aux = auxiliary_loss(loop.trained)  # the flows' penalties (e.g. RNODE), not reported
    (loss if aux is None else loss + aux).backward()
    loop.guard.check(loss, gradient_norm(loop.parameters, loop.clip_grad_norm), step)
    loop.optimizer.step()
    return loss


def _train_epoch(loop: _Loop, state: _RunState, bar) -> bool:
    """Take the current epoch's remaining steps; ``False`` if ``max_steps`` cut it short."""
    loop.draw_epoch(state.epoch)
    device = loop.data.train.device
    order = _epoch_order(len(loop.data.train), loop.seed, state.epoch).to(device)
    # The epoch's loss is summed on the device and read at checkpoints and the epoch's end.
    running = torch.tensor(state.loss_sum, dtype=torch.float64, device=device)
    postfix_every = max(10, loop.guard.check_every)
    steps = loop.steps_per_epoch(state.batch_size)
    while state.batch < steps and not loop.out_of_steps(state):
        start = state.batch * state.batch_size
        rows = order[start : start + state.batch_size]
        loss = _step(loop, rows, state.step)
        running += loss.detach().double() * len(rows) / loop.ranks.world
        state.loss_rows += len(rows)
        state.batch += 1
        state.step += 1
        loop.rate.apply(loop.optimizer, state.step)
        if bar is not None:
            bar.update(1)
            if state.step % postfix_every == 0:
                bar.set_postfix(nll=f"{float(running) / state.loss_rows:.4f}")
        if loop.checkpoint_every is not None and state.step % loop.checkpoint_every == 0:
            state.loss_sum = float(running)
            loop.save(state)
    state.loss_sum = float(running)
    return state.batch == steps


def _end_epoch(loop: _Loop, state: _RunState, started: float, bar) -> bool:
    """Validation, history, best parameters and checkpoint; ``True`` when patience ran out."""
    loop.guard.sync()
    state.epoch += 1
    state.batch = 0
    state.batch_size = loop.settings["batch_size"]  # a new batch size starts with an epoch
    train_nll = state.loss_sum / max(state.loss_rows, 1)
    state.loss_sum, state.loss_rows = 0.0, 0
    val_nll = math.nan
    if loop.data.val is not None:
        loop.model.eval()
        chunk = 4 * state.batch_size
        val_nll = _mean_nll(loop.model, loop.data.val, loop.data.val_context, chunk)
        loop.model.train()
    history = state.history
    history.epoch.append(state.epoch)
    history.train_nll.append(train_nll)
    history.val_nll.append(val_nll)
    history.lr.append(loop.optimizer.param_groups[0]["lr"])
    history.seconds.append(time.perf_counter() - started)
    history.logs.append(_callback_logs(loop, history))
    score = val_nll if loop.data.val is not None else train_nll
    if score < state.best:
        state.best, state.since_best = score, 0
        state.best_model = _copy_state(loop.model)
        history.best_epoch = state.epoch
    else:
        state.since_best += 1
    if bar is not None:
        bar.set_postfix(nll=f"{train_nll:.4f}", val=f"{val_nll:.4f}")
    if loop.checkpoint is not None:
        loop.save(state)
    return loop.patience is not None and state.since_best >= loop.patience


def _callback_logs(loop: _Loop, history: History) -> dict[str, float]:
    """The numbers the callbacks return at the end of an epoch (rank 0; ``{}`` elsewhere)."""
    logs: dict[str, float] = {}
    if not loop.callbacks or not loop.ranks.main:
        return logs
    loop.model.eval()
    try:
        with torch.enable_grad():
            for callback in loop.callbacks:
                numbers = callback(loop.model, history)
                if numbers is None:
                    continue
                if not isinstance(numbers, Mapping):
                    raise TypeError(
                        f"a fit callback returns a mapping of names to numbers, or None; "
                        f"{callback!r} returned {type(numbers).__name__}"
                    )
                logs.update({str(name): float(value) for name, value in numbers.items()})
    finally:
        loop.model.train()
    return logs


def _train(loop: _Loop, state: _RunState, epochs: int, progress: bool) -> None:
    """The epochs of a run, from where ``state`` stands; a final checkpoint at the end."""
    total_steps = loop.rate.total_steps if loop.max_steps is None else loop.max_steps
    bar = progress_bar(progress and loop.ranks.main, total_steps, initial=state.step)
    started = time.perf_counter() - (state.history.seconds[-1] if state.history.seconds else 0.0)
    loop.model.train()
    try:
        while state.epoch < epochs and not loop.out_of_steps(state):
            if not _train_epoch(loop, state, bar):
                break  # max_steps reached mid-epoch
            if _end_epoch(loop, state, started, bar):
                state.history.stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
    loop.save(state)  # the training state as it stands, so that a resume continues it


def fit(
    model: Flow,
    data: Tensor,
    *,
    context: Tensor | None = None,
    val_data: Tensor | None = None,
    val_context: Tensor | None = None,
    val_fraction: float = 0.1,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: Literal["cosine", "constant"] | None = "cosine",
    clip_grad_norm: float | None = 5.0,
    patience: int | None = 20,
    standardize: bool = True,
    augment: Augment | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    override: Mapping[str, Any] | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    compile: bool | dict[str, Any] = False,
    run_id: str | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    r"""Fit ``model`` to ``data`` ``(N, D)`` by maximum likelihood; return the :class:`History`.

    **Loop.** Each epoch visits the training rows in an order drawn from ``(seed, epoch)``,
    in minibatches of ``batch_size``; each step computes the mean NLL, backpropagates, clips
    the gradient norm to ``clip_grad_norm`` and takes an Adam step (``lr``, decoupled
    ``weight_decay`` as AdamW when non-zero; fused kernels where torch has them) with a cosine
    learning-rate decay over the whole run (``schedule``).

    **Validation and early stopping.** ``val_data`` (or else a ``val_fraction`` split of
    ``data``, drawn from ``seed``) is scored after every epoch; after ``patience`` epochs
    without improvement training stops, and the parameters of the best epoch are restored.

    **Standardisation.** With ``standardize=True`` the model's data statistics are set from
    the training rows (unless resuming), so the flow sees zero-mean, unit-variance data.

    **Augmentation (per-epoch data draws).** ``augment(rows, generator)`` returns new rows of
    the same shape drawn with ``generator`` (a :class:`torch.Generator` on the CPU; ``rows``
    are the training rows as given, on the CPU, in the model's dtype). It is called once at
    the start of every epoch, with the generator seeded from ``(seed, epoch)``, and that
    epoch trains on its result, so that every epoch sees a new draw. The draws are a
    function of the seed and the epoch alone: the same on any device and in every process
    of a distributed run, and a run resumed mid-epoch redraws exactly the rows it was
    training on. ``augment`` must draw its randomness from ``generator`` only (not from
    global random states). :class:`~pyroflows.data.Dequantize` is the uniform
    dequantisation :math:`x = (k + u) / L`, :math:`u \sim \mathcal{U}[0, 1)^D`, of integer
    data :math:`k`: ``fit(model, k, augment=Dequantize(levels=17))`` redraws :math:`u` every
    epoch. The validation rows split off ``data`` (``val_fraction``) get one fixed draw (its
    generator is seeded from ``seed`` alone), so that the validation NLL of every epoch is
    scored on the same rows; ``val_data``, when given, is used as it is (pass it already
    transformed). The standardisation statistics are those of the first epoch's draw (one
    draw of the whole transform, which suits any ``augment``, a logit-space model included);
    the degeneracy checks look at that draw too. The setting is recorded in checkpoints as
    ``augment``'s ``repr`` (a function's qualified name), and a resume with another one is
    refused: give an augmentation class a ``repr`` that shows its parameters, as
    ``Dequantize(levels=17)`` does, to have a changed parameter refused as well.

    **Data.** Rows and contexts are detached from any autograd graph and cast to the model's
    dtype (float64 rows into a float32 model warn once with a
    :class:`~pyroflows.errors.DataWarning`), then checked (:func:`validate_data`); collinear
    columns, or a column whose spread comes from a few extreme values, warn too
    (:func:`~pyroflows.data.degenerate.warn_if_degenerate`) but are fitted.

    **Auxiliary losses.** Flows that add a penalty to their training loss (the RNODE
    regularisers of :class:`~pyroflows.transforms.ContinuousFlow`) have it added to each
    step's loss (:func:`~pyroflows.transforms.auxiliary_loss`); the reported NLL leaves it
    out.

    **Non-finite losses.** A NaN/inf loss or gradient stops training with
    :class:`NonFiniteLossError` naming the epoch and step; that update is never applied, so
    the model keeps its last good parameters. On a GPU the check runs on the device (fused
    Adam skips a flagged update there) and is read back every 50 steps and at each epoch's
    end, so that the loop never waits for the GPU at every step.

    **Checkpoints.** With ``checkpoint`` (a file path) the full training state (model,
    optimizer, scheduler, RNG states, epoch, position in the epoch, best parameters, history,
    model recipe, settings) is written atomically every ``checkpoint_every`` steps (default:
    once per epoch) and at the end. ``resume=True`` continues from it exactly; a checkpoint of
    another architecture raises :class:`~pyroflows.checkpoint.CheckpointMismatchError`.

    **Resuming.** The checkpoint's settings are compared with the request: ``epochs``,
    ``batch_size``, ``lr``, ``schedule``, ``weight_decay``, ``clip_grad_norm``, ``patience``
    (these can be overridden), and ``seed``, ``val_fraction``, ``standardize``, ``augment``
    and the training and validation rows themselves (these cannot). A difference raises
    :class:`~pyroflows.errors.SettingsChangedError` naming each setting (old -> new), unless
    ``override`` holds it: ``override={"lr": 1e-4}`` applies (its values replace the keyword
    arguments of the same name) from the resume point on, and is recorded in
    :attr:`History.overrides`. A new ``lr``, ``schedule``, ``epochs`` or ``batch_size``
    starts a new schedule segment at the resume point: from the new rate (or from the rate the
    run had reached, when only the length or batch size changed), decaying over the remaining
    steps, never climbing back; a new ``batch_size`` applies from the next epoch (the epoch in
    progress ends with its own). A run that stopped early (``patience``) is final: resuming it
    with the same settings trains nothing and warns; override ``patience`` or ``epochs`` to
    go on; a complete run likewise. A diverged run (:class:`NonFiniteLossError`) goes on from
    its last checkpoint with a lower rate: ``resume=True, override={"lr": ...}``.

    **Callbacks.** Each of ``callbacks`` is called as ``callback(model, history)`` at the end
    of every epoch, after validation, with the model in eval mode and gradients enabled;
    ``history`` already holds that epoch's NLLs. It returns a mapping of names to numbers
    (or ``None``), and the numbers of all callbacks go into one dict per epoch,
    :attr:`History.logs` (later callbacks win on a name clash), saved with checkpoints, so a
    resumed run keeps the earlier epochs' logs. Under ``torchrun`` they run on rank 0 only
    (the other ranks log ``{}``). Callbacks are not settings: a resume may change them.
    :class:`~pyroflows.diagnostics.ConditioningMonitor` logs the Jacobian's conditioning:
    ``fit(model, data, callbacks=[ConditioningMonitor(data[:256])])``.

    **Model size.** A model with more trainable parameters than there are numbers in its
    training rows (:math:`N \cdot D`) whose validation NLL was best within the first 5
    epochs of a run that early stopping ended has overfitted: ``fit`` then warns once, at the
    end, with a :class:`~pyroflows.errors.ModelSizeWarning` naming both numbers and what to
    try (fewer or narrower layers, weight decay, more data, a dequantisation redrawn every
    epoch). The README's 1.09M-parameter coupling NSF on the 1,293 training rows of the 8 x 8
    digits (13 parameters per value), best at epoch 5 of 25 with a fixed dequantisation, is
    the case it is made for. Either sign alone is no fault: a large model can generalise
    (with weight decay or fresh draws), and a small one may peak early on easy data.

    **Compilation.** With ``compile=True`` the training step's log-likelihood (the model's
    ``forward``, i.e. ``log_prob`` of a batch, through ``DistributedDataParallel`` when it
    wraps the model) is compiled with :func:`torch.compile` (inductor): the element-wise work
    around the conditioners' matrix products is fused, forward and backward. The loss sum,
    gradient clipping, the non-finite guard and the Adam step stay eager; validation is scored
    eagerly; checkpoints hold the model's own ``state_dict`` (no ``_orig_mod.`` prefix), so
    runs resume with or without compilation. The first step compiles (seconds to a minute), and
    the last, smaller batch of an epoch once more (with a dynamic batch size). A dict instead
    of ``True`` holds :func:`torch.compile` options (``{"mode": "max-autotune"}``,
    ``{"backend": "aot_eager"}``). Flows whose density direction is a numerical inverse
    (``planar``, ``deep_sigmoid``, ``neural_autoregressive``) break the graph at the root
    finder's convergence check and run that part eagerly.

    **Distributed.** Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is joined
    (gloo on CPU, NCCL on GPU), the model is wrapped in ``DistributedDataParallel`` and rank
    :math:`r` of :math:`W` takes rows :math:`r, r + W, \dots` of each global batch, with its
    loss scaled so that the averaged gradient is exactly the global batch's; only rank 0
    shows progress and writes checkpoints.

    Args:
        model: the :class:`~pyroflows.distributions.Flow` to train (moved to ``device``).
        data: training rows ``(N, D)``.
        context: their contexts ``(N, C)``, for a conditional model.
        val_data: validation rows (default: a ``val_fraction`` split of ``data``).
        val_context: contexts of the validation rows.
        val_fraction: share of ``data`` held out for validation when ``val_data`` is not
            given, in ``[0, 1)`` (``0``: no validation; early stopping then watches the
            training NLL).
        epochs: maximum number of passes over the training rows.
        batch_size: rows per step (the global batch, under ``torchrun``).
        lr: Adam learning rate (start of the cosine schedule).
        weight_decay: decoupled weight decay (AdamW) when non-zero.
        schedule: ``"cosine"`` decay to 0 over the run, or ``"constant"``/``None``.
        clip_grad_norm: maximum gradient norm (``None``: no clipping).
        patience: epochs without a better validation NLL before stopping (``None``: never).
        standardize: set the model's data statistics from the training rows.
        augment: ``augment(rows, generator) -> rows``, a new draw of the training rows at every
            epoch (see "Augmentation"), e.g. :class:`~pyroflows.data.Dequantize`; ``None``
            (default): the rows as given.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
        progress: show a tqdm progress bar with the running loss.
        checkpoint: file to write the training state to (atomically).
        checkpoint_every: steps between checkpoints (default: one epoch).
        resume: continue from ``checkpoint``.
        override: settings to change when resuming, ``{name: new value}`` (see "Resuming").
        seed: seed of the validation split, of every epoch's data order and of the
            ``augment`` draws.
        max_steps: stop after this many optimizer steps in total (for smoke runs and tests;
            not a setting: a resume may change it).
        compile: compile the training log-likelihood with :func:`torch.compile` (``True``,
            or a dict of its options); ``False`` (default) runs eagerly.
        run_id: an identifier stored in every checkpoint; resuming a checkpoint of another
            run raises :class:`~pyroflows.errors.RunFolderError` (``pyroflows fit`` uses the
            id of the run folder's ``run.json``).
        callbacks: ``callback(model, history) -> {name: number} | None`` run after every
            epoch's validation; their numbers are stored in :attr:`History.logs` (see
            "Callbacks").

    Example:
        >>> import torch
        >>> from pyroflows.data import make_toy
        >>> model = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])
        >>> history = fit(model, make_toy("moons", 512), epochs=3, progress=False)
        >>> len(history.epoch), history.best_epoch in history.epoch
        (3, True)
    """
    device = resolve_device(device)
    if not any(p.requires_grad for p in model.parameters()):
        name = model.config["name"] if model.config else type(model.flow).__name__
        raise OptionError(f"flow {name!r} has no trainable parameters: there is nothing to fit")
    parts = _prepare_data(
        model, data, context, val_data, val_context, val_fraction, seed, augment is not None
    )
    path = None if checkpoint is None else Path(checkpoint)
    requested = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "schedule": schedule,
        "weight_decay": weight_decay,
        "clip_grad_norm": clip_grad_norm,
        "patience": patience,
        "seed": seed,
        "val_fraction": val_fraction,
        "standardize": standardize,
        "augment": _augment_setting(augment),
    }
    if path is not None:  # what "the same data" means on resume
        requested["data"] = fingerprint(parts.train, parts.context)
        requested["val_data"] = fingerprint(parts.val, parts.val_context)
    settings = apply_override(requested, override, resume=resume, overridable=_OVERRIDABLE)
    epochs, batch_size, lr = settings["epochs"], settings["batch_size"], settings["lr"]
    if batch_size < 1 or epochs < 1:
        raise OptionError(f"batch_size and epochs must be positive, got {batch_size}, {epochs}")

    ranks = _distributed_setup(device)
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ranks.rank)))
    raw_train = parts.train.to("cpu") if augment is not None else None
    augmentation, parts.train = _augmentation(augment, parts, seed, val_data is not None)
    if standardize and not resume:
        model.standardize_with(parts.train)  # with augment: from the first epoch's rows
    model.to(device)
    parts = parts.to(device)
    trained = model
    if ranks.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model)
    if compile:
        trained = torch.compile(trained, **({} if compile is True else dict(compile)))
    parameters = [p for p in model.parameters() if p.requires_grad]
    weight_decay = settings["weight_decay"]
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    optimizer = adam(parameters, lr, kind, weight_decay=weight_decay)

    state = _RunState(best_model=_copy_state(model), batch_size=batch_size)
    loop = _Loop(
        model=model,
        trained=trained,
        parameters=parameters,
        optimizer=optimizer,
        # The schedule spans all epochs even when max_steps stops the run sooner: a run
        # stopped by max_steps and resumed follows the same rates as one that never stopped.
        rate=LearningRate(
            lr, settings["schedule"], epochs * math.ceil(len(parts.train) / batch_size)
        ),
        guard=NonFiniteGuard(
            optimizer, device, partial(_non_finite_message, state, path if ranks.main else None)
        ),
        data=parts,
        ranks=ranks,
        clip_grad_norm=settings["clip_grad_norm"],
        patience=settings["patience"],
        seed=seed,
        max_steps=max_steps,
        checkpoint=path,
        checkpoint_every=checkpoint_every if path is not None else None,
        settings=settings,
        run_id=run_id,
        augment=augmentation,
        raw_train=raw_train,
        callbacks=tuple(callbacks),
    )
    finished = None
    if resume:
        saved = _resume(path, model, optimizer, state, device, run_id)
        fixed = [name for name in _FIXED if name in settings]
        # Checkpoints of versions without augment were written without one.
        saved_settings = {"augment": None, **saved.get("settings", {})}
        changed = changed_settings(saved_settings, settings, override, str(path), fixed=fixed)
        loop.rate = _resumed_rate(loop, state, saved, changed, epochs)
        loop.run_id = run_id or saved.get("run_id")
        finished = _nothing_to_do(state, epochs, loop.patience)
        if changed and finished is None:
            state.history.overrides.append(override_record(state.step, changed, epoch=state.epoch))
    loop.rate.apply(optimizer, state.step)
    try:
        if finished is not None:
            warnings.warn(finished, UserWarning, stacklevel=2)
        else:
            _train(loop, state, epochs, progress)
    finally:
        if ranks.owned:
            torch_dist.destroy_process_group()
    if state.history.best_epoch is not None:
        model.load_state_dict(state.best_model)
    model.eval()
    too_large = _size_warning(model, parts, state.history, augment is not None)
    if finished is None and ranks.main and too_large:
        warnings.warn(too_large, ModelSizeWarning, stacklevel=2)
    return state.history
