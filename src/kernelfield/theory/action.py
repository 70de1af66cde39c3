"""The action ``S(C) = -Gamma(C) - E(C)`` and the two stationarity equations (THEORY.md §3),
for linear networks where the prior rate ``Gamma`` is the Wishart large-deviation function.

All functions are pure and jax-traceable; the kernel ``C = R Rᵀ`` is passed through a square
root ``R`` so that ``log det C`` is read off a triangular factor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from .kernels import Problem, shift, shift_adjoint

__all__ = ["action_terms", "action", "backward_field", "forward_kernel", "residuals"]


def _logdet_tri(L):
    return 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diag(L))))


def action_terms(R, MW, Mv, K_in, S_idx, y, kappa, P: int):
    """``(S, Gamma, E)`` for ``C = R Rᵀ`` with ``R`` lower triangular.

    ``Gamma = 1/2 [tr(K⁻¹C) - log det(K⁻¹C) - n]``, ``E = 1/2 yᵀ(G_S + κI)⁻¹y``.
    """
    n = R.shape[0]
    C = R @ R.T
    K = MW * shift(C, P) + K_in
    Lk = jnp.linalg.cholesky(K)
    Z = solve_triangular(Lk, R, lower=True)
    gamma = 0.5 * (jnp.sum(Z**2) - _logdet_tri(R) + _logdet_tri(Lk) - n)
    G = (Mv * C)[S_idx][:, S_idx] + kappa * jnp.eye(S_idx.shape[0])
    Lg = jnp.linalg.cholesky(G)
    a = solve_triangular(Lg, y, lower=True)
    energy = 0.5 * jnp.sum(a**2)
    return -gamma - energy, gamma, energy


def action(prob: Problem, C) -> float:
    """``S(C)``; ``-inf`` where ``C`` or ``K(C)`` is not positive definite."""
    C = jnp.asarray(C)
    R = jnp.linalg.cholesky(0.5 * (C + C.T))
    S, _, _ = action_terms(R, prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.S), prob.y, prob.kappa, prob.P)
    return float(S) if np.isfinite(S) else -np.inf


@jax.jit
def _readout_weights(GS, kappa, y):
    """``A y = (G_S + κI)⁻¹ y``."""
    return jnp.linalg.solve(GS + kappa * jnp.eye(GS.shape[0]), y)


def backward_field(prob: Problem, C):
    """The conjugate kernel from the backward equation:
    ``Ct = g² shiftᵀ(M_W ∘ ½(K⁻¹CK⁻¹ - K⁻¹)) + ½ σ_v² M_v ∘ [(Ay)(Ay)ᵀ on S]``."""
    C = jnp.asarray(C)
    K = prob.K(C)
    Kinv = _spd_inverse(K)
    Ay = _readout_weights(prob.G_S(C), prob.kappa, prob.y)
    data = jnp.zeros_like(C).at[np.ix_(prob.S, prob.S)].set(jnp.outer(Ay, Ay))
    return shift_adjoint(prob.MW * 0.5 * (Kinv @ C @ Kinv - Kinv), prob.P) + 0.5 * prob.Mv * data


def forward_kernel(prob: Problem, C, Ct):
    """The forward equation for linear ``phi``: ``<h hᵀ>_q = (K(C)⁻¹ - 2 Ct)⁻¹``; ``None`` if
    ``K⁻¹ - 2Ct`` is not positive definite (the tilted Gaussian is not normalisable)."""
    prec = _spd_inverse(prob.K(jnp.asarray(C))) - 2.0 * jnp.asarray(Ct)
    prec = 0.5 * (prec + prec.T)
    L = jnp.linalg.cholesky(prec)
    if not bool(jnp.all(jnp.isfinite(L))):
        return None
    return cho_solve((L, True), jnp.eye(prec.shape[0]))


def residuals(prob: Problem, C) -> tuple[float, float, np.ndarray]:
    """Relative residuals of the two stationarity equations at ``C`` and the backward field.

    forward: ``||C - (K⁻¹ - 2Ct)⁻¹||_F / ||C||_F`` with ``Ct`` from the backward equation;
    backward: ``||C (Ct - ½(K⁻¹ - C⁻¹)) C||_F · 2/||C||_F`` (natural-gradient norm of ``S``).
    """
    C = jnp.asarray(C)
    Ct = backward_field(prob, C)
    Ct_implied = 0.5 * (_spd_inverse(prob.K(C)) - _spd_inverse(C))
    norm = float(jnp.linalg.norm(C))
    backward = 2.0 * float(jnp.linalg.norm(C @ (Ct - Ct_implied) @ C)) / norm
    Cf = forward_kernel(prob, C, Ct)
    forward = np.inf if Cf is None else float(jnp.linalg.norm(C - Cf)) / norm
    return forward, backward, np.asarray(Ct)


def _spd_inverse(A):
    A = 0.5 * (A + A.T)
    return cho_solve((jnp.linalg.cholesky(A), True), jnp.eye(A.shape[0]))
