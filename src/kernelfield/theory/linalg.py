"""Dense linear algebra of the exact solver (numpy/LAPACK) through Cholesky factors: factors that
report failure instead of raising, inverses and log-determinants from them, and the data term
``E = ½ yᵀA⁻¹y`` (:func:`data_fit`). Used by :mod:`.action`, :mod:`.lowrank` and the layouts of
:mod:`.kernels`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

__all__ = ["Blocks", "inner", "frobenius", "cholesky", "cholesky_inverse", "cholesky_logdet", "DataFit", "data_fit",
           "psd_factors"]


class Blocks:
    """Matrices of different sizes held together, one per time step (time-local kernels in each
    step's own support coordinates, :class:`.layouts.TimeLocalSupportLayout`): ``+``, ``-``,
    ``*``, ``/``, ``@`` (with another ``Blocks`` or a scalar) and ``swapaxes`` act block by block,
    as they do on an ``(T, m, m)`` stack. Frobenius products and norms: :func:`inner`,
    :func:`frobenius`."""

    __array_ufunc__ = None  # numpy scalars and arrays defer to the operators below

    def __init__(self, blocks):
        self.blocks = tuple(blocks)

    def _apply(self, other, op):
        if isinstance(other, Blocks):
            return Blocks(op(a, b) for a, b in zip(self.blocks, other.blocks))
        return Blocks(op(a, other) for a in self.blocks)

    def __add__(self, other):
        return self._apply(other, lambda a, b: a + b)

    def __sub__(self, other):
        return self._apply(other, lambda a, b: a - b)

    def __rsub__(self, other):
        return self._apply(other, lambda a, b: b - a)

    def __mul__(self, other):
        return self._apply(other, lambda a, b: a * b)

    def __truediv__(self, other):
        return self._apply(other, lambda a, b: a / b)

    def __matmul__(self, other):
        return self._apply(other, lambda a, b: a @ b)

    def __neg__(self):
        return Blocks(-a for a in self.blocks)

    __radd__, __rmul__ = __add__, __mul__

    def swapaxes(self, axis1, axis2):
        """Each block transposed (``np.swapaxes(X, -1, -2)`` calls this)."""
        return Blocks(np.swapaxes(a, axis1, axis2) for a in self.blocks)

    def map(self, fn):
        """``fn`` applied to every block; ``None`` if it returns ``None`` for any."""
        out = [fn(a) for a in self.blocks]
        return None if any(b is None for b in out) else Blocks(out)


def inner(A, B) -> float:
    """Frobenius inner product ``Σ A_ij B_ij`` (over all matrices of a stack or :class:`Blocks`)."""
    if isinstance(A, Blocks):
        return float(sum(np.vdot(a, b) for a, b in zip(A.blocks, B.blocks)))
    return float(np.vdot(A, B))


def frobenius(A) -> float:
    """Frobenius norm (over all matrices of a stack or :class:`Blocks`)."""
    return float(np.sqrt(inner(A, A)))


def cholesky(A):
    """Lower Cholesky factor of ``A`` (or of each matrix of a stack); ``None`` if not positive definite."""
    if isinstance(A, Blocks):
        return A.map(cholesky)
    if not np.all(np.isfinite(A)):
        return None
    try:
        return np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None


def cholesky_inverse(L):
    """``A⁻¹`` from the Cholesky factor ``L`` of ``A`` (LAPACK ``potri``; a stack or
    :class:`Blocks` as ``L⁻ᵀL⁻¹``)."""
    if isinstance(L, Blocks):
        return L.map(_inverse_from_factor)
    if L.ndim == 2:
        inv, _ = scipy.linalg.lapack.dpotri(L, lower=1)
        return np.tril(inv) + np.tril(inv, -1).T
    return _inverse_from_factor(L)


def _inverse_from_factor(L):
    """``L⁻ᵀL⁻¹`` by numpy alone: between numpy's products on stacks and blocks, a LAPACK call
    through scipy would wake scipy's BLAS thread pool against numpy's (4× slower on 2 cores)."""
    Linv = np.linalg.inv(L)
    return np.swapaxes(Linv, -1, -2) @ Linv


def cholesky_logdet(L):
    """``log det A`` (summed over a stack) from the Cholesky factor ``L``."""
    if isinstance(L, Blocks):
        return sum(cholesky_logdet(block) for block in L.blocks)
    return 2.0 * float(np.sum(np.log(np.diagonal(L, axis1=-2, axis2=-1))))


class DataFit(NamedTuple):
    """The data term at ``A = G_S + κI``: ``energy = E = ½ yᵀA⁻¹y``, ``a = A⁻¹y`` and, when asked
    for, ``Ainv = A⁻¹``."""

    energy: float
    a: np.ndarray
    Ainv: np.ndarray | None


def data_fit(A, y, with_inverse: bool = False) -> DataFit | None:
    """``E = ½ yᵀA⁻¹y`` (THEORY.md §3) through the Cholesky factor of ``A`` (an ``(m, m)`` matrix,
    or a stack of blocks with ``with_inverse``); ``a = A⁻¹y`` by triangular solves, or as ``A⁻¹y``
    with the inverse where the caller needs ``A⁻¹`` itself. ``None`` if ``A`` is not positive
    definite. The numpy counterpart of the last term of :func:`.action.action_terms`."""
    L = cholesky(A)
    if L is None:
        return None
    if with_inverse:
        Ainv = cholesky_inverse(L)
        a = Ainv @ y
    else:
        Ainv, a = None, scipy.linalg.cho_solve((L, True), y, check_finite=False)
    return DataFit(0.5 * float(np.vdot(y, a)), a, Ainv)


def psd_factors(M: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Columns ``√λ e`` of a positive semidefinite matrix (eigenpairs with ``λ > rtol·λ_max``):
    ``M = Σ (√λ e)(√λ e)ᵀ``; no columns for an empty ``M``."""
    lam, E = np.linalg.eigh(0.5 * (M + M.T))
    keep = lam > rtol * max(lam[-1], 0.0) if len(lam) else np.zeros(0, dtype=bool)
    return E[:, keep] * np.sqrt(lam[keep])
