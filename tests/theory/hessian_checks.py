"""Finite-difference reference for the cross-time Hessians of the stability analysis."""

import numpy as np


def curvature_pairs(H, action, center, rows, cols, count: int = 3, eps: float = 1e-3, seed: int = 1):
    """``(vᵀHv, second central difference of action along L (X + Xᵀ) Lᵀ)`` for ``count`` random
    ``v`` (the entries of ``X`` at ``(rows, cols)``, ``L = chol center``); the difference has error
    ``O(eps² · fourth derivative)``, ~1e-6 relative at ``eps = 1e-3``."""
    L = np.linalg.cholesky(center)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        v = rng.standard_normal(rows.size)
        X = np.zeros_like(center)
        X[rows, cols] = v
        step = eps * L @ (X + X.T) @ L.T
        fd = (action(center + step) - 2 * action(center) + action(center - step)) / eps**2
        pairs.append((float(v @ H @ v), float(fd)))
    return pairs
