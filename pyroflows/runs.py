"""Training runs on disk: what ``pyroflows fit``, ``sample`` and ``evaluate`` do.

A run folder holds

* ``model.pt``: the model's recipe and weights (``weights_only`` loading;
  :func:`~pyroflows.checkpoint.load_model`),
* ``checkpoint.pt``: the full training state, for ``--resume``,
* ``history.json``: train and validation NLL per epoch, and the overrides of resumed runs,
* ``metrics.json``: the settings as used, the best validation NLL and the test NLL (with bits
  per dimension for the digits; for a padded model the bound, see :func:`evaluate_run`; for a
  flow with an estimated log-det, exact up to 32 dimensions),
* ``run.json``: the manifest (run id, pyroflows version, data settings, and every file's
  SHA-256 once written), and ``run.lock`` while a process writes the folder.

Every file is written atomically and durably; a folder holding a run is not overwritten
without ``overwrite=True`` (``--overwrite``), and two processes cannot write one folder at
once (see :mod:`pyroflows._run_folder` and the "Runs and checkpoints" page).

Datasets come from :func:`pyroflows.data.dataset`: a 2-D toy name (its test set, a quarter
as many points, is drawn with the next seed), ``"sphere_mixture"`` (likewise; give its
``dim`` in ``data_options``), ``"digits"`` (the 80/20 split with ``random_state=0``; the
training images are fitted as integers with the uniform dequantisation redrawn every epoch,
:class:`~pyroflows.data.Dequantize`, while the test images keep one fixed draw from the seed;
NLL also reported in bits/dim on the 17-level data), the images ``"digits-images"`` and
``"mnist5k"`` (the same protocol on ``(N, C, H, W)`` images with 17 and 256 levels), a
``.npy``/``.npz``/``.csv`` file of rows (``data_options``: ``key``, ``header``) or a
``.npy``/``.npz`` file of ``(N, C, H, W)`` images (``data_options``: ``key``, ``levels``;
see the "Runs and checkpoints" page, "Image data"). Images go to flows that take rank-3
events as they are, to other flows flattened. ``metrics.json`` records the seed, the number of
samples and the data options, so that :func:`evaluate_run` scores exactly the run's test set.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._outputs import check_output
from ._padding import as_padding
from ._png import _image_grid, _to_pixels, _write_png
from ._run_folder import CHECKPOINT, RunFolder, open_run_folder
from ._training import NonFiniteLossError
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .data import (
    DIGITS_LEVELS,
    IMAGE_DATASETS,
    MNIST5K_LEVELS,
    TOY_DATASETS,
    Dequantize,
    bits_per_dim,
    dataset,
    dequantize,
    load_array,
    load_image_file,
)
from .data.images import _is_image_file
from .data.toy import _ALIASES
from .distributions import Flow, Padding
from .errors import DataError, ModelFileError, OptionError
from .train import Augment, History, _augment_setting, density_defaults, fit, resolve_device
from .transforms import REGISTRY, exact_log_det

__all__ = ["evaluate_run", "fit_run", "sample_run"]

DIGITS_LOGIT_ALPHA = 1e-3  # far better than RealNVP's 0.05 on these 17-level images
IMAGES_LOGIT_ALPHA = 0.05  # RealNVP's, for other images (MNIST-5k, files)
_LEVELS = {"digits": DIGITS_LEVELS, "digits-images": DIGITS_LEVELS, "mnist5k": MNIST5K_LEVELS}


SAMPLE_SUFFIXES = (".npy", ".csv")
_DEFAULT_NUM_SAMPLES = 10_000  # fit_run's default, assumed for runs that did not record it


def _is_generated(source: str) -> bool:
    """A dataset drawn from a seed: a toy (or its alias) or the sphere mixture."""
    return str(source) in (*TOY_DATASETS, *_ALIASES, "sphere_mixture")


def _has_test_split(source: str) -> bool:
    return _is_generated(source) or source == "digits" or source in IMAGE_DATASETS


def _is_images(source: str, options: Mapping[str, Any]) -> bool:
    """Image data ``(N, C, H, W)``: a named image dataset, or a file of a 4-D array."""
    return str(source) in IMAGE_DATASETS or _is_image_file(source, options.get("key"))


def _data_levels(source: str, options: Mapping[str, Any]) -> int | None:
    """The number of levels of discrete data (bits/dim are reported), or ``None``."""
    if str(source) in _LEVELS:
        return _LEVELS[str(source)]
    if _is_image_file(source, options.get("key")):
        return load_image_file(source, options.get("levels"), key=options.get("key"))[1]
    return None


def _flow_event(flow: str, shape: tuple[int, ...]) -> int | tuple[int, ...]:
    """The event of registry flow ``flow`` on data rows of ``shape``.

    A flow whose spec takes rank-3 events gets the image shape ``(C, H, W)``; any other
    flow gets the flattened vector of ``C H W`` values.
    """
    if len(shape) == 3 and 3 in REGISTRY[flow].event_dims:
        return shape
    return math.prod(shape)


def load_data(source: str, split: str, num_samples: int, seed: int, **options: Any) -> torch.Tensor:
    """Rows for ``split`` (``"train"`` or ``"test"``) of a named dataset, or a file's rows.

    A generated dataset's test split has a quarter of ``num_samples`` points, drawn with
    ``seed + 1``; ``options`` go to :func:`~pyroflows.data.dataset`.
    """
    split_seed = seed if split == "train" else seed + 1
    if _is_generated(source):
        count = num_samples if split == "train" else max(num_samples // 4, 1)
        return dataset(source, count, seed=split_seed, **options)
    if source == "digits" or source in IMAGE_DATASETS:
        return dataset(source, split=split, seed=split_seed, **options)
    if _is_image_file(source, options.get("key")):
        raw = options.pop("raw", False)
        images, levels = load_image_file(source, options.pop("levels", None), **options)
        return images if raw or levels is None else dequantize(images, levels, seed=split_seed)
    if options.get("levels") is not None:
        raise OptionError(
            f"levels apply to images (a .npy/.npz file of an (N, C, H, W) array), not to {source!r}"
        )
    options.pop("levels", None)
    return dataset(source, **options)


def _nll_name(model: Flow) -> str:
    """The metric's name: ``nll``, or what a padded model's ``-log_prob`` is (see Flow)."""
    if model.padding is None:
        return "nll"
    return "nll_bound" if model.padding.kind == "gaussian" else "nll_at_zero_padding"


def _nll_metrics(
    model: Flow, data: torch.Tensor, levels: int | None, context: torch.Tensor | None = None
) -> dict[str, float]:
    r"""Mean NLL of ``data`` (with ``context``: one row for all, or one row per data row).

    For a padded model the keys say what it is: ``nll_bound`` (Gaussian padding, an upper
    bound on the NLL) or ``nll_at_zero_padding`` (:math:`-\log p(x, 0)`, not an NLL of
    :math:`x`), and ``bits_per_dim`` becomes ``bits_per_dim_bound`` (or
    ``bits_per_dim_at_zero_padding``). The Gaussian padding's draws come from torch's RNG
    seeded with 0 (the global state is restored after), so that ``evaluate_run`` repeats the
    test metric of ``fit_run``.
    """
    device = data.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.default_generator.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.default_generators[device.index or 0].manual_seed(0)
        return _nll_metrics_drawn(model, data, levels, context)


_EXACT_TEST_MAX_DIM = 32
"""Test metrics of flows with an estimated log-det (``residual``, ``iresnet``, ``ffjord``) are
computed with the exact one (:func:`~pyroflows.transforms.exact_log_det`) up to this many
dimensions; above, with the flow's estimator (unbiased for ``residual`` and ``ffjord``)."""


def _nll_metrics_drawn(
    model: Flow, data: torch.Tensor, levels: int | None, context: torch.Tensor | None
) -> dict[str, float]:
    model.eval()
    chunks = data.split(4096)
    if context is None or context.dim() == 1:
        contexts = [context] * len(chunks)
    else:
        contexts = context.split(4096)
    exact = exact_log_det(model) if data[0].numel() <= _EXACT_TEST_MAX_DIM else nullcontext()
    with torch.no_grad(), exact:
        nll = float(
            torch.cat(
                [-model.log_prob(chunk, c) for chunk, c in zip(chunks, contexts, strict=True)]
            )
            .double()
            .mean()
        )
    name = _nll_name(model)
    metrics = {name: nll}
    if levels is not None:
        bits = name.replace("nll", "bits_per_dim")
        metrics[bits] = float(bits_per_dim(nll, data[0].numel(), levels))
    return metrics


def fit_run(
    data: str,
    out: str | os.PathLike,
    flow: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    num_samples: int = _DEFAULT_NUM_SAMPLES,
    resume: bool = False,
    overwrite: bool = False,
    override: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    logit_alpha: float | None = None,
    padding: Padding | dict[str, Any] | None = None,
    data_options: dict[str, Any] | None = None,
    augment: Augment | str | None = "auto",
    **fit_options: Any,
) -> dict[str, Any]:
    """Fit registry flow ``flow`` (builder ``options``) to ``data``; write the run to ``out``.

    **Defaults.** :func:`~pyroflows.train.density_defaults` of the training rows chooses what
    the caller leaves out: with ``flow=None`` (default) the flow and its options (``options``
    then change single keys of them), and for any flow the :func:`~pyroflows.train.fit`
    settings not in ``fit_options`` (``epochs`` grows for small data sets; a flow that takes
    only images, such as ``glow``, on image data gets the image rule's, ``image_flow=True``).
    The run's ``metrics.json`` records every resolved setting.

    ``logit_alpha`` models data in [0, 1) in logit space (default for ``"digits"`` and
    ``"digits-images"``: ``1e-3``; for other images 0.05; see
    :class:`~pyroflows.distributions.Flow`). Image data ``(N, C, H, W)`` go to a flow whose
    registry entry takes rank-3 events with the event shape ``(C, H, W)``, to any other flow
    as vectors of :math:`C H W` pixels; ``metrics.json`` records ``image_shape`` and
    ``levels`` (and bits/dim for discrete data: ``test`` and ``best_val_bits_per_dim``).
    ``padding`` (a :class:`~pyroflows.distributions.Padding` or its dict) pads the data with extra
    coordinates (the flow then acts on :math:`D` + ``extra`` of them, and the defaults are
    chosen for that size); ``metrics.json`` records it, the model's recipe stores it, and the
    NLLs of the run are then bounds (the test metric is ``nll_bound``; see
    :func:`evaluate_run`). ``augment`` is
    :func:`~pyroflows.train.fit`'s per-epoch draw of the training rows; ``"auto"`` (default)
    means ``Dequantize(levels=L)`` for discrete data (the digits, 17 levels; integer images,
    their levels), whose training images are then read as integers (one row per image, so
    the validation split holds whole images) and dequantised
    afresh every epoch, and nothing for other data; ``None`` for the digits fits one fixed
    dequantisation draw. The test rows are never augmented: the digits' test images keep one
    fixed draw from ``seed``. ``data_options`` go to
    :func:`~pyroflows.data.dataset` (a file's ``key`` or ``header``, the sphere mixture's
    ``dim``). ``fit_options`` go to :func:`~pyroflows.train.fit` (``epochs``,
    ``batch_size``, ``lr``, ...). Returns the metrics written to ``metrics.json`` (under
    ``torchrun`` only rank 0 writes them and returns them; the other ranks return an empty
    dict).

    The folder (see the "Runs and checkpoints" page): one that holds a run raises
    :class:`~pyroflows.errors.RunFolderError` unless ``resume=True`` continues it or
    ``overwrite=True`` replaces it; so does one that another process writes. It is created
    only after the data and options were checked, and a run that fails before its first
    checkpoint leaves no empty folder behind. ``override`` (with ``resume=True``) changes
    settings of the run from the resume point, as :func:`~pyroflows.train.fit` describes; the
    data (``data``, ``num_samples``, ``data_options``, ``seed``) never change. If the fit
    diverges (:class:`~pyroflows.train.NonFiniteLossError`), ``model.pt`` gets the best
    epoch's parameters so far (when an epoch completed) and ``metrics.json`` the error, before
    the error is raised; resume with ``override={"lr": ...}`` to go on.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> metrics = fit_run("moons", folder, "realnvp", {"num_layers": 2}, num_samples=500,
        ...                   epochs=1, progress=False)
        >>> sorted(metrics["test"])
        ['nll']
    """
    out = Path(out)
    if resume and overwrite:
        raise OptionError("resume continues the run in the folder, overwrite replaces it: not both")
    data_options = data_options or {}
    images = _is_images(data, data_options)
    levels = _data_levels(data, data_options)
    if isinstance(augment, str):
        if augment != "auto":
            raise OptionError(f"augment must be 'auto', None or a callable, got {augment!r}")
        augment = Dequantize(levels) if levels is not None else None
    raw = {"raw": True} if levels is not None and augment is not None else {}
    torch.manual_seed(seed)
    train = load_data(data, "train", num_samples, seed, **data_options, **raw)
    test = (
        load_data(data, "test", num_samples, seed, **data_options)
        if _has_test_split(data)
        else None
    )
    if logit_alpha is None and data in ("digits", "digits-images"):
        logit_alpha = DIGITS_LOGIT_ALPHA
    elif logit_alpha is None and images:
        logit_alpha = IMAGES_LOGIT_ALPHA
    padding = as_padding(padding)
    shape = tuple(train.shape[1:])
    flow_dim = math.prod(shape) + (padding.extra if padding is not None else 0)
    chosen = density_defaults(len(train), flow_dim, image=levels is not None or images)
    if flow is None:
        flow, options = chosen.flow, {**chosen.options, **(options or {})}
    elif len(shape) == 3 and REGISTRY[flow].event_dims == (3,) and padding is None:
        # an image flow gets the image rule's training settings (its options are the caller's)
        chosen = density_defaults(len(train), flow_dim, image=True, image_flow=True)
    fit_options = {**chosen.fit, **fit_options}
    event = _flow_event(flow, shape) if padding is None else math.prod(shape)
    if not isinstance(event, tuple):  # a vector flow: the images' pixels as one vector
        train = train.reshape(len(train), -1)
        test = None if test is None else test.reshape(len(test), -1)
    model = Flow.build(flow, event, logit_alpha=logit_alpha, padding=padding, **(options or {}))
    fitting = {
        "resume": resume,
        "override": override,
        "seed": seed,
        "device": device,
        "augment": augment,
    }
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes the run folder
        fit(model, train, checkpoint=out / CHECKPOINT, **fitting, **fit_options)
        return {}
    source = {
        "data": str(data),
        "data_options": data_options,
        "num_samples": num_samples if _is_generated(data) else None,
    }
    record = {
        **source,
        "image_shape": list(shape) if images else None,
        "levels": levels,
        "seed": seed,
        "flow": flow,
        "options": options or {},
        "logit_alpha": logit_alpha,
        "padding": None if padding is None else padding.to_dict(),
        "augment": _augment_setting(augment),
        "fit": {k: v for k, v in {**fit_options, **(override or {})}.items() if k != "progress"},
        "device": str(resolve_device(device)),
    }
    with open_run_folder(out, resume=resume, overwrite=overwrite, settings=source) as folder:
        try:
            history = fit(
                model,
                train,
                checkpoint=folder.file(CHECKPOINT),
                run_id=folder.run_id,
                **fitting,
                **fit_options,
            )
        except NonFiniteLossError as error:
            note = _write_best_so_far(folder, model, test, {**record, "diverged": str(error)})
            raise NonFiniteLossError(f"{error} {note}") from error
        return _write_results(folder, model, history, test, record)


def _write_results(
    folder: RunFolder, model: Flow, history: History, test, record: dict[str, Any]
) -> dict[str, Any]:
    """Write ``model.pt``, ``history.json``, ``metrics.json``, then the manifest's file list."""
    save_checkpoint(
        folder.file("model.pt"),
        {"config": model.config, "model": model.state_dict(), "run_id": folder.run_id},
    )
    metrics: dict[str, Any] = {
        **record,
        "run_id": folder.run_id,
        "epochs_run": len(history.epoch),
        "best_epoch": history.best_epoch,
        "best_val_nll": history.best_val_nll,
        "seconds": history.seconds[-1] if history.seconds else 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "overrides": history.overrides,
    }
    padded = model.padding is not None
    if test is not None:
        device = next(model.buffers()).device
        metrics["test"] = _nll_metrics(model, test.to(device), record.get("levels"))
    if record.get("levels") is not None and history.best_val_nll is not None and not padded:
        dim = math.prod(record.get("image_shape") or [model.input_dim])
        metrics["best_val_bits_per_dim"] = float(
            bits_per_dim(history.best_val_nll, dim, record["levels"])
        )
    folder.write_json("history.json", history.to_dict())
    folder.write_json("metrics.json", metrics)
    folder.finish()
    return metrics


def _write_best_so_far(folder: RunFolder, model: Flow, test, record: dict[str, Any]) -> str:
    """After a divergence: the best epoch's model and the metrics; says what was written."""
    checkpoint = folder.file(CHECKPOINT)
    saved = load_checkpoint(checkpoint) if checkpoint.is_file() else {}
    history = History(**saved["history"]) if saved else History()
    if history.best_epoch is None:
        return "No epoch completed before it, so no model.pt was written."
    model.load_state_dict(saved["best_model"])
    _write_results(folder, model, history, test, record)
    return (
        f"{folder.file('model.pt')} holds the best parameters so far (epoch {history.best_epoch})."
    )


def _context_rows(model: Flow, context: str | os.PathLike | None, rows: int, what: str):
    """The context for ``rows`` values: one row of a file for all, or one row per value.

    ``None`` for an unconditional model; an :class:`~pyroflows.errors.OptionError` saying
    what to pass when a conditional model has no context, or the other way round.
    """
    if not model.context_dim:
        if context is not None:
            raise OptionError("this model is not conditional: it takes no --context")
        return None
    if context is None:
        raise OptionError(
            f"this model is conditional (context_dim={model.context_dim}): pass --context "
            f"FILE, a .npy/.npz/.csv file of {model.context_dim} columns with one row (for "
            f"every {what}) or one row per {what}; in Python: "
            "pyroflows.checkpoint.load_model(path).sample((n,), context=...)"
        )
    values = load_array(context, expected_dim=model.context_dim, allow_constant_columns=True)
    if len(values) == 1:
        return values[0]
    if len(values) != rows:
        raise OptionError(
            f"--context {context} has {len(values)} rows for {rows} {what}s: give one row, or "
            f"one row per {what}"
        )
    return values


def sample_run(
    model_dir: str | os.PathLike,
    num: int,
    out: str | os.PathLike | None,
    seed: int = 0,
    *,
    context: str | os.PathLike | None = None,
    overwrite: bool = False,
    png: str | os.PathLike | None = None,
    columns: int | None = None,
    scale: int = 1,
):
    r"""Draw ``num`` samples from a saved model; write ``.npy`` or ``.csv`` (by suffix).

    The suffix is read case-insensitively; an existing ``out`` is replaced only with
    ``overwrite=True`` (it may be the training data). Both are checked before the model is
    loaded. A conditional model needs ``context``: a file with one row (used for every
    sample) or ``num`` rows (one per sample). Non-finite samples are refused
    (:class:`~pyroflows.errors.ModelFileError`) and nothing is written. Images are written
    to ``.npy`` with their shape ``(num, C, H, W)``, to ``.csv`` flattened, one row each.

    ``png`` (a ``.png`` path; ``out`` may then be ``None``) writes the samples of a model of
    images as a grid of ``columns`` images (default :math:`\lceil\sqrt{num}\rceil`) per
    row, grey-scale (1 channel) or RGB (3): each value :math:`x` goes to its level
    :math:`\lfloor L x \rfloor` clipped to :math:`[0, L - 1]` and scaled to
    :math:`[0, 255]` (:math:`L` the run's number of levels; continuous images: :math:`255 x`
    clipped). The image shape is the model's event shape, or, for a flow on vectors fitted
    to images, the ``image_shape`` of the run's ``metrics.json``; a model of other vectors
    is refused (:class:`~pyroflows.errors.OptionError`). Each image pixel is drawn as
    ``scale`` x ``scale`` PNG pixels (nearest neighbour; ``sample --scale``).

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = fit_run("moons", folder, "nice", {"num_layers": 2}, num_samples=300, epochs=1,
        ...             progress=False)
        >>> sample_run(folder, 5, folder / "samples.npy").shape
        (5, 2)
    """
    if out is None and png is None:
        raise OptionError(
            "give a samples file (out, --out: .npy or .csv), an image grid (png, --png), or both"
        )
    if out is not None:
        out = check_output(out, SAMPLE_SUFFIXES, overwrite=overwrite, what="samples")
    if png is not None:
        png = check_output(png, (".png",), overwrite=overwrite, what="image grid")
    model = load_model(model_dir)
    run = _run_record(model_dir)
    image_shape = _image_shape(model, run) if png is not None else None
    rows = _context_rows(model, context, num, "sample")
    torch.manual_seed(seed)
    shape = (num,) if rows is None or rows.dim() == 1 else ()
    samples = model.sample(shape, context=rows).cpu().double().numpy()
    bad = int((~np.isfinite(samples.reshape(len(samples), -1)).all(axis=1)).sum())
    if bad:
        raise ModelFileError(
            f"{model_dir}: the model gave {bad} non-finite samples of {num}; nothing written"
        )
    if png is not None:
        images = samples.reshape(len(samples), *image_shape)
        pixels = _to_pixels(images, run.get("levels"))
        if scale < 1:
            raise OptionError(f"scale must be a positive integer, got {scale}")
        pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3)  # nearest-neighbour zoom
        png.parent.mkdir(parents=True, exist_ok=True)
        _write_png(png, _image_grid(pixels, columns))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".npy":
            with out.open("wb") as file:  # np.save(path) would append .npy to "s.NPY"
                np.save(file, samples)
        else:
            np.savetxt(out, samples.reshape(len(samples), -1), delimiter=",")
    return samples


def _image_shape(model: Flow, run: Mapping[str, Any]) -> tuple[int, ...]:
    """``(C, H, W)`` of a model's samples: its event shape, or the run's ``image_shape``."""
    if len(model.event_shape) == 3:
        shape = tuple(model.event_shape)
    elif run.get("image_shape") and math.prod(run["image_shape"]) == model.input_dim:
        shape = tuple(run["image_shape"])
    else:
        raise OptionError(
            f"this model draws vectors of {model.input_dim} values, not images: an image "
            "grid (--png) needs a model fitted to images (--data digits-images, mnist5k, or "
            "a .npy file of (N, C, H, W) images)"
        )
    if shape[0] not in (1, 3):
        raise OptionError(
            f"an image grid needs 1 (grey) or 3 (RGB) channels, the model's images have "
            f"{shape[0]} (shape {shape})"
        )
    return shape


def evaluate_run(
    model_dir: str | os.PathLike,
    data: str,
    data_options: dict[str, Any] | None = None,
    *,
    context: str | os.PathLike | None = None,
) -> dict[str, float]:
    r"""Mean NLL (nats per example) of a saved model on ``data``.

    For a padded model the key says what is reported: ``nll_bound``, the mean of
    :math:`-\mathcal{L}_K`, an upper bound on the NLL (Gaussian padding; :math:`K` the
    model's ``particles``; a stochastic estimate drawn from torch's RNG seeded with 0, the
    same draws as the run's test metric), or
    ``nll_at_zero_padding``, the mean of :math:`-\log p(x, 0)` (zero padding; not an NLL of
    the data); see :class:`~pyroflows.distributions.Flow`, "Padding".

    ``data``: a file (constant columns allowed: legitimate in test data; ``data_options``:
    ``key``, ``header``), or a generated dataset's or the digits' test split (then also
    bits/dim), drawn with the seed and number of samples the run's ``metrics.json`` records
    (seed 0 and 10,000 without one), so that the run's own dataset gives exactly the run's
    test NLL; the sphere mixture takes the model's dimension. A flow with an estimated
    log-det (``residual``, ``iresnet``, ``ffjord``) is scored with the exact one
    (:func:`~pyroflows.transforms.exact_log_det`) up to 32 dimensions, above with its
    estimator. A conditional model needs
    ``context``: a file with one row (for every data row) or one row per data row.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = fit_run("circles", folder, "nice", {"num_layers": 2}, num_samples=300,
        ...             epochs=1, progress=False)
        >>> sorted(evaluate_run(folder, "circles"))
        ['nll']
    """
    model = load_model(model_dir)
    options = dict(data_options or {})
    run = _run_record(model_dir)
    seed = run.get("seed", 0)
    if _has_test_split(data):
        if _canonical(run.get("data")) == _canonical(data):
            options = {**run.get("data_options", {}), **options}
        if data == "sphere_mixture":
            options.setdefault("dim", model.input_dim)
        num_samples = run.get("num_samples") or _DEFAULT_NUM_SAMPLES
        rows = load_data(data, "test", num_samples, seed, **options)
    elif _is_images(data, options):
        if str(run.get("data")) == str(data):  # the run's own file: its levels and key
            options = {**run.get("data_options", {}), **options}
        rows = load_data(data, "all", 0, seed, **options)
    else:
        options.pop("levels", None)
        rows = dataset(data, expected_dim=model.input_dim, allow_constant_columns=True, **options)
    if tuple(rows.shape[1:]) != tuple(model.event_shape) and rows.dim() > 2:
        rows = rows.reshape(len(rows), -1)  # images scored by a flow on vectors
    if tuple(rows.shape[1:]) != tuple(model.event_shape):
        raise DataError(
            f"the model takes events of shape {tuple(model.event_shape)}, {data} has rows of "
            f"shape {tuple(rows.shape[1:])}"
        )
    return _nll_metrics(
        model,
        rows,
        _data_levels(data, options),
        _context_rows(model, context, len(rows), "data row"),
    )


def _canonical(name: Any) -> Any:
    return _ALIASES.get(name, name)


def _run_record(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``metrics.json`` beside a saved model, or ``{}`` when there is none."""
    path = Path(model_dir)
    folder = path if path.is_dir() else path.parent
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
