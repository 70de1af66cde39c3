"""Maximise the action ``S(C)`` over positive definite kernels (THEORY.md §3).

Algorithm: ``C = R Rᵀ`` with ``R = L0 M``, ``L0`` the Cholesky factor of the current kernel
and ``M`` lower triangular (identity at the start), so the search begins in whitened,
affine-invariant coordinates where ``log det C`` is perfectly conditioned. L-BFGS maximises
``S`` over the free entries of ``M`` with exact gradients (JAX autodiff, float64, jit); every
``C`` it visits is positive definite by construction and its line search works on ``S``
itself, which is what keeps strong learning signals stable where the plain forward–backward
fixed point diverges. After each L-BFGS run the coordinates are re-centred (``L0 <- L0 M``)
until both stationarity residuals are below ``tol``.

Structure: ``M`` is restricted to the blocks of time steps that the sharing pattern couples
(connected components of the time-coupling graph; :mod:`.kernels`). For a DNN these are the
equal-time blocks, so the search is over ``T·P(P+1)/2`` numbers instead of ``n(n+1)/2``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from ..nonlinearities import get_nonlinearity
from ..spec import Architecture, Prior, Task
from .action import action_terms, residuals
from .kernels import Problem, make_problem
from .lazy import lazy_kernel

__all__ = ["solve", "predict", "Solution", "Branch", "ConvergenceWarning", "broken_start"]


class ConvergenceWarning(UserWarning):
    """The solver stopped before both stationarity residuals fell below ``tol``."""


@dataclass(frozen=True)
class Branch:
    """One stationary point of ``S``: kernel, conjugate kernel, action and diagnostics."""

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

    @property
    def residual(self) -> float:
        return max(self.residual_forward, self.residual_backward)


@partial(jax.jit, static_argnames=("P",))
def _negative_action(m, rows, cols, L0, MW, Mv, K_in, S_idx, y, kappa, P):
    n = L0.shape[0]
    M = jnp.zeros((n, n)).at[rows, cols].set(m)
    S, _, _ = action_terms(L0 @ M, MW, Mv, K_in, S_idx, y, kappa, P)
    return -S


_negative_action_and_grad = jax.jit(jax.value_and_grad(_negative_action), static_argnames=("P",))


def _maximise(prob: Problem, C0: np.ndarray, tol: float, max_iter: int, max_restarts: int, init: str) -> Branch:
    mask = np.tril(prob.block_mask())
    rows, cols = np.nonzero(mask)
    eye = np.eye(prob.n)[rows, cols]
    L0 = np.linalg.cholesky(0.5 * (C0 + C0.T)) * mask  # block-structured like C0
    args = tuple(map(jnp.asarray, (rows, cols))), tuple(
        map(jnp.asarray, (prob.MW, prob.Mv, prob.K_in, prob.S, prob.y))
    )
    iterations = 0

    def objective(m, L0):
        value, grad = _negative_action_and_grad(jnp.asarray(m), *args[0], jnp.asarray(L0), *args[1], prob.kappa, P=prob.P)
        value = float(value)
        if not np.isfinite(value):
            return 1e300, np.zeros_like(m)
        return value, np.asarray(grad)

    for _ in range(max_restarts + 1):
        result = scipy.optimize.minimize(
            objective,
            eye,
            args=(L0,),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "maxcor": 30, "gtol": 1e-3 * tol, "ftol": 1e-16},
        )
        iterations += int(result.nit)
        M = np.zeros((prob.n, prob.n))
        M[rows, cols] = result.x
        L0 = L0 @ M
        C = L0 @ L0.T
        forward, backward, Ct = residuals(prob, C)
        if max(forward, backward) < tol:
            break
    S, gamma, energy = action_terms(
        jnp.asarray(L0), prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.S), prob.y, prob.kappa, prob.P
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


def _same_branch(C1: np.ndarray, C2: np.ndarray, T: int, P: int, rtol: float = 1e-3) -> bool:
    """Equal up to the ``W -> -W`` symmetry (``C_ts -> (-1)^(t-s) C_ts``)."""
    parity = np.repeat((-1.0) ** np.arange(T), P)
    scale = np.linalg.norm(C1)
    return min(np.linalg.norm(C1 - C2), np.linalg.norm(C1 - parity[:, None] * C2 * parity)) < rtol * scale


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

    def predict(self, N: int | None = None):
        """Posterior predictive at every ``(a, t)``; see :func:`kernelfield.theory.predict.predictive`."""
        from .predict import predictive

        return predictive(self.problem, self.C, N=N)

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
    max_iter: int = 3000,
    max_restarts: int = 6,
) -> Solution:
    """Trained kernels: the maximiser of ``S(C) = -Gamma(C) - E(C)``.

    init: ``"auto"`` (default) starts from the prior kernel and from a symmetry-broken kernel
    (:func:`broken_start`) and keeps every distinct branch; ``"prior"`` or ``"broken"`` uses one
    start; an ``(n, n)`` array is used as the start. The returned solution is the branch with the
    largest ``S``. A ``ConvergenceWarning`` (with the residual) is issued when it did not converge.
    """
    nl = get_nonlinearity(phi)
    if not nl.solver_ready:
        raise NotImplementedError(f"phi: the solver does not support {nl.name!r} yet; supported: linear")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol: must be a number > 0, got {tol!r}")
    started = time.perf_counter()
    prob = make_problem(arch, task, prior, kappa)
    C_prior = lazy_kernel(prob, nl)
    run = partial(_maximise, prob, tol=tol, max_iter=max_iter, max_restarts=max_restarts)

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
    for b in sorted(found, key=lambda b: -b.S):
        if not any(_same_branch(b.C, other.C, prob.T, prob.P) for other in branches):
            branches.append(b)
    sol = Solution(arch, task, prior, nl.name, float(kappa), tuple(branches), prob, time.perf_counter() - started)
    if not sol.converged:
        warnings.warn(
            f"solve: did not converge (residual {sol.residual:.2e} > tol {tol:.1e}) after "
            f"{sol.best.iterations} L-BFGS iterations; check sol.converged / sol.residual",
            ConvergenceWarning,
            stacklevel=2,
        )
    return sol


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
