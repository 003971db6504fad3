"""The ``pyroflows`` command line: ``demo``, ``fit``, ``sample`` and ``evaluate``.

Installed as the console script ``pyroflows`` and runnable as ``python -m pyroflows``. Each
subcommand is one ``_add_<name>`` function that registers its parser and a handler taking the
parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Sequence

from .data import TOY_DATASETS
from .train import fit

__all__ = ["main"]

# fit()'s defaults, read from its signature so that the command line follows them.
_FIT = {
    name: parameter.default
    for name, parameter in inspect.signature(fit).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


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

    options = {
        key: value
        for key, value in (
            ("num_layers", args.layers),
            ("hidden_dims", args.hidden),
            ("count_bins", args.count_bins),
            ("bound", args.bound),
        )
        if value is not None
    }
    metrics = fit_run(
        args.data,
        args.out,
        args.flow,
        options,
        num_samples=args.num_samples,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        logit_alpha=args.logit_alpha,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=args.patience,
        val_fraction=args.val_fraction,
        checkpoint_every=args.checkpoint_every,
        compile=args.compile,
        progress=not args.quiet,
    )
    if metrics and not args.quiet:  # (empty on ranks other than 0 under torchrun)
        print(f"best validation NLL {metrics['best_val_nll']:.4f} (epoch {metrics['best_epoch']})")
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        help="a 2-D toy name (" + ", ".join(TOY_DATASETS) + "), 'digits' (scikit-learn 8x8 "
        "digits, dequantised; bits/dim reported), or a .npy/.npz/.csv file of rows",
    )
    flows = sorted(name for name, spec in REGISTRY.items() if not spec.fixed)
    parser.add_argument("--flow", default="maf", choices=flows, help="flow to fit")
    parser.add_argument(
        "--layers",
        type=_positive_int,
        default=None,
        help="num_layers of the stack (default: the builder's)",
    )
    parser.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=None,
        help="hidden layer sizes of the conditioners, e.g. --hidden 256 256 "
        "(default: the builder's)",
    )
    parser.add_argument(
        "--count-bins", type=_positive_int, default=None, help="spline bins (spline flows only)"
    )
    parser.add_argument(
        "--bound", type=float, default=None, help="spline interval half-width (spline flows only)"
    )
    parser.add_argument(
        "--logit-alpha",
        type=float,
        default=None,
        help="model data in [0, 1) in logit space with this squeeze (digits: 1e-3)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=_FIT["epochs"], help="maximum epochs"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=_FIT["batch_size"], help="rows per step"
    )
    parser.add_argument("--lr", type=float, default=_FIT["lr"], help="Adam learning rate")
    parser.add_argument(
        "--weight-decay", type=float, default=_FIT["weight_decay"], help="AdamW weight decay"
    )
    parser.add_argument(
        "--patience",
        type=_positive_int,
        default=_FIT["patience"],
        help="epochs without validation improvement before stopping",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=_FIT["val_fraction"],
        help="share of the training rows held out for validation",
    )
    parser.add_argument(
        "--num-samples",
        type=_positive_int,
        default=10_000,
        help="training points drawn for a toy dataset (its test set: a quarter)",
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
        "--resume", action="store_true", help="continue the run in --out from its checkpoint.pt"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, split and init")
    parser.add_argument("--device", default="auto", help="torch device; auto: CUDA if present")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    parser.set_defaults(handler=_run_fit)


def _run_sample(args: argparse.Namespace) -> int:
    from .runs import sample_run

    samples = sample_run(args.model, args.n, args.out, seed=args.seed)
    print(f"wrote {len(samples)} samples of dimension {samples.shape[1]} to {args.out}")
    return 0


def _add_sample(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="draw samples from a fitted model",
        description="Load a run folder's model.pt and write samples as .npy or .csv.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="run folder (or a model.pt file)")
    parser.add_argument("-n", type=_positive_int, default=1000, help="number of samples")
    parser.add_argument("--out", required=True, help="output file, .npy or .csv")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.set_defaults(handler=_run_sample)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .runs import evaluate_run

    metrics = evaluate_run(args.model, args.data)
    print(json.dumps(metrics, indent=2))
    return 0


def _add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score data under a fitted model (NLL; bits/dim for the digits)",
        description="Print the mean negative log-likelihood (nats per example) of --data "
        "under a run folder's model: a .npy/.npz/.csv file, a toy's test set or 'digits' "
        "(its test split, also in bits/dim on the 17-level data).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="run folder (or a model.pt file)")
    parser.add_argument("--data", required=True, help="file, toy name or 'digits'")
    parser.set_defaults(handler=_run_evaluate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyroflows", description="Normalizing flows for Pyro: command-line tools."
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_demo(subparsers)
    _add_fit(subparsers)
    _add_sample(subparsers)
    _add_evaluate(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyroflows`` command line.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success. Invalid arguments and ``--help`` exit through
        :class:`SystemExit`, as with any :mod:`argparse` program.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     status = main(["demo", "--smoke", "--quiet", "--output", f"{folder}/demo.png",
        ...                    "--metrics", f"{folder}/demo.json"])
        ...     written = pathlib.Path(folder, "demo.png").stat().st_size > 0
        >>> status, written
        (0, True)
    """
    args = _parser().parse_args(argv)
    return args.handler(args)
