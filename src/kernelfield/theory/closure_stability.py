"""The Gaussian closure's phase transition (THEORY.md §3, §4): the action ``S_G`` around the
time-symmetric closure solution and the activity-to-preactivation cross kernel of its outlier.

Symmetric point: for odd ``phi`` and an endpoint-type task the preactivation covariance with
vanishing cross-time blocks, ``Sigma_sym``, gives ``C = G_φ(Sigma_sym)`` with vanishing cross-time
blocks too, so every sharing pattern's ``S_G`` equals the DNN's there and the DNN's closure
solution is a stationary point of every pattern's ``S_G`` (the backward field ``Ct`` is block
diagonal, and entry ``(i, j)`` of ``G_φ`` depends on ``Sigma`` only through ``Sigma_ii, Sigma_jj,
Sigma_ij``, so the cross-time gradient vanishes).

Cross-time directions: ``Sigma = Sigma_sym + L (X + Xᵀ) Lᵀ``, ``X`` strictly block upper triangular
(blocks ``t < s``), ``L = chol Sigma_sym``, with ``C = G_φ(Sigma)`` following: the exact solver's
coordinates with ``C`` replaced by ``Sigma`` (for linear ``phi`` ``Sigma = C`` and ``S_G = S``, so
the Hessian is the exact one). ``S_G`` is a smooth function of ``Sigma`` alone, so the sign of its
cross-time Hessian at the stationary point does not depend on these coordinates.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..gaussian import DEFAULT_ORDER, expect_hphi
from ..nonlinearities import Nonlinearity
from .closure import closure_action
from .closure_maps import gaussian_map
from .kernels import Problem, Support

__all__ = ["closure_cross_time_action", "ClosureCrossTime", "cross_kernel"]

#: Hessian-vector products evaluated together when the dense Hessian is assembled (bounds memory).
_HVP_BATCH = 64


def closure_cross_time_action(x, rows, cols, Sigma_sym, prob: Problem, nl: Nonlinearity, order: int = DEFAULT_ORDER,
                              basis=None, complement=None):
    """``S_G(Sigma_sym + L (X + Xᵀ) Lᵀ)`` with ``X`` the cross-time entries ``x`` at ``(rows, cols)``,
    ``S_G = -KL(N(0, Sigma) || N(0, K(C))) - E(C)``, ``C = G_φ(Sigma)``. On a support (orthonormal
    ``basis`` ``Q`` ``(n, r)`` and ``complement`` ``P⊥``, :func:`.closure.closure_support`) ``X`` is
    ``r × r`` and ``L = Q chol(QᵀSigma_sym Q)``, so every direction stays on the support."""
    if basis is None:
        L = jnp.linalg.cholesky(Sigma_sym)
    else:
        L = basis @ jnp.linalg.cholesky(basis.T @ Sigma_sym @ basis)
    m = L.shape[1]
    X = jnp.zeros((m, m)).at[rows, cols].set(x)
    Sigma = Sigma_sym + L @ (X + X.T) @ L.T
    gamma, energy = closure_action(prob, Sigma, gaussian_map(nl, order, Sigma), complement)
    return -(gamma + energy)


_value_and_gradient = jax.jit(jax.value_and_grad(closure_cross_time_action), static_argnums=(5, 6))


def _hvp(v, x, rows, cols, Sigma_sym, prob, basis, complement, nl, order):
    """``∂²S_G/∂x² · v`` (forward-over-reverse autodiff)."""
    gradient = jax.grad(closure_cross_time_action)
    return jax.jvp(lambda z: gradient(z, rows, cols, Sigma_sym, prob, nl, order, basis, complement), (x,), (v,))[1]


_hessian_vector = jax.jit(_hvp, static_argnames=("nl", "order"))


@partial(jax.jit, static_argnames=("nl", "order"))
def _dense_hessian(x, rows, cols, Sigma_sym, prob, basis, complement, nl, order):
    """The full Hessian, column by column from Hessian-vector products in batches."""
    columns = jax.lax.map(lambda v: _hvp(v, x, rows, cols, Sigma_sym, prob, basis, complement, nl, order),
                          jnp.eye(x.shape[0]), batch_size=_HVP_BATCH)
    return columns.T


class ClosureCrossTime:
    """``S_G`` on the cross-time directions at the symmetric closure point ``Sigma_sym``
    (module docstring): value and gradient, Hessian-vector products and the dense Hessian in the
    coordinates ``x`` (the entries of ``X`` at ``(rows, cols)``), on ``support`` where the prior
    covariance is singular (:func:`.closure.closure_support`; ``None``: regular)."""

    def __init__(self, prob: Problem, nl: Nonlinearity, Sigma_sym: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                 order: int = DEFAULT_ORDER, support: Support | None = None):
        regular = support is None or support.full
        self.args = (jnp.asarray(rows), jnp.asarray(cols), jnp.asarray(Sigma_sym), prob,
                     None if regular else jnp.asarray(support.basis), None if regular else jnp.asarray(support.complement))
        self.nl, self.order = nl, order

    def value_and_gradient(self, x):
        rows, cols, Sigma_sym, prob, basis, complement = self.args
        return _value_and_gradient(x, rows, cols, Sigma_sym, prob, self.nl, self.order, basis, complement)

    def hessian_vector(self, v, x):
        return _hessian_vector(v, x, *self.args, nl=self.nl, order=self.order)

    def hessian(self, x):
        return _dense_hessian(x, *self.args, nl=self.nl, order=self.order)


def cross_kernel(Sigma: np.ndarray, nl: Nonlinearity, p_idx: np.ndarray, n_idx: np.ndarray,
                 order: int = DEFAULT_ORDER) -> np.ndarray:
    """The activity-to-preactivation cross kernel ``<φ(h_p) h_nᵀ> = Sigma_pn ∘ E[φ'(h_p)]`` (Stein),
    ``h ~ N(0, Sigma)``, rows ``p_idx``, columns ``n_idx``."""
    hphi = np.asarray(expect_hphi(Sigma, nl, order))  # E[h_i φ(h_j)]
    return hphi[np.ix_(n_idx, p_idx)].T
