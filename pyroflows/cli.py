"""The ``pyroflows`` command line: ``pyroflows demo`` (``fit``, ``sample``, ``evaluate`` to come).

Installed as the console script ``pyroflows`` and runnable as ``python -m pyroflows``. Each
subcommand is one ``_add_<name>`` function that registers its parser and a handler taking the
parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .data import TOY_DATASETS

__all__ = ["main"]


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyroflows", description="Normalizing flows for Pyro: command-line tools."
    )
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    _add_demo(subparsers)
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
