"""The errors pyroflows raises on purpose, each with the exit status the command line gives it.

Every expected failure (bad data, a bad option, a run folder in use, a changed setting on
resume, an unreadable or hostile model file, a diverged fit) is a subclass of
:class:`PyroflowsError`. The ``pyroflows`` command prints its message on one or two lines of
stderr, without a traceback (``--debug`` shows it), and exits with the class's
:attr:`~PyroflowsError.exit_code`. Each class also derives from the built-in exception a
Python caller would expect (``ValueError``, ``OSError``, ``FloatingPointError``), so existing
``except ValueError:`` code keeps working.

Example:
    >>> from pyroflows.errors import DataError, PyroflowsError
    >>> error = DataError("data.csv: no data rows")
    >>> isinstance(error, ValueError), isinstance(error, PyroflowsError), error.exit_code
    (True, True, 3)
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "DataWarning",
    "ModelFileError",
    "ModelSizeWarning",
    "OptionError",
    "PyroflowsError",
    "RunFolderError",
    "SettingsChangedError",
]


class PyroflowsError(Exception):
    """Base of the errors pyroflows raises on purpose; ``exit_code`` is the CLI's exit status."""

    exit_code = 1


class OptionError(PyroflowsError, ValueError):
    """An option that is invalid, or does not apply to the chosen flow or command (exit 2)."""

    exit_code = 2


class DataError(PyroflowsError, ValueError):
    """A data file or array that cannot be used: missing, malformed, non-finite, ... (exit 3)."""

    exit_code = 3


class DataWarning(UserWarning):
    """Data that can be used but deserve a look: collinear columns, extreme values, a cast.

    Silence it with ``warnings.filterwarnings("ignore", category=DataWarning)``.
    """


class ModelSizeWarning(UserWarning):
    """A fit whose model is far larger than its data and that overfitted within a few epochs.

    :func:`~pyroflows.train.fit` issues it once, at the end, naming the parameter count, the
    training rows and the epoch kept, and what to try.
    Silence it with ``warnings.filterwarnings("ignore", category=ModelSizeWarning)``.
    """


class RunFolderError(PyroflowsError, OSError):
    """A run folder that cannot be used: exists, locked, or not writable (exit 4)."""

    exit_code = 4


class SettingsChangedError(PyroflowsError, ValueError):
    """A resume whose requested settings differ from the checkpoint's (exit 5)."""

    exit_code = 5


class ModelFileError(PyroflowsError, ValueError):
    """A model or checkpoint file: unreadable, corrupt, hostile, incompatible, or NaN (exit 6)."""

    exit_code = 6
