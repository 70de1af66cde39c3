"""The lazy / NNGP limit (THEORY.md §4): with no learning signal ``Ct = 0`` and ``C`` is the
prior kernel, the fixed point of ``C = <phi(h) phi(h)ᵀ>_{N(0, K(C))}`` found forward in time.

``C`` is the kernel of the features ``phi(h)``; ``prob.K(C)`` is then the covariance of the
preactivations ``h`` (for linear ``phi`` the two coincide)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..gaussian import DEFAULT_ORDER, expect_phiphi
from ..model import Model, ModelResult, as_model
from ..nonlinearities import Nonlinearity, get_nonlinearity
from ..spec import Architecture, Prior, Task
from .kernels import Problem, make_problem
from .layouts import layout
from .predict import Prediction, predictive

__all__ = ["prior_kernel", "lazy_kernel", "LazyKernel"]


def lazy_kernel(prob: Problem, phi="linear", order: int = DEFAULT_ORDER) -> np.ndarray:
    """Prior feature kernel for an assembled problem: ``T`` forward sweeps of
    ``C <- <phi(h) phi(h)ᵀ>_{h ~ N(0, K(C))}`` are exact because block ``(t, s)`` of ``K``
    depends only on block ``(t-1, s-1)`` of ``C`` (the sharing masks are applied by ``prob.K``).

    Linear ``phi`` is exact: ``C = K(C) = (I - 𝒮)⁻¹K_in``, one causal sweep over the blocks in
    the layout of :func:`.layouts.layout` (on the support of a singular input kernel, e.g. more
    sequences than input dimensions, where ``C`` has rank below ``n``); erf and ReLU use closed
    forms (which need only the variances to be positive, so ``P > D`` is fine), any other ``phi``
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


def feature_mean_outer(variances: np.ndarray, nl: Nonlinearity, order: int = DEFAULT_ORDER) -> np.ndarray:
    """``<φ(h_i)><φ(h_j)>`` for ``h_i ~ N(0, v_i)``: the feature kernel of independent
    preactivations, i.e. the off-diagonal block of ``<φφᵀ>`` under ``N(0, diag(v, v))`` (the
    nonlinearity's closed form where it has one, quadrature otherwise)."""
    v = np.asarray(variances, dtype=np.float64)
    n = len(v)
    return np.asarray(expect_phiphi(np.diag(np.concatenate([v, v])), nl, order))[:n, n:]


@dataclass(frozen=True, eq=False)
class LazyKernel(ModelResult):
    """The lazy (NNGP) kernel of ``model``: ``C`` the prior feature kernel ``(T*P, T*P)``
    (time-major), ``mean_outer`` the product of the feature means ``<φ><φ>ᵀ`` (``None`` for
    odd ``phi``), and the kernel-regression predictive of :func:`.predict.predictive` at ``C``.
    Converts to its ``C`` where an array is expected (``np.asarray(lazy)``)."""

    model: Model
    C: np.ndarray
    problem: Problem = field(repr=False)
    mean_outer: np.ndarray | None = None

    @property
    def C_centred(self) -> np.ndarray:
        """Kernel of the centred features ``C - <φ><φ>ᵀ`` (equal to ``C`` for odd ``phi``)."""
        return self.C if self.mean_outer is None else self.C - self.mean_outer

    def predict(self, N: int | None = None) -> Prediction:
        """NNGP posterior predictive at every ``(a, t)``: kernel regression with ``C``."""
        return predictive(self.problem, self.C, N=N)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.C, dtype=dtype)


def prior_kernel(arch: Architecture | Model, task: Task | None = None, prior: Prior | None = None, phi=None,
                 kappa: float | None = None) -> LazyKernel:
    """Lazy (NNGP) kernel ``C`` of the features ``phi(h)``, shape ``(T*P, T*P)``, time-major,
    for any sharing pattern and any registered ``phi``, as a :class:`LazyKernel` (its ``C``,
    centred kernel and predictive). The model is a :class:`~kernelfield.Model` or its parts.

    ``C`` does not depend on the targets of ``task`` or on ``kappa`` (only the predictive does).
    """
    model = as_model(arch, task, prior, phi, kappa)
    prob = make_problem(model.arch, model.task, model.prior, model.kappa)
    nl = model.nonlinearity
    C = lazy_kernel(prob, nl)
    mean_outer = None if nl.odd else feature_mean_outer(np.diag(np.asarray(prob.K(C))), nl)
    return LazyKernel(model, C, prob, mean_outer)
