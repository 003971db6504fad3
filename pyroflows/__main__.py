"""``python -m pyroflows``: the same command line as the ``pyroflows`` console script."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
