"""MADE: a masked MLP whose outputs for dimension ``i`` see only the inputs before ``i``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MADE", "MaskedLinear", "Ordering"]


Ordering = Literal["natural", "reverse", "random"] | Sequence[int] | Tensor
"""A MADE input ordering: a named one, or a permutation of ``0, ..., D - 1``."""


class MaskedLinear(nn.Linear):
    r"""Linear layer with a fixed binary mask on its weights: :math:`y = (W \odot M) x + b`.

    The mask is a buffer (moves with the module, saved in ``state_dict``).

    Args:
        in_features: input size.
        out_features: output size.
        mask: ``(out_features, in_features)`` tensor of zeros and ones.

    References:
        Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015,
        arXiv:1502.03509.

    Example:
        >>> import torch
        >>> layer = MaskedLinear(2, 2, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> bool((layer.weight * layer.mask)[0, 1] == 0)
        True
    """

    def __init__(self, in_features: int, out_features: int, mask: Tensor) -> None:
        super().__init__(in_features, out_features)
        if mask.shape != (out_features, in_features):
            raise ValueError(
                f"mask must have shape ({out_features}, {in_features}), got {tuple(mask.shape)}"
            )
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the masked affine map."""
        return F.linear(x, self.weight * self.mask, self.bias)


def _input_degrees(
    input_dim: int,
    ordering: Ordering,
    seed: int | None,
) -> Tensor:
    if isinstance(ordering, str):
        if ordering == "natural":
            return torch.arange(1, input_dim + 1)
        if ordering == "reverse":
            return torch.arange(input_dim, 0, -1)
        if ordering == "random":
            # seed=None: torch's global RNG, so each MADE gets its own order and
            # torch.manual_seed reproduces them all.
            generator = None if seed is None else torch.Generator().manual_seed(seed)
            return torch.randperm(input_dim, generator=generator) + 1
        raise ValueError(f"ordering must be natural, reverse, random or a permutation: {ordering}")
    order = torch.as_tensor(ordering, dtype=torch.long)
    if not torch.equal(order.sort().values, torch.arange(input_dim)):
        raise ValueError(f"ordering must be a permutation of 0..{input_dim - 1}, got {order}")
    return order + 1


def _sync_orders(made: MADE, incompatible_keys: object) -> None:
    """Recompute ``order`` and ``inverse_order`` from the loaded ``degrees``."""
    with torch.no_grad():
        made.order.copy_(torch.argsort(made.degrees))
        made.inverse_order.copy_(torch.argsort(made.order))


class MADE(nn.Module):
    r"""Masked autoencoder: ``params_per_dim`` outputs per input dimension, autoregressive.

    Each input :math:`x_i` gets a degree :math:`m(i) \in \{1..D\}` from ``ordering``; hidden
    unit :math:`k` gets a degree :math:`m(k) \in \{1..D-1\}`, or :math:`\{0..D-1\}` with a
    context (degree-0 units see only the context, so it reaches the parameters of every
    dimension, the first one's included). Weights connect a unit
    only to units of lower-or-equal degree, and outputs of dimension :math:`i` only to hidden
    units of degree :math:`< m(i)`, so

    .. math::
        \theta_i = \mathrm{MADE}(x)_i \text{ depends on } x_j \text{ only if } m(j) < m(i).

    A context vector (``context_dim > 0``) feeds every first-layer unit without a mask, so
    conditional autoregressive flows need no other network. Masks are buffers.

    Hidden units are stored sorted by degree (a relabelling of the hidden units: the same
    network). Then the parameters of the :math:`k`-th dimension in the autoregressive order
    need only a *prefix* of every layer, which :meth:`sequential` exploits for the
    :math:`D`-pass inverse of autoregressive flows: pass :math:`k` costs about
    :math:`(k/D)^2` of a full pass, so the :math:`D` passes together cost about :math:`D/3`
    full passes instead of :math:`D`.

    Args:
        input_dim: :math:`D`.
        hidden_dims: sizes of the hidden layers (at least one).
        params_per_dim: number :math:`P` of outputs per input dimension.
        context_dim: size of the unmasked context input (``0``: none).
        ordering: ``"natural"``, ``"reverse"``, ``"random"`` or a permutation giving, for
            each input, its position in the autoregressive order.
        seed: seed of a ``"random"`` ordering: an int for a fixed order; ``None`` (default)
            draws it from torch's global RNG, so repeated random MADEs differ and
            ``torch.manual_seed`` reproduces them. The order is saved in ``state_dict``
            (the ``degrees`` buffer and the masks), so loading restores it.
        activation: the hidden layers' activation: a module class or a name, ``"relu"``
            (default), ``"tanh"`` or ``"elu"``.

    Returns (from ``forward``): a tensor of shape ``(..., P, D)``.

    References:
        Germain et al., "MADE: Masked Autoencoder for Distribution Estimation", 2015,
        arXiv:1502.03509.

    Example:
        >>> import torch
        >>> made = MADE(4, [16], params_per_dim=2)
        >>> made(torch.randn(10, 4)).shape
        torch.Size([10, 2, 4])
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        params_per_dim: int = 2,
        context_dim: int = 0,
        ordering: Ordering = "natural",
        seed: int | None = None,
        activation: type[nn.Module] | str = nn.ReLU,
    ) -> None:
        super().__init__()
        activation = _activation(activation)
        if not hidden_dims:
            raise ValueError("MADE needs at least one hidden layer")
        self.input_dim, self.params_per_dim, self.context_dim = (
            input_dim,
            params_per_dim,
            context_dim,
        )
        degrees_in = _input_degrees(input_dim, ordering, seed)
        self.register_buffer("degrees", degrees_in)
        # order[k]: the input at position k of the autoregressive order.
        self.register_buffer("order", torch.argsort(degrees_in), persistent=False)
        # inverse_order[i]: the position of input i in the autoregressive order.
        self.register_buffer("inverse_order", torch.argsort(self.order), persistent=False)
        # The two orders are derived from the saved degrees: recompute them on loading (a
        # state_dict of another random order loads into this MADE whole).
        self.register_load_state_dict_post_hook(_sync_orders)
        # Hidden degrees cycle through [low, D - 1]. Degree-0 units see no input; with a
        # context they carry it to every output, including the first dimension's, which no
        # unit of degree >= 1 may reach.
        low = 0 if context_dim or input_dim == 1 else 1
        hidden_degrees = [
            (torch.arange(size) % (input_dim - low) + low).sort().values for size in hidden_dims
        ]
        degrees_out = degrees_in.repeat(params_per_dim)  # output p * D + i has degree m(i)
        layers: list[nn.Module] = []
        previous = degrees_in
        for index, degrees in enumerate(hidden_degrees):
            mask = (degrees[:, None] >= previous[None, :]).float()
            layers.append(MaskedLinear(len(previous), len(degrees), mask))
            if index == 0 and context_dim:
                self.context_layer = nn.Linear(context_dim, len(degrees), bias=False)
            layers.append(activation())
            previous = degrees
        output_mask = (degrees_out[:, None] > previous[None, :]).float()
        layers.append(MaskedLinear(len(previous), len(degrees_out), output_mask))
        self.layers = nn.ModuleList(layers)
        # prefixes[l][k]: how many units of hidden layer l have degree <= k (they are sorted).
        self._prefixes = [
            torch.searchsorted(degrees, torch.arange(input_dim), right=True).tolist()
            for degrees in hidden_degrees
        ]

    @property
    def output_layer(self) -> MaskedLinear:
        """The last masked layer (flows initialise it so that they start near the identity)."""
        return self.layers[-1]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Return the parameters, shape ``(..., params_per_dim, input_dim)``."""
        h = self.layers[0](x)
        if self.context_dim:
            if context is None:
                raise ValueError("this MADE was built with a context input: pass a context")
            h = h + self.context_layer(context)
        for layer in itertools.islice(self.layers, 1, None):
            h = layer(h)
        return h.unflatten(-1, (self.params_per_dim, self.input_dim))

    def sequential(self, context: Tensor | None = None) -> _SequentialPasses:
        """Prepare the :math:`D` passes of an autoregressive inverse (:class:`_SequentialPasses`).

        Example:
            >>> import torch
            >>> made = MADE(3, [8], params_per_dim=2)
            >>> x = torch.randn(4, 3)
            >>> passes = made.sequential()
            >>> bool(torch.allclose(passes(x[:, :2], 2), made(x)[:, :, 2]))
            True
        """
        if self.context_dim and context is None:
            raise ValueError("this MADE was built with a context input: pass a context")
        return _SequentialPasses(self, context)


class _SequentialPasses:
    r"""The parameters of one dimension at a time, from the dimensions before it.

    ``passes(known, k)`` returns the parameters ``(..., P)`` of input ``made.order[k]`` (the
    :math:`k`-th in the autoregressive order, counted from 0) given ``known``, the inputs
    ``made.order[:k]`` in that order, shape ``(..., k)``. Because hidden units are sorted by
    degree, only the first :math:`n_l(k)` units of hidden layer :math:`l` (those of degree
    :math:`\le k`) can reach that output, and they see only known inputs:

    .. math::
        h^{(1)}_{:n_1} = \phi\big(W^{(1)}_{:n_1, :k}\, x_{\text{known}} + b^{(1)}_{:n_1}
        + V_{:n_1} c\big), \quad
        h^{(l)}_{:n_l} = \phi\big(W^{(l)}_{:n_l, :n_{l-1}} h^{(l-1)}_{:n_{l-1}}
        + b^{(l)}_{:n_l}\big),

    with masked weights whose input columns and output rows are put in autoregressive order
    once, when the passes are prepared. Differentiable like :meth:`MADE.forward`, and equal to
    it: ``passes(x[..., order[:k]], k) == made(x)[..., :, order[k]]``.
    """

    def __init__(self, made: MADE, context: Tensor | None) -> None:
        masked = [layer.weight * layer.mask for layer in made.layers[::2]]
        order = made.order
        masked[0] = masked[0][:, order]
        dim, params = made.input_dim, made.params_per_dim
        rows = (torch.arange(params, device=order.device) * dim)[None, :] + order[:, None]
        self._output_weight = masked[-1][rows.flatten()].unflatten(0, (dim, params))
        self._output_bias = made.output_layer.bias[rows.flatten()].unflatten(0, (dim, params))
        self._hidden = [
            (weight, layer.bias, activation)
            for weight, layer, activation in zip(
                masked[:-1], made.layers[::2], made.layers[1::2], strict=False
            )
        ]
        self._prefixes = made._prefixes
        self._context = made.context_layer(context) if made.context_dim else None

    def __call__(self, known: Tensor, k: int) -> Tensor:
        width = k
        h = known
        for index, (weight, bias, activation) in enumerate(self._hidden):
            units = self._prefixes[index][k]
            h = F.linear(h, weight[:units, :width], bias[:units])
            if index == 0 and self._context is not None:
                h = h + self._context[..., :units]
            h = activation(h)
            width = units
        return F.linear(h, self._output_weight[k, :, :width], self._output_bias[k])


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _activation(activation: type[nn.Module] | str) -> type[nn.Module]:
    """An activation module class from a class or one of the names of ``_ACTIVATIONS``."""
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(map(repr, _ACTIVATIONS))} or a module "
                f"class, got {activation!r}"
            )
        return _ACTIVATIONS[activation]
    return activation
