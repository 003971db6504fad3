"""Flows as variational posteriors in Pyro: flow autoguides, amortized guides, diagnostics.

* :class:`AutoFlow`: any registered flow as the posterior of a model's continuous latents.
* :class:`AmortizedFlow`: an encoder plus a conditional flow, for local latents.
* :class:`FlowPosterior`: the distribution both use (one pass per draw and its density).
* :func:`train_guide`: SVI with one fused optimizer; :class:`ElboTrace` records the ELBO.
* :func:`importance_diagnostics` (Pareto-k, ESS), :func:`posterior_samples`,
  :func:`to_inference_data` (arviz).
"""

from ._checks import NonFiniteDrawError, SplineTailWarning
from .amortized import AmortizedFlow
from .autoguide import AutoFlow
from .diagnostics import ImportanceDiagnostics, importance_diagnostics
from .posterior import FlowPosterior
from .samples import posterior_samples, samples_to_inference_data, to_inference_data
from .svi import ElboTrace, train_guide
from .svi import NonFiniteLossError as NonFiniteLossError  # raised by train_guide

__all__ = [
    "AmortizedFlow",
    "AutoFlow",
    "ElboTrace",
    "FlowPosterior",
    "ImportanceDiagnostics",
    "NonFiniteDrawError",
    "SplineTailWarning",
    "importance_diagnostics",
    "posterior_samples",
    "samples_to_inference_data",
    "to_inference_data",
    "train_guide",
]
