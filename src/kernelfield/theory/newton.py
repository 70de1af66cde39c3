"""The truncated Newton step shared by the exact solver and the Gaussian closure, and the two
rounding tests of their line searches."""

from __future__ import annotations

from typing import Callable

import numpy as np

from .linalg import inner

__all__ = ["truncated_newton", "armijo_slack", "within_rounding"]


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
