"""Dense linear algebra of the exact solver (numpy/LAPACK) through Cholesky factors: factors that
report failure instead of raising, inverses and log-determinants from them, and the data term
``E = ½ yᵀA⁻¹y`` (:func:`data_fit`). Used by :mod:`.action`, :mod:`.lowrank` and the layouts of
:mod:`.kernels`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg

__all__ = ["cholesky", "cholesky_inverse", "cholesky_logdet", "DataFit", "data_fit", "psd_factors"]


def cholesky(A):
    """Lower Cholesky factor of ``A`` (or of each matrix of a stack); ``None`` if not positive definite."""
    if not np.all(np.isfinite(A)):
        return None
    try:
        return np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return None


def cholesky_inverse(L):
    """``A⁻¹`` from the Cholesky factor ``L`` of ``A`` (LAPACK ``potri``; a stack as ``L⁻ᵀL⁻¹``)."""
    if L.ndim == 2:
        inv, _ = scipy.linalg.lapack.dpotri(L, lower=1)
        return np.tril(inv) + np.tril(inv, -1).T
    Linv = np.linalg.inv(L)
    return np.swapaxes(Linv, -1, -2) @ Linv


def cholesky_logdet(L):
    """``log det A`` (summed over a stack) from the Cholesky factor ``L``."""
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
