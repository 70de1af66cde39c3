"""Newton steps by preconditioned conjugate gradients: truncated (the exact solver, with a line
search) and within a trust region (the Gaussian closure), and the two rounding tests of their
line searches."""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.linalg

from .linalg import inner

__all__ = ["truncated_newton", "steihaug_newton", "armijo_slack", "within_rounding"]


def armijo_slack(F: float) -> float:
    """What Armijo's condition allows above ``F``: near the maximum a Newton step changes ``F`` by
    less than its rounding, and the full step is then taken."""
    return 64 * np.finfo(float).eps * max(abs(F), 1.0)


def within_rounding(F: float, F_new: float) -> bool:
    """Whether a step from ``F`` to ``F_new`` decreased ``F`` by no more than its rounding."""
    return F - F_new <= 8 * np.finfo(float).eps * abs(F)


def truncated_newton(hessian_vector: Callable[[np.ndarray], np.ndarray], K: np.ndarray, g: np.ndarray,
                     max_cg: int, eta: float) -> np.ndarray:
    """Truncated Newton direction: conjugate gradients on ``H p = -g`` preconditioned with
    ``R ↦ K R K`` (the exact solver passes the prior covariance ``K``, whose ``K ⊗ K`` inverts the
    Hessian of ``Gamma`` at ``D = 0``; the Gaussian closure its current ``Sigma``), stopped once the
    preconditioned residual fell by the factor ``eta``, after ``max_cg`` iterations, or at a
    direction of negative curvature (then the last iterate, or the preconditioned gradient step
    if there is none). Every iterate is a descent direction. ``K`` and ``g`` may be stacks of
    blocks (a time-local layout): products are batched and inner products run over all entries."""
    p = 0.0 * g
    r = -g
    z = K @ r @ K
    step = z
    rz = rz0 = inner(r, z)
    for i in range(max_cg):
        Hs = hessian_vector(step)
        curvature = inner(step, Hs)
        if curvature <= 0.0:
            return p if i else z
        alpha = rz / curvature
        p = p + alpha * step
        r = r - alpha * Hs
        z = K @ r @ K
        rz_new = inner(r, z)
        if rz_new <= eta**2 * rz0:
            break
        step = z + (rz_new / rz) * step
        rz = rz_new
    return p


def symmetric_factor(K: np.ndarray) -> np.ndarray:
    """``F`` with ``K = F Fᵀ`` for a positive semidefinite ``K`` (``(m, m)`` or a stack of them):
    pivoted Cholesky (LAPACK ``pstrf``, stopped at its default tolerance, so a singular ``K``, e.g.
    on a support, is fine; ``F`` is ``(m, m)`` with zero columns past the rank). Blocks in which
    ``K`` vanishes stay exactly zero in ``F`` (``F Fᵀ`` never couples them), so the CG directions
    ``F(FᵀrF)Fᵀ = K r K`` keep a branch's structure (a time-symmetric branch stays time-symmetric; an
    eigendecomposition mixed them at rounding level, and the odd-``phi`` prior start left its
    branch)."""
    if np.ndim(K) > 2:
        return np.stack([symmetric_factor(k) for k in K])
    m = len(K)
    L, piv, rank, _ = scipy.linalg.lapack.dpstrf(0.5 * (K + K.T), lower=1)
    F = np.zeros((m, m))
    F[piv - 1, :rank] = np.tril(L)[:, :rank]
    return F


def steihaug_newton(hessian_vector: Callable[[np.ndarray], np.ndarray], K: np.ndarray, g: np.ndarray,
                    radius: float, max_cg: int, eta: float) -> tuple[np.ndarray, float, float]:
    """Trust-region Newton direction (Steihaug–Toint conjugate gradients, Nocedal & Wright
    Alg. 7.2): minimise the model ``m(p) = gᵀp + ½pᵀHp`` over ``||p||_K <= radius`` in the norm
    of the preconditioner's inverse, ``||p||_K² = tr(K⁺pK⁺p)`` (preconditioner ``R ↦ K R K``,
    as :func:`truncated_newton`), stopped once the preconditioned residual fell by ``eta``,
    after ``max_cg`` iterations, or on the boundary (a step that leaves the region or a direction
    of non-positive curvature is followed to it). Nothing is inverted: with ``K = F Fᵀ``
    (:func:`symmetric_factor`) a direction ``d = K X K`` has ``||d||_K = ||FᵀXF||_F``, and the
    whitened ``FᵀXF`` of the CG directions is carried along from the residuals, so every norm
    (also the residual's ``tr(rKrK)``) is a sum of squares. Taken as ``tr(d·K⁺dK⁺)`` they lost
    their sign where ``K`` is ill-conditioned (the closure at P = 256, cond ~1e12: zero step
    lengths, and the trust radius fell to 0); the short recurrences, which assume exact
    conjugacy, went negative where the Hessian-vector products are inexact.
    Returns ``p``, its norm and the model's decrease ``-m(p)``."""
    F = symmetric_factor(K)
    Ft = np.swapaxes(F, -1, -2)
    p, Hp, Wp = 0.0 * g, 0.0 * g, 0.0 * g
    r = g.copy()
    Wr = Ft @ r @ F
    d, Wd = -(F @ Wr @ Ft), -Wr  # d = -K r K, whitened -FᵀrF
    rho = rho0 = inner(Wr, Wr)
    pp = 0.0

    def decrease(q, Hq):  # -m(q)
        return -(inner(g, q) + 0.5 * inner(q, Hq))

    def to_boundary(Hd, pd, dd):
        tau = (-pd + np.sqrt(max(pd * pd + dd * (radius**2 - pp), 0.0))) / dd
        q, Hq = p + tau * d, Hp + tau * Hd
        return q, radius, decrease(q, Hq)

    for _ in range(max_cg):
        Hd = hessian_vector(d)
        curvature = inner(d, Hd)
        pd, dd = inner(Wp, Wd), max(inner(Wd, Wd), np.finfo(float).tiny)
        if curvature <= 0.0:
            return to_boundary(Hd, pd, dd)
        alpha = rho / curvature
        if pp + 2 * alpha * pd + alpha**2 * dd >= radius**2:
            return to_boundary(Hd, pd, dd)
        p, Hp, Wp = p + alpha * d, Hp + alpha * Hd, Wp + alpha * Wd
        pp = inner(Wp, Wp)
        r = r + alpha * Hd
        Wr = Ft @ r @ F
        rho_next = inner(Wr, Wr)
        if rho_next <= eta**2 * rho0:
            break
        beta = rho_next / rho
        d, Wd = -(F @ Wr @ Ft) + beta * d, -Wr + beta * Wd
        rho = rho_next
    return p, float(np.sqrt(pp)), decrease(p, Hp)
