"""Newton steps by preconditioned conjugate gradients: truncated (the exact solver, with a line
search) and within a trust region (the Gaussian closure), and the two rounding tests of their
line searches."""

from __future__ import annotations

from typing import Callable

import numpy as np

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


def steihaug_newton(hessian_vector: Callable[[np.ndarray], np.ndarray], K: np.ndarray, g: np.ndarray,
                    radius: float, max_cg: int, eta: float) -> tuple[np.ndarray, float, float]:
    """Trust-region Newton direction (Steihaug–Toint conjugate gradients, Nocedal & Wright
    Alg. 7.2): minimise the model ``m(p) = gᵀp + ½pᵀHp`` over ``||p||_K <= radius`` in the norm
    of the preconditioner's inverse, ``||p||_K² = tr(K⁻¹pK⁻¹p)`` (preconditioner ``R ↦ K R K``,
    as :func:`truncated_newton`), stopped once the preconditioned residual fell by ``eta``,
    after ``max_cg`` iterations, or on the boundary (a step that leaves the region or a direction
    of non-positive curvature is followed to it). Nothing is inverted: ``Md = K⁻¹dK⁻¹`` is
    carried along from the residuals (``M y = r`` for ``y = K r K``), and the norms are inner
    products with it, not the short recurrences, which assume exact conjugacy and went negative
    (NaN lengths) where the Hessian-vector products are inexact (the closure at P = 256).
    Returns ``p``, its norm and the model's decrease ``-m(p)``."""
    p, Hp, Mp = 0.0 * g, 0.0 * g, 0.0 * g
    r = g.copy()
    y = K @ r @ K
    d, Md = -y, -r
    rho = rho0 = inner(r, y)
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
        pd, dd = inner(p, Md), max(inner(d, Md), np.finfo(float).tiny)
        if curvature <= 0.0:
            return to_boundary(Hd, pd, dd)
        alpha = rho / curvature
        if pp + 2 * alpha * pd + alpha**2 * dd >= radius**2:
            return to_boundary(Hd, pd, dd)
        p, Hp, Mp = p + alpha * d, Hp + alpha * Hd, Mp + alpha * Md
        pp = max(inner(p, Mp), 0.0)
        r = r + alpha * Hd
        y = K @ r @ K
        rho_next = inner(r, y)
        if rho_next <= eta**2 * rho0:
            break
        beta = rho_next / rho
        d, Md = -y + beta * d, -r + beta * Md
        rho = rho_next
    return p, float(np.sqrt(pp)), decrease(p, Hp)
