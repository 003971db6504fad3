r"""The variational family of the flow guides: the one flow distribution of pyroflows.

.. math::
    z = \mu + \sigma \odot f_c(\varepsilon), \qquad \varepsilon \sim \mathcal{N}(0, I_D),

    \log q(z \mid c) = \log \mathcal{N}(\varepsilon; 0, I)
    - \log\left|\det \frac{\partial f_c}{\partial \varepsilon}\right|
    - \sum_{i=1}^{D} \log \sigma_i .

:class:`FlowPosterior` is :class:`pyroflows.distributions.FlowDistribution` (the same class,
under the name the guides use): its :meth:`~FlowPosterior.rsample_and_log_prob` returns a draw
and its log-density from **one** forward pass of the flow, since every pyroflows transform
returns its log-determinant with the forward map, so an IAF-type guide costs one network pass
per sample and per step. Scoring any other value runs the inverse pass exactly; no cache is
involved in either.
"""

from __future__ import annotations

from ..distributions import FlowDistribution

__all__ = ["FlowPosterior"]

FlowPosterior = FlowDistribution
