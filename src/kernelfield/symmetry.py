"""The ``W -> -W`` symmetry of the posterior (THEORY.md §4): flipping every recurrent matrix maps
the kernel to ``C_ts -> (-1)^(t-s) C_ts`` and, with ``v -> ±v`` keeping the fit at the last
supervised step, the outputs to ``f_a(t) -> (-1)^(t - t_last) f_a(t)``. Chains, networks and
branches that settle in different signs are compared and averaged after aligning them."""

from __future__ import annotations

import numpy as np

__all__ = ["parity_flip", "output_parity", "align_to_first"]


def parity_flip(C: np.ndarray, T: int, P: int) -> np.ndarray:
    """``C_ts -> (-1)^(t-s) C_ts``: the image of ``C`` (or of each kernel of a stack) under ``W -> -W``."""
    d = np.repeat((-1.0) ** np.arange(T), P)
    return d[:, None] * C * d[None, :]


def output_parity(task) -> np.ndarray:
    """``(T,)`` signs ``(-1)^(t - t_last)`` by which ``W -> -W`` (with ``v -> ±v`` keeping the fit
    at the last supervised step ``t_last``) maps the outputs ``f_a(t)``."""
    t_last = task.supervised.max() // task.P
    return (-1.0) ** (np.arange(task.T) - t_last)


def align_to_first(C: np.ndarray, T: int, P: int) -> tuple[np.ndarray, np.ndarray]:
    """Align a stack of kernels ``(m, n, n)`` to the first under ``W -> -W``: each is flipped where
    the flipped kernel is closer to ``C[0]`` (Frobenius norm). Returns the aligned stack and the
    ``(m,)`` mask of the flipped ones."""
    flipped = parity_flip(C, T, P)
    closer = np.linalg.norm(flipped - C[0], axis=(1, 2)) < np.linalg.norm(C - C[0], axis=(1, 2))
    return np.where(closer[:, None, None], flipped, C), closer
