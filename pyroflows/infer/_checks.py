"""Run-time checks the flow guides make: non-finite draws and draws in a spline's identity tails.

Both cost no host sync on most steps: the finite check runs only under Pyro's validation
(``pyro.enable_validation``, on by default, which syncs on every distribution's arguments
anyway), the tail check only every :data:`TAIL_CHECK_EVERY` calls.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import torch
from pyro.infer.util import is_validation_enabled
from torch import Tensor, nn
from torch.distributions import Transform

from ..transforms import RationalQuadraticSpline, spline_tails
from .posterior import FlowPosterior

__all__ = ["NonFiniteDrawError", "SplineTailWarning"]

TAIL_CHECK_EVERY = 100  # guide calls between two tail checks
TAIL_CHECK_DRAWS = 256  # draws per tail check (times the posterior's batch)
TAIL_SHARE_WARNING = 0.01  # warn when more than this share of spline inputs is in the tails


class NonFiniteDrawError(ValueError):
    """A guide drew a non-finite value: names the site and the guide call.

    Raised by :class:`~pyroflows.infer.AutoFlow` under Pyro's validation (on by default).

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyroflows.infer import AutoFlow
        >>> def model():
        ...     pyro.sample("s", dist.LogNormal(0.0, 1.0))
        >>> pyro.clear_param_store()
        >>> guide = AutoFlow(model, "iaf", num_layers=1)
        >>> _ = guide()
        >>> with torch.no_grad():
        ...     _ = guide.loc.fill_(1e3)  # exp(1000) overflows
        >>> try:
        ...     guide()
        ... except NonFiniteDrawError as error:
        ...     print(str(error)[:60])
        AutoFlow: the draw of site 's' is not finite at guide call 2
    """


class SplineTailWarning(UserWarning):
    """Many of a guide's draws reach a spline layer outside its interval (identity tails).

    Example:
        >>> import warnings, pyro, pyro.distributions as dist
        >>> from pyroflows.infer import AutoFlow
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        >>> pyro.clear_param_store()
        >>> guide = AutoFlow(model, "spline_autoregressive", bound=1.0)  # too narrow
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     for _ in range(100):
        ...         _ = guide()
        >>> [w.category.__name__ for w in caught]
        ['SplineTailWarning']
    """


def check_finite_draws(
    sites: Iterable[tuple[str, Tensor, Tensor]], call: int, guide: str = "AutoFlow"
) -> None:
    """Raise :class:`NonFiniteDrawError` for the first site whose draw is not finite.

    ``sites`` yields ``(name, unconstrained value, constrained value)``; ``call`` is the
    guide's call count (its SVI step when only SVI calls it). Only under Pyro validation.
    """
    if not is_validation_enabled() or torch.compiler.is_compiling():
        return
    sites = list(sites)
    finite = torch.stack([torch.isfinite(value).all() for _, _, value in sites])
    if bool(finite.all()):  # one host sync per call, whatever the number of sites
        return
    for (name, unconstrained, _), site_finite in zip(sites, finite.tolist(), strict=True):
        if site_finite:
            continue
        if bool(torch.isfinite(unconstrained).all()):
            cause = (
                f"the flow's draw was finite ({_range(unconstrained)}) but mapping it to the "
                "site's support overflowed"
            )
        else:
            cause = "the flow's draw itself is not finite"
        raise NonFiniteDrawError(
            f"{guide}: the draw of site {name!r} is not finite at guide call {call} (its "
            f"SVI step, when SVI alone calls the guide): {cause}. The optimizer diverged: "
            "lower the learning rate, clip gradients (pyro.optim.ClippedAdam) or use a "
            "gated flow (stable=True)"
        )


def _range(value: Tensor) -> str:
    value = value.detach()
    return f"from {float(value.min()):.3g} to {float(value.max()):.3g}"


class SplineTailCheck:
    """Every :data:`TAIL_CHECK_EVERY` calls, the share of draws in the splines' identity tails.

    Draws :data:`TAIL_CHECK_DRAWS` values from the guide's posterior (no gradients, global
    RNG untouched), records with :func:`~pyroflows.transforms.spline_tails` how many spline
    inputs fall outside :math:`[-B, B]`, and warns once (:class:`SplineTailWarning`) when the
    share exceeds :data:`TAIL_SHARE_WARNING`. Flows without splines never draw.
    """

    def __init__(self, flow: Transform | None) -> None:
        modules = flow.modules() if isinstance(flow, nn.Module) else ()
        self.active = any(
            isinstance(getattr(module, "transformer", None), RationalQuadraticSpline)
            for module in modules
        )
        self.calls = 0

    def __call__(self, posterior: Callable[[], FlowPosterior], guide: str) -> None:
        """Count a call; on every :data:`TAIL_CHECK_EVERY`-th, check ``posterior()``'s draws."""
        self.calls += 1
        if not self.active or self.calls % TAIL_CHECK_EVERY or torch.compiler.is_compiling():
            return
        posterior = posterior()
        device = posterior.loc.device
        with (
            torch.no_grad(),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(self.calls)
            with spline_tails() as tails:
                posterior.sample((TAIL_CHECK_DRAWS,))
        share = tails.share()
        if share > TAIL_SHARE_WARNING:
            self.active = False  # once per guide
            bound = max(tails.bounds)
            warnings.warn(
                f"{guide}: {share:.1%} of the inputs of its spline layers fall outside their "
                f"interval [-{bound:g}, {bound:g}] (at call {self.calls}), where a spline is "
                "the identity: that part of the posterior is not shaped by the flow. Build "
                f"the flow with a larger interval, e.g. bound={2 * bound:g}",
                SplineTailWarning,
                stacklevel=3,
            )
