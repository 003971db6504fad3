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

import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch import distributed as torch_dist

from .checkpoint import check_config, load_checkpoint, load_state, save_checkpoint
from .distributions import Flow

__all__ = ["History", "NonFiniteLossError", "fit", "resolve_device", "validate_data"]


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss or gradient; the model keeps its last good state.

    Example:
        >>> issubclass(NonFiniteLossError, FloatingPointError)
        True
    """


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when present, else the CPU; anything else as ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def validate_data(data: Tensor, dim: int, name: str = "data") -> Tensor:
    """Return ``data`` as a float tensor ``(N, dim)``, or raise ``ValueError`` naming the problem.

    Problems: wrong shape, no rows, rows with NaN/inf (listed by index). Nothing is dropped.

    Example:
        >>> validate_data(torch.tensor([[0.0, 1.0], [float("nan"), 2.0]]), 2)
        Traceback (most recent call last):
        ...
        ValueError: data has non-finite values (NaN or inf) in 1 row(s): [1]
    """
    data = torch.as_tensor(data)
    if not data.is_floating_point():
        data = data.float()
    if data.dim() != 2 or data.shape[1] != dim:
        raise ValueError(f"{name} must have shape (N, {dim}), got {tuple(data.shape)}")
    if len(data) == 0:
        raise ValueError(f"{name} has no rows")
    bad = torch.nonzero(~torch.isfinite(data).all(1)).flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        raise ValueError(
            f"{name} has non-finite values (NaN or inf) in {len(bad)} row(s): [{shown}]"
        )
    return data


@dataclass
class History:
    """Per-epoch record of a :func:`fit` run.

    Mean train and validation NLL (nats per example), learning rate and elapsed seconds per
    epoch; ``best_epoch`` is the epoch whose parameters were kept.

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


def _rng_states() -> dict[str, Any]:
    state = np.random.get_state()  # noqa: NPY002 (the global state, saved as it is)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:]],
        "python": random.getstate(),
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))  # noqa: NPY002
    random.setstate(states["python"])


def _split(data: Tensor, context: Tensor | None, fraction: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=generator)
    count = round(fraction * len(data))
    if fraction > 0 and (count < 1 or count >= len(data)):
        raise ValueError(
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


def _make_scheduler(optimizer, schedule: str | None, total_steps: int):
    if schedule is None or schedule == "constant":
        return None
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    raise ValueError(f"schedule must be 'cosine', 'constant' or None, got {schedule!r}")


@torch.no_grad()
def _mean_nll(model: Flow, data: Tensor, context: Tensor | None, batch_size: int) -> float:
    total = torch.zeros((), dtype=torch.float64, device=data.device)
    for start in range(0, len(data), batch_size):
        ctx = None if context is None else context[start : start + batch_size]
        total += -model.log_prob(data[start : start + batch_size], ctx).double().sum()
    return float(total) / len(data)


_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _adam_kernel_options(parameters: list[Tensor]) -> dict[str, bool]:
    """``{"fused": True}`` when every tensor is a real float on one CPU or CUDA device.

    Fused Adam/AdamW updates all tensors in a few kernels (a per-tensor loop costs a
    noticeable share of a small step); elsewhere torch's default implementation is kept.
    """
    devices = {p.device for p in parameters}
    fusable = (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.dtype in _FUSED_DTYPES for p in parameters)
    )
    return {"fused": True} if fusable else {}


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
    device: str | torch.device = "auto",
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 0,
    max_steps: int | None = None,
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

    **Non-finite losses.** A NaN/inf loss or gradient stops training with
    :class:`NonFiniteLossError` naming the epoch and step, before any update is applied, so
    the model keeps its last good parameters.

    **Checkpoints.** With ``checkpoint`` (a file path) the full training state (model,
    optimizer, scheduler, RNG states, epoch, position in the epoch, best parameters, history,
    model recipe) is written atomically every ``checkpoint_every`` steps (default: once per
    epoch) and at the end. ``resume=True`` continues from it exactly; a checkpoint of another
    architecture raises :class:`~pyroflows.checkpoint.CheckpointMismatchError`.

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
            given (``0``: no validation; early stopping then watches the training NLL).
        epochs: maximum number of passes over the training rows.
        batch_size: rows per step (the global batch, under ``torchrun``).
        lr: Adam learning rate (start of the cosine schedule).
        weight_decay: decoupled weight decay (AdamW) when non-zero.
        schedule: ``"cosine"`` decay to 0 over the run, or ``"constant"``/``None``.
        clip_grad_norm: maximum gradient norm (``None``: no clipping).
        patience: epochs without a better validation NLL before stopping (``None``: never).
        standardize: set the model's data statistics from the training rows.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda:1"``, ...
        progress: show a tqdm progress bar with the running loss.
        checkpoint: file to write the training state to (atomically).
        checkpoint_every: steps between checkpoints (default: one epoch).
        resume: continue from ``checkpoint``.
        seed: seed of the validation split and of every epoch's data order.
        max_steps: stop after this many optimizer steps in total (for smoke runs and tests).

    Example:
        >>> import torch
        >>> from pyroflows.data import make_toy
        >>> model = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])
        >>> history = fit(model, make_toy("moons", 512), epochs=3, progress=False)
        >>> len(history.epoch), history.best_epoch in history.epoch
        (3, True)
    """
    device = resolve_device(device)
    data = validate_data(data, model.input_dim)
    if model.context_dim:
        if context is None:
            raise ValueError(f"the model is conditional: pass context (N, {model.context_dim})")
        context = validate_data(context, model.context_dim, "context")
        if len(context) != len(data):
            raise ValueError(f"context has {len(context)} rows, data has {len(data)}")
    if val_data is None and val_fraction > 0:
        data, context, val_data, val_context = _split(data, context, val_fraction, seed)
    elif val_data is not None:
        val_data = validate_data(val_data, model.input_dim, "val_data")
    if batch_size < 1 or epochs < 1:
        raise ValueError(f"batch_size and epochs must be positive, got {batch_size}, {epochs}")

    ranks = _distributed_setup(device)
    if device.type == "cuda" and ranks.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ranks.rank)))
    if standardize and not resume:
        model.standardize_with(data)
    model.to(device)
    data = data.to(device)
    context = None if context is None else context.to(device)
    if val_data is not None:
        val_data = val_data.to(device)
        val_context = None if val_context is None else val_context.to(device)

    trained = model
    if ranks.world > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model)
    optimizer_class = torch.optim.AdamW if weight_decay else torch.optim.Adam
    parameters = [p for p in model.parameters() if p.requires_grad]  # listed once, not per step
    optimizer = optimizer_class(
        parameters, lr=lr, weight_decay=weight_decay, **_adam_kernel_options(parameters)
    )
    steps_per_epoch = math.ceil(len(data) / batch_size)
    # The schedule spans all epochs even when max_steps stops the run sooner: a run stopped
    # by max_steps and resumed follows the same learning rates as one that never stopped.
    scheduler = _make_scheduler(optimizer, schedule, epochs * steps_per_epoch)
    total_steps = epochs * steps_per_epoch if max_steps is None else max_steps

    history = History()
    # Position in the run and the running loss of the current epoch: all a resume needs.
    state = {
        "epoch": 0,
        "batch": 0,
        "step": 0,
        "best": math.inf,
        "since_best": 0,
        "loss_sum": 0.0,
        "loss_rows": 0,
    }
    best_params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume:
        if checkpoint is None or not checkpoint.is_file():
            raise FileNotFoundError(f"resume=True but there is no checkpoint at {checkpoint}")
        saved = load_checkpoint(checkpoint, map_location=device)
        check_config(model.config, saved.get("config"), str(checkpoint))
        load_state(model, saved["model"], str(checkpoint))
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        _set_rng_states(saved["rng"])
        state.update(saved["state"])
        best_params = saved["best_model"]
        history = History(**saved["history"])

    def save(path: Path) -> None:
        if not ranks.main:
            return
        save_checkpoint(
            path,
            {
                "config": model.config,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "rng": _rng_states(),
                "state": dict(state),
                "best_model": best_params,
                "history": history.to_dict(),
                "settings": {"batch_size": batch_size, "lr": lr, "seed": seed},
            },
        )

    bar = None
    if progress and ranks.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state["step"], unit="step", dynamic_ncols=True)
    started = time.perf_counter() - (history.seconds[-1] if history.seconds else 0.0)
    every = checkpoint_every or steps_per_epoch
    model.train()
    try:
        while state["epoch"] < epochs and (max_steps is None or state["step"] < max_steps):
            order = _epoch_order(len(data), seed, state["epoch"]).to(device)
            while state["batch"] < steps_per_epoch:
                if max_steps is not None and state["step"] >= max_steps:
                    break
                start = state["batch"] * batch_size
                rows = order[start : start + batch_size]
                local = rows[ranks.rank :: ranks.world]
                ctx = None if context is None else context[local]
                optimizer.zero_grad(set_to_none=True)
                log_prob = trained(data[local], ctx)
                loss = -log_prob.sum() * (ranks.world / len(rows))
                loss.backward()
                norm = (
                    torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
                    if clip_grad_norm is not None
                    else torch.zeros((), device=device)
                )
                batch_loss = float(loss.detach()) * len(rows) / ranks.world
                if not math.isfinite(batch_loss + float(norm)):
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at epoch {state['epoch'] + 1}, "
                        f"step {state['step'] + 1} (loss {batch_loss:.4g}, gradient norm "
                        f"{float(norm):.4g}); the update was not applied, the model keeps "
                        "its last good parameters. Lower lr, or check the data."
                    )
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                state["loss_sum"] += batch_loss
                state["loss_rows"] += len(rows)
                state["batch"] += 1
                state["step"] += 1
                if bar is not None:
                    bar.update(1)
                    if state["step"] % 10 == 0:
                        bar.set_postfix(nll=f"{state['loss_sum'] / state['loss_rows']:.4f}")
                if checkpoint is not None and state["step"] % every == 0:
                    save(checkpoint)
            if state["batch"] < steps_per_epoch:
                break  # max_steps reached mid-epoch
            state["epoch"] += 1
            state["batch"] = 0
            train_nll = state["loss_sum"] / max(state["loss_rows"], 1)
            state["loss_sum"], state["loss_rows"] = 0.0, 0
            model.eval()
            val_nll = (
                _mean_nll(model, val_data, val_context, 4 * batch_size)
                if val_data is not None
                else math.nan
            )
            model.train()
            history.epoch.append(state["epoch"])
            history.train_nll.append(train_nll)
            history.val_nll.append(val_nll)
            history.lr.append(optimizer.param_groups[0]["lr"])
            history.seconds.append(time.perf_counter() - started)
            score = val_nll if val_data is not None else train_nll
            if score < state["best"]:
                state["best"], state["since_best"] = score, 0
                best_params = {k: v.detach().clone() for k, v in model.state_dict().items()}
                history.best_epoch = state["epoch"]
            else:
                state["since_best"] += 1
            if bar is not None:
                bar.set_postfix(nll=f"{train_nll:.4f}", val=f"{val_nll:.4f}")
            if checkpoint is not None:
                save(checkpoint)
            if patience is not None and state["since_best"] >= patience:
                history.stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
        if ranks.owned:
            torch_dist.destroy_process_group()
    if checkpoint is not None:
        save(checkpoint)  # the training state as it stands, so that a resume continues it
    if history.best_epoch is not None:
        model.load_state_dict(best_params)
    model.eval()
    return history
