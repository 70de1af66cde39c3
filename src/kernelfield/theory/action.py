"""The action ``S(C) = -Gamma(C) - E(C)`` and the two stationarity equations (THEORY.md §3),
for linear networks where the prior rate ``Gamma`` is the Wishart large-deviation function.

:func:`action_terms` is pure and jax-traceable; the kernel ``C = R Rᵀ`` is passed through a
square root ``R`` so that ``log det C`` is read off a triangular factor.

The stationarity equations, the gradient and the Hessian-vector products of ``F = -S`` are in
closed form (numpy, on the layouts of :mod:`.layouts`), written in the causal innovation
``D = C - K(C)``, ``C = (I - 𝒮)⁻¹(K_in + D)``. With ``W = K⁻¹DK⁻¹ = K⁻¹CK⁻¹ - K⁻¹``,
``a = (G_S + κI)⁻¹y`` and the backward field (conjugate kernel)

    Ct = ½ 𝒮ᵀ(W) + ½ M_v ∘ [a aᵀ]_S,

the gradient is

    G = ∂F/∂C = ½(K⁻¹ - C⁻¹) - Ct,        ∂F/∂D = (I - 𝒮)⁻ᵀ G,

so ``G = 0`` is the pair of forward–backward equations ``C = (K⁻¹ - 2Ct)⁻¹``. Along ``dD``
(``dC = (I - 𝒮)⁻¹dD``, ``dK = dC - dD``) the Hessian-vector product is

    dG = ½(C⁻¹dC C⁻¹ - K⁻¹dK K⁻¹) - ½ 𝒮ᵀ(K⁻¹dD K⁻¹ - K⁻¹dK W - W dK K⁻¹) - ½ M_v ∘ [da aᵀ + a daᵀ]_S,
    da = -(G_S + κI)⁻¹ (M_v ∘ dC)_SS a,          ∂²F/∂D² dD = (I - 𝒮)⁻ᵀ dG:

only matrix products once ``K⁻¹`` and ``C⁻¹`` are known.

Low-rank innovations. At the maximum ``D = 2 C Ct K`` (from ``C⁻¹ = K⁻¹ - 2Ct``), and on the
branches met so far ``D`` is positive semidefinite of low rank (e.g. rank 2 for the RNN's
symmetry-broken branch on an endpoint task, against ``n = T·P``). For ``D = V Vᵀ`` with
``V`` of shape ``(n, r)``, ``Y = K⁻¹V`` and ``M = I_r + VᵀY``, Sylvester's and Woodbury's
identities give

    Gamma = ½[tr(VᵀY) - log det M],        K⁻¹ - C⁻¹ = Y M⁻¹ Yᵀ,
    ∂F/∂V = 2 (I - 𝒮)⁻ᵀ(G) V,               G = ½ Y M⁻¹ Yᵀ - ½ 𝒮ᵀ(Y Yᵀ) - ½ M_v ∘ [a aᵀ]_S :

one Cholesky factorisation of ``K`` and ``O(n² r)`` work (:func:`low_rank_objective`), and
``C = K + VVᵀ`` is positive definite for every ``V`` (``K`` is: a Schur product of positive
semidefinite masks with ``shift(C)``, plus the input kernel), so the problem in ``V`` is
unconstrained.

Rank-deficient prior covariances: everything above holds on the support ``R`` of the layout
(:mod:`.kernels`), with ``K⁻¹ -> K⁺``, ``C⁻¹ -> C⁺``, ``log det -> log pdet``, ``n -> r``,
computed through ``C + P⊥`` and ``K + P⊥``; the gradient and Hessian-vector products are those on
``Sym(R)`` (projected by the layout's ``sweep_adjoint``), and the forward equation reads
``C = (K⁺ - 2ΠCtΠ)⁺``: only ``ΠCtΠ`` enters the single-neuron law on ``R``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.scipy.linalg import solve_triangular

from .kernels import Problem, shift, sym
from .layouts import layout
from .linalg import cholesky, cholesky_inverse, cholesky_logdet, data_fit, frobenius, inner

__all__ = ["action_terms", "action", "residuals"]


def _logdet_tri(L):
    return 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diag(L))))


def action_terms(R, MW, Mv, K_in, S_idx, y, kappa, P: int, basis=None):
    """``(S, Gamma, E)`` for ``C = R Rᵀ`` with ``R`` lower triangular.

    ``Gamma = 1/2 [tr(K⁻¹C) - log det(K⁻¹C) - n]``, ``E = 1/2 yᵀ(G_S + κI)⁻¹y``. With an
    orthonormal ``basis`` ``Q`` ``(n, r)`` of the support (:class:`.kernels.Support`), ``R`` is the
    factor of ``QᵀCQ``, ``C = Q R RᵀQᵀ``, and ``Gamma`` is taken on the support: ``K`` becomes
    ``QᵀK(C)Q`` and ``n`` the rank ``r``.
    """
    n = R.shape[0]
    C = R @ R.T if basis is None else basis @ R @ R.T @ basis.T
    K = MW * shift(C, P) + K_in
    if basis is not None:
        K = basis.T @ K @ basis
    Lk = jnp.linalg.cholesky(K)
    Z = solve_triangular(Lk, R, lower=True)
    gamma = 0.5 * (jnp.sum(Z**2) - _logdet_tri(R) + _logdet_tri(Lk) - n)
    G = (Mv * C)[S_idx][:, S_idx] + kappa * jnp.eye(S_idx.shape[0])
    Lg = jnp.linalg.cholesky(G)
    a = solve_triangular(Lg, y, lower=True)
    energy = 0.5 * jnp.sum(a**2)
    return -gamma - energy, gamma, energy


def action(prob: Problem, C) -> float:
    """``S(C)``; ``-inf`` where ``C`` or ``K(C)`` is not positive definite on the support
    (:attr:`.kernels.Problem.support`), or ``C`` reaches outside it (beyond 1e-10 relative)."""
    C = sym(np.asarray(C, dtype=np.float64))
    Q = prob.support.basis
    if Q is not None:
        reduced = Q.T @ C @ Q
        if np.linalg.norm(C - Q @ reduced @ Q.T) > 1e-10 * np.linalg.norm(C):
            return -np.inf
        C = reduced
    R = jnp.linalg.cholesky(jnp.asarray(C))
    S, _, _ = action_terms(R, prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.supervised), prob.y, prob.kappa, prob.P,
                           basis=None if Q is None else jnp.asarray(Q))
    return float(S) if np.isfinite(S) else -np.inf


@dataclass
class Point:
    """An innovation ``D`` in the layout ``lay`` where ``C`` and ``K`` are positive definite (on
    the support), with ``Lc`` the Cholesky factor of ``C + P⊥``, ``Kinv = (K + P⊥)⁻¹ = K⁺ + P⊥``,
    the layout's data fit at ``G_S + κI`` (``fit``, from ``lay.readout_fit``), ``a = (G_S + κI)⁻¹y``
    and the two parts of ``F = -S``."""

    D: np.ndarray
    C: np.ndarray
    K: np.ndarray
    Lc: np.ndarray
    Kinv: np.ndarray
    fit: object
    a: np.ndarray
    gamma: float
    energy: float
    lay: object

    @property
    def F(self) -> float:
        return self.gamma + self.energy


def evaluate(lay, D) -> Point | None:
    """``F(D) = Gamma + E``, ``Gamma = ½[tr(K⁻¹C) - log det C + log det K - n]``,
    ``E = ½ yᵀ(G_S + κI)⁻¹y``; ``None`` where ``C`` or ``K`` is not positive definite. On a
    support of rank ``r < n`` (:mod:`.kernels`): pseudo-inverse and pseudo-determinants through
    ``C + P⊥`` and ``K + P⊥``, and ``n -> r``."""
    D = sym(D)  # rounding in matrix products must not leave an antisymmetric part
    C = lay.sweep(lay.K_in + D)
    Lc = cholesky(lay.regularised(C))
    if Lc is None:
        return None
    K = C - D
    Lk = cholesky(lay.regularised(K))
    if Lk is None:
        return None
    Kinv = cholesky_inverse(Lk)
    fit = lay.readout_fit(C)
    if fit is None:
        return None
    gamma = 0.5 * (inner(Kinv, C) - cholesky_logdet(Lc) + cholesky_logdet(Lk) - lay.rank)
    return Point(D, C, K, Lc, Kinv, fit, fit.a, gamma, fit.energy, lay)


@dataclass
class Derivatives:
    """The gradient ``G = ∂F/∂C``, the backward field ``Ct``, ``C⁻¹`` and ``W = K⁻¹DK⁻¹``."""

    G: np.ndarray
    Ct: np.ndarray
    Cinv: np.ndarray
    W: np.ndarray


def derivatives(lay, x: Point) -> Derivatives:
    """``Ct = ½ 𝒮ᵀ(K⁻¹DK⁻¹) + ½ M_v ∘ [a aᵀ]_S`` and ``G = ½(K⁻¹ - C⁻¹) - Ct``."""
    Cinv = cholesky_inverse(x.Lc)
    W = x.Kinv @ x.D @ x.Kinv
    Ct = sym(0.5 * lay.shift_adjoint(W) + 0.5 * lay.readout_field(x.a, x.a))
    return Derivatives(sym(0.5 * (x.Kinv - Cinv) - Ct), Ct, Cinv, W)


def hessian_vector(lay, x: Point, d: Derivatives, dD):
    """``∂²F/∂D² · dD`` (module docstring)."""
    dC = lay.sweep(dD)
    KdK = x.Kinv @ (dC - dD)
    KdKW = KdK @ d.W
    dW = x.Kinv @ dD @ x.Kinv - KdKW - np.swapaxes(KdKW, -1, -2)
    da = lay.readout_response(x.fit, dC, x.a)
    dJ = lay.readout_field(da, x.a)
    dG = 0.5 * (d.Cinv @ dC @ d.Cinv - KdK @ x.Kinv) - 0.5 * lay.shift_adjoint(dW) - 0.5 * (dJ + np.swapaxes(dJ, -1, -2))
    return lay.sweep_adjoint(sym(dG))


def low_rank_objective(lay, C_in, V, support):
    """``F = Gamma + E`` at the innovation ``D = V Vᵀ`` (module docstring), its gradient
    ``∂F/∂V`` (zero off ``support``, a 0/1 mask of ``V``'s shape) and ``∂F/∂D``; ``C_in`` is
    ``(I - 𝒮)⁻¹K_in``. ``None`` where ``K`` is numerically not positive definite."""
    D = V @ V.T
    C = C_in + lay.sweep(D)
    Lk = cholesky(lay.regularised(C - D))
    if Lk is None:
        return None
    Y = scipy.linalg.cho_solve((Lk, True), V, check_finite=False)
    Lm = cholesky(np.eye(V.shape[1]) + V.T @ Y)
    fit = data_fit(lay.Mv_S * lay.select(C) + lay.kappa * np.eye(lay.y.shape[-2]), lay.y)
    if Lm is None or fit is None:
        return None
    a = fit.a
    F = 0.5 * (float(np.vdot(V, Y)) - cholesky_logdet(Lm)) + fit.energy
    YM = scipy.linalg.cho_solve((Lm, True), Y.T, check_finite=False).T  # Y M⁻¹
    G = 0.5 * (YM @ Y.T) - 0.5 * lay.shift_adjoint(Y @ Y.T) - 0.5 * lay.embed(lay.Mv_S * (a @ a.T))
    gD = lay.sweep_adjoint(sym(G))
    return F, 2.0 * (gD @ V) * support, gD, C


def backward_residual(x: Point, d: Derivatives) -> float:
    """``2 ||C G C|| / ||C||``: the natural-gradient norm of ``S``."""
    return 2.0 * frobenius(x.C @ d.G @ x.C) / frobenius(x.C)


def forward_residual(x: Point, d: Derivatives) -> float:
    """``||C - (K⁻¹ - 2Ct)⁻¹|| / ||C||``; ``inf`` if ``K⁻¹ - 2Ct`` is not positive definite. On a
    support ``R``: ``(K⁺ - 2ΠCtΠ)⁺``, from ``(K⁺ + P⊥ - 2ΠCtΠ)⁻¹`` and ``C + P⊥``."""
    L = cholesky(x.Kinv - 2.0 * x.lay.project(d.Ct))
    if L is None:
        return np.inf
    return frobenius(x.lay.regularised(x.C) - cholesky_inverse(L)) / frobenius(x.C)


def _stationarity(prob: Problem, C):
    """Layout, point and derivatives at the kernel ``C`` (``None`` for the last two where ``C``
    or ``K(C)`` is not positive definite)."""
    lay = layout(prob, C)
    Cl = lay.restrict(C)
    x = evaluate(lay, Cl - lay.K_in - lay.shift(Cl))
    return lay, x, (None if x is None else derivatives(lay, x))


def residuals(prob: Problem, C) -> tuple[float, float, np.ndarray]:
    """Relative residuals of the two stationarity equations at ``C`` and the backward field (on
    the support of ``prob``: ``ΠCtΠ``, the part that enters the single-neuron law).

    forward: ``||C - (K⁻¹ - 2Ct)⁻¹||_F / ||C||_F`` with ``Ct`` from the backward equation;
    backward: ``||C (Ct - ½(K⁻¹ - C⁻¹)) C||_F · 2/||C||_F`` (natural-gradient norm of ``S``).
    Both are ``inf`` (and ``Ct`` NaN) where ``C`` or ``K(C)`` is not positive definite.
    Computed in the layout of ``C`` (:func:`.layouts.layout`: block by block when ``C`` is
    time-block diagonal).
    """
    lay, x, d = _stationarity(prob, C)
    if x is None:
        return np.inf, np.inf, np.full((prob.n, prob.n), np.nan)
    return forward_residual(x, d), backward_residual(x, d), lay.full(lay.project(d.Ct))
