"""Linear flows :math:`y = Wx + b` whose structure makes the inverse and the log-det cheap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import FlowParameters
from ._base import FlowModule

__all__ = [
    "ActNorm",
    "Householder",
    "LULinear",
    "Permutation",
    "QRLinear",
    "TriangularLinear",
    "permutation",
]


def _solve_triangular(
    matrix: Tensor, rhs: Tensor, *, upper: bool, unitriangular: bool = False
) -> Tensor:
    """Solve ``matrix @ x = r`` for every vector ``r = rhs[..., :]`` in one batched call."""
    shape = rhs.shape
    rows = rhs.reshape(-1, shape[-1])
    # x^T = r^T A^{-T}: one right-sided solve handles the whole batch without copies of A.
    solution = torch.linalg.solve_triangular(
        matrix.transpose(-1, -2), rows, upper=not upper, left=False, unitriangular=unitriangular
    )
    return solution.reshape(shape)


def _constant_log_det(log_diag: Tensor, like: Tensor) -> Tensor:
    """The input-independent log-det ``sum(log_diag)``, expanded to the batch shape of ``like``."""
    return log_diag.sum(-1).expand(like.shape[:-1])


class _LUMatrix:
    r"""A learnable invertible matrix :math:`W = PLU`: LULinear's and the 1x1 convolution's.

    :math:`P` is a fixed permutation (buffers ``permutation``, ``(P M)[i] = M[perm[i]]``, and
    ``inverse_permutation``), :math:`L` unit lower triangular (parameter ``lower``, strict part
    used), :math:`U` upper triangular (``upper``, strict part) with diagonal
    :math:`\sigma_i e^{d_i}`: signs ``diag_sign`` fixed (buffer), ``log_diag`` learned.
    """

    permutation: Tensor
    diag_sign: Tensor
    lower: nn.Parameter
    upper: nn.Parameter
    log_diag: nn.Parameter

    def _init_lu(self, dim: int) -> None:
        """Start at a random orthogonal matrix (torch's global RNG), decomposed once."""
        orthogonal, _ = torch.linalg.qr(torch.randn(dim, dim))
        perm_matrix, lower, upper = torch.linalg.lu(orthogonal)
        diagonal = upper.diagonal()
        self.register_buffer("permutation", perm_matrix.argmax(dim=-1))
        self.register_buffer("inverse_permutation", torch.argsort(self.permutation))
        self.register_buffer("diag_sign", diagonal.sign())
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_diag = nn.Parameter(diagonal.abs().log())

    def factors(self) -> tuple[Tensor, Tensor]:
        """The triangular factors :math:`(L, U)`."""
        ones = torch.ones_like(self.log_diag)
        lower = torch.tril(self.lower, -1) + torch.diag_embed(ones)
        upper = torch.triu(self.upper, 1) + torch.diag_embed(self.diag_sign * self.log_diag.exp())
        return lower, upper

    def matrix(self) -> Tensor:
        """The full matrix :math:`W = PLU`."""
        lower, upper = self.factors()
        return (lower @ upper)[self.permutation]


def _householder_matrix(vectors: Tensor) -> Tensor:
    r"""Return :math:`Q = H_{K} \cdots H_{1}`, :math:`H_k = I - 2 u_k u_k^T` for rows ``v_k``.

    :math:`u_k = v_k / \lVert v_k \rVert`; ``vectors`` has shape ``(K, D)``; :math:`H_1` acts
    first, as in Pyro's ``Householder``. Cost :math:`O(K D^2)`.
    """
    units = vectors / vectors.norm(dim=-1, keepdim=True)
    matrix = torch.eye(vectors.shape[-1], dtype=vectors.dtype, device=vectors.device)
    for unit in units:
        matrix = matrix - 2 * torch.outer(unit, unit @ matrix)
    return matrix


class Permutation(FlowModule):
    r"""Fixed permutation of the coordinates: :math:`y_i = x_{\pi(i)}`.

    Volume preserving (log-det 0); inverse :math:`x = y_{\pi^{-1}}`. Both directions are an
    index gather, :math:`O(D)` per sample. The permutation and its inverse are buffers, so
    they move with ``.to(device)`` and are saved in ``state_dict``. Used between coupling or
    autoregressive layers so that every coordinate gets transformed.

    Args:
        permutation: a permutation of ``0, ..., D - 1``.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803.

    Example:
        >>> import torch
        >>> flow = Permutation([2, 0, 1])
        >>> flow(torch.tensor([10.0, 20.0, 30.0]))
        tensor([30., 10., 20.])
    """

    def __init__(self, permutation: Sequence[int] | Tensor) -> None:
        perm = torch.as_tensor(permutation, dtype=torch.long).reshape(-1)
        if not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"not a permutation of 0..{perm.numel() - 1}: {perm.tolist()}")
        super().__init__(perm.numel())
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x[..., self.permutation], x.new_zeros(x.shape[:-1])

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y[..., self.inverse_permutation], y.new_zeros(y.shape[:-1])


class ActNorm(FlowModule):
    r"""Activation normalisation (Glow): an affine map with data-dependent initialisation.

    For vectors (event shape ``(D,)``) one scale and shift per coordinate; for images (event
    shape ``(C, H, W)``) one per channel, shared by the :math:`HW` pixels (shape ``(C, 1, 1)``):

    .. math::
        y_{c,h,w} = \mu_c + e^{s_c} x_{c,h,w}, \qquad
        x_{c,h,w} = (y_{c,h,w} - \mu_c)\, e^{-s_c}, \qquad
        \log|\det J| = H W \sum_c s_c

    (:math:`H = W = 1` for vectors, with :math:`c` running over the :math:`D` coordinates).
    The first batch that passes through the layer, in either direction, sets :math:`\mu` and
    :math:`s` so that the layer's *output* for that batch has zero mean and unit variance per
    coordinate, or per channel over the batch and all pixels (NaN entries are ignored in those
    statistics). In a density model ``TransformedDistribution(base, [..., actnorm])`` the data
    enter through the inverse, so the data are standardised. After that the parameters are
    ordinary learnable parameters (``params.shift`` and ``params.log_scale``); whether the
    layer is initialised is part of ``state_dict``, so a restored model is not re-initialised.
    Cost :math:`O(D)` (or :math:`O(CHW)`) per sample in both directions, log-det :math:`O(C)`;
    unconditional.

    Args:
        event_shape: event size :math:`D` (vectors) or an image shape ``(C, H, W)``.
        eps: standard deviations below this are treated as 1 (constant columns or channels).

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018,
        arXiv:1807.03039.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> flow = ActNorm(2)
        >>> y = flow(3.0 + 2.0 * torch.randn(1000, 2))
        >>> bool(y.mean(0).abs().max() < 1e-5), [round(v, 2) for v in y.std(0).tolist()]
        (True, [1.0, 1.0])
        >>> images = ActNorm((3, 4, 4))  # one scale and shift per channel
        >>> images.params.log_scale.shape
        torch.Size([3, 1, 1])
        >>> y = images(1.0 + 5.0 * torch.randn(64, 3, 4, 4))
        >>> [round(v, 2) for v in y.transpose(0, 1).reshape(3, -1).std(-1).tolist()]
        [1.0, 1.0, 1.0]
    """

    def __init__(self, event_shape: int | Sequence[int], eps: float = 1e-6) -> None:
        super().__init__(event_shape)
        rank = len(self.event_shape)
        if rank not in (1, 3):
            raise ValueError(
                "ActNorm takes vectors (D,) or images (C, H, W); got the event shape "
                f"{self.event_shape}"
            )
        shape = self.event_shape if rank == 1 else (self.event_shape[0], 1, 1)
        self._pixels = 1 if rank == 1 else self.event_shape[1] * self.event_shape[2]
        self.params = FlowParameters({"shift": torch.zeros(shape), "log_scale": torch.zeros(shape)})
        self.eps = eps
        self.initialized = False

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "_pixels" not in self.__dict__:  # pickled when ActNorm took vectors only
            self._pixels = 1

    @property
    def sign(self) -> int:
        """``+1``: the map is increasing in each element."""
        return 1

    def _map(self, value: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """The map (or its inverse) and the forward log-det, one formula for both directions."""
        shift, log_scale = self.params.shift, self.params.log_scale
        if inverse:
            mapped = (value - shift) * torch.exp(-log_scale)
        else:
            mapped = shift + value * torch.exp(log_scale)
        batch = mapped.shape[: mapped.dim() - len(self.event_shape)]
        return mapped, (self._pixels * log_scale.sum()).expand(batch)

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self.initialized:
            self.initialize(x, data_side="input")
        return self._map(x, inverse=False)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self.initialized:
            self.initialize(y, data_side="output")
        return self._map(y, inverse=True)

    @torch.no_grad()
    def initialize(self, data: Tensor, data_side: Literal["input", "output"] = "output") -> None:
        """Set the parameters so that the layer standardises ``data`` of shape ``(..., *event)``.

        Statistics are per coordinate (vectors) or per channel over the batch and the pixels
        (images).

        Args:
            data: a batch of data.
            data_side: ``"output"`` when ``data`` lives on the output side of the flow (a
                density model's data, reached through the inverse), ``"input"`` when it is fed
                to the forward map.
        """
        self._check_event(data, "data")
        if data_side not in ("input", "output"):
            raise ValueError(f"data_side must be 'input' or 'output', got {data_side!r}")
        data = data.detach()
        if len(self.event_shape) == 3:
            data = data.movedim(-3, -1)  # channels last: one column per channel
        channels = self.params.shift.shape[0]
        rows = data.reshape(-1, channels)
        mean = torch.nanmean(rows, dim=0)
        std = torch.nanmean((rows - mean) ** 2, dim=0).sqrt()
        mean = torch.nan_to_num(mean, nan=0.0)
        std = torch.where(torch.isfinite(std) & (std > self.eps), std, torch.ones_like(std))
        if data_side == "output":  # x = (y - mean) / std
            shift, log_scale = mean, std.log()
        else:  # y = (x - mean) / std
            shift, log_scale = -mean / std, -std.log()
        self.params.shift.copy_(shift.reshape(self.params.shift.shape))
        self.params.log_scale.copy_(log_scale.reshape(self.params.log_scale.shape))
        self.initialized = True

    def get_extra_state(self) -> dict[str, bool]:
        """Save whether the data-dependent initialisation has happened."""
        return {"initialized": self.initialized}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        """Restore whether the data-dependent initialisation has happened."""
        self.initialized = bool(state["initialized"])


class TriangularLinear(FlowModule):
    r"""Learnable lower-triangular linear flow with a positive diagonal.

    .. math::
        y = L x + b, \quad L_{ii} = e^{d_i}, \; L_{ij} = 0 \; (j > i), \qquad
        \log|\det J| = \sum_i d_i .

    Each output depends on the inputs up to its own index (an affine autoregressive map with
    input-independent coefficients). Forward :math:`O(D^2)` per sample (one matrix product);
    inverse :math:`O(D^2)` by one triangular solve for the whole batch; log-det :math:`O(D)`.
    Starts as the identity. Unconditional.

    Args:
        input_dim: event size :math:`D`.

    References:
        Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference",
        2021, arXiv:1912.02762, section 3.2 (linear flows).

    Example:
        >>> import torch
        >>> flow = TriangularLinear(3)
        >>> x = torch.randn(5, 3)
        >>> bool(torch.allclose(flow.inv(flow(x)), x, atol=1e-6))
        True
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        self.weight = nn.Parameter(torch.zeros(input_dim, input_dim))
        self.log_diag = nn.Parameter(torch.zeros(input_dim))
        self.bias = nn.Parameter(torch.zeros(input_dim))

    def matrix(self) -> Tensor:
        """The lower-triangular matrix :math:`L` (strict lower part of ``weight`` + diagonal)."""
        return torch.tril(self.weight, -1) + torch.diag_embed(self.log_diag.exp())

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = F.linear(x, self.matrix(), self.bias)
        return y, _constant_log_det(self.log_diag, y)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = _solve_triangular(self.matrix(), y - self.bias, upper=False)
        return x, _constant_log_det(self.log_diag, x)


class LULinear(_LUMatrix, FlowModule):
    r"""Invertible linear flow in LU form (as Glow's 1x1 convolution), for vectors.

    .. math::
        y = P L U x + b, \qquad \log|\det J| = \sum_i d_i ,

    with :math:`P` a fixed permutation (buffer), :math:`L` unit lower triangular,
    :math:`U` upper triangular with diagonal :math:`\sigma_i e^{d_i}` where the signs
    :math:`\sigma_i` are fixed (buffer). It starts as a random orthogonal matrix (decomposed
    once at construction). Forward :math:`O(D^3)` per call to form :math:`W = PLU` plus
    :math:`O(D^2)` per sample; inverse by a gather and two triangular solves,
    :math:`O(D^2)` per sample; log-det :math:`O(D)`. Unconditional.

    Args:
        input_dim: event size :math:`D`.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018,
        arXiv:1807.03039, section 3.2.

    Example:
        >>> import torch
        >>> flow = LULinear(4)
        >>> x = torch.randn(8, 4)
        >>> bool(torch.allclose(flow.inv(flow(x)), x, atol=1e-5))
        True
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        self._init_lu(input_dim)
        self.bias = nn.Parameter(torch.zeros(input_dim))

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = F.linear(x, self.matrix(), self.bias)
        return y, _constant_log_det(self.log_diag, y)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper = self.factors()
        unpermuted = (y - self.bias)[..., self.inverse_permutation]
        x = _solve_triangular(lower, unpermuted, upper=False, unitriangular=True)
        x = _solve_triangular(upper, x, upper=True)
        return x, _constant_log_det(self.log_diag, x)


class QRLinear(FlowModule):
    r"""Invertible linear flow in QR form: an orthogonal matrix times a triangular one.

    .. math::
        y = Q R x + b, \quad Q = H_K \cdots H_1, \; H_k = I - 2\frac{v_k v_k^T}{\lVert v_k
        \rVert^2}, \qquad \log|\det J| = \sum_i d_i ,

    with :math:`R` upper triangular with positive diagonal :math:`e^{d_i}`. With
    :math:`K = D` reflections every invertible matrix with positive-diagonal :math:`R` factor
    is reachable. Forward :math:`O(KD^2)` per call to form :math:`QR` plus :math:`O(D^2)` per
    sample; inverse :math:`x = R^{-1} Q^T (y - b)`, a product and a triangular solve,
    :math:`O(D^2)` per sample; log-det :math:`O(D)`. Unconditional.

    Args:
        input_dim: event size :math:`D`.
        num_reflections: number :math:`K` of Householder reflections in :math:`Q`
            (default :math:`D`).

    References:
        Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative Normalizing
        Flows", 2019, arXiv:1901.11137 (QR-parameterised linear layers).

    Example:
        >>> import torch
        >>> flow = QRLinear(4)
        >>> x = torch.randn(8, 4)
        >>> bool(torch.allclose(flow.inv(flow(x)), x, atol=1e-5))
        True
    """

    def __init__(self, input_dim: int, num_reflections: int | None = None) -> None:
        super().__init__(input_dim)
        count = input_dim if num_reflections is None else int(num_reflections)
        if count < 1:
            raise ValueError(f"num_reflections must be positive, got {num_reflections}")
        self.vectors = nn.Parameter(torch.randn(count, input_dim))
        self.upper = nn.Parameter(torch.zeros(input_dim, input_dim))
        self.log_diag = nn.Parameter(torch.zeros(input_dim))
        self.bias = nn.Parameter(torch.zeros(input_dim))

    def factors(self) -> tuple[Tensor, Tensor]:
        """The orthogonal factor :math:`Q` and the triangular factor :math:`R`."""
        upper = torch.triu(self.upper, 1) + torch.diag_embed(self.log_diag.exp())
        return _householder_matrix(self.vectors), upper

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        orthogonal, upper = self.factors()
        y = F.linear(x, orthogonal @ upper, self.bias)
        return y, _constant_log_det(self.log_diag, y)

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        orthogonal, upper = self.factors()
        rotated_back = (y - self.bias) @ orthogonal  # rows times Q = (Q^T r)^T
        x = _solve_triangular(upper, rotated_back, upper=True)
        return x, _constant_log_det(self.log_diag, x)


class Householder(FlowModule):
    r"""Orthogonal flow made of :math:`K` Householder reflections.

    .. math::
        y = H_K \cdots H_1 x, \quad H_k = I - 2\frac{v_k v_k^T}{\lVert v_k \rVert^2}, \qquad
        \log|\det J| = 0 .

    Volume preserving; the inverse applies the reflections in reverse order
    (:math:`x = Q^T y`). Cost :math:`O(KD^2)` per call to form :math:`Q` plus
    :math:`O(D^2)` per sample, both directions. Matches Pyro's ``Householder`` (reflection
    ``k`` acts ``k``-th). Unconditional.

    Args:
        input_dim: event size :math:`D`.
        num_reflections: number :math:`K` of reflections (default ``max(1, D // 2)``).

    References:
        Tomczak & Welling, "Improving Variational Auto-Encoders using Householder Flow", 2016,
        arXiv:1611.09630.

    Example:
        >>> import torch
        >>> flow = Householder(3, num_reflections=2)
        >>> x = torch.randn(4, 3)
        >>> bool(torch.allclose(flow(x).norm(dim=-1), x.norm(dim=-1), atol=1e-6))
        True
    """

    def __init__(self, input_dim: int, num_reflections: int | None = None) -> None:
        super().__init__(input_dim)
        count = max(1, input_dim // 2) if num_reflections is None else int(num_reflections)
        if count < 1:
            raise ValueError(f"num_reflections must be positive, got {num_reflections}")
        bound = input_dim**-0.5
        self.vectors = nn.Parameter(torch.empty(count, input_dim).uniform_(-bound, bound))

    def _forward_pass(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return F.linear(x, _householder_matrix(self.vectors)), x.new_zeros(x.shape[:-1])

    def _inverse_pass(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return y @ _householder_matrix(self.vectors), y.new_zeros(y.shape[:-1])


def permutation(
    input_dim: int, kind: Literal["random", "reverse"] = "random", seed: int | None = None
) -> Permutation:
    r"""Build a :class:`Permutation` :math:`y_i = x_{\pi(i)}`: random, or reversal.

    A random :math:`\pi` is drawn from torch's global RNG unless ``seed`` is given (as MADE's
    random orders): repeated calls give distinct permutations and ``torch.manual_seed``
    reproduces them all; an int ``seed`` fixes one. The drawn permutation is a buffer, so
    ``state_dict`` restores it exactly.

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
        arXiv:1605.08803.

    Example:
        >>> permutation(4, "reverse").permutation.tolist()
        [3, 2, 1, 0]
        >>> torch.equal(permutation(5, seed=1).permutation, permutation(5, seed=1).permutation)
        True
        >>> _ = torch.manual_seed(0)
        >>> first = [permutation(6).permutation for _ in range(3)]
        >>> _ = torch.manual_seed(0)
        >>> all(torch.equal(a, permutation(6).permutation) for a in first)
        True
    """
    if kind == "reverse":
        return Permutation(torch.arange(input_dim - 1, -1, -1))
    if kind == "random":
        # seed=None: torch's global (CPU) RNG; the index buffer lives on the CPU until .to()
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        return Permutation(torch.randperm(input_dim, generator=generator, device="cpu"))
    raise ValueError(f"kind must be 'random' or 'reverse', got {kind!r}")
