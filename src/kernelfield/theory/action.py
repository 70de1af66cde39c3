"""The action ``S(C) = -Gamma(C) - E(C)`` and the two stationarity equations (THEORY.md §3),
for linear networks where the prior rate ``Gamma`` is the Wishart large-deviation function.

All functions are pure and jax-traceable; the kernel ``C = R Rᵀ`` is passed through a square
root ``R`` so that ``log det C`` is read off a triangular factor.
"""

from __future__ import annotations

from functools import partial

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


def _backward_field(C, Kinv, MW, Mv, S_idx, y, kappa, P: int):
    Ay = jnp.linalg.solve((Mv * C)[S_idx][:, S_idx] + kappa * jnp.eye(S_idx.shape[0]), y)
    data = jnp.zeros_like(C).at[S_idx[:, None], S_idx[None, :]].set(jnp.outer(Ay, Ay))
    return shift_adjoint(MW * 0.5 * (Kinv @ C @ Kinv - Kinv), P) + 0.5 * Mv * data


@partial(jax.jit, static_argnames=("P",))
def _stationarity(C, MW, Mv, K_in, S_idx, y, kappa, P: int):
    """Backward field, forward kernel ``(K⁻¹ - 2Ct)⁻¹`` (NaN where not positive definite) and
    the two relative residuals."""
    Kinv = _spd_inverse(MW * shift(C, P) + K_in)
    Ct = _backward_field(C, Kinv, MW, Mv, S_idx, y, kappa, P)
    Ct_implied = 0.5 * (Kinv - _spd_inverse(C))
    norm = jnp.linalg.norm(C)
    backward = 2.0 * jnp.linalg.norm(C @ (Ct - Ct_implied) @ C) / norm
    C_forward = _spd_inverse(Kinv - 2.0 * Ct)
    forward = jnp.where(jnp.all(jnp.isfinite(C_forward)), jnp.linalg.norm(C - C_forward) / norm, jnp.inf)
    return Ct, C_forward, forward, backward


def _arrays(prob: Problem):
    return prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.S), prob.y, prob.kappa


def backward_field(prob: Problem, C):
    """The conjugate kernel from the backward equation:
    ``Ct = g² shiftᵀ(M_W ∘ ½(K⁻¹CK⁻¹ - K⁻¹)) + ½ σ_v² M_v ∘ [(Ay)(Ay)ᵀ on S]``."""
    return _stationarity(jnp.asarray(C), *_arrays(prob), P=prob.P)[0]


def forward_kernel(prob: Problem, C):
    """The forward equation for linear ``phi``: ``<h hᵀ>_q = (K(C)⁻¹ - 2 Ct)⁻¹`` with ``Ct`` from
    the backward equation; ``None`` if ``K⁻¹ - 2Ct`` is not positive definite (the tilted
    Gaussian is not normalisable)."""
    C_forward = _stationarity(jnp.asarray(C), *_arrays(prob), P=prob.P)[1]
    return C_forward if bool(jnp.all(jnp.isfinite(C_forward))) else None


def residuals(prob: Problem, C) -> tuple[float, float, np.ndarray]:
    """Relative residuals of the two stationarity equations at ``C`` and the backward field.

    forward: ``||C - (K⁻¹ - 2Ct)⁻¹||_F / ||C||_F`` with ``Ct`` from the backward equation;
    backward: ``||C (Ct - ½(K⁻¹ - C⁻¹)) C||_F · 2/||C||_F`` (natural-gradient norm of ``S``).
    """
    Ct, _, forward, backward = _stationarity(jnp.asarray(C), *_arrays(prob), P=prob.P)
    return float(forward), float(backward), np.asarray(Ct)


def _spd_inverse(A):
    A = 0.5 * (A + A.T)
    return cho_solve((jnp.linalg.cholesky(A), True), jnp.eye(A.shape[0]))
