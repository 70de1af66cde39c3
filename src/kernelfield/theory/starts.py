"""Symmetry-broken starts shared by the exact solver and the Gaussian closure.

A start is either a kernel (:func:`broken_start`: a convex mix of the symmetric solution with a
kernel fully correlated across time) or, where the symmetric solution is time-local and the
broken start is not (an endpoint task), a low-rank innovation ``D = V Vᵀ`` whose columns join the
leading eigenfactors of the symmetric solution's equal-time innovation blocks across time
(:func:`joined_factors`; :func:`broken_factor` for the exact solver,
:func:`.closure_lowrank.closure_broken_factor` for the closure).
"""

from __future__ import annotations

import numpy as np

from .kernels import Problem, invariant_components
from .layouts import DenseLayout, TimeLocalLayout, layout

__all__ = ["broken_start", "broken_factor", "joined_factors"]


def broken_start(prob: Problem, C_sym: np.ndarray, mix: float = 0.5) -> np.ndarray:
    """A symmetry-broken but positive definite initial kernel: the convex mix
    ``(1 - mix)·C_sym + mix·(J_T ⊗ Ā)`` with ``Ā`` the mean equal-time block of ``C_sym`` and
    ``J_T`` the all-ones ``T × T`` matrix (a kernel fully correlated across time), restricted to
    the coupled blocks (a Schur product with a positive semidefinite 0/1 mask)."""
    T, P = prob.T, prob.P
    blocks = C_sym.reshape(T, P, T, P)
    mean_block = np.mean([blocks[t, :, t, :] for t in range(T)], axis=0)
    correlated = np.kron(np.ones((T, T)), mean_block) * prob.block_mask()
    return (1.0 - mix) * C_sym + mix * correlated


def joined_factors(blocks: np.ndarray, labels: np.ndarray, rank: int | None = None):
    """Columns ``v^k = (d_0^k, ..., d_{T-1}^k)`` joining, within each class ``labels`` (one label
    per time step), the ``rank`` leading eigenfactors ``d_t^k`` of the equal-time innovation
    blocks ``blocks`` ``(T, P, P)`` (positive part; signs aligned along time; by default one more
    than the largest number of eigenvalues of a block above 1e-3 of its largest). ``V Vᵀ`` has the
    equal-time blocks ``d_t dₜᵀ`` of the blocks' leading part and cross-time blocks that correlate
    all steps of a class. Returns ``V`` ``(T·P, k)`` and the class of each column."""
    T, P = blocks.shape[0], blocks.shape[1]
    eigen = [np.linalg.eigh(0.5 * (B + B.T)) for B in blocks]
    if rank is None:
        rank = min(P, 1 + max(int(np.sum(w > 1e-3 * max(w[-1], 1e-300))) for w, _ in eigen))
    columns, classes = [], []
    for label in np.unique(labels):
        steps = [t for t in range(T) if labels[t] == label]
        for k in range(1, rank + 1):
            column, previous = np.zeros((T, P)), None
            for t in steps:
                w, U = eigen[t]
                d = U[:, -k] * np.sqrt(max(w[-k], 0.0))
                if previous is not None and d @ previous < 0:
                    d = -d
                column[t] = d
                previous = d
            columns.append(column.ravel())
            classes.append(label)
    return np.array(columns).reshape(-1, T * P).T, np.array(classes, dtype=int)


def broken_factor(prob: Problem, C_sym: np.ndarray, rank: int | None = None):
    """A symmetry-broken start for the exact solver in innovation form: :func:`joined_factors` of
    the equal-time blocks of the innovation ``D_sym = C_sym - K(C_sym)``, within each class of
    the dense layout. ``C = K + V Vᵀ`` is positive definite. Returns the layout, ``V`` and the
    class of each column. Used where the broken start leaves a time-local symmetric solution (an
    endpoint task); ``None`` otherwise (a time-local broken start, or a symmetric solution that
    is itself dense, as on sequential tasks, where the broken start usually returns to it and
    plain Newton from :func:`broken_start` is faster)."""
    T, P = prob.T, prob.P
    labels = invariant_components(prob, broken_start(prob, C_sym))
    if len(np.unique(labels)) == T or not isinstance(layout(prob, C_sym), TimeLocalLayout):
        return None
    lay = DenseLayout(prob, labels)  # the factored stage works on (n, n) kernels, also on a support
    C = lay.restrict(C_sym)
    blocks = (C - lay.K_in - lay.shift(C)).reshape(T, P, T, P)
    V, classes = joined_factors(blocks[np.arange(T), :, np.arange(T), :], lay.labels[::P], rank)
    return lay, lay.project_columns(V), classes
