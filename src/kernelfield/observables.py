"""Observables of a kernel (THEORY.md §4): temporal coherence, the order parameter of the
RNN/DNN phase transition.

``rho_ts = ||C_ts||_F / sqrt(||C_tt||_F ||C_ss||_F)`` of the time blocks of the kernel of the
*centred* features. For odd ``phi`` (linear, erf, tanh) features have zero mean and ``C`` is
already centred (theory solutions); for sampled networks the kernel of the features minus their
mean over neurons (``Samples.C_centred``) is used, so that ReLU's mean activity does not count as
correlation across time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["block_norms", "coherence_matrix", "mean_coherence", "lag_coherence", "temporal_coherence",
           "coherence_by_lag"]


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


def lag_coherence(C: np.ndarray, T: int, P: int) -> np.ndarray:
    """``(T-2,)`` mean of ``rho_ts`` over ``t, s >= 1`` with ``|t - s| = lag`` for ``lag = 1 .. T-2``."""
    rho = coherence_matrix(C, T, P)
    return np.array([np.mean(np.diagonal(rho[1:, 1:], offset=lag)) for lag in range(1, T - 1)])


def temporal_coherence(result) -> float:
    """:func:`mean_coherence` of the centred kernel of a :class:`~kernelfield.Solution` or
    :class:`~kernelfield.Samples`."""
    return mean_coherence(result.C_centred, result.task.T, result.task.P)


def coherence_by_lag(result) -> np.ndarray:
    """:func:`lag_coherence` of a :class:`~kernelfield.Solution` or :class:`~kernelfield.Samples`:
    entry ``lag - 1`` is the mean coherence between steps ``lag`` apart (``t, s >= 1``)."""
    return lag_coherence(result.C_centred, result.task.T, result.task.P)
