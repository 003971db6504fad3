"""Recipes: the JSON a model file stores to rebuild its flow, with every option pinned.

A recipe is :attr:`Flow.config <pyroflows.distributions.Flow>`:
``{"name", "input_dim", "context_dim", "options", "logit_alpha", "pyroflows_version"}``, and
``"padding"`` (:meth:`Padding.to_dict <pyroflows.distributions.Padding.to_dict>`) for padded
models only: a recipe without it is an unpadded model, so the recipes of unpadded models, and
every file written before padding existed, are unchanged. ``input_dim`` is the data's size
:math:`D`; the flow of a padded model acts on :math:`D` + ``extra`` coordinates.
``options`` holds the value of *every* builder option whose default is a JSON value: those the
caller passed and the signature defaults of the others. A later release that changes a
default therefore cannot load an old file as another density.

:func:`read_recipe` checks a stored recipe (names, types, version) before anything is built,
and returns it as this release would write it:

* a recipe of a newer major version, or naming an option the flow does not take, is refused;
* options a recipe does not hold take the defaults of the release that wrote it: for files
  from before versioned recipes, the frozen table :data:`_LEGACY_DEFAULTS`; for versioned
  files of an earlier release, today's defaults (a new option's default must reproduce the
  old behaviour).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import warnings
from typing import Any

from ._padding import Padding, as_padding
from ._version import __version__
from .errors import ModelFileError, OptionError
from .transforms import REGISTRY, FlowSpec

__all__: list[str] = []

VERSION_KEY = "pyroflows_version"
_REQUIRED = ("name", "input_dim", "context_dim", "options")
_LOG = logging.getLogger(__name__)

# The builder defaults that files written before versioned recipes (no VERSION_KEY) were
# built with, frozen here: they held unchanged from the first checkpoint format (4b634da) to
# the introduction of versioned recipes, for every option that changes the density without
# changing the weights' shapes. Never edit an entry: change the builder's default instead.
# fmt: off
_LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "elementwise_affine": {"hidden_dims": None},
    "leaky_relu": {"hidden_dims": None, "init_slope": 1.0},
    "spline": {"count_bins": 8, "bound": 3.0, "order": "quadratic", "hidden_dims": None,
               "event_dim": None},
    "deep_sigmoid": {"hidden_dims": None, "init": None, "event_dim": None},
    "permutation": {"kind": "random", "seed": None},
    "actnorm": {"eps": 1e-06},
    "triangular": {},
    "lu_linear": {},
    "qr_linear": {"num_reflections": None},
    "householder": {"num_reflections": None},
    "planar": {"hidden_dims": None, "root_finder": None},
    "radial": {"hidden_dims": None},
    "affine_coupling": {"hidden_dims": None, "split_dim": None, "dim": -1,
                        "log_scale_min_clip": -5.0, "log_scale_max_clip": 3.0, "mask": None},
    "additive_coupling": {"hidden_dims": None, "mask": None, "conditioner": None,
                          "passthrough_transformer": None},
    "spline_coupling": {"split_dim": None, "hidden_dims": None, "count_bins": 8, "bound": 3.0,
                        "mask": None, "identity": False},
    "realnvp": {"hidden_dims": None, "num_layers": 8, "transformer": None},
    "nice": {"hidden_dims": None, "num_layers": 4},
    "nsf": {"hidden_dims": None, "num_layers": 4, "count_bins": 8, "bound": 3.0,
            "autoregressive": False, "transformer": None},
    "affine_autoregressive": {"hidden_dims": None, "log_scale_min_clip": -5.0,
                              "log_scale_max_clip": 3.0, "sigmoid_bias": 2.0, "stable": False,
                              "ordering": "natural", "seed": None},
    "spline_autoregressive": {"hidden_dims": None, "count_bins": 8, "bound": 3.0,
                              "order": "quadratic", "ordering": "natural", "seed": None},
    "neural_autoregressive": {"hidden_dims": None, "activation": "sigmoid", "width": 16,
                              "depth": 1, "ordering": "natural", "root_finder": None,
                              "seed": None},
    "maf": {"hidden_dims": None, "num_layers": 5, "transformer": None, "activation": "relu"},
    "iaf": {"hidden_dims": None, "num_layers": 5, "stable": True, "transformer": None,
            "activation": "relu"},
    "nsf_autoregressive": {"hidden_dims": None, "num_layers": 4, "count_bins": 8, "bound": 3.0,
                           "autoregressive": True, "transformer": None},
    "naf": {"hidden_dims": None, "num_layers": 5, "hidden_units": 16, "depth": 1,
            "root_finder": None},
}
# fmt: on


def builder_defaults(spec: FlowSpec) -> dict[str, Any]:
    """The defaults of ``spec``'s builder options that are JSON values (recipes pin those).

    A default that is an object (a transformer instance) cannot be stored, and a recipe
    cannot hold another value for it either (its options are JSON).

    Example:
        >>> builder_defaults(REGISTRY["nice"])
        {'hidden_dims': None, 'num_layers': 4}
    """
    try:
        parameters = inspect.signature(spec.builder).parameters
    except (TypeError, ValueError):
        return {}
    accepted = spec.options() or ()
    defaults = {}
    for name in accepted:
        default = parameters[name].default
        if default is inspect.Parameter.empty:
            continue
        try:
            json.dumps(default)
        except TypeError:
            continue
        defaults[name] = default
    return defaults


def make_recipe(
    name: str,
    input_dim: int | list[int],
    context_dim: int,
    options: dict[str, Any],
    logit_alpha: float | None,
    padding: Padding | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The recipe of a flow built with ``options``: every option resolved, and the version.

    ``padding`` is stored (as a dict, every field) only when given.

    Example:
        >>> recipe = make_recipe("nice", 2, 0, {"num_layers": 2}, None)
        >>> recipe["options"], recipe["pyroflows_version"] == __version__
        ({'hidden_dims': None, 'num_layers': 2}, True)
    """
    recipe = {
        "name": name,
        "input_dim": input_dim,
        "context_dim": int(context_dim),
        "options": {**builder_defaults(REGISTRY[name]), **options},
        "logit_alpha": None if logit_alpha is None else float(logit_alpha),
        VERSION_KEY: __version__,
    }
    padding = as_padding(padding)
    if padding is not None:
        recipe["padding"] = padding.to_dict()
    try:
        json.dumps(recipe)
    except TypeError as error:
        raise TypeError(f"flow options must be JSON-serialisable: {error}") from None
    return recipe


def _major(version: Any, source: str) -> int:
    match = re.match(r"(\d+)\.", version) if isinstance(version, str) else None
    if match is None:
        raise ModelFileError(
            f"{source}: recipe field {VERSION_KEY!r} is not a version: {version!r}"
        )
    return int(match.group(1))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_event(value: Any, source: str) -> int | list[int]:
    if _is_int(value) and value > 0:
        return value
    if isinstance(value, list) and value and all(_is_int(n) and n > 0 for n in value):
        return value
    raise ModelFileError(
        f"{source}: recipe field 'input_dim' must be a positive int (or a list of them, an "
        f"image's shape), got {value!r}"
    )


def _check_type(option: str, value: Any, default: Any, source: str) -> None:
    """``value`` must have the type of the option's default (when that is not ``None``)."""
    if default is None:
        return  # any JSON value: the builder checks it
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif _is_int(default):
        ok, kind = _is_int(value), "an int"
    elif isinstance(default, float):
        ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
        kind = "a finite number"
    else:
        ok, kind = isinstance(value, type(default)), f"a {type(default).__name__}"
    if not ok:
        raise ModelFileError(
            f"{source}: recipe option {option!r} must be {kind} (default {default!r}), "
            f"got {value!r}"
        )


def _missing_defaults(name: str, version: Any, source: str) -> dict[str, Any]:
    """The values of options a recipe does not hold: those of the release that wrote it."""
    if version is not None:
        return builder_defaults(REGISTRY[name])
    if name in _LEGACY_DEFAULTS:
        return _LEGACY_DEFAULTS[name]
    warnings.warn(
        f"{source} predates versioned recipes and flow {name!r} has no frozen defaults: the "
        "options it does not store take today's defaults (save the model again to pin them)",
        stacklevel=3,
    )
    return builder_defaults(REGISTRY[name])


def read_recipe(config: Any, source: str = "config") -> dict[str, Any]:
    """Check a stored recipe and return it as this release writes it (options resolved).

    Raises :class:`~pyroflows.errors.ModelFileError` naming the field for a recipe that is
    not a dict, lacks a field, names an unknown flow or option, has a value of the wrong type
    (``input_dim`` not a positive int, a float option not finite, ...), or was written by a
    newer major version. ``source`` (the file) starts every message.

    Example:
        >>> old = {"name": "nice", "input_dim": 2, "context_dim": 0, "options": {}}
        >>> read_recipe(old)["options"]  # written before versioned recipes
        {'hidden_dims': None, 'num_layers': 4}
        >>> read_recipe({**old, "options": {"layers": 2}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyroflows.errors.ModelFileError: config: recipe names option 'layers', which flow ...
    """
    if not isinstance(config, dict):
        raise ModelFileError(f"{source}: the recipe is not a dict: {type(config).__name__}")
    missing = [key for key in _REQUIRED if key not in config]
    if missing:
        raise ModelFileError(f"{source}: the recipe lacks the field(s) {', '.join(missing)}")
    name, version = config["name"], config.get(VERSION_KEY)
    if not isinstance(name, str) or name not in REGISTRY or REGISTRY[name].fixed:
        raise ModelFileError(f"{source}: recipe field 'name' is not a flow to fit: {name!r}")
    if version is not None and _major(version, source) > _major(__version__, source):
        raise ModelFileError(
            f"{source} was written by pyroflows {version}, a newer major version than this "
            f"one ({__version__}): upgrade pyroflows to load it"
        )
    if version is not None and version != __version__:
        _LOG.debug("%s was written by pyroflows %s (this is %s)", source, version, __version__)
    context_dim = config["context_dim"]
    if not _is_int(context_dim) or context_dim < 0:
        raise ModelFileError(
            f"{source}: recipe field 'context_dim' must be an int >= 0, got {context_dim!r}"
        )
    alpha = config.get("logit_alpha")
    if alpha is not None and not ((_is_int(alpha) or isinstance(alpha, float)) and 0 < alpha < 0.5):
        raise ModelFileError(
            f"{source}: recipe field 'logit_alpha' must be None or in (0, 1/2), got {alpha!r}"
        )
    padding = config.get("padding")
    if padding is not None:
        try:
            padding = as_padding(padding)
        except OptionError as error:
            raise ModelFileError(f"{source}: recipe field 'padding': {error}") from None
        if not _is_int(config["input_dim"]):
            raise ModelFileError(
                f"{source}: recipe field 'padding' needs vector data (an int input_dim), got "
                f"input_dim {config['input_dim']!r}"
            )
    options = config["options"]
    if not isinstance(options, dict):
        raise ModelFileError(f"{source}: recipe field 'options' is not a dict: {options!r}")
    accepted, defaults = REGISTRY[name].options(), builder_defaults(REGISTRY[name])
    for option, value in options.items():
        if accepted is not None and option not in accepted:
            raise ModelFileError(
                f"{source}: recipe names option {option!r}, which flow {name!r} does not take "
                f"(it takes: {', '.join(accepted) or 'no options'})"
            )
        _check_type(option, value, defaults.get(option), source)
    return make_recipe(
        name,
        _check_event(config["input_dim"], source),
        context_dim,
        {**_missing_defaults(name, version, source), **options},
        alpha,
        padding,
    )
