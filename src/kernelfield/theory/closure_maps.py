"""The maps of the Gaussian closure (:mod:`.closure`, THEORY.md §3) in jax: the Gaussian map
``G_φ``, the causal sweep ``D ↦ Sigma(D)`` with ``Sigma = K(G_φ(Sigma)) + D`` and the action, in
two layouts (as the exact solver's, :mod:`.layouts`):

* dense: ``(n, n)`` matrices. ``G_φ`` is entrywise given the diagonal (entry ``(i, j)`` needs
  ``Sigma_ii``, ``Sigma_jj``, ``Sigma_ij``) and block ``(t, s)`` of ``K`` needs ``C`` at
  ``(t-1, s-1)``, so the sweep builds ``Sigma`` one block row ``Sigma_{t, s<=t}`` at a time from
  the row before and the variances known so far: ``G_φ`` is evaluated on ``P × n`` entries a
  step, ``n²`` in all.
* time-local: ``(T, P, P)`` stacks of the equal-time blocks, for kernels whose free blocks are
  the equal-time ones (a DNN; an RNN's time-symmetric branch):
  ``Sigma_t = w_t G_φ(Sigma_{t-1}) + K_in,t + D_t`` and ``S_G`` a sum over steps, ``O(T P³)``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ..gaussian import gauss_hermite
from ..nonlinearities import Nonlinearity
from .kernels import Problem, Support
from .layouts import TimeLocalLayout

__all__ = ["gaussian_map", "dense_preactivation", "closure_action", "spd_inverse", "kl_gradient", "DenseProblem", "on_support", "LocalProblem", "local_problem",
           "local_preactivation", "local_prior_covariance", "local_action"]


@lru_cache(maxsize=None)
def _closed_form_diagonal(nl: Nonlinearity) -> bool:
    """Whether ``phi``'s closed form is differentiable at perfect correlation (erf, linear; not
    ReLU's arc-cosine kernel, whose square root has an infinite derivative there)."""
    if nl.expect_phiphi is None:
        return False
    with jax.ensure_compile_time_eval():  # decided while tracing: concrete values
        v = jnp.ones(())
        tangent = jax.jvp(lambda x: nl.expect_phiphi(x, x, x), (v,), (v,))[1]
        return bool(np.isfinite(np.asarray(tangent)))


def _second_moment(fn, d, order: int):
    """``E[φ(h)²]``, ``h ~ N(0, d)``, by 1-D Gauss–Hermite quadrature (exact for ReLU and linear)."""
    x, w = gauss_hermite(order)
    return fn(jnp.sqrt(jnp.maximum(d, 0.0))[:, None] * x) ** 2 @ w


def _diagonal_map(nl: Nonlinearity, order: int, d):
    """``E[φ(h)²]``, ``h ~ N(0, d)``: the closed form where it is differentiable there, 1-D quadrature otherwise."""
    return nl.expect_phiphi(d, d, d) if _closed_form_diagonal(nl) else _second_moment(nl.fn, d, order)


def _pair_quadrature(fn, d_row, d_col, off, order: int):
    """``E[φ(h_i)φ(h_j)]`` by 2-D Gauss–Hermite quadrature (as
    :func:`kernelfield.gaussian.quadrature_2d`), the covariance of each pair being
    ``[[d_row_i, off_ij], [off_ij, d_col_j]]``; the scan over nodes is rematerialised in the gradient."""
    x, w = (jnp.asarray(a) for a in gauss_hermite(order))
    L11 = jnp.sqrt(jnp.maximum(d_row, 0.0))[:, None]
    L21 = off / L11
    L22 = jnp.sqrt(jnp.maximum(d_col[None, :] - L21**2, 0.0))

    @jax.checkpoint
    def outer(acc, xw):
        xk, wk = xw
        h2 = (L21 * xk)[..., None] + L22[..., None] * x
        return acc + wk * fn(L11 * xk) * (fn(h2) @ w), None

    return jax.lax.scan(outer, jnp.zeros_like(off), (x, w))[0]


def _pair_map(nl: Nonlinearity, order: int, d_row, d_col, off):
    """``E[φ(h_i)φ(h_j)]`` for the pairs of variances ``d_row_i``, ``d_col_j`` and covariance ``off_ij``."""
    if nl.expect_phiphi is not None:
        return nl.expect_phiphi(d_row[:, None], d_col[None, :], off)
    return _pair_quadrature(nl.fn, d_row, d_col, off, order)


def gaussian_map(nl: Nonlinearity, order: int, Sigma):
    """``G_φ(Sigma) = <φφᵀ>_{N(0, Sigma)}`` with derivatives finite on the diagonal: off the
    diagonal the closed form or 2-D quadrature of each pair (evaluated at zero correlation on
    the diagonal, where it is discarded), on it :func:`_diagonal_map`."""
    d = jnp.diagonal(Sigma)
    eye = jnp.eye(Sigma.shape[0])
    E = _pair_map(nl, order, d, d, Sigma * (1.0 - eye))
    E = E * (1.0 - eye) + jnp.diag(_diagonal_map(nl, order, d))
    return 0.5 * (E + E.T)


def dense_preactivation(prob: Problem, nl: Nonlinearity, order: int, D):
    """``Sigma(D)`` (``(n, n)``; ``D`` symmetric), one causal sweep over block rows (module
    docstring): ``Sigma_ts = g²[W_t ≡ W_s] G_φ(Sigma)_{t-1,s-1} + (K_in + D)_ts`` for ``s <= t``,
    mirrored. Entries not yet known enter ``G_φ`` as zero covariance and unit variance (valid,
    with finite derivatives) and are then discarded."""
    T, P, n = prob.T, prob.P, prob.n
    time_of = np.arange(n) // P
    own = np.arange(P)[:, None] == (np.arange(n) % P)[None, :]  # column (s, a) of row a
    base = (prob.K_in + D).reshape(T, P, n)
    first = jnp.where(time_of < 1, base[0], 0.0)
    variances = jnp.zeros(n).at[:P].set(jnp.diagonal(first[:, :P]))

    def step(carry, inputs):
        previous, variances = carry  # block row t-1 of Sigma and the variances of steps < t
        t, row_base, weights = inputs
        known = time_of <= t - 1
        diagonal = own & (time_of == t - 1)
        v_row = jax.lax.dynamic_slice(variances, ((t - 1) * P,), (P,))
        off = jnp.where(known & ~diagonal, previous, 0.0)
        C = _pair_map(nl, order, v_row, jnp.where(known, variances, 1.0), off)
        C = jnp.where(diagonal, _diagonal_map(nl, order, v_row)[:, None], C)
        C = jnp.where(known, C, 0.0)
        row = jnp.where(time_of <= t, row_base + weights * jnp.pad(C[:, : n - P], ((0, 0), (P, 0))), 0.0)
        own_block = jax.lax.dynamic_slice(row, (0, t * P), (P, P))
        return (row, jax.lax.dynamic_update_slice(variances, jnp.diagonal(own_block), (t * P,))), row

    inputs = (jnp.arange(1, T), base[1:], prob.MW.reshape(T, P, n)[1:])
    _, rows = jax.lax.scan(step, (first, variances), inputs)
    lower = jnp.concatenate([first[None], rows]).reshape(n, n)  # blocks (t, s <= t)
    return lower + lower.T - jnp.where(time_of[:, None] == time_of[None, :], lower, 0.0)


class DenseProblem(NamedTuple):
    """The problem in the dense layout: the free blocks ``mask`` ``(n, n)`` of the innovation and,
    where the prior covariance is singular, an orthonormal basis ``(n, r)`` of the support and the
    projector off it (``None`` if regular). A jax pytree."""

    prob: Problem
    mask: np.ndarray | float
    basis: np.ndarray | None = None
    complement: np.ndarray | None = None


def on_support(X, basis):
    """``Π X Π = Q(QᵀXQ)Qᵀ`` for an orthonormal basis ``Q`` ``(n, r)`` of the support (``X`` if ``None``)."""
    return X if basis is None else basis @ (basis.T @ X @ basis) @ basis.T


class LocalProblem(NamedTuple):
    """The problem in the time-local layout (:class:`.layouts.TimeLocalLayout`): ``w_t = g²[W_t ≡ W_t]``
    ``(T,)``, ``K_in`` ``(T, P, P)``, the readout weights ``Mv_S`` ``(T, P, P)`` and targets ``y``
    ``(T, P, 1)`` (zero on unsupervised patterns), ``kappa``, and where the prior covariance is
    singular the projectors onto the support per step and off it (``(T, P, P)`` each; ``None``
    if it is regular). A jax pytree."""

    w: np.ndarray
    K_in: np.ndarray
    Mv_S: np.ndarray
    y: np.ndarray
    kappa: float
    projector: np.ndarray | None = None
    complement: np.ndarray | None = None


def local_problem(prob: Problem, support: Support | None = None) -> LocalProblem:
    """``prob`` in the time-local layout, on ``support`` (a time-local :class:`.kernels.Support`;
    ``None``: regular)."""
    lay = TimeLocalLayout(prob)
    if support is None or support.full:
        return LocalProblem(lay.w, lay.K_in, lay.Mv_S, lay.y, lay.kappa)
    bases, complements = support.time_local
    return LocalProblem(lay.w, lay.K_in, lay.Mv_S, lay.y, lay.kappa, bases @ np.swapaxes(bases, -1, -2), complements)


def local_prior_covariance(lp: LocalProblem, C):
    """``K_t = w_t C_{t-1} + K_in,t`` (``K_0 = K_in,0``) for a ``(T, P, P)`` stack ``C``."""
    return lp.K_in + jnp.pad(lp.w[1:, None, None] * C[:-1], ((1, 0), (0, 0), (0, 0)))


def local_preactivation(lp: LocalProblem, nl: Nonlinearity, order: int, D):
    """``Sigma_t = w_t G_φ(Sigma_{t-1}) + K_in,t + D_t`` for a ``(T, P, P)`` stack ``D``."""

    def step(previous, inputs):
        w, K_in, D_t = inputs
        Sigma = w * gaussian_map(nl, order, previous) + K_in + D_t
        return Sigma, Sigma

    first = lp.K_in[0] + D[0]
    _, rest = jax.lax.scan(step, first, (lp.w[1:], lp.K_in[1:], D[1:]))
    return jnp.concatenate([first[None], rest])


@jax.custom_jvp
def spd_inverse(A):
    """``A⁻¹`` of a symmetric positive definite ``A`` by Cholesky (NaN where it fails), with the
    closed-form derivative ``-A⁻¹ dA A⁻¹``."""
    return cho_solve((jnp.linalg.cholesky(A), True), jnp.eye(A.shape[-1]))


@spd_inverse.defjvp
def _spd_inverse_jvp(primals, tangents):
    (A,), (dA,) = primals, tangents
    inverse = spd_inverse(A)
    return inverse, -inverse @ dA @ inverse


def _logdet(L):
    return 2.0 * jnp.sum(jnp.log(jnp.diag(L)))


def _whitened(K, D):
    """``L⁻¹DL⁻ᵀ`` (``K = LLᵀ``, by triangular solves) and ``L``."""
    L = jnp.linalg.cholesky(K)
    W = solve_triangular(L, solve_triangular(L, D, lower=True).T, lower=True)
    return 0.5 * (W + W.T), L


def _unwhitened(L, M):
    """``L⁻ᵀML⁻¹`` (by triangular solves), symmetrised."""
    X = solve_triangular(L, solve_triangular(L, M, lower=True, trans="T").T, lower=True, trans="T")
    return 0.5 * (X + X.T)


@jax.custom_jvp
def _kl_gradients(K, D):
    """``K⁻¹DSigma⁻¹`` (``= K⁻¹ - Sigma⁻¹``) and ``K⁻¹DK⁻¹DSigma⁻¹`` at ``Sigma = K + D``, computed in
    the whitened innovation ``W = L⁻¹DL⁻ᵀ`` as ``L⁻ᵀW(I + W)⁻¹L⁻¹`` and ``L⁻ᵀW²(I + W)⁻¹L⁻¹``:
    where ``K`` is ill-conditioned these keep the relative accuracy that the difference of the
    inverses, or their products with ``D``, lose (the entries of ``K⁻¹`` reach ``1/λ_min(K)``).
    Derivatives whitened too (:func:`_kl_gradients_jvp`)."""
    W, L = _whitened(K, D)
    I = jnp.eye(W.shape[0])
    WB = jnp.linalg.solve(I + W, W)  # W(I + W)⁻¹ = (I + W)⁻¹W
    return _unwhitened(L, WB), _unwhitened(L, W @ WB)


@_kl_gradients.defjvp
def _kl_gradients_jvp(primals, tangents):
    """Whitened like the values: with ``B = (I + W)⁻¹``, ``dK̃ = L⁻¹dKL⁻ᵀ``, ``dD̃ = L⁻¹dDL⁻ᵀ``,
    ``dg = L⁻ᵀ[B dD̃ B - WB dK̃ B - dK̃ WB]L⁻¹`` (``= Sigma⁻¹dSigma Sigma⁻¹ - K⁻¹dK K⁻¹``) and
    ``dh = L⁻ᵀ[dD̃ WB - dK̃ W²B + W X_g]L⁻¹`` (``X_g`` the bracket of ``dg``), by products with
    ``L⁻¹`` (relative error ``cond(K)^½ ε``). Products with ``K⁻¹`` and ``Sigma⁻¹`` (relative error
    ``cond(K) ε``) made the Hessian-vector products of the erf RNN at P = 256 (cond ~1e12) miss
    the curvature of ``F`` along Newton steps by up to a factor 2."""
    (K, D), (dK, dD) = primals, tangents
    g, h = _kl_gradients(K, D)
    W, L = _whitened(K, D)
    I = jnp.eye(W.shape[0])
    L_inverse = solve_triangular(L, I, lower=True)
    B = jnp.linalg.solve(I + W, I)
    WB = W @ B
    dKw, dDw = (L_inverse @ X @ L_inverse.T for X in (dK, dD))
    Xg = B @ dDw @ B - WB @ dKw @ B - dKw @ WB
    Xh = dDw @ WB - dKw @ (W @ WB) + W @ Xg
    dg, dh = (L_inverse.T @ X @ L_inverse for X in (Xg, Xh))
    return (g, h), (0.5 * (dg + dg.T), 0.5 * (dh + dh.T))


@jax.custom_jvp
def _kl_and_energy(K, D, A, y):
    """``Gamma = ½[tr W - log det(I + W)]`` (``= ½[tr(K⁻¹Sigma) - log det Sigma + log det K - n]``
    at ``Sigma = K + D``), ``W = L⁻¹DL⁻ᵀ`` with ``K = LLᵀ``, and ``E = ½ yᵀA⁻¹y``, the values
    from Cholesky factors and triangular solves (accurate to rounding: the line search compares
    them), the derivatives in closed form at fixed innovation ``D``:
    ``∂Gamma/∂D = ½ K⁻¹DSigma⁻¹`` (``= ½(K⁻¹ - Sigma⁻¹)``), ``∂Gamma/∂K = -½ K⁻¹DK⁻¹DSigma⁻¹``
    (:func:`_kl_gradients`) and ``∂E/∂A = -½ aaᵀ``, ``a = A⁻¹y``. In ``W`` neither the value nor
    the derivatives are differences of large terms: where ``K`` is ill-conditioned,
    ``tr(K⁻¹Sigma)`` is ``n`` plus a small part and ``K⁻¹``, ``Sigma⁻¹`` have entries up to
    ``1/λ_min(K)`` while their difference is small (sequential erf RNN at P = 128, cond K = 2·10⁸:
    the differences stall Newton at residual 7e-5). The second derivatives are matrix products
    with ``L⁻¹`` and ``(I + W)⁻¹`` (:func:`_kl_gradients_jvp`), so a linearised Hessian
    (:mod:`.closure`) reuses them instead of differentiating triangular solves."""
    W, _ = _whitened(K, D)
    gamma = 0.5 * (jnp.trace(W) - _logdet(jnp.linalg.cholesky(jnp.eye(W.shape[0]) + W)))
    return gamma, 0.5 * jnp.sum(solve_triangular(jnp.linalg.cholesky(A), y, lower=True) ** 2)


@_kl_and_energy.defjvp
def _kl_and_energy_jvp(primals, tangents):
    (K, D, A, y), (dK, dD, dA, _) = primals, tangents  # y is data
    gradient_D, minus_gradient_K = _kl_gradients(K, D)
    a = spd_inverse(A) @ y
    d_gamma = 0.5 * (jnp.sum(gradient_D * dD) - jnp.sum(minus_gradient_K * dK))
    return _kl_and_energy(K, D, A, y), (d_gamma, -0.5 * jnp.sum(a * (dA @ a)))


def kl_gradient(K, D, complement=None):
    """``K⁺DSigma⁺`` (``= K⁺ - Sigma⁺``, ``Sigma = K + D``; pseudo-inverses on a support,
    ``complement`` = ``P⊥``) as ``L⁻ᵀW(I + W)⁻¹L⁻¹`` (:func:`_kl_gradients`): twice the KL term's
    gradient in ``Sigma`` (numpy; ``(n, n)`` or ``(T, P, P)`` stacks)."""
    off = 0.0 if complement is None else np.asarray(complement)
    L_inverse = np.linalg.inv(np.linalg.cholesky(np.asarray(K) + off))
    W = L_inverse @ np.asarray(D) @ np.swapaxes(L_inverse, -1, -2)
    W = 0.5 * (W + np.swapaxes(W, -1, -2))
    X = np.swapaxes(L_inverse, -1, -2) @ np.linalg.solve(np.eye(W.shape[-1]) + W, W) @ L_inverse
    return 0.5 * (X + np.swapaxes(X, -1, -2))


def _step_action(K, D, A, y, complement=None):
    """One step's (or the dense layout's) ``(Gamma_G, E)`` (:func:`_kl_and_energy`) at ``Sigma = K + D``;
    on a support (``complement`` = ``P⊥``, ``D`` on the support) ``K`` regularised as ``K + P⊥``
    (:func:`closure_action`)."""
    if complement is not None:
        K = K + complement
    return _kl_and_energy(K, D, A, y)


def closure_action(prob: Problem, Sigma, C, complement=None, innovation=None):
    """``(Gamma_G, E)`` at the preactivation kernel ``Sigma`` and feature kernel ``C`` (taken as
    independent arguments): ``Gamma_G = ½[tr(K⁻¹Sigma) - log det Sigma + log det K - n]`` with
    ``K = K(C)`` and ``E = ½ yᵀ(G_S(C) + κI)⁻¹y``; NaN where a factorisation fails. With a singular
    ``K`` (``complement`` = ``P⊥``, the projector off the support ``R``, ``Sigma`` on ``R``) both are
    factorised as ``X + P⊥``: ``tr((K + P⊥)⁻¹(Sigma + P⊥)) = tr(K⁺Sigma) + n - r`` and the
    determinants are pseudo-determinants, so ``Gamma_G`` is the KL divergence on ``R``.
    ``innovation``: ``D = Sigma - K`` where the caller has it exactly (the solver's coordinates;
    computed as that difference otherwise)."""
    S_idx = jnp.asarray(prob.supervised)
    A = (prob.Mv * C)[S_idx][:, S_idx] + prob.kappa * jnp.eye(S_idx.shape[0])
    K = prob.K(C)
    return _step_action(K, Sigma - K if innovation is None else innovation, A, prob.y, complement)


def local_action(lp: LocalProblem, Sigma, C, innovation=None):
    """``(Gamma_G, E)`` (:func:`closure_action`) for ``(T, P, P)`` stacks: sums over steps
    of ``½[tr(K_t⁻¹Sigma_t) - log det Sigma_t + log det K_t - P]`` and ``½ y_tᵀ(M_v ∘ C_t + κI)⁻¹y_t``
    (``innovation``: ``D_t = Sigma_t - K_t`` where the caller has it exactly).
    The steps run one after another (``lax.map``): jaxlib's batched LAPACK kernels deadlock when
    two of them run concurrently on the CPU thread pool (seen for P >= 24, jax 0.10)."""
    A = lp.Mv_S * C + lp.kappa * jnp.eye(C.shape[1])
    K = local_prior_covariance(lp, C)
    steps = (K, Sigma - K if innovation is None else innovation, A, lp.y) + (() if lp.complement is None else (lp.complement,))
    gamma, energy = jax.lax.map(lambda args: _step_action(*args), steps)
    return jnp.sum(gamma), jnp.sum(energy)
