r"""Auxiliary losses: penalties a flow adds to its training objective (e.g. RNODE).

A :class:`~pyroflows.transforms.FlowModule` may keep a penalty from its passes
(:meth:`~pyroflows.transforms.FlowModule.auxiliary_loss`, ``None`` by default; the RNODE
regularisers of :class:`~pyroflows.transforms.ContinuousFlow`); :func:`auxiliary_loss` sums
them over a model's flows, and the training loops add the sum to their loss:
:func:`~pyroflows.fit` to the negative log-likelihood, :func:`~pyroflows.infer.train_guide`
to the negative ELBO.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from torch import Tensor, nn

from ._base import FlowModule

__all__ = ["auxiliary_loss", "has_auxiliary_loss"]


def auxiliary_loss(flows: Any) -> Tensor | None:
    r"""The sum of the auxiliary losses of every flow module in ``flows``, or ``None``.

    ``FlowModule.auxiliary_loss()`` returns the penalty of a flow's passes since its last call
    (``None`` by default) and is consumed by the call. This walks ``flows`` (a module and its
    submodules, a distribution's transforms, or a list of either; views and inverses reach
    their flow) and returns :math:`\sum_k \text{aux}_k`, which ``fit()`` adds to the negative
    log-likelihood and ``train_guide`` to the negative ELBO; add it yourself in a custom loop
    (call it once before the step's pass to drop penalties of passes made outside training):

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_{n} \log p(x_n) + \sum_k \text{aux}_k .

    References:
        Finlay et al., "How to train your neural ODE: the world of Jacobian and kinetic
        regularization", 2020, arXiv:2002.02798.

    Example:
        >>> import torch
        >>> from pyroflows.transforms import ContinuousFlow, planar
        >>> flow = ContinuousFlow(2, [8], kinetic_energy=0.1)
        >>> _ = flow(torch.randn(5, 2))
        >>> auxiliary_loss([flow]).shape, auxiliary_loss(flow), auxiliary_loss(planar(2))
        (torch.Size([]), None, None)
    """
    total: Tensor | None = None
    for module in _unique_flow_modules(flows):
        aux = module.auxiliary_loss()
        if aux is not None:
            total = aux if total is None else total + aux
    return total


def has_auxiliary_loss(flows: Any) -> bool:
    r"""Whether any flow module in ``flows`` adds an auxiliary loss to its training passes.

    For a :class:`~pyroflows.transforms.ContinuousFlow`, whether its RNODE weights are on:
    :math:`\lambda_K > 0` or :math:`\lambda_J > 0`. ``train_guide`` reads it to know when
    to add :func:`auxiliary_loss` to the negative ELBO.

    Example:
        >>> from pyroflows.transforms import ContinuousFlow
        >>> has_auxiliary_loss(ContinuousFlow(2, [8])), has_auxiliary_loss(
        ...     [ContinuousFlow(2, [8], jacobian_norm=0.01)])
        (False, True)
    """
    return any(module.has_auxiliary_loss for module in _unique_flow_modules(flows))


def _unique_flow_modules(flows: Any) -> Iterator[FlowModule]:
    seen: set[int] = set()
    for module in _flow_modules(flows):
        if id(module) not in seen:
            seen.add(id(module))
            yield module


def _flow_modules(flows: Any) -> Iterator[FlowModule]:
    """Every :class:`FlowModule` reachable from ``flows`` (modules, transforms, iterables)."""
    if isinstance(flows, nn.Module):
        for module in flows.modules():
            if isinstance(module, FlowModule):
                yield module
        return
    inner = getattr(flows, "flow", None) or getattr(flows, "transforms", None)
    if inner is not None:
        yield from _flow_modules(inner)
    elif isinstance(flows, Iterable) and not isinstance(flows, (str, bytes, Tensor)):
        for item in flows:
            yield from _flow_modules(item)
