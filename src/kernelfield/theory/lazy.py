"""The lazy / NNGP limit (THEORY.md §4): with no learning signal ``Ct = 0`` and ``C`` is the
prior kernel, the fixed point of ``C = <phi(h) phi(h)ᵀ>_{N(0, K(C))}`` found forward in time.

``C`` is the kernel of the features ``phi(h)``; ``prob.K(C)`` is then the covariance of the
preactivations ``h`` (for linear ``phi`` the two coincide)."""

from __future__ import annotations

import numpy as np

from ..gaussian import DEFAULT_ORDER, expect_phiphi
from ..nonlinearities import get_nonlinearity
from ..spec import Architecture, Prior, Task
from .kernels import Problem, layout, make_problem

__all__ = ["prior_kernel", "lazy_kernel"]


def lazy_kernel(prob: Problem, phi="linear", order: int = DEFAULT_ORDER) -> np.ndarray:
    """Prior feature kernel for an assembled problem: ``T`` forward sweeps of
    ``C <- <phi(h) phi(h)ᵀ>_{h ~ N(0, K(C))}`` are exact because block ``(t, s)`` of ``K``
    depends only on block ``(t-1, s-1)`` of ``C`` (the sharing masks are applied by ``prob.K``).

    Linear ``phi`` is exact: ``C = K(C) = (I - 𝒮)⁻¹K_in``, one causal sweep over the blocks in
    the layout of :func:`.kernels.layout`; erf and ReLU use closed forms, any other ``phi``
    2-D Gauss–Hermite quadrature with ``order`` nodes per dimension
    (:func:`kernelfield.gaussian.expect_phiphi`)."""
    nl = get_nonlinearity(phi)
    C = np.zeros((prob.n, prob.n))
    if nl.name == "linear":
        lay = layout(prob, C)
        return lay.full(lay.sweep(lay.K_in))
    for _ in range(prob.T):
        C = np.asarray(expect_phiphi(prob.K(C), nl, order))
    return 0.5 * (C + C.T)


def prior_kernel(arch: Architecture, task: Task, prior: Prior = Prior(), phi="linear") -> np.ndarray:
    """Lazy (NNGP) kernel ``C`` of the features ``phi(h)``, shape ``(T*P, T*P)``, time-major,
    for any sharing pattern and any registered ``phi``.

    The targets of ``task`` are not used.
    """
    return lazy_kernel(make_problem(arch, task, prior, kappa=1.0), phi)
