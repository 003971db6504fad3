r"""Linear maps from fixed-partition affine couplings (Koehler, Mehta & Risteski, 2021).

Split :math:`\mathbb{R}^{2d}` into two fixed halves. A *linear affine coupling* updates one
half from the other and rescales it, so with :math:`A, D` arbitrary :math:`d \times d`
matrices and :math:`B, C` diagonal its matrix is one of

.. math::
    L(A, B) = \begin{pmatrix} I & 0 \\ A & B \end{pmatrix}, \qquad
    U(C, D) = \begin{pmatrix} C & D \\ 0 & I \end{pmatrix},

and a stack of :math:`K` of them, alternating, is

.. math::
    T = L(A_1, B_1)\, U(C_1, D_1)\, L(A_2, B_2)\, U(C_2, D_2) \cdots
    \qquad (K \text{ factors}).

The paper asks how many factors an arbitrary invertible :math:`T \in \mathbb{R}^{2d \times
2d}` needs, that is how much a Glow-style learned linear layer (or a change of partition) is
worth: at most 47 for every invertible :math:`T` (21 for a permutation, 13 for each
triangular factor of an LU decomposition), and there are :math:`T` that need at least 5.

* :class:`LinearCouplings`: the stack, a module with its matrix, forward map and inverse;
* :func:`fit_linear_map`: fit the stack to a target by least squares on the relative
  Frobenius error (Levenberg-Marquardt, float64, restarts);
* :func:`random_linear_map` and :func:`error_table`: the experiment (i.i.d. Gaussian targets,
  error against :math:`K` and the dimension);
* :func:`exact_couplings`: an explicit exact construction with 14 factors for targets in
  general position (see there for what it covers and how it relates to the paper's).

References:
    Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
    normalizing flows", ICML 2021, arXiv:2010.01155 (section "Effect of the choice of
    partition").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "ErrorRow",
    "LinearCouplings",
    "LinearFit",
    "error_table",
    "exact_couplings",
    "fit_linear_map",
    "random_linear_map",
]


def _check_num_factors(num_factors: int) -> int:
    if isinstance(num_factors, bool) or not isinstance(num_factors, int) or num_factors < 1:
        raise ValueError(f"num_factors must be an integer >= 1, got {num_factors!r}")
    return num_factors


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2 or dim % 2:
        raise ValueError(
            f"dim must be an even integer >= 2 (two halves of d coordinates), got {dim!r}"
        )
    return dim


def _check_target(target: Tensor) -> Tensor:
    target = torch.as_tensor(target)
    if target.dim() != 2 or target.shape[0] != target.shape[1]:
        raise ValueError(
            f"target must be a square matrix of shape (2d, 2d), got shape {tuple(target.shape)}"
        )
    if target.shape[0] < 2 or target.shape[0] % 2:
        raise ValueError(
            "target must have an even size 2d (the two halves of the fixed partition), "
            f"got shape {tuple(target.shape)}"
        )
    if not target.is_floating_point():
        target = target.to(torch.get_default_dtype())
    return target


class LinearCouplings(nn.Module):
    r"""A stack of :math:`K` fixed-partition linear affine couplings, alternating halves.

    With :math:`x = (x_a, x_b)` the two halves (first :math:`d` and last :math:`d`
    coordinates), factor :math:`j = 1, \dots, K` is :math:`L(A_j, B_j)` for odd :math:`j` and
    :math:`U(C_j, D_j)` for even :math:`j`,

    .. math::
        L(A, B): \ (x_a, x_b) \mapsto (x_a,\ A x_a + B x_b), \qquad
        U(C, D): \ (x_a, x_b) \mapsto (C x_a + D x_b,\ x_b),

    with :math:`B, C` diagonal, and the stack's matrix is the product
    :math:`T = F_1 F_2 \cdots F_K` (so :math:`F_K` acts first on a vector), with
    :math:`\log|\det T| = \sum_j \sum_i \log|s_{j,i}|` over the diagonal entries
    :math:`s_j` of the factors' scales. Both directions cost :math:`O(K d^2)` per vector; the
    inverse of each factor is explicit, :math:`L(A, B)^{-1} = L(-B^{-1} A, B^{-1})`.

    Parameters: ``shears`` of shape ``(K, d, d)`` (the :math:`A_j` or :math:`D_j`) and
    ``scales`` of shape ``(K, d)`` (the diagonals of :math:`B_j` or :math:`C_j`), the identity
    at construction.

    Why not :class:`~pyroflows.transforms.Coupling` with an
    :class:`~pyroflows.transforms.Affine` transformer: that layer's scale is
    :math:`e^{s(x_a)}`, positive and clamped to :math:`[e^{-5}, e^{3}]`, and its conditioner
    would have to produce the shift :math:`A x_a` while holding :math:`s` constant in
    :math:`x_a`, which a linear conditioner does only if the weight rows of :math:`s` are
    kept at zero during the fit. Here the scales are free real numbers, as in the paper (a
    negative entry flips the sign of :math:`\det T`, which positive scales never reach). With
    positive scales in the clamp range a factor *is* such a ``Coupling`` (the tests check
    it); this module writes it in four lines so that the fit and the exact constructions see
    the matrices directly.

    Args:
        dim: event size :math:`2d` (even).
        num_factors: :math:`K \ge 1`.
        dtype: of the parameters (default float64, which exact constructions need).

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", ICML 2021, arXiv:2010.01155.

    Example:
        >>> import torch
        >>> stack = LinearCouplings(4, 3)
        >>> torch.equal(stack.matrix(), torch.eye(4, dtype=torch.float64))
        True
        >>> x = torch.randn(5, 4, dtype=torch.float64)
        >>> with torch.no_grad():
        ...     _ = stack.shears.normal_()
        >>> torch.allclose(stack(x), x @ stack.matrix().T)
        True
        >>> torch.allclose(stack.inverse(stack(x)), x)
        True
    """

    def __init__(self, dim: int, num_factors: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.dim = _check_dim(dim)
        self.half = dim // 2
        self.num_factors = _check_num_factors(num_factors)
        d, k = self.half, num_factors
        self.shears = nn.Parameter(torch.zeros(k, d, d, dtype=dtype))
        self.scales = nn.Parameter(torch.ones(k, d, dtype=dtype))

    @classmethod
    def from_factors(cls, shears: Tensor, scales: Tensor) -> LinearCouplings:
        """A stack with the given ``shears`` ``(K, d, d)`` and ``scales`` ``(K, d)``.

        Example:
            >>> import torch
            >>> stack = LinearCouplings.from_factors(torch.ones(1, 1, 1), torch.full((1, 1), 2.0))
            >>> stack.matrix().detach()
            tensor([[1., 0.],
                    [1., 2.]])
        """
        shears, scales = torch.as_tensor(shears), torch.as_tensor(scales)
        if shears.dim() != 3 or shears.shape[1] != shears.shape[2]:
            raise ValueError(f"shears must have shape (K, d, d), got {tuple(shears.shape)}")
        if scales.shape != shears.shape[:2]:
            raise ValueError(
                f"scales must have shape {tuple(shears.shape[:2])} (K, d), "
                f"got {tuple(scales.shape)}"
            )
        stack = cls(2 * shears.shape[1], shears.shape[0], dtype=shears.dtype)
        with torch.no_grad():
            stack.shears.copy_(shears)
            stack.scales.copy_(scales.to(shears.dtype))
        return stack

    def is_lower(self, index: int) -> bool:
        """Whether factor ``index`` (from 0) is :math:`L(A, B)`; the others are :math:`U(C, D)`.

        Example:
            >>> [LinearCouplings(2, 3).is_lower(j) for j in range(3)]
            [True, False, True]
        """
        return index % 2 == 0

    def factors(self) -> Tensor:
        r"""The factors' matrices :math:`F_1, \dots, F_K`, shape ``(K, 2d, 2d)``.

        Example:
            >>> LinearCouplings(2, 2).factors().shape
            torch.Size([2, 2, 2])
        """
        d = self.half
        eye = torch.eye(d, dtype=self.shears.dtype, device=self.shears.device)
        zero = torch.zeros_like(eye)
        out = []
        for j in range(self.num_factors):
            scale = torch.diag(self.scales[j])
            if self.is_lower(j):
                rows = [torch.cat([eye, zero], 1), torch.cat([self.shears[j], scale], 1)]
            else:
                rows = [torch.cat([scale, self.shears[j]], 1), torch.cat([zero, eye], 1)]
            out.append(torch.cat(rows, 0))
        return torch.stack(out)

    def matrix(self) -> Tensor:
        r"""The stack's matrix :math:`T = F_1 F_2 \cdots F_K`, shape ``(2d, 2d)``.

        Example:
            >>> LinearCouplings(4, 2).matrix().shape
            torch.Size([4, 4])
        """
        factors = self.factors()
        product = factors[0]
        for factor in factors[1:]:
            product = product @ factor
        return product

    def forward(self, x: Tensor) -> Tensor:
        """:math:`y = T x` for rows ``x`` of shape ``(..., 2d)``, one coupling at a time.

        Example:
            >>> LinearCouplings(4, 2)(torch.ones(3, 4, dtype=torch.float64)).shape
            torch.Size([3, 4])
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected rows of size {self.dim}, got shape {tuple(x.shape)}")
        d = self.half
        x_a, x_b = x[..., :d], x[..., d:]
        for j in reversed(range(self.num_factors)):  # F_K acts first
            shear, scale = self.shears[j], self.scales[j]
            if self.is_lower(j):
                x_b = x_a @ shear.T + scale * x_b
            else:
                x_a = scale * x_a + x_b @ shear.T
        return torch.cat([x_a, x_b], -1)

    def inverse(self, y: Tensor) -> Tensor:
        r""":math:`x = T^{-1} y`, one coupling at a time (explicit, no solve).

        Example:
            >>> stack = LinearCouplings(2, 1)
            >>> stack.inverse(torch.ones(2, dtype=torch.float64)).detach()
            tensor([1., 1.], dtype=torch.float64)
        """
        if y.shape[-1] != self.dim:
            raise ValueError(f"expected rows of size {self.dim}, got shape {tuple(y.shape)}")
        d = self.half
        y_a, y_b = y[..., :d], y[..., d:]
        for j in range(self.num_factors):  # F_1 is undone first
            shear, scale = self.shears[j], self.scales[j]
            if self.is_lower(j):
                y_b = (y_b - y_a @ shear.T) / scale
            else:
                y_a = (y_a - y_b @ shear.T) / scale
        return torch.cat([y_a, y_b], -1)

    def log_abs_det(self) -> Tensor:
        r""":math:`\log|\det T|`, the sum of the log absolute scales.

        Example:
            >>> float(LinearCouplings(4, 2).log_abs_det().detach())
            0.0
        """
        return self.scales.abs().log().sum()

    def _jacobian(self) -> Tensor:
        r"""The Jacobian of :math:`\mathrm{vec}(T)` in (shears, scales), ``(4 d^2, K (d^2 + d))``.

        :math:`\partial T / \partial \theta = F_{<j}\, (\partial F_j / \partial \theta)\,
        F_{>j}`, each derivative an outer product of a column of the prefix product and a row
        of the suffix product.
        """
        factors = self.factors().detach()
        k, d, n = self.num_factors, self.half, self.dim
        eye = torch.eye(n, dtype=factors.dtype, device=factors.device)
        prefix = [eye]
        for j in range(k - 1):
            prefix.append(prefix[-1] @ factors[j])
        suffix = [eye]
        for j in reversed(range(1, k)):
            suffix.append(factors[j] @ suffix[-1])
        suffix.reverse()
        shear_cols, scale_cols = [], []
        for j in range(k):
            before, after = prefix[j], suffix[j]
            if self.is_lower(j):  # d/dA_kl = e_{d+k} e_l^T, d/dB_kk = e_{d+k} e_{d+k}^T
                left, right_shear, right_scale = before[:, d:], after[:d], after[d:]
            else:  # d/dD_kl = e_k e_{d+l}^T, d/dC_kk = e_k e_k^T
                left, right_shear, right_scale = before[:, :d], after[d:], after[:d]
            shear_cols.append(torch.einsum("ik,lm->imkl", left, right_shear).reshape(n * n, -1))
            scale_cols.append(torch.einsum("ik,km->imk", left, right_scale).reshape(n * n, -1))
        return torch.cat(shear_cols + scale_cols, dim=1)


@dataclass
class LinearFit:
    r"""The result of :func:`fit_linear_map`.

    Attributes:
        error: relative Frobenius error :math:`\|T_\theta - T\|_F / \|T\|_F` of the best
            restart.
        module: the fitted :class:`LinearCouplings` (best restart).
        restart_errors: the final error of every restart, in order.
        iterations: Levenberg-Marquardt iterations of the best restart.

    Example:
        >>> fit = fit_linear_map(random_linear_map(4, seed=0), 4, seed=0)
        >>> fit.error < 1e-10, fit.module.num_factors
        (True, 4)
    """

    error: float
    module: LinearCouplings
    restart_errors: list[float]
    iterations: int


def _lm_fit(stack: LinearCouplings, target: Tensor, steps: int, tol: float) -> tuple[float, int]:
    """Levenberg-Marquardt (Marquardt's diagonal scaling) on the relative residual."""
    scale = target.norm()
    theta = torch.cat([stack.shears.detach().flatten(), stack.scales.detach().flatten()])
    split = stack.shears.numel()

    def load(values: Tensor) -> None:
        with torch.no_grad():
            stack.shears.copy_(values[:split].view_as(stack.shears))
            stack.scales.copy_(values[split:].view_as(stack.scales))

    def residual() -> Tensor:
        with torch.no_grad():
            return ((stack.matrix() - target) / scale).flatten()

    res = residual()
    cost = float(res @ res)
    damping = 1e-3
    iterations = 0
    for iterations in range(1, steps + 1):  # noqa: B007 (reported)
        if cost**0.5 < tol:
            break
        jac = stack._jacobian() / scale
        grad, gram = jac.T @ res, jac.T @ jac
        diag = gram.diagonal().clamp_min(1e-12)
        improved = False
        while damping < 1e12:
            step = torch.linalg.solve(gram + torch.diag(damping * diag), -grad)
            load(theta + step)
            new_res = residual()
            new_cost = float(new_res @ new_res)
            if new_cost < cost:
                theta, res, cost, improved = theta + step, new_res, new_cost, True
                damping = max(damping / 3, 1e-12)
                break
            damping *= 4
        load(theta)
        if not improved:
            break
    return cost**0.5, iterations


def fit_linear_map(
    target: Tensor,
    num_factors: int,
    steps: int = 300,
    restarts: int = 3,
    seed: int = 0,
    tol: float = 1e-13,
) -> LinearFit:
    r"""Fit :math:`K` linear couplings to a target matrix by least squares.

    Minimises the relative Frobenius error

    .. math::
        \varepsilon(\theta) = \frac{\|F_1 F_2 \cdots F_K - T\|_F}{\|T\|_F}

    over the shears and scales by Levenberg-Marquardt in float64 (the exact Jacobian of the
    product, :math:`4 d^2 \times K(d^2 + d)`, is cheap at these sizes), from ``restarts``
    random starts (shears :math:`\mathcal{N}(0, 1/d)`, scales :math:`1 + \mathcal{N}(0,
    0.01)`), keeping the best. A restart stops when :math:`\varepsilon <` ``tol``, when no
    step lowers it, or after ``steps`` iterations; the restarts stop at the first that
    reaches ``tol``. Adam followed by L-BFGS, tried first, stalled at
    :math:`\varepsilon \approx 10^{-2}` for :math:`2d = 8, 16` where Levenberg-Marquardt
    reaches :math:`10^{-15}`.

    Args:
        target: matrix of shape ``(2d, 2d)``.
        num_factors: :math:`K \ge 1`.
        steps: iterations per restart.
        restarts: random starts.
        seed: seeds the starts.
        tol: relative error at which to stop.

    Returns:
        A :class:`LinearFit` with the error and the fitted :class:`LinearCouplings`.

    References:
        Marquardt, "An algorithm for least-squares estimation of nonlinear parameters", 1963.

    Example:
        >>> target = random_linear_map(8, seed=1)
        >>> fit_linear_map(target, 2).error > 0.05  # two factors are far too few
        True
        >>> fit_linear_map(target, 5).error < 1e-10
        True
    """
    target = _check_target(target).to(torch.float64)
    _check_num_factors(num_factors)
    if restarts < 1 or steps < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps} and {restarts}")
    dim, d = target.shape[0], target.shape[0] // 2
    generator = torch.Generator().manual_seed(seed)
    best: tuple[float, LinearCouplings, int] | None = None
    errors = []
    for _ in range(restarts):
        shears = torch.randn(num_factors, d, d, generator=generator, dtype=torch.float64)
        scales = 1 + 0.1 * torch.randn(num_factors, d, generator=generator, dtype=torch.float64)
        stack = LinearCouplings.from_factors(shears / d**0.5, scales).to(target.device)
        error, iterations = _lm_fit(stack, target, steps, tol)
        errors.append(error)
        if best is None or error < best[0]:
            best = (error, stack, iterations)
        if error < tol:
            break
    assert best is not None and dim == 2 * d
    return LinearFit(best[0], best[1], errors, best[2])


def random_linear_map(dim: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""A :math:`\mathrm{dim} \times \mathrm{dim}` matrix of i.i.d. :math:`\mathcal{N}(0, 1)`.

    The ensemble of the paper's figure; invertible with probability one.

    Example:
        >>> random_linear_map(4, seed=0).shape
        torch.Size([4, 4])
    """
    _check_dim(dim)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, dim, generator=generator, dtype=dtype)


class ErrorRow(NamedTuple):
    r"""One cell of :func:`error_table`: a target, a factor count, the fitted error.

    ``error`` is :math:`\|T_\theta - T\|_F / \|T\|_F` for the best fit of a
    :class:`LinearCouplings` stack of ``num_factors`` factors to
    :func:`random_linear_map` ``(dim, seed)``.

    Example:
        >>> ErrorRow(8, 5, 0, 1e-15).num_factors
        5
    """

    dim: int
    num_factors: int
    seed: int
    error: float


def error_table(
    dims: Iterable[int],
    factor_counts: Iterable[int],
    seeds: Iterable[int],
    progress: bool = False,
    **fit_options,
) -> list[ErrorRow]:
    r"""The experiment's grid: fit every factor count to every random target.

    For each ``dim`` and ``seed`` the target is :func:`random_linear_map` ``(dim, seed)``;
    each :math:`K` in ``factor_counts`` is fitted by :func:`fit_linear_map` (with ``seed``
    and ``fit_options``), giving the relative error :math:`\varepsilon`.

    Args:
        dims: event sizes :math:`2d`.
        factor_counts: values of :math:`K`.
        seeds: target (and restart) seeds.
        progress: show a tqdm bar.
        **fit_options: passed to :func:`fit_linear_map` (``steps``, ``restarts``, ``tol``).

    Returns:
        One :class:`ErrorRow` per (dim, K, seed), in that order.

    Example:
        >>> rows = error_table([4], [2, 4], [0])
        >>> [(row.num_factors, row.error < 1e-10) for row in rows]
        [(2, False), (4, True)]
    """
    dims, factor_counts, seeds = list(dims), list(factor_counts), list(seeds)
    for dim in dims:
        _check_dim(dim)
    for count in factor_counts:
        _check_num_factors(count)
    cells = [(dim, k, seed) for dim in dims for k in factor_counts for seed in seeds]
    if progress:
        from tqdm.auto import tqdm

        cells = tqdm(cells, desc="fits")
    rows = []
    for dim, k, seed in cells:
        fit = fit_linear_map(random_linear_map(dim, seed), k, seed=seed, **fit_options)
        rows.append(ErrorRow(dim, k, seed, fit.error))
    return rows


# ----------------------------------------------------------------------------------------------
# The exact construction


def _diag_pair(x: Tensor, y: Tensor, conjugator: Tensor) -> list[tuple[bool, Tensor, Tensor]]:
    r"""``diag(X, Y)`` as :math:`U L U L` when :math:`C = Z Y Z^{-1} X` is diagonal (Z given).

    .. math::
        \begin{pmatrix} X & 0 \\ 0 & Y \end{pmatrix} =
        U(I, -Z Y^{-1})\, L(-(I - Y) Z^{-1}, I)\, U(C, Z)\, L((I - Y) Z^{-1} X, I).
    """
    eye = torch.eye(len(x), dtype=x.dtype, device=x.device)
    ones = torch.ones(len(x), dtype=x.dtype, device=x.device)
    z_inv = torch.linalg.inv(conjugator)
    corner = conjugator @ y @ z_inv @ x
    off = corner - torch.diag(corner.diagonal())
    if off.abs().max() > 1e-8 * (1 + corner.abs().max()):
        raise ValueError("the conjugator does not make Z Y Z^-1 X diagonal")
    return [
        (False, -conjugator @ torch.linalg.inv(y), ones),
        (True, -(eye - y) @ z_inv, ones),
        (False, conjugator, corner.diagonal()),
        (True, (eye - y) @ z_inv @ x, ones),
    ]


def _lu_no_pivoting(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Doolittle: ``matrix = lower @ upper``, ``lower`` unit lower triangular."""
    n = len(matrix)
    lower = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    upper = matrix.clone()
    scale = matrix.abs().max()
    for k in range(n - 1):
        if upper[k, k].abs() <= 1e-10 * scale:
            raise ValueError(
                f"leading principal minor {k + 1} of P Sigma is zero: the exact construction "
                "needs a matrix in general position (a permutation first would fix it, as in "
                "the paper)"
            )
        lower[k + 1 :, k] = upper[k + 1 :, k] / upper[k, k]
        upper[k + 1 :] = upper[k + 1 :] - lower[k + 1 :, k : k + 1] * upper[k : k + 1]
    return lower, upper.triu()


def _triangular_eigenvectors(matrix: Tensor, lower: bool) -> Tensor:
    """Eigenvectors (columns) of a triangular matrix with distinct diagonal entries."""
    n = len(matrix)
    values = matrix.diagonal()
    vectors = torch.eye(n, dtype=matrix.dtype, device=matrix.device)
    for k in range(n):
        rows = range(k + 1, n) if lower else reversed(range(k))
        for i in rows:
            span = slice(k, i) if lower else slice(i + 1, k + 1)
            total = matrix[i, span] @ vectors[span, k]
            vectors[i, k] = -total / (values[i] - values[k])
    return vectors


def _split_diagonal(pivots: Tensor) -> Tensor:
    """A diagonal split of the pivots: both it and pivots / it with well-spread entries."""
    n = len(pivots)
    best, best_gap = None, -1.0
    for ratio in (1.0, 1.7, 2.3, 0.6, 3.1):
        targets = (1 + torch.arange(n, dtype=pivots.dtype)) * ratio**0.5
        delta = pivots.abs() ** 0.5 * torch.sign(pivots) / targets
        gaps = []
        for values in (delta, pivots / delta):
            spread = (values[:, None] - values[None, :]).abs().fill_diagonal_(float("inf"))
            gaps.append(float(spread.min() / values.abs().max()) if n > 1 else 1.0)
        if min(gaps) > best_gap:
            best, best_gap = delta, min(gaps)
    assert best is not None
    return best


def exact_couplings(target: Tensor) -> LinearCouplings:
    r"""An explicit stack of 14 linear couplings equal to ``target`` (in general position).

    Write :math:`T = \begin{pmatrix} P & Q \\ R & S \end{pmatrix}` in :math:`d \times d`
    blocks. The construction is a block LU decomposition through the Schur complement
    :math:`\Sigma = S - R P^{-1} Q`,

    .. math::
        T = L(R P^{-1}, I)\,
        \begin{pmatrix} P & 0 \\ 0 & P^{-1} \end{pmatrix}
        \begin{pmatrix} I & 0 \\ 0 & N_1 \end{pmatrix}
        \begin{pmatrix} I & 0 \\ 0 & N_2 \end{pmatrix}
        U(I, P^{-1} Q), \qquad N_1 N_2 = N = P \Sigma,

    where :math:`N = N_1 N_2` is an LU decomposition (:math:`N_1` lower, :math:`N_2` upper
    triangular, the diagonal split between them so that each has distinct diagonal entries).
    Each block-diagonal matrix is four factors, by the identity (proved by multiplying out)

    .. math::
        \begin{pmatrix} X & 0 \\ 0 & Y \end{pmatrix} =
        U(I, -Z Y^{-1})\, L\big(-(I - Y) Z^{-1}, I\big)\, U(C, Z)\,
        L\big((I - Y) Z^{-1} X, I\big), \qquad C = Z Y Z^{-1} X,

    valid whenever some invertible :math:`Z` makes :math:`C` diagonal: :math:`Z = I` for
    :math:`(X, Y) = (P, P^{-1})`, and :math:`Z = V^{-1}` for :math:`(I, N_i)` with
    :math:`N_i = V \Lambda V^{-1}` (a triangular matrix with distinct diagonal entries has real
    eigenvalues, its diagonal, and triangular eigenvectors found by substitution). So
    :math:`T` is :math:`1 + 3 \times 4 + 1 = 14` factors, :math:`L U L U \cdots L U`.

    What it covers: every :math:`T` with :math:`P` invertible and the leading principal
    minors of :math:`P \Sigma` nonzero (with probability one for a Gaussian :math:`T`); a
    :class:`ValueError` says which condition fails otherwise. The paper's construction covers
    *every* invertible :math:`T` with 47 factors: it also starts from an LU decomposition,
    but an entrywise one with a permutation (:math:`T = \Pi L U`), spends 21 factors on the
    permutation and 13 on each triangular factor; the permutation is what removes the
    genericity conditions here. This is not the paper's construction. The numerical error
    grows with the conditioning of :math:`P` and of the eigenvectors :math:`V`.

    Args:
        target: an invertible matrix of shape ``(2d, 2d)``.

    Returns:
        A :class:`LinearCouplings` with 14 factors (float64).

    References:
        Koehler, Mehta & Risteski, "Representational aspects of depth and conditioning in
        normalizing flows", ICML 2021, arXiv:2010.01155 (the upper bound, via LU).

    Example:
        >>> target = random_linear_map(8, seed=0)
        >>> stack = exact_couplings(target)
        >>> stack.num_factors
        14
        >>> bool((stack.matrix() - target).norm() / target.norm() < 1e-10)
        True
    """
    target = _check_target(target).to(torch.float64)
    d = target.shape[0] // 2
    p, q, r, s = target[:d, :d], target[:d, d:], target[d:, :d], target[d:, d:]
    if torch.linalg.matrix_rank(p) < d:
        raise ValueError(
            "the exact construction needs the leading block P of the target to be invertible "
            "(a permutation first would fix it, as in the paper)"
        )
    eye = torch.eye(d, dtype=target.dtype, device=target.device)
    ones = torch.ones(d, dtype=target.dtype, device=target.device)
    p_inv = torch.linalg.inv(p)
    n = p @ (s - r @ p_inv @ q)
    unit_lower, upper = _lu_no_pivoting(n)
    delta = _split_diagonal(upper.diagonal())
    n1, n2 = unit_lower * delta, upper / delta[:, None]
    v1 = _triangular_eigenvectors(n1, lower=True)
    v2 = _triangular_eigenvectors(n2, lower=False)
    factors = [(True, r @ p_inv, ones)]
    factors += _diag_pair(p, p_inv, eye)
    factors += _diag_pair(eye, n1, torch.linalg.inv(v1))
    factors += _diag_pair(eye, n2, torch.linalg.inv(v2))
    factors.append((False, p_inv @ q, ones))
    assert [lower for lower, _, _ in factors] == [j % 2 == 0 for j in range(len(factors))]
    return LinearCouplings.from_factors(
        torch.stack([shear for _, shear, _ in factors]),
        torch.stack([scale for _, _, scale in factors]),
    )
