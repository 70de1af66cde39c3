"""Observables of a kernel (THEORY.md §4): temporal coherence, the order parameter of the
RNN/DNN phase transition.

``rho_ts = ||C_ts||_F / sqrt(||C_tt||_F ||C_ss||_F)`` of the time blocks of the feature kernel.
For odd ``phi`` (linear, erf, tanh) features have zero mean and the kernel is already centred.
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_norms", "coherence_matrix", "mean_coherence", "temporal_coherence"]


def block_norms(A: np.ndarray, T: int, P: int) -> np.ndarray:
    """``(T, T)`` Frobenius norms ``||A_ts||_F`` of the time blocks of an ``(T*P, T*P)`` matrix."""
    return np.sqrt(np.einsum("tasb->ts", np.asarray(A).reshape(T, P, T, P) ** 2))


def coherence_matrix(C: np.ndarray, T: int, P: int) -> np.ndarray:
    """``(T, T)`` matrix of ``rho_ts``; 1 on the diagonal."""
    norms = block_norms(C, T, P)
    d = np.sqrt(np.diag(norms))
    return norms / np.maximum(d[:, None] * d[None, :], 1e-300)


def mean_coherence(C: np.ndarray, T: int, P: int) -> float:
    """Mean of ``rho_ts`` over ``t != s >= 1``; ``nan`` when ``T < 3``."""
    rho = coherence_matrix(C, T, P)
    pairs = [rho[t, s] for t in range(1, T) for s in range(1, T) if t != s]
    return float(np.mean(pairs)) if pairs else float("nan")


def temporal_coherence(result) -> float:
    """:func:`mean_coherence` of a :class:`~kernelfield.Solution` (its ``C``) or
    :class:`~kernelfield.Samples` (its ``C_mean``)."""
    C = result.C if hasattr(result, "C") else result.C_mean
    return mean_coherence(C, result.task.T, result.task.P)
