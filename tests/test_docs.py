"""Every public class and function documents its formula, its reference and an example."""

from __future__ import annotations

import importlib.util
import inspect
from importlib import import_module
from pathlib import Path

import pytest

import pyroflows
import pyroflows.diagnostics
import pyroflows.experiments.linear_couplings
import pyroflows.infer
import pyroflows.nn
import pyroflows.transforms


def _docs_checker():
    """docs/_ext/check_built_docs.py, which holds the one list of public modules."""
    path = Path(__file__).parents[1] / "docs" / "_ext" / "check_built_docs.py"
    spec = importlib.util.spec_from_file_location("check_built_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PUBLIC_MODULES = tuple(import_module(name) for name in _docs_checker().PUBLIC_MODULES)
# Modules whose objects are maths: each needs a formula and a paper reference.
MATHEMATICAL_MODULES = (
    pyroflows.transforms,
    pyroflows.nn,
    pyroflows.infer,
    pyroflows.diagnostics,
    pyroflows.experiments.linear_couplings,
)
NO_FORMULA = {
    "FlowSpec": "a registry record; the formulas are on the classes it builds",
    "build": "looks a name up in the registry; the formula is on the flow built",
    "register": "adds a record to the registry",
    "spec_of": "looks a name up in the registry",
    "posterior_samples": "draws from a guide; the density is the guide's",
    "to_inference_data": "converts draws to arviz's container",
    "samples_to_inference_data": "converts draws to arviz's container",
    "ElboTrace": "a record of losses and times",
    "NonFiniteDrawError": "an exception naming a site and a call",
    "SplineTailWarning": "a warning; the share it reports is defined on SplineTails",
    "spline_tails": "a context manager filling SplineTails, where the share is defined",
}


def _public_objects(modules):
    seen = {}
    for module in modules:
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                seen.setdefault(id(obj), (f"{module.__name__}.{name}", name, obj))
    return sorted(seen.values())


@pytest.mark.parametrize(
    "name,obj", [(full, obj) for full, _, obj in _public_objects(PUBLIC_MODULES)], ids=str
)
def test_public_object_has_a_summary_and_a_runnable_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert "Example:" in doc and ">>>" in doc, f"{name} has no doctest example"


@pytest.mark.parametrize(
    "name,short,obj",
    [entry for entry in _public_objects(MATHEMATICAL_MODULES) if entry[1] not in NO_FORMULA],
    ids=str,
)
def test_mathematical_object_has_its_formula_and_reference(name, short, obj):
    """Maths states its formula; each paper is cited once, on the class that implements it, and
    combinations of classes (and the Pyro-named helpers) link those classes."""
    doc = inspect.getdoc(obj) or ""
    assert ":math:" in doc or ".. math::" in doc, f"{name} states no formula"
    if inspect.isclass(obj) or obj.__module__.startswith("pyroflows.transforms"):
        # a combination (ElementwiseAffine, a Pyro-named helper) links the class that cites
        assert "References:" in doc or ":class:" in doc, (
            f"{name} neither cites a paper nor links the class that does"
        )
