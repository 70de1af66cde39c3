"""Maximise the action ``S(C)`` over positive definite kernels (THEORY.md §3).

This module holds the exact solver for linear ``phi`` (below) and the public entry point
:func:`solve`; any other ``phi`` is solved by the particle solver of :mod:`.particles`, with the
same starts, branches and :class:`Branch` records.

Coordinates (causal innovations): the kernel is written through its innovation
``D = C - K(C)``, ``C = (I - 𝒮)⁻¹(K_in + D)`` with ``𝒮(X) = g² M_W ∘ shift(X)`` nilpotent, so
``T - 1`` forward sweeps give ``C`` and ``K(C) = C - D`` exactly. In these coordinates the
Hessian of ``Gamma`` at ``D = 0`` is ``½||K^{-1/2} dD K^{-1/2}||²``: with ``D = D0 + L X Lᵀ`` and
``L = chol K`` it is the identity, whereas in ``C`` coordinates it carries ``(I - 𝒮)ᵀ(I - 𝒮)``,
which is ill-conditioned along the time chain (15–30× more iterations).

Optimiser: optax L-BFGS on ``-S(X)`` with exact gradients (JAX autodiff, float64, jit) and a
backtracking Armijo line search on ``S`` itself; a step where ``C`` or ``K`` is not positive
definite gives a NaN action and is rejected, so every accepted iterate is a valid kernel and
``S`` never decreases. This is what keeps strong learning signals stable where the plain
forward–backward fixed point diverges. Every ``inner`` steps the coordinates are re-whitened
(``D0 <- D``, ``L <- chol K``) and both stationarity residuals are checked against ``tol``.

Structure: ``X`` is restricted to the blocks of time steps that the sharing pattern couples
(connected components of the time-coupling graph; :mod:`.kernels`). For a DNN these are the
equal-time blocks, so the search is over ``T·P(P+1)/2`` numbers instead of ``n(n+1)/2``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg

from ..compare import parity_flip
from ..nonlinearities import get_nonlinearity
from ..spec import Architecture, Prior, Task
from .action import action_terms, residuals
from .kernels import Problem, make_problem, shift
from .lazy import lazy_kernel
from .particles import ParticleSettings, maximise_particles, time_symmetric_mask

__all__ = ["solve", "predict", "Solution", "Branch", "ConvergenceWarning", "broken_start"]


class ConvergenceWarning(UserWarning):
    """The solver stopped before both stationarity residuals fell below ``tol``."""


@dataclass(frozen=True)
class Branch:
    """One stationary point of ``S``: kernel, conjugate kernel, action and diagnostics.

    Monte Carlo solutions (nonlinear ``phi``) also carry ``C_err`` (standard errors of ``C``),
    ``S_err`` and ``mc_error`` (largest entrywise standard error relative to
    ``sqrt(C_ii C_jj)``) and ``phi_mean`` (``<φ>`` per ``(t, a)``, ``None`` where it vanishes by
    symmetry); for the exact linear solver these are ``None``/0."""

    C: np.ndarray
    Ct: np.ndarray
    S: float
    Gamma: float
    E: float
    init: str
    converged: bool
    residual_forward: float
    residual_backward: float
    iterations: int
    C_err: np.ndarray | None = None
    S_err: float = 0.0
    mc_error: float = 0.0
    phi_mean: np.ndarray | None = None

    @property
    def residual(self) -> float:
        return max(self.residual_forward, self.residual_backward)


@partial(jax.jit, static_argnames=("P", "T"))
def _kernel_from_innovation(B, MW, P: int, T: int):
    """``C = (I - 𝒮)⁻¹ B``: ``T - 1`` sweeps of ``C <- MW ∘ shift(C) + B`` are exact."""
    C = B
    for _ in range(T - 1):
        C = MW * shift(C, P) + B
    return 0.5 * (C + C.T)


def _dense_negative_action(x, rows, cols, D0, L, MW, Mv, K_in, S_idx, y, kappa, P, T):
    """``-S`` at innovation ``D0 + L (X + Xᵀ) Lᵀ``, ``X`` the free entries ``x`` at ``(rows, cols)``."""
    n = L.shape[0]
    X = jnp.zeros((n, n)).at[rows, cols].set(x)
    C = _kernel_from_innovation(K_in + D0 + L @ (X + X.T) @ L.T, MW, P, T)
    S, _, _ = action_terms(jnp.linalg.cholesky(C), MW, Mv, K_in, S_idx, y, kappa, P)
    return -S


@jax.jit
def _local_kernel(B, w):
    """Time-local ``C = (I - 𝒮)⁻¹ B`` on ``(T, P, P)`` blocks: ``c_t = w_t c_{t-1} + b_t``."""
    def sweep(previous, inputs):
        b, w_t = inputs
        c = w_t * previous + b
        return c, c

    _, C = jax.lax.scan(sweep, jnp.zeros_like(B[0]), (B, w))
    return 0.5 * (C + jnp.swapaxes(C, 1, 2))


def _local_negative_action(x, rows, cols, D0, L, w, K_in, supervised, y, v, kappa):
    """``-S`` when every coupled component is a single time step (e.g. a DNN): all kernels are
    block diagonal and ``S = Σ_t [½ log det(K_t⁻¹ c_t) - ½ tr(K_t⁻¹ c_t) + P/2 - ½ y_tᵀ A_t⁻¹ y_t]``
    with ``K_t = w_t c_{t-1} + K_in,t`` and ``A_t = s_t s_tᵀ ∘ (v_t c_t) + κ I`` (``s_t`` the
    supervised mask at step t, ``y_t`` zero where unsupervised), batched over ``t``."""
    T, P, _ = D0.shape
    X = jnp.zeros((T, P, P)).at[:, rows, cols].set(x.reshape(T, -1))
    D = D0 + L @ (X + jnp.swapaxes(X, 1, 2)) @ jnp.swapaxes(L, 1, 2)
    C = _local_kernel(K_in + D, w)
    K = w[:, None, None] * jnp.concatenate([jnp.zeros_like(C[:1]), C[:-1]]) + K_in
    Lc, Lk = jnp.linalg.cholesky(C), jnp.linalg.cholesky(K)
    Z = jax.scipy.linalg.solve_triangular(Lk, Lc, lower=True)
    logdet = lambda L: 2.0 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(L, axis1=1, axis2=2))))  # noqa: E731
    gamma = 0.5 * (jnp.sum(Z**2) - logdet(Lc) + logdet(Lk) - T * P)
    A = supervised[:, :, None] * supervised[:, None, :] * v[:, None, None] * C + kappa * jnp.eye(P)
    a = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(A), y[:, :, None], lower=True)
    return gamma + 0.5 * jnp.sum(a**2)


@partial(jax.jit, static_argnames=("objective", "steps"))
def _lbfgs_steps(x, arrays, objective, steps):
    """``steps`` L-BFGS iterations on ``objective(x, *arrays)``; returns the best finite point
    seen and its value."""
    fun = lambda x: objective(x, *arrays)  # noqa: E731
    opt = optax.lbfgs(
        memory_size=30,
        linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=60, decrease_factor=0.5, store_grad=True),
    )
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry, _):
        x, state, best_x, best_value = carry
        value, grad = value_and_grad(x, state=state)
        better = jnp.isfinite(value) & (value < best_value)
        best_x = jnp.where(better, x, best_x)
        best_value = jnp.where(better, value, best_value)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        return (optax.apply_updates(x, updates), state, best_x, best_value), None

    carry = (x, opt.init(x), x, jnp.asarray(jnp.inf))
    (x, _, best_x, best_value), _ = jax.lax.scan(step, carry, None, length=steps)
    final = fun(x)
    use_final = jnp.isfinite(final) & (final < best_value)
    return jnp.where(use_final, x, best_x), jnp.where(use_final, final, best_value)


@lru_cache(maxsize=None)
def _dense_objective(P: int, T: int):
    """One (hashable) objective per shape, so the jitted L-BFGS compiles once per shape."""
    return partial(_dense_negative_action, P=P, T=T)


class _DenseCoordinates:
    """Innovation ``D`` (n, n), free on the coupled blocks; whitening ``L = chol K``."""

    def __init__(self, prob: Problem):
        self.prob = prob
        self.rows, self.cols = np.nonzero(np.tril(prob.block_mask()))
        self.objective = _dense_objective(prob.P, prob.T)

    def innovation(self, C):
        C = 0.5 * (C + C.T) * self.prob.block_mask()
        return C - np.asarray(self.prob.K(C))

    def kernel(self, D):
        return np.asarray(_kernel_from_innovation(self.prob.K_in + D, self.prob.MW, self.prob.P, self.prob.T))

    def whitening(self, D):
        return np.linalg.cholesky(self.kernel(D) - D)

    def arrays(self, D, L):
        p = self.prob
        return (self.rows, self.cols, D, L, p.MW, p.Mv, p.K_in, p.S, p.y, p.kappa)

    def update(self, D, L, x):
        X = np.zeros_like(D)
        X[self.rows, self.cols] = x
        return D + L @ (X + X.T) @ L.T


class _TimeLocalCoordinates(_DenseCoordinates):
    """The same innovation restricted to equal-time blocks, held as ``(T, P, P)`` stacks: used
    when the sharing pattern couples no two time steps (every component a single step), so
    the cost per evaluation is ``O(T P³)`` instead of ``O((TP)³)``."""

    def __init__(self, prob: Problem):
        self.prob = prob
        T, P = prob.T, prob.P
        self.rows, self.cols = np.tril_indices(P)
        self.objective = _local_negative_action
        diag = lambda M: np.stack([M[t * P:(t + 1) * P, t * P:(t + 1) * P] for t in range(T)])  # noqa: E731
        self._diag = diag
        self.w = np.array([prob.MW[t * P, t * P] for t in range(T)])
        self.v = np.array([prob.Mv[t * P, t * P] for t in range(T)])
        self.K_in = diag(prob.K_in)
        mask = np.zeros(T * P)
        mask[prob.S] = 1.0
        y = np.zeros(T * P)
        y[prob.S] = prob.y
        self.supervised, self.y = mask.reshape(T, P), y.reshape(T, P)

    def innovation(self, C):
        c = self._diag(0.5 * (C + C.T))
        return c - (self.w[:, None, None] * np.concatenate([np.zeros_like(c[:1]), c[:-1]]) + self.K_in)

    def kernel(self, D):
        return scipy.linalg.block_diag(*np.asarray(_local_kernel(self.K_in + D, self.w)))

    def whitening(self, D):
        c = np.asarray(_local_kernel(self.K_in + D, self.w))
        return np.linalg.cholesky(c - D)

    def arrays(self, D, L):
        return (self.rows, self.cols, D, L, self.w, self.K_in, self.supervised, self.y, self.v, self.prob.kappa)

    def update(self, D, L, x):
        X = np.zeros_like(D)
        X[:, self.rows, self.cols] = x.reshape(len(D), -1)
        return D + L @ (X + np.swapaxes(X, 1, 2)) @ np.swapaxes(L, 1, 2)


def _maximise(prob: Problem, C0: np.ndarray, tol: float, max_iter: int, inner: int, init: str) -> Branch:
    time_local = np.array_equal(prob.components, np.arange(prob.T))
    coords = (_TimeLocalCoordinates if time_local else _DenseCoordinates)(prob)
    D = coords.innovation(np.asarray(C0))  # C0 = (I - 𝒮)⁻¹(K_in + D)
    iterations, best = 0, -np.inf
    forward = backward = np.inf
    while iterations < max_iter:
        L = coords.whitening(D)
        steps = min(inner, max_iter - iterations)
        arrays = tuple(map(jnp.asarray, coords.arrays(D, L)))
        x, value = _lbfgs_steps(jnp.zeros(len(coords.rows) * (prob.T if time_local else 1)), arrays,
                                objective=coords.objective, steps=steps)
        iterations += steps
        D = coords.update(D, L, np.asarray(x))
        C = np.asarray(coords.kernel(D))
        forward, backward, Ct = residuals(prob, C)
        if max(forward, backward) < tol or not -float(value) > best:
            break  # converged, or no progress in a whole round
        best = -float(value)
    S, gamma, energy = action_terms(
        jnp.linalg.cholesky(jnp.asarray(C)), prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.S), prob.y, prob.kappa, prob.P
    )
    return Branch(
        C=C,
        Ct=Ct,
        S=float(S),
        Gamma=float(gamma),
        E=float(energy),
        init=init,
        converged=bool(max(forward, backward) < tol),
        residual_forward=forward,
        residual_backward=backward,
        iterations=iterations,
    )


def broken_start(prob: Problem, C_sym: np.ndarray, mix: float = 0.5) -> np.ndarray:
    """A symmetry-broken but positive definite initial kernel: the convex mix
    ``(1 - mix)·C_sym + mix·(J_T ⊗ Ā)`` with ``Ā`` the mean equal-time block of ``C_sym`` and
    ``J_T`` the all-ones ``T × T`` matrix (a kernel fully correlated across time), restricted to
    the coupled blocks (a Schur product with a positive semidefinite 0/1 mask)."""
    T, P = prob.T, prob.P
    blocks = C_sym.reshape(T, P, T, P)
    mean_block = np.mean([blocks[t, :, t, :] for t in range(T)], axis=0)
    correlated = np.kron(np.ones((T, T)), mean_block) * prob.block_mask()
    return (1.0 - mix) * C_sym + mix * correlated


def _same_branch(b1: Branch, b2: Branch, T: int, P: int, rtol: float = 1e-3) -> bool:
    """Equal up to the ``W -> -W`` symmetry (``C_ts -> (-1)^(t-s) C_ts``), within ``rtol`` or,
    for Monte Carlo solutions, within 5 combined standard errors."""
    noise = sum(np.linalg.norm(b.C_err) for b in (b1, b2) if b.C_err is not None)
    distance = min(np.linalg.norm(b1.C - b2.C), np.linalg.norm(b1.C - parity_flip(b2.C, T, P)))
    return distance < rtol * np.linalg.norm(b1.C) + 5.0 * noise


@dataclass(frozen=True, eq=False)
class Solution:
    """The dominant (largest-``S``) stationary point of the action and every branch found.

    ``C`` and ``Ct`` are ``(T*P, T*P)`` with time-major index ``t*P + a``.
    """

    arch: Architecture
    task: Task
    prior: Prior
    phi: str
    kappa: float
    branches: tuple[Branch, ...]
    problem: Problem = field(repr=False)
    seconds: float = 0.0

    @property
    def best(self) -> Branch:
        return max(self.branches, key=lambda b: b.S)

    C = property(lambda self: self.best.C, doc="trained kernel (dominant branch)")
    Ct = property(lambda self: self.best.Ct, doc="conjugate kernel from the backward equation")
    S = property(lambda self: self.best.S, doc="action of the dominant branch")
    converged = property(lambda self: self.best.converged)
    residual = property(lambda self: self.best.residual, doc="max of the two stationarity residuals")

    @property
    def C_centred(self) -> np.ndarray:
        """Kernel of the centred features ``C - <φ><φ>ᵀ`` (THEORY.md §4; equal to ``C`` for odd ``phi``)."""
        m = self.best.phi_mean
        return self.C if m is None else self.C - np.outer(m, m)

    def predict(self, N: int | None = None):
        """Posterior predictive at every ``(a, t)``; see :func:`kernelfield.theory.predict.predictive`."""
        from .predict import predictive

        return predictive(self.problem, self.C, N=N)

    def coherence_by_lag(self):
        """Temporal coherence per lag; see :func:`kernelfield.observables.coherence_by_lag`."""
        from ..observables import coherence_by_lag

        return coherence_by_lag(self)

    def to_xarray(self):
        """Labelled ``xarray.Dataset`` with provenance; see :func:`kernelfield.storage.solution_to_dataset`."""
        from ..storage import solution_to_dataset

        return solution_to_dataset(self)


def solve(
    arch: Architecture,
    task: Task,
    prior: Prior = Prior(),
    phi="linear",
    kappa: float = 0.1,
    init="auto",
    tol: float = 1e-6,
    max_iter: int | None = None,
    inner: int = 10,
    method: str = "auto",
    num_particles: int = 4096,
    mc_tol: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> Solution:
    """Trained kernels: the maximiser of ``S(C) = -Gamma(C) - E(C)``.

    method: ``"exact"`` (linear ``phi`` only: closed-form ``Gamma``, L-BFGS; see the module
    docstring), ``"particles"`` (any ``phi``: mean-field Langevin dynamics of ``num_particles``
    trajectories with Monte Carlo error bars, :mod:`.particles`) or ``"auto"`` (exact for linear,
    particles otherwise). max_iter: L-BFGS iterations (default 5000) or particle iterations
    (default 5000) per start; inner: L-BFGS iterations between re-whitenings; mc_tol: the
    particle solver averages until the largest entrywise standard error of ``C`` (relative to
    ``sqrt(C_ii C_jj)``) is below it; seed: the particle solver's random seed.

    init: ``"auto"`` (default) starts from the prior kernel and from a symmetry-broken kernel
    (:func:`broken_start`) and keeps every distinct branch; ``"prior"`` or ``"broken"`` uses one
    start; an ``(n, n)`` array is used as the start. The returned solution is the branch with the
    largest ``S``. A branch is converged when both stationarity residuals are below ``tol`` (for
    the particle solver: below ``tol`` or within 3 Monte Carlo standard errors of zero). A
    ``ConvergenceWarning`` (with the residual) is issued when the dominant one did not converge.
    """
    nl = get_nonlinearity(phi)
    if method not in ("auto", "exact", "particles"):
        raise ValueError(f"method: must be 'auto', 'exact' or 'particles', got {method!r}")
    if method == "auto":
        method = "exact" if nl.name == "linear" else "particles"
    if method == "exact" and nl.name != "linear":
        raise ValueError(f"method: 'exact' needs phi = 'linear' (closed-form Gamma); use 'particles' for {nl.name!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol: must be a number > 0, got {tol!r}")
    max_iter = 5000 if max_iter is None else max_iter
    for name, value in (("max_iter", max_iter), ("inner", inner)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    started = time.perf_counter()
    prob = make_problem(arch, task, prior, kappa)
    C_prior = lazy_kernel(prob, nl)
    if method == "exact":
        run = partial(_maximise, prob, tol=tol, max_iter=max_iter, inner=inner)
    else:
        settings = ParticleSettings(num_particles=num_particles, mc_tol=mc_tol, max_iter=max_iter, seed=seed,
                                    progress=progress)
        run = partial(_maximise_particles, prob, nl, settings=settings, tol=tol)

    if isinstance(init, str) and init in ("auto", "prior", "broken"):
        first = run(C_prior, init="prior")
        found = [first] if init != "broken" else []
        if init in ("auto", "broken"):
            found.append(run(broken_start(prob, first.C), init="broken"))
    elif isinstance(init, str):
        raise ValueError(f"init: must be 'auto', 'prior', 'broken' or an (n, n) array, got {init!r}")
    else:
        C0 = np.asarray(init, dtype=np.float64)
        if C0.shape != (prob.n, prob.n) or not np.all(np.isfinite(C0)):
            raise ValueError(f"init: expected a finite ({prob.n}, {prob.n}) kernel, got shape {C0.shape}")
        try:
            np.linalg.cholesky(0.5 * (C0 + C0.T))
        except np.linalg.LinAlgError:
            raise ValueError("init: kernel is not positive definite") from None
        found = [run(C0, init="user")]

    branches: list[Branch] = []
    for b in found:  # in start order, so a branch keeps the label of the first start that found it
        if not any(_same_branch(b, other, prob.T, prob.P) for other in branches):
            branches.append(b)
    branches.sort(key=lambda b: -b.S)
    sol = Solution(arch, task, prior, nl.name, float(kappa), tuple(branches), prob, time.perf_counter() - started)
    if not sol.converged:
        warnings.warn(
            f"solve: did not converge (residual {sol.residual:.2e} > tol {tol:.1e}) after "
            f"{sol.best.iterations} {'L-BFGS' if method == 'exact' else 'particle'} iterations "
            f"(max_iter={max_iter}); check sol.converged / sol.residual",
            ConvergenceWarning,
            stacklevel=2,
        )
    return sol


def _maximise_particles(prob: Problem, nl, C0: np.ndarray, settings: ParticleSettings, tol: float,
                        init: str) -> Branch:
    """One start of the particle solver: trajectories drawn from ``N(0, K(C0))``. The prior start
    of an odd ``phi`` stays in the time-symmetric subspace where that subspace is invariant."""
    free = prob.block_mask()
    symmetric = time_symmetric_mask(prob, nl) if init == "prior" else None
    if symmetric is not None:
        free = free * symmetric
    r = maximise_particles(prob, nl, np.asarray(prob.K(C0)), free, settings, label=init)
    limit = max(tol, 3.0 * r.residual_error)
    return Branch(C=r.C, Ct=r.Ct, S=r.S, Gamma=r.Gamma, E=r.E, init=init,
                  converged=bool(r.burned_in and max(r.residual_forward, r.residual_backward) <= limit),
                  residual_forward=r.residual_forward, residual_backward=r.residual_backward,
                  iterations=r.iterations, C_err=r.C_err, S_err=r.S_err, mc_error=r.mc_error,
                  phi_mean=None if nl.odd else r.phi_mean)


def predict(sol: Solution, new_inputs, N: int | None = None, **solve_kwargs):
    """Posterior predictive for new sequences ``new_inputs`` ``(P_new, T, D)``: they are
    appended to the task as unsupervised rows, the theory is solved again on the enlarged set
    (same architecture, prior, phi, kappa) and the prediction for the new rows is returned
    (a :class:`~kernelfield.Prediction` with arrays of shape ``(P_new, T)``)."""
    task = sol.task.with_sequences(new_inputs)
    enlarged = solve(sol.arch, task, prior=sol.prior, phi=sol.phi, kappa=sol.kappa, **solve_kwargs)
    full = enlarged.predict(N=N)
    P = sol.task.P
    return type(full)(mean=full.mean[P:], var=full.var[P:], N=N)
