"""Posterior predictive of the network output (THEORY.md §4).

mean ``= G_{·S}(G_S + κI)⁻¹ y_S``; variance ``= (1/N)·(G_{··} - G_{·S}(G_S + κI)⁻¹ G_{S·})``
with ``G = σ_v² M_v ∘ C`` over every ``(t, a)``, supervised or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..validation import positive_int
from .kernels import Problem

__all__ = ["Prediction", "predictive"]


@dataclass(frozen=True)
class Prediction:
    """mean, var: ``(P, T)``. ``var`` is the O(1/N) predictive variance at width ``N``; with
    ``N=None`` it is the width-independent coefficient ``N·var``."""

    mean: np.ndarray
    var: np.ndarray
    N: int | None = None


def predictive(prob: Problem, C: np.ndarray, N: int | None = None) -> Prediction:
    """Predictive mean and variance at every ``(a, t)`` from kernel ``C``."""
    N = None if N is None else positive_int("N", N)
    G = prob.Mv * np.asarray(C)
    sup = prob.supervised
    GS = G[np.ix_(sup, sup)] + prob.kappa * np.eye(len(sup))
    cross = G[:, sup]
    mean = cross @ np.linalg.solve(GS, prob.y)
    var = np.diag(G) - np.einsum("ij,ji->i", cross, np.linalg.solve(GS, cross.T))
    var = np.maximum(var, 0.0) / (N or 1)
    to_pt = lambda v: v.reshape(prob.T, prob.P).T  # noqa: E731  time-major -> (P, T)
    return Prediction(mean=to_pt(mean), var=to_pt(var), N=N)
