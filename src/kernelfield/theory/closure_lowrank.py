"""The Gaussian closure's symmetry-broken start in low-rank form (THEORY.md §3; the closure's
counterpart of the exact solver's low-rank stage, :func:`.solver._low_rank_stage`).

Above the transition the RNN's broken branch is a dense ``(n, n)`` problem whose innovation
``D = Sigma - K(G_φ(Sigma))`` is dominated by one direction that grows along time (erf RNN,
T = P = 8, target 1: whitened eigenvalues 2.9, then 0.05 and below, a few negative). Newton's
method from the convex-mix start (:func:`.starts.broken_start`) spends most of its steps growing
that direction (72 dense Newton steps at n = 256). Here the start is built as ``D = V Vᵀ``
from the symmetric branch (:func:`.starts.joined_factors` of its equal-time innovation blocks)
and ``F(V Vᵀ) = -S_G`` is first minimised over ``V`` by L-BFGS (SciPy), in coordinates whitened
by the start's ``K`` (``V = L_K U``). ``D = V Vᵀ`` is positive semidefinite, so
``Sigma = K + D`` and every kernel on the way are valid (no positive-definiteness constraint).
Unlike the linear case the closure's innovation is not of low rank (``φ``'s curvature adds a
full-rank part, ``Ct ∘ ∂G_φ/∂Sigma``), so the stage stops once L-BFGS stalls and Newton's method
(:func:`.closure.maximise_closure`) finishes on the full ``D`` (4 steps instead of 72 at n = 256).
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize

from ..nonlinearities import Nonlinearity
from .closure_maps import closure_action, dense_preactivation, gaussian_map, on_support
from .kernels import Problem, invariant_components
from .starts import broken_start, joined_factors

__all__ = ["LowRankStart", "closure_broken_factor", "low_rank_stage"]


class LowRankStart(NamedTuple):
    """A closure start ``D = V Vᵀ`` (``V`` ``(n, k)``) on the free blocks ``mask`` ``(n, n)``."""

    mask: np.ndarray
    V: np.ndarray


def closure_broken_factor(prob: Problem, Sigma_sym: np.ndarray, innovation_blocks: Callable[[], np.ndarray],
                          rank: int = 2) -> LowRankStart | None:
    """The low-rank broken start from the symmetric closure solution ``Sigma_sym`` ``(n, n)``
    with the equal-time blocks ``innovation_blocks()`` ``(T, P, P)`` of its innovation: the
    ``rank`` leading factors joined across time (:func:`.starts.joined_factors`) within each
    class of :func:`.starts.broken_start`'s blocks. ``None`` where that start is itself
    time-local (a DNN) or the symmetric solution is not (a sequential task), as for the exact
    solver's :func:`.starts.broken_factor`."""
    T, P = prob.T, prob.P
    labels = invariant_components(prob, broken_start(prob, Sigma_sym))
    if len(np.unique(labels)) == T or len(np.unique(invariant_components(prob, Sigma_sym))) != T:
        return None
    V, _ = joined_factors(innovation_blocks(), labels, min(rank, P))
    index_labels = np.repeat(labels, P)
    return LowRankStart((index_labels[:, None] == index_labels[None, :]).astype(np.float64), V)


def _sigma(data, nl: Nonlinearity, order: int, V):
    """``Sigma`` at ``D = Π(V Vᵀ ∘ mask)Π`` (``data`` a :class:`.closure_maps.DenseProblem`)."""
    return dense_preactivation(data.prob, nl, order, on_support((V @ V.T) * data.mask, data.basis))


def _objective(data, nl: Nonlinearity, order: int, V):
    """``F(V Vᵀ) = -S_G`` (:func:`.closure._objective` on the dense layout)."""
    Sigma = _sigma(data, nl, order, V)
    gamma, energy = closure_action(data.prob, Sigma, gaussian_map(nl, order, Sigma), data.complement)
    return gamma + energy


@partial(jax.jit, static_argnames=("nl", "order"))
def _value_and_gradient(data, V, nl, order):
    return jax.value_and_grad(partial(_objective, data, nl, order))(V)


@partial(jax.jit, static_argnames=("nl", "order"))
def _prior_covariance(data, V, nl, order):
    """``K(G_φ(Sigma))`` at ``D = V Vᵀ`` (plus ``P⊥`` on a support: positive definite)."""
    K = data.prob.K(gaussian_map(nl, order, _sigma(data, nl, order, V)))
    return K if data.complement is None else K + data.complement


def low_rank_stage(data, nl: Nonlinearity, V0: np.ndarray, max_iter: int, order: int) -> tuple[np.ndarray, int]:
    """Minimise ``F(V Vᵀ)`` over ``V`` by L-BFGS-B (SciPy; memory 50) from ``V0`` in the
    coordinates ``U = L⁻¹V``, ``L = chol K`` at the start, at most ``max_iter`` steps, stopped when
    the relative decrease of ``F`` stalls (``ftol`` 1e-13) or the gradient vanishes. ``data``: the
    dense layout (:class:`.closure_maps.DenseProblem`: free blocks and support). Returns the
    innovation ``Π(V Vᵀ ∘ mask)Π`` and the iterations taken."""
    V0 = np.asarray(V0, dtype=np.float64)
    shape = V0.shape
    L = np.linalg.cholesky(np.asarray(_prior_covariance(data, jnp.asarray(V0), nl=nl, order=order)))

    def value_and_gradient(u):
        F, gV = _value_and_gradient(data, jnp.asarray(L @ u.reshape(shape)), nl=nl, order=order)
        F = float(F)
        if not np.isfinite(F):  # rounding far out: reject the trial point
            return np.inf, np.zeros_like(u)
        return F, (L.T @ np.asarray(gV)).ravel()

    result = scipy.optimize.minimize(value_and_gradient, scipy.linalg.solve_triangular(L, V0, lower=True).ravel(),
                                     jac=True, method="L-BFGS-B",
                                     options={"maxcor": 50, "ftol": 1e-13, "gtol": 1e-10, "maxiter": max(max_iter, 1)})
    V = L @ result.x.reshape(shape)
    return on_support((V @ V.T) * data.mask, data.basis), int(result.nit)
