r"""Posterior draws from a guide, and their conversion to ArviZ's ``InferenceData``.

:func:`posterior_samples` draws the latent sites of a model from a fitted guide (through
:class:`pyro.infer.Predictive`), and :func:`to_inference_data` /
:func:`samples_to_inference_data` hand guide draws, or those of NUTS, to ArviZ for its
summaries and plots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from ._traces import model_and_guide_traces, vectorized_or_loop

__all__ = ["posterior_samples", "samples_to_inference_data", "to_inference_data"]


def _latent_shapes(model, guide, args, kwargs) -> dict[str, torch.Size]:
    """Names and shapes of the model's latent sites that the guide samples."""
    model_trace, guide_trace = model_and_guide_traces(model, guide, args, kwargs)
    return {
        name: site["value"].shape
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and name in guide_trace.nodes
    }


def posterior_samples(
    guide: Callable,
    *args: Any,
    num_samples: int = 1000,
    model: Callable | None = None,
    sites: Sequence[str] | None = None,
    vectorize: bool | None = None,
    **kwargs: Any,
) -> dict[str, Tensor]:
    """Draw from the guide: ``{site: tensor of shape (num_samples, *site_shape)}``.

    Runs :class:`pyro.infer.Predictive` with the guide and returns, by default, the model's
    latent sites that the guide samples (not observed, deterministic or auxiliary sites), in
    the model's constrained space, with Predictive's padding dimensions removed so that each
    tensor is ``(num_samples, *shape of the site in one model run)``. Discrete sites that
    the model enumerates are not sampled by the guide and so are not returned.

    Args:
        guide: Pyro guide; its ``model`` attribute (Pyro's autoguides have one) is the
            model unless ``model`` is given.
        *args: positional arguments of the model and guide.
        num_samples: number of draws.
        model: the model (default: ``guide.model``).
        sites: names of the sites to return, any model site (observed and deterministic
            ones too; they are then drawn from the posterior predictive).
        vectorize: ``True``: one vectorized pass (needs every batch dimension declared
            with ``pyro.plate``); ``False``: a Python loop over draws; ``None``: vectorized,
            falling back to the loop with a warning.
        **kwargs: keyword arguments of the model and guide.

    Returns:
        Dict of tensors, one per site.

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        ...     pyro.sample("sigma", dist.LogNormal(0.0, 1.0))
        >>> pyro.clear_param_store()
        >>> pyro.set_rng_seed(0)
        >>> draws = posterior_samples(AutoNormal(model), num_samples=100)
        >>> {name: tuple(value.shape) for name, value in draws.items()}
        {'w': (100, 3), 'sigma': (100,)}
        >>> bool((draws["sigma"] > 0).all())
        True
    """
    if model is None:
        model = getattr(guide, "model", None)
        if model is None:
            raise ValueError("the guide has no `model` attribute: pass model=...")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if sites is None:
        shapes = _latent_shapes(model, guide, args, kwargs)
    else:
        with torch.no_grad(), poutine.block():
            model_trace = poutine.trace(model).get_trace(*args, **kwargs)
        missing = [name for name in sites if name not in model_trace.nodes]
        if missing:
            raise ValueError(f"no site(s) {missing} in the model; its sites: {list(model_trace)}")
        shapes = {name: model_trace.nodes[name]["value"].shape for name in sites}

    def draw(parallel: bool) -> dict[str, Tensor]:
        predictive = pyro.infer.Predictive(
            model,
            guide=guide,
            num_samples=num_samples,
            return_sites=list(shapes),
            parallel=parallel,
        )
        samples = predictive(*args, **kwargs)
        return {name: samples[name].reshape(num_samples, *shapes[name]) for name in shapes}

    return vectorized_or_loop(
        lambda: draw(parallel=True), lambda: draw(parallel=False), vectorize, "sampling"
    )


def _import_arviz():
    try:
        import arviz
    except ImportError as error:
        raise ImportError(
            "converting to arviz.InferenceData needs arviz: pip install arviz "
            "(or pip install 'pyroflows[tutorials]')"
        ) from error
    return arviz


def samples_to_inference_data(
    samples: Mapping[str, Tensor],
    *,
    group_by_chain: bool = False,
    coords: Mapping[str, Any] | None = None,
    dims: Mapping[str, list[str]] | None = None,
):
    """Wrap a dict of draws as an :class:`arviz.InferenceData` with a ``posterior`` group.

    Args:
        samples: ``{site: tensor}``, each ``(draw, *shape)``, or ``(chain, draw, *shape)``
            with ``group_by_chain=True`` (as ``MCMC.get_samples(group_by_chain=True)``
            returns them).
        group_by_chain: the leading dimension indexes chains.
        coords: ArviZ coordinates, passed to :func:`arviz.from_dict`.
        dims: ArviZ dimension names per variable (default ``<site>_dim_0``, ...).

    Returns:
        ``arviz.InferenceData`` whose posterior variables are ``(chain, draw, *shape)``.

    Raises:
        ImportError: without arviz.
        ValueError: when the sites disagree on the number of chains or draws.

    Example:
        >>> draws = {"mu": torch.zeros(2, 50), "w": torch.zeros(2, 50, 3)}
        >>> idata = samples_to_inference_data(draws, group_by_chain=True)
        >>> dict(idata.posterior["w"].sizes)
        {'chain': 2, 'draw': 50, 'w_dim_0': 3}
    """
    arviz = _import_arviz()
    if not samples:
        raise ValueError("no samples to convert")
    lead = 2 if group_by_chain else 1
    arrays = {}
    for name, value in samples.items():
        array = torch.as_tensor(value).detach().cpu().numpy()
        if array.ndim < lead:
            raise ValueError(f"site {name!r} has shape {array.shape}: no {lead} leading dims")
        arrays[name] = array if group_by_chain else array[None]
    leading = {name: array.shape[:2] for name, array in arrays.items()}
    if len(set(leading.values())) > 1:
        raise ValueError(f"sites disagree on (chain, draw): {leading}")
    return arviz.from_dict(posterior=arrays, coords=coords, dims=dims)


def to_inference_data(
    guide: Callable | Mapping[str, Tensor],
    *args: Any,
    num_samples: int = 1000,
    model: Callable | None = None,
    sites: Sequence[str] | None = None,
    group_by_chain: bool = False,
    **kwargs: Any,
):
    """Draw from a guide (see :func:`posterior_samples`) into an :class:`arviz.InferenceData`.

    The ``posterior`` group has one chain of ``num_samples`` draws, one variable per site
    with its shape kept: ``(chain=1, draw=num_samples, *site_shape)``. A dict of draws may be
    passed instead of the guide (then see :func:`samples_to_inference_data`, which takes
    ``group_by_chain`` for NUTS' ``(chain, draw, ...)`` samples).

    Args:
        guide: Pyro guide, or a dict of draws.
        *args: positional arguments of the model and guide.
        num_samples: number of draws.
        model: the model (default: ``guide.model``).
        sites: sites to include (default: the latent sites).
        group_by_chain: for a dict of draws: their leading dimension indexes chains.
        **kwargs: keyword arguments of the model and guide.

    Returns:
        ``arviz.InferenceData``.

    Raises:
        ImportError: without arviz (``pip install arviz``).

    Example:
        >>> import pyro.distributions as dist
        >>> from pyro.infer.autoguide import AutoDiagonalNormal
        >>> def model():
        ...     pyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
        >>> pyro.clear_param_store()
        >>> idata = to_inference_data(AutoDiagonalNormal(model), num_samples=20)
        >>> dict(idata.posterior["w"].sizes)
        {'chain': 1, 'draw': 20, 'w_dim_0': 3}
    """
    _import_arviz()  # fail before sampling
    if isinstance(guide, Mapping):
        return samples_to_inference_data(guide, group_by_chain=group_by_chain)
    if group_by_chain:
        raise ValueError("group_by_chain applies to a dict of draws, not to a guide")
    draws = posterior_samples(
        guide, *args, num_samples=num_samples, model=model, sites=sites, **kwargs
    )
    return samples_to_inference_data(draws)
