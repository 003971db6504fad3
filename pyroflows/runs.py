"""Training runs on disk: what ``pyroflows fit``, ``sample`` and ``evaluate`` do.

A run folder holds

* ``model.pt``: the model's recipe and weights (``weights_only`` loading;
  :func:`~pyroflows.checkpoint.load_model`),
* ``checkpoint.pt``: the full training state, for ``--resume``,
* ``history.json``: train and validation NLL per epoch,
* ``metrics.json``: the settings, the best validation NLL and the test NLL (with bits per
  dimension for the digits).

Datasets come from :func:`pyroflows.data.dataset`: a 2-D toy name (its test set is drawn
with the next seed), ``"digits"`` (the 80/20 split with ``random_state=0``, dequantised;
NLL also reported in bits/dim on the 17-level data) or a ``.npy``/``.npz``/``.csv`` file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_model, save_checkpoint
from .data import DIGITS_DIM, DIGITS_LEVELS, TOY_DATASETS, bits_per_dim, dataset
from .distributions import Flow
from .train import fit, resolve_device

__all__ = ["evaluate_run", "fit_run", "sample_run"]

DIGITS_LOGIT_ALPHA = 1e-3  # far better than RealNVP's 0.05 on these 17-level images


def _is_toy(source: str) -> bool:
    return str(source) in TOY_DATASETS


def load_data(source: str, split: str, num_samples: int, seed: int) -> torch.Tensor:
    """Rows for ``split`` (``"train"`` or ``"test"``) of a named dataset, or a file's rows."""
    if _is_toy(source):
        return dataset(source, num_samples, seed=seed if split == "train" else seed + 1)
    if source == "digits":
        return dataset("digits", split=split, seed=seed if split == "train" else seed + 1)
    return dataset(source)


def _json(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, path)


def _nll_metrics(model: Flow, data: torch.Tensor, digits: bool) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        nll = float(
            torch.cat([-model.log_prob(chunk) for chunk in data.split(4096)]).double().mean()
        )
    metrics = {"nll": nll}
    if digits:
        metrics["bits_per_dim"] = float(bits_per_dim(nll, DIGITS_DIM, DIGITS_LEVELS))
    return metrics


def fit_run(
    data: str,
    out: str | os.PathLike,
    flow: str = "maf",
    options: dict[str, Any] | None = None,
    *,
    num_samples: int = 10_000,
    resume: bool = False,
    seed: int = 0,
    device: str = "auto",
    logit_alpha: float | None = None,
    **fit_options: Any,
) -> dict[str, Any]:
    """Fit registry flow ``flow`` (builder ``options``) to ``data``; write the run to ``out``.

    ``logit_alpha`` models data in [0, 1) in logit space (default for ``"digits"``:
    ``1e-3``; see :class:`~pyroflows.distributions.Flow`).
    ``fit_options`` go to :func:`~pyroflows.train.fit` (``epochs``, ``batch_size``, ``lr``,
    ...). Returns the metrics written to ``metrics.json`` (under ``torchrun`` only rank 0
    writes them and returns them; the other ranks return an empty dict).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> metrics = fit_run("moons", folder, "realnvp", {"num_layers": 2}, num_samples=500,
        ...                   epochs=1, progress=False)
        >>> sorted(metrics["test"])
        ['nll']
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    train = load_data(data, "train", num_samples, seed)
    test = (
        None
        if not (_is_toy(data) or data == "digits")
        else load_data(data, "test", max(num_samples // 4, 1), seed)
    )
    if logit_alpha is None and data == "digits":
        logit_alpha = DIGITS_LOGIT_ALPHA
    model = Flow.build(flow, train.shape[1], logit_alpha=logit_alpha, **(options or {}))
    history = fit(
        model,
        train,
        checkpoint=out / "checkpoint.pt",
        resume=resume,
        seed=seed,
        device=device,
        **fit_options,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return {}  # under torchrun, rank 0 writes the run folder
    save_checkpoint(out / "model.pt", {"config": model.config, "model": model.state_dict()})
    digits = data == "digits"
    metrics: dict[str, Any] = {
        "data": str(data),
        "flow": flow,
        "options": options or {},
        "logit_alpha": logit_alpha,
        "fit": {k: v for k, v in fit_options.items() if k != "progress"},
        "device": str(resolve_device(device)),
        "epochs_run": len(history.epoch),
        "best_epoch": history.best_epoch,
        "best_val_nll": history.best_val_nll,
        "seconds": history.seconds[-1] if history.seconds else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if test is not None:
        metrics["test"] = _nll_metrics(model, test.to(next(model.buffers()).device), digits)
    _json(out / "history.json", history.to_dict())
    _json(out / "metrics.json", metrics)
    return metrics


def sample_run(model_dir: str | os.PathLike, num: int, out: str | os.PathLike, seed: int = 0):
    """Draw ``num`` samples from a saved model; write ``.npy`` or ``.csv`` (by suffix).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = fit_run("moons", folder, "nice", {"num_layers": 2}, num_samples=300, epochs=1,
        ...             progress=False)
        >>> sample_run(folder, 5, folder / "samples.npy").shape
        (5, 2)
    """
    out = Path(out)
    if out.suffix not in (".npy", ".csv"):
        raise ValueError(f"samples are written as .npy or .csv, got {out.name!r}")
    model = load_model(model_dir)
    torch.manual_seed(seed)
    samples = model.sample((num,)).cpu().double().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, samples)
    else:
        np.savetxt(out, samples, delimiter=",")
    return samples


def evaluate_run(model_dir: str | os.PathLike, data: str) -> dict[str, float]:
    """Mean NLL (nats per example) of a saved model on ``data``.

    ``data``: a file, a toy's test set, or the digits' test split (then also bits/dim).

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = fit_run("circles", folder, "nice", {"num_layers": 2}, num_samples=300,
        ...             epochs=1, progress=False)
        >>> sorted(evaluate_run(folder, "circles"))
        ['nll']
    """
    model = load_model(model_dir)
    if _is_toy(data) or data == "digits":
        rows = load_data(data, "test", 2_500, seed=0)
    else:
        rows = dataset(data, expected_dim=model.input_dim)
    if rows.shape[1] != model.input_dim:
        raise ValueError(f"the model has {model.input_dim} dimensions, {data} has {rows.shape[1]}")
    return _nll_metrics(model, rows, data == "digits")
