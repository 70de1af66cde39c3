"""The Gaussian closure (THEORY.md §3): an approximation of the trained kernels for any ``phi``
with a Gaussian map, exact for linear ``phi``.

The single-neuron trajectory law is restricted to centred Gaussians ``N(0, Sigma)``, so the
feature kernel is ``C = G_φ(Sigma) = <φφᵀ>_{N(0, Sigma)}`` (the entrywise NNGP map,
:func:`kernelfield.gaussian.expect_phiphi`) and the action becomes

    S_G(Sigma) = -½[tr(K⁻¹Sigma) - log det(K⁻¹Sigma) - n] - E(C),   K = K(C),
    E(C) = ½ yᵀ(G_S(C) + κI)⁻¹y,

a lower bound on ``S`` (the Gaussians are a subset of all laws), equal to it for linear ``phi``
(``G_φ = id``). Stationarity is ``Sigma⁻¹ = K⁻¹ - 2 ∂/∂Sigma tr(Ct G_φ(Sigma))`` (Price's theorem:
``= K⁻¹ - <∇∇ᵀ(φᵀCtφ)>_{N(0, Sigma)}``) with the backward field
``Ct = ½ 𝒮ᵀ(K⁻¹ Sigma K⁻¹ - K⁻¹) + ½ M_v ∘ [a aᵀ]_S``, ``a = (G_S + κI)⁻¹y``.

Coordinates, as the exact solver's: the innovation ``D = Sigma - K(G_φ(Sigma))``. Block
``(t, s)`` of ``K`` needs ``C`` at ``(t-1, s-1)``, i.e. ``Sigma`` at earlier times only, so
``Sigma(D)`` follows from one causal sweep over time, and ``D = 0`` is the prior (lazy)
preactivation kernel. ``D`` is restricted to the blocks reachable from the start
(:func:`.kernels.invariant_components`), so a DNN's ``Sigma`` stays time-block diagonal.

Optimiser: Newton's method on ``F = -S_G`` with the gradient and Hessian-vector products by JAX
autodiff (float64, jit; in the layouts of :mod:`.closure_maps`: ``(T, P, P)`` stacks where only
equal-time blocks are free, dense ``(n, n)`` otherwise; the KL and data terms carry closed-form
derivatives, and the gradient is linearised once per Newton step, so its Hessian-vector
products reuse the step's inverses), conjugate gradients preconditioned with
``R ↦ Sigma R Sigma`` (the inverse of the KL term's Hessian in ``D`` at fixed ``K``,
``½ Sigma⁻¹ ⊗ Sigma⁻¹``; with ``K R K``, exact only at ``D = 0``, the sequential erf RNN at
P = 64 took twice the Hessian-vector products), inside a trust region in the same norm
(:func:`.newton.steihaug_newton`; radius doubled or cut to a quarter by the ratio of actual to
predicted decrease), with a backtracking Armijo line search along a step the model predicted
badly. A step where ``Sigma``, ``K`` or ``G_S + κI`` is not positive definite has ``F = NaN`` and
is rejected. With a line search alone the truncated-CG steps were often hundreds of times too
long and cut back by halving: the sequential erf RNN at P = 128 (n = 576) took 46 Newton steps
and 906 Hessian-vector products, with the trust region 37 and 493. Once ``F``'s changes are
rounding (:func:`at_rounding_floor`: shown by a Newton step inside the region, not by one the
radius cut short), only the residuals judge a step: one that raises them while ``F`` cannot tell
the two points apart is retried shorter from the best point, at most :data:`ROUNDING_RETRIES`
times, and the best point is returned (``stopped = "rounding"``). On ``(T, P, P)`` stacks, whose
Newton systems get :data:`LOCAL_INNER` CG steps by default, such a stop first goes on from the best
point with the dense layout's :data:`DENSE_INNER`: at ill-conditioned blocks the short solves are
what stalls (erf DNN on digits at P = 256, blocks of condition number 1e6: residual 3.3e-5 after
254 Newton steps; one step with 100 CG steps from there reached 1.1e-6). Where training made ``K``
numerically singular on the support, a stop of the line search is followed by a restart on the
trained kernel's support (:func:`maximise_closure_on_support`).
Converged when both stationarity residuals are below ``tol``:
backward ``2||Sigma (∂F/∂Sigma) Sigma|| / ||Sigma||`` and forward
``||Sigma - (K⁻¹ - 2 ∂_Sigma tr(Ct G_φ))⁻¹|| / ||Sigma||`` (for linear ``phi`` the exact
solver's two residuals). The symmetry-broken start of an endpoint task is low-rank,
``D = V Vᵀ``, first maximised over ``V`` by L-BFGS (:mod:`.closure_lowrank`).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from threadpoolctl import threadpool_limits

from ..gaussian import DEFAULT_ORDER, gauss_hermite
from ..nonlinearities import Nonlinearity
from .branch import Branch
from .closure_lowrank import LowRankStart, closure_broken_factor, low_rank_stage
from .closure_maps import (
    DenseProblem,
    LocalProblem,
    closure_action,
    dense_preactivation,
    gaussian_map,
    kl_gradient,
    local_action,
    local_preactivation,
    local_prior_covariance,
    local_problem,
    on_support,
)
from .kernels import Problem, Support, invariant_components, kernel_support, sym
from .lazy import feature_mean_outer
from .newton import armijo_slack, steihaug_newton, within_rounding
from .starts import broken_start

__all__ = ["check_gaussian_map", "closure_action", "ClosurePoint", "closure_point", "maximise_closure",
           "maximise_closure_on_support", "closure_branch", "closure_broken_start", "closure_support",
           "trained_support", "ClosureObjective", "free_mask", "STOP_REASONS"]


NOTE = "Gaussian closure: approximation, S is a lower bound"
ROUNDING = 1e-10  # relative changes of F below this are rounding (n = 576: F's differences at 1e-13 relative are noise)
# shorter steps tried from the best point once F's changes are rounding (3 left the erf DNN of
# sunspots_large_erf.toml at P = 64 at residual 2.1e-5 > tol 1e-5; 10: 5.4e-6)
ROUNDING_RETRIES = 10
LOCAL_INNER = 10  # CG steps per Newton step on (T, P, P) stacks (default)
DENSE_INNER = 100  # on the dense layout, and on stacks after a rounding stop
STOP_REASONS = {  # why maximise_closure stopped without converging, as the ConvergenceWarning says it
    "rounding": f"at the rounding floor of S_G: its changes were below {ROUNDING:g} relative and shorter steps from "
                "the point with the smallest residual did not lower it: a tol below the residual is out of reach "
                "in float64 for this problem",
    "line search": "because the line search found no step that increases S_G (the kernels may be too "
                   "ill-conditioned for float64 here)",
    "max_iter": "after max_iter steps",
}
# pivot cut of a trained kernel's support (trained_support): a direction whose squared relative
# distance from the span of the others is below it is held at the prior. erf RNN, P = 256: at 1e-10
# cond K is 7.5e12 on that support and the residual floor 1.5e-5; at 1e-8 6.8e10, converged at
# 8.6e-6; S_G (27.19) the same to 3e-7 and the errors to 1e-7 at both cuts
TRAINED_SUPPORT_RTOL = 1e-8
LOW_RANK_ITERATIONS = 300  # L-BFGS steps of the low-rank broken start (n = 256: 200 -> 5 Newton steps, 300 -> 4)


def check_gaussian_map(nl: Nonlinearity, order: int = DEFAULT_ORDER) -> None:
    """Raise a ``ValueError`` naming ``method`` and ``phi`` unless ``G_φ`` (closed form or
    Gauss–Hermite quadrature of ``phi``) is jax-differentiable and finite at a test covariance."""
    K = jnp.array([[1.0, 0.3], [0.3, 0.8]])
    try:
        value, tangent = jax.jvp(lambda X: gaussian_map(nl, order, X), (K,), (jnp.ones((2, 2)),))
        ok = bool(np.all(np.isfinite(np.asarray(value))) and np.all(np.isfinite(np.asarray(tangent))))
    except Exception:  # any failure to trace or differentiate phi means: no Gaussian map
        ok = False
    if not ok:
        raise ValueError(f"method: 'gaussian' needs a differentiable Gaussian map of phi = {nl.name!r} "
                         "(a jax-traceable phi or a closed-form expect_phiphi); use method='particles'")


def _maps(data, nl: Nonlinearity, order: int):
    """The layout's maps: the coordinates to the innovation ``D`` (symmetrised, on the free blocks,
    projected onto the support), ``D`` to ``Sigma`` (the causal sweep), ``Sigma`` to
    ``C = G_φ(Sigma)``, and ``C`` to ``K(C)`` and the action. ``data`` is a :class:`DenseProblem`
    or a :class:`.closure_maps.LocalProblem` (``(T, P, P)`` stacks)."""
    if isinstance(data, LocalProblem):
        def local(D):
            D = 0.5 * (D + jnp.swapaxes(D, -1, -2))
            return D if data.projector is None else data.projector @ D @ data.projector

        return (local, partial(local_preactivation, data, nl, order), jax.vmap(partial(gaussian_map, nl, order)),
                partial(local_prior_covariance, data), partial(local_action, data))
    prob, mask, Q, complement = data

    def dense(D):
        return on_support(0.5 * (D + D.T) * mask, Q)

    return (dense, partial(dense_preactivation, prob, nl, order), partial(gaussian_map, nl, order), prob.K,
            partial(closure_action, prob, complement=complement))


def _objective(data, D, nl: Nonlinearity, order: int):
    """``F(D) = -S_G = Gamma_G + E`` at the innovation ``D``."""
    innovation, preactivation, feature_kernel, _, action = _maps(data, nl, order)
    D = innovation(D)
    Sigma = preactivation(D)
    gamma, energy = action(Sigma, feature_kernel(Sigma), innovation=D)
    return gamma + energy


@partial(jax.jit, static_argnames=("nl", "order"))
def _value(data, D, nl, order):
    return _objective(data, D, nl, order)


@partial(jax.jit, static_argnames=("nl", "order"))
def _value_and_gradient(data, D, nl, order):
    return jax.value_and_grad(_objective, argnums=1)(data, D, nl, order)


@partial(jax.jit, static_argnames=("nl", "order"))
def _hessian_at(data, D, nl, order):
    """``V ↦ ∂²F/∂D² · V`` at ``D``: the gradient linearised once (forward-over-reverse autodiff),
    so the products of one Newton step reuse its factorisations (a ``jax.tree_util.Partial``)."""
    gradient = jax.grad(_objective, argnums=1)
    return jax.linearize(lambda X: gradient(data, X, nl, order), D)[1]


@jax.jit
def _apply(linear, V):
    return linear(V)


class ClosurePoint(NamedTuple):
    """The closure at an innovation ``D = Sigma - K``: ``Sigma``, ``C = G_φ(Sigma)``, ``K = K(C)``,
    the backward field ``Ct``, its pull-back ``Ct_Sigma = ∂/∂Sigma tr(Ct G_φ(Sigma))`` (``Ct`` for
    linear ``phi``), ``Gamma_G``, ``E`` and ``D``; ``(n, n)`` arrays, or ``(T, P, P)`` stacks in
    the time-local layout."""

    Sigma: jax.Array
    C: jax.Array
    K: jax.Array
    Ct: jax.Array
    Ct_Sigma: jax.Array
    gamma: jax.Array
    energy: jax.Array
    D: jax.Array


@partial(jax.jit, static_argnames=("nl", "order"))
def _point(data, D, nl: Nonlinearity, order: int) -> ClosurePoint:
    """Everything the residuals need at the innovation ``D``: ``Ct = -∂F/∂C`` at fixed ``Sigma``
    (the backward equation) and ``Ct_Sigma`` its vector-Jacobian product through ``G_φ``."""
    innovation, preactivation, feature_kernel, prior_covariance, action = _maps(data, nl, order)
    D = innovation(D)
    Sigma = preactivation(D)
    C, pull_back = jax.vjp(feature_kernel, Sigma)

    def at_fixed_sigma(X):  # the innovation D, varying as -dK with C
        K = prior_covariance(X)
        return action(Sigma, X, innovation=D + (jax.lax.stop_gradient(K) - K))

    (gamma, energy), parts_vjp = jax.vjp(at_fixed_sigma, C)
    Ct = -parts_vjp((jnp.ones(()), jnp.ones(())))[0]
    Ct = 0.5 * (Ct + jnp.swapaxes(Ct, -1, -2))
    Ct_Sigma = pull_back(Ct)[0]
    return ClosurePoint(Sigma, C, prior_covariance(C), Ct, 0.5 * (Ct_Sigma + jnp.swapaxes(Ct_Sigma, -1, -2)),
                        gamma, energy, D)


def closure_point(prob: Problem, mask, D, nl: Nonlinearity, order: int = DEFAULT_ORDER) -> ClosurePoint:
    """:class:`ClosurePoint` at the innovation ``D`` (``(n, n)``) on the free blocks ``mask``."""
    return _point(DenseProblem(prob, mask), D, nl=nl, order=order)


def _onto_support(X, complement) -> np.ndarray:
    """``Π X Π`` with ``Π = I - P⊥`` (``complement`` = ``P⊥``, ``(n, n)`` or a ``(T, P, P)`` stack
    for the time-local layout; ``X`` unchanged where it is ``None``, i.e. the prior is regular)."""
    if complement is None:
        return X
    projector = np.eye(np.shape(X)[-1]) - complement
    return projector @ X @ projector


def _residuals(point: ClosurePoint, mask, complement=None) -> tuple[float, float]:
    """Forward ``||Sigma - M⁻¹|| / ||Sigma||``, ``M = K⁻¹ - 2Ct_Sigma`` (``inf`` if ``M`` is not
    positive definite), and backward ``2||Sigma G Sigma|| / ||Sigma||``,
    ``G = ½(K⁻¹ - Sigma⁻¹) - Ct_Sigma`` on the free blocks ``mask`` (``1.0`` for ``(T, P, P)``
    stacks; norms over all entries). ``K⁻¹ - Sigma⁻¹ = K⁻¹DSigma⁻¹`` is taken in the whitened
    innovation (:func:`.closure_maps.kl_gradient`) and ``Sigma - M⁻¹`` as ``M⁻¹(K⁻¹DSigma⁻¹ - 2Ct_Sigma)Sigma``, so that neither is a
    difference of large inverses when ``K`` is ill-conditioned. On a support (``complement`` =
    ``P⊥``) inverses are pseudo-inverses, ``(X + P⊥)⁻¹ - P⊥``, and ``Ct_Sigma`` is projected onto it."""
    Sigma, K = np.asarray(point.Sigma), np.asarray(point.K)
    Ct_Sigma = _onto_support(np.asarray(point.Ct_Sigma), complement)
    off = 0.0 if complement is None else np.asarray(complement)
    difference = kl_gradient(K, point.D, complement) - 2.0 * Ct_Sigma * mask  # 2G off the mask too
    norm = np.linalg.norm(Sigma)
    backward = float(np.linalg.norm(Sigma @ (difference * mask) @ Sigma) / norm)
    try:
        L = np.linalg.cholesky(sym(np.linalg.inv(K + off)) - 2.0 * Ct_Sigma * mask + off)
    except np.linalg.LinAlgError:
        return np.inf, backward
    Linv = np.linalg.inv(L)
    return float(np.linalg.norm(np.swapaxes(Linv, -1, -2) @ (Linv @ difference) @ Sigma) / norm), backward


def free_mask(prob: Problem, Sigma0) -> np.ndarray:
    """0/1 ``(n, n)`` mask of the blocks reachable from ``Sigma0`` (:func:`.kernels.invariant_components`)."""
    labels = np.repeat(invariant_components(prob, np.asarray(Sigma0)), prob.P)
    return (labels[:, None] == labels[None, :]).astype(np.float64)


class ClosureObjective:
    """``F(D) = -S_G`` (NaN where undefined), its gradient and Hessian-vector products in the
    innovation ``D`` on the free blocks ``mask`` (a symmetric 0/1 ``(n, n)`` mask), or, from
    :meth:`time_local`, on ``(T, P, P)`` stacks of equal-time blocks. ``support``: where the prior
    covariance is singular, the :class:`.kernels.Support` of the closure's kernels
    (:func:`closure_support`); ``None`` (regular) otherwise."""

    def __init__(self, prob: Problem, nl: Nonlinearity, mask: np.ndarray, order: int, support: Support | None = None):
        self.prob, self.nl, self.mask, self.order = prob, nl, mask, order
        self.support = None if support is None or support.full else support
        self.complement = None if self.support is None else self.support.complement
        self.data = DenseProblem(prob, mask, None if self.support is None else self.support.basis, self.complement)

    @classmethod
    def time_local(cls, prob: Problem, nl: Nonlinearity, order: int, support: Support | None = None) -> "ClosureObjective":
        """The objective on time-block-diagonal kernels held as ``(T, P, P)`` stacks."""
        f = cls(prob, nl, 1.0, order, support)
        f.data = local_problem(prob, f.support)
        f.complement = f.data.complement
        return f

    @property
    def local(self) -> bool:
        return isinstance(self.data, LocalProblem)

    def restrict(self, X) -> np.ndarray:
        """The free part of an ``(n, n)`` kernel in this layout."""
        X = sym(np.asarray(X, dtype=np.float64))
        if not self.local:
            return X * self.mask
        T, P = self.prob.T, self.prob.P
        return X.reshape(T, P, T, P)[np.arange(T), :, np.arange(T), :]

    def full(self, X) -> np.ndarray:
        """An array of this layout as an ``(n, n)`` array."""
        return scipy.linalg.block_diag(*np.asarray(X)) if self.local else np.asarray(X)

    def innovation(self, Sigma0) -> np.ndarray:
        """``D = Sigma0 - K(G_φ(Sigma0))`` on the free blocks, ``Sigma0`` ``(n, n)`` (both projected
        onto the support, so that ``Sigma(D)`` is the start's projection)."""
        _, _, feature_kernel, prior_covariance, _ = _maps(self.data, self.nl, self.order)
        Sigma0 = _onto_support(self.restrict(Sigma0), self.complement)
        innovation = sym(Sigma0 - np.asarray(prior_covariance(feature_kernel(jnp.asarray(Sigma0)))))
        return _onto_support(innovation, self.complement) * self.mask

    def value(self, D) -> float:
        F = float(_value(self.data, D, nl=self.nl, order=self.order))
        return F if np.isfinite(F) else np.nan

    def value_and_gradient(self, D):
        F, g = _value_and_gradient(self.data, D, nl=self.nl, order=self.order)
        return float(F), np.asarray(g)

    def hessian_at(self, D):
        """``V ↦ ∂²F/∂D² · V`` at ``D`` (numpy in, numpy out), linearised once."""
        linear = _hessian_at(self.data, D, nl=self.nl, order=self.order)
        return lambda V: np.asarray(_apply(linear, V))

    def hessian_vector(self, D, V):
        return self.hessian_at(D)(V)

    def point(self, D) -> ClosurePoint:
        return _point(self.data, D, nl=self.nl, order=self.order)


def _rounding(F: float) -> float:
    """Changes of ``F`` below this are rounding (:data:`ROUNDING`, relative)."""
    return ROUNDING * max(abs(F), 1.0)


def at_rounding_floor(on_boundary: bool, decrease: float, noise: float, F: float, F_new: float) -> bool:
    """Whether a step from ``F`` to ``F_new`` with predicted ``decrease`` shows that ``F`` is at its
    rounding floor: a Newton step inside the trust region (not ``on_boundary``, where the radius
    cut it short) whose predicted decrease is below ``noise`` or that did not lower ``F`` beyond
    its rounding. A step cut short by a small radius predicts a small decrease far from the
    maximum too (erf RNN, n = 1088): that says nothing about ``F``'s rounding."""
    return not on_boundary and (decrease <= noise or within_rounding(F, F_new))


def _line_search(f: ClosureObjective, D, F: float, g, p):
    """Backtracking from the full step until Armijo's condition holds, up to the rounding of
    ``F`` (near the maximum a Newton step changes ``F`` by less than that: the full step is then
    taken), where ``F`` is defined (``Sigma``, ``K``, ``G_S + κI`` positive definite); ``None`` if
    no step length is accepted."""
    slope = float(np.vdot(g, p))
    rounding = armijo_slack(F)
    t = 1.0
    for _ in range(50):
        trial = D + t * p
        F_trial = f.value(trial)
        if np.isfinite(F_trial) and F_trial <= F + 1e-4 * t * slope + rounding:
            return trial, F_trial
        t *= 0.5
    return None


class ClosureResult(NamedTuple):
    """One start of the closure: the point reached, its residuals, convergence, Newton steps,
    ``<φ>`` per index (``None`` for odd ``phi``) and why it stopped without converging (a key of
    :data:`STOP_REASONS`, ``""`` if it converged)."""

    point: ClosurePoint
    residual_forward: float
    residual_backward: float
    converged: bool
    iterations: int
    phi_mean: np.ndarray | None
    stopped: str = ""

    @property
    def residual(self) -> float:
        """The larger of the two residuals (the one compared with ``tol``)."""
        return max(self.residual_forward, self.residual_backward)


class _Iterate(NamedTuple):
    """A Newton iterate of :func:`maximise_closure`: its point, residuals, innovation, ``F`` and gradient."""

    point: ClosurePoint
    forward: float
    backward: float
    D: np.ndarray
    F: float
    g: np.ndarray


def maximise_closure(prob: Problem, nl: Nonlinearity, Sigma0, tol: float, max_iter: int, inner: int | None = None,
                     order: int = DEFAULT_ORDER, support: Support | None = None) -> ClosureResult:
    """Newton's method on ``F = -S_G`` from the preactivation kernel ``Sigma0`` (module
    docstring), at most ``max_iter`` steps of at most ``inner`` CG iterations (default 10 on
    ``(T, P, P)`` stacks, 100 there after a rounding stop, 100 on the dense layout, where a step
    with fewer leaves the slow growth of a broken branch to many more Newton steps: 50 instead of
    4 at n = 256), the Newton system
    solved to the relative accuracy ``min(0.1, √residual)`` inside a trust region; stopped once
    both residuals are below ``tol``, when the line search finds no decrease, or when shorter
    steps no longer lower the residuals once ``F`` cannot tell (the point with the smallest
    residuals is returned). ``Sigma0`` may also be a
    :class:`.closure_lowrank.LowRankStart`: its low-rank stage runs first (``max_iter`` bounds
    both stages' iterations together). ``support``: :func:`closure_support` where the prior
    covariance is singular (``None``: regular)."""
    iterations = 0
    if isinstance(Sigma0, LowRankStart):
        f = ClosureObjective(prob, nl, Sigma0.mask, order, support)
        D, iterations = low_rank_stage(f.data, nl, Sigma0.V, min(max_iter, LOW_RANK_ITERATIONS), order)
    else:
        f = _objective_for(prob, nl, Sigma0, order, support)
        D = f.innovation(Sigma0)
    escalate = inner is None and f.local  # a rounding stop goes on with DENSE_INNER (module docstring)
    if inner is None:
        inner = LOCAL_INNER if f.local else DENSE_INNER
    F, g = f.value_and_gradient(D)
    if not np.isfinite(F):
        raise ValueError("init: Sigma or K(G_phi(Sigma)) is not positive definite at the initial kernel")
    radius = 1.0  # of the trust region, in the norm ||p||_Sigma: the step's size relative to Sigma
    best, at_rounding, retries = None, False, 0
    while True:
        point = f.point(D)
        forward, backward = _residuals(point, f.mask, f.complement)
        if best is None or max(forward, backward) < max(best.forward, best.backward):
            best, retries = _Iterate(point, forward, backward, D, F, g), 0
        elif at_rounding and F >= best.F - _rounding(F):
            # F cannot tell this point from the best one, and the residual grew: back there, a shorter step
            retries += 1
            point, forward, backward, D, F, g = best
            radius = 0.25 * length
        stopped = "" if max(forward, backward) < tol else (
            "max_iter" if iterations >= max_iter else "rounding" if retries > ROUNDING_RETRIES else None)
        if stopped == "rounding" and escalate:
            escalate, inner, retries, stopped = False, DENSE_INNER, 0, None
        if stopped is not None:
            break
        p, length, decrease = steihaug_newton(f.hessian_at(D), np.asarray(point.Sigma), g, radius, max_cg=inner,
                                              eta=min(0.1, np.sqrt(backward)))
        on_boundary = length >= 0.99 * radius
        F_full = f.value(D + p)
        noise = _rounding(F)
        if not np.isfinite(F_full):
            ratio = -np.inf
        elif decrease <= noise:  # F's differences are rounding: trust the model, the residuals decide
            ratio = 1.0 if F_full <= F + noise else -np.inf
        else:
            ratio = (F - F_full) / decrease
        if ratio < 0.25:
            radius = 0.25 * length
        elif ratio > 0.75 and on_boundary:
            radius = 2.0 * radius
        trial = (D + p, F_full) if ratio > 1e-4 else _line_search(f, D, F, g, p)
        if trial is None:
            stopped = "line search"
            break
        at_rounding = retries > 0 or at_rounding_floor(on_boundary, decrease, noise, F, trial[1])
        D = trial[0]
        F, g = f.value_and_gradient(D)
        iterations += 1
    point, forward, backward = best.point, best.forward, best.backward
    point = ClosurePoint(*(f.full(x) if np.ndim(x) else x for x in point))
    if f.local and not nl.odd:  # a non-odd phi correlates steps through the means: C_ts = <φ><φ>ᵀ
        point = point._replace(C=np.asarray(gaussian_map(nl, order, jnp.asarray(point.Sigma))))
    phi_mean = None if nl.odd else _feature_mean(np.diag(point.Sigma), nl, order)
    converged = bool(max(forward, backward) < tol)
    return ClosureResult(point, forward, backward, converged, iterations, phi_mean, "" if converged else stopped)


def _objective_for(prob: Problem, nl: Nonlinearity, Sigma0, order: int, support: Support | None) -> ClosureObjective:
    """The objective on the blocks reachable from ``Sigma0`` (:func:`free_mask`): time-local
    ``(T, P, P)`` stacks when those are the equal-time blocks only, dense otherwise."""
    labels = invariant_components(prob, np.asarray(Sigma0))
    if len(np.unique(labels)) == prob.T:
        return ClosureObjective.time_local(prob, nl, order, support)
    return ClosureObjective(prob, nl, free_mask(prob, Sigma0), order, support)


def _feature_mean(variances: np.ndarray, nl: Nonlinearity, order: int) -> np.ndarray:
    """``<φ(h_i)>`` for ``h_i ~ N(0, v_i)``: the magnitude from ``<φ(h_i)>² =`` the diagonal of
    :func:`.lazy.feature_mean_outer` (closed form where there is one), the sign from 1-D
    Gauss–Hermite quadrature."""
    x, w = gauss_hermite(order)
    sign = np.sign(np.asarray(nl.fn(np.sqrt(variances)[:, None] * x)) @ w)
    return sign * np.sqrt(np.maximum(np.diag(feature_mean_outer(variances, nl, order)), 0.0))


def closure_support(prob: Problem, lazy_preactivation: np.ndarray) -> Support:
    """The support of the closure's kernels, and of the particle solver's trajectories: the range
    of the lazy preactivation kernel ``K(C_lazy)`` per class of the prior kernel's time partition
    (:func:`.kernels.kernel_support`).
    Every ``Sigma`` reached lies in it: a block ``Sigma_tt`` without recurrent input is the input
    kernel plus an innovation on its range, one with recurrent input carries ``G_φ`` of the step
    before, which for a nonlinear ``phi`` is singular only along equalities that the network keeps
    at every step (duplicate sequences; ``h_a = -h_b`` for an odd ``phi``)."""
    return kernel_support(prob, lazy_preactivation)


def trained_support(prob: Problem, K, support: Support | None) -> Support | None:
    """The support of a trained preactivation kernel ``K`` ``(n, n)`` (:func:`.kernels.kernel_support`
    at the pivot :data:`TRAINED_SUPPORT_RTOL`) where it has lower rank than ``support`` (``None``:
    the whole space), else ``None``. Training can make ``K`` numerically singular where the lazy one
    is not: ``G_erf`` of a shrunken rank-D ``Sigma`` is nearly of rank D (erf RNN on integration,
    D = 4, P = 256: ``cond K`` 2.5e15 on the lazy support)."""
    refined = kernel_support(prob, K, rtol=TRAINED_SUPPORT_RTOL)
    return refined if refined.rank < (prob.n if support is None else support.rank) else None


def maximise_closure_on_support(prob: Problem, nl: Nonlinearity, Sigma0, tol: float, max_iter: int,
                                inner: int | None = None,
                                support: Support | None = None) -> tuple[ClosureResult, Support | None]:
    """:func:`maximise_closure`, restarted from its best point on the support of the trained
    ``K`` (:func:`trained_support`) for as long as its line search finds no step (the derivatives
    no longer describe ``F``) and that support has lower rank: where ``K`` is numerically singular
    the whitened KL term is rounding, and the innovation there is held at the prior
    (``Sigma = K``), as on an exactly singular prior covariance (THEORY.md §3). Not after a stop at
    ``F``'s rounding floor, and a restart that ends short of ``tol`` with larger residuals is
    dropped: there the restart did not help (sequential erf RNN at P = 128, tol 1e-6: 51 more Newton
    steps, residual 5.9e-6 against 2.9e-6). Returns the result (iterations of all runs) and the
    support of its point."""
    r = maximise_closure(prob, nl, Sigma0, tol, max_iter, inner, support=support)
    while not r.converged and r.stopped == "line search":
        refined = trained_support(prob, r.point.K, support)
        if refined is None:
            break
        again = maximise_closure(prob, nl, r.point.Sigma, tol, max_iter - r.iterations, inner, support=refined)
        again = again._replace(iterations=r.iterations + again.iterations)
        if not again.converged and again.residual >= r.residual:
            return r._replace(iterations=again.iterations), support
        r, support = again, refined
    return r, support


def closure_broken_start(prob: Problem, nl: Nonlinearity, Sigma_sym: np.ndarray, order: int = DEFAULT_ORDER,
                         support: Support | None = None) -> LowRankStart | np.ndarray:
    """The closure's symmetry-broken start from its symmetric solution ``Sigma_sym``: the
    low-rank start (:func:`.closure_lowrank.closure_broken_factor`) where the symmetric solution
    is time-local and the broken start dense (an endpoint task), the convex mix
    :func:`.starts.broken_start` otherwise."""
    blocks = lambda: ClosureObjective.time_local(prob, nl, order, support).innovation(Sigma_sym)  # noqa: E731
    factor = closure_broken_factor(prob, np.asarray(Sigma_sym), blocks)
    return broken_start(prob, np.asarray(Sigma_sym)) if factor is None else factor


def closure_branch(prob: Problem, nl: Nonlinearity, Sigma0, tol: float, max_iter: int, inner: int | None,
                   init: str, support: Support | None = None) -> Branch:
    """One start of the closure (:func:`maximise_closure_on_support`) as a :class:`.branch.Branch`
    with ``S = S_G``, its ``Sigma`` and the support it ended on. BLAS runs on one thread: jax's
    LAPACK kernels share it, and two pools on the same cores took twice as long (n = 256)."""
    with threadpool_limits(limits=1, user_api="blas"):
        r, support = maximise_closure_on_support(prob, nl, Sigma0, tol, max_iter, inner, support)
    x = r.point
    gamma, energy = float(x.gamma), float(x.energy)
    return Branch(C=np.asarray(x.C), Ct=np.asarray(x.Ct), S=-(gamma + energy), Gamma=gamma, E=energy, init=init,
                  converged=r.converged, residual_forward=r.residual_forward,
                  residual_backward=r.residual_backward, iterations=r.iterations, phi_mean=r.phi_mean,
                  Sigma=np.asarray(x.Sigma), support=support, stopped=r.stopped)
