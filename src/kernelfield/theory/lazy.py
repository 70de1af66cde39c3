"""The lazy / NNGP limit (THEORY.md §4): with no learning signal ``Ct = 0`` and ``C`` is the
prior kernel, the fixed point of ``C = <phi(h) phi(h)ᵀ>_{N(0, K(C))}`` found forward in time."""

from __future__ import annotations

import numpy as np

from ..nonlinearities import get_nonlinearity
from ..spec import Architecture, Prior, Task
from .kernels import Problem, make_problem

__all__ = ["prior_kernel", "lazy_kernel"]


def lazy_kernel(prob: Problem, phi="linear") -> np.ndarray:
    """Prior kernel for an assembled problem: ``T`` forward sweeps of ``C <- <phi phiᵀ>(K(C))``
    are exact because block ``(t, s)`` of ``K`` depends only on block ``(t-1, s-1)`` of ``C``."""
    nl = get_nonlinearity(phi)
    if nl.name != "linear":
        raise NotImplementedError(
            f"phi: the lazy kernel for {nl.name!r} needs the nonlinear Gaussian expectations "
            "(not implemented yet); use phi='linear'"
        )
    C = np.zeros((prob.n, prob.n))
    for _ in range(prob.T):
        C = np.asarray(prob.K(C))  # linear phi: <h hᵀ> = K
    return 0.5 * (C + C.T)


def prior_kernel(arch: Architecture, task: Task, prior: Prior = Prior(), phi="linear") -> np.ndarray:
    """Lazy (NNGP) kernel ``C`` of shape ``(T*P, T*P)``, time-major, for any sharing pattern.

    The targets of ``task`` are not used.
    """
    return lazy_kernel(make_problem(arch, task, prior, kappa=1.0), phi)
