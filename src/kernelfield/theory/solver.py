"""Maximise the action ``S(C)`` over positive definite kernels (THEORY.md §3).

This module holds the exact solver for linear ``phi`` (below) and the public entry point
:func:`solve`; any other ``phi`` is solved by the particle solver of :mod:`.particles`, with the
same starts, branches and :class:`Branch` records.

Coordinates (causal innovations): the kernel is written through its innovation
``D = C - K(C)``, ``C = (I - 𝒮)⁻¹(K_in + D)`` with ``𝒮(X) = g² M_W ∘ shift(X)`` nilpotent, so
one causal sweep over the time blocks gives ``C`` and ``K(C) = C - D`` exactly. In these
coordinates the Hessian of ``Gamma`` at ``D = 0`` is ``½ tr(K⁻¹dD K⁻¹dD)``, i.e. the identity
after whitening ``dD = L dX Lᵀ`` with ``L = chol K``, whereas in ``C`` coordinates it carries
``(I - 𝒮)ᵀ(I - 𝒮)``, which is ill-conditioned along the time chain.

Optimiser: Newton's method on ``F = -S`` in ``D`` with the gradient and Hessian-vector products
in closed form (:mod:`.action`: one factorisation of ``C`` and ``K`` per Newton step, matrix
products otherwise). The Newton system is solved by conjugate gradients preconditioned with that
metric (``R ↦ K R K``), truncated at a relative accuracy that tightens as the residual falls and
at negative curvature; the data term enters the Hessian with rank at most ``|S|``, so few
iterations are needed. A backtracking Armijo line search on ``S`` itself follows: a step where
``C`` or ``K`` is not positive definite has no action and is rejected, so every accepted iterate
is a valid kernel and ``S`` never decreases. This keeps strong learning signals stable where
the plain forward–backward fixed point diverges; near the maximum the steps are full Newton
steps and convergence is superlinear.

Symmetry-broken branch (low-rank stage): a kernel that grows geometrically in time (the RNN's
broken branch above the transition) is reached by Newton only after O(T) damped steps, each a
dense ``O(n³)`` Hessian solve. There the innovation is nearly of low rank (``D = 2 C Ct K`` at
the maximum; rank 2 to 1e-5 on endpoint tasks), so the broken start is built as a low-rank
``D = V Vᵀ`` (:func:`broken_factor`) and first maximised over ``V`` by L-BFGS
(:func:`_low_rank_stage`; no positive-definiteness constraint; the rank grown where the gradient
asks for it). Each step works on factors (:class:`.lowrank.FactoredInnovation`: the causal sweep
of ``V Vᵀ`` is a sum of ``R`` rank-one congruences, ``R = r(T - 1)`` for an RNN, so ``K`` is
``C_in`` plus a rank-``R`` term and Woodbury's identity needs no ``n × n`` factorisation, only
triangular solves with ``R`` right-hand sides against the fixed Cholesky factor of ``C_in``).
Where the stage ends with both residuals (in the same factored form) below ``tol``, that is the
branch; otherwise Newton's method polishes the full ``D`` from there with the same test.

Rank-deficient prior covariances (more sequences than input dimensions, repeated or linearly
dependent inputs): every kernel with a finite action lives on the range ``R`` of the prior kernel
(:class:`.kernels.Support`), and so does ``D``. The layouts carry ``R``: factorisations are of
``C + P⊥`` and ``K + P⊥`` (pseudo-inverses and pseudo-determinants on ``R``), gradients are
projected onto ``Sym(R)`` and the starts are projected onto it; nothing else changes, and with
full rank nothing is added or projected. On a dense layout Newton's method works in the
support's own coordinates (:class:`.layouts.SupportLayout`, ``C = Q c Qᵀ`` with ``c`` of the
support's rank ``r``): every product and factorisation is ``O(r³)``, and for an RNN with inputs
at every step ``r <= T·D`` whatever ``P`` is (the factored low-rank stage still runs on
``(n, n)`` kernels). The solution is the ``eps -> 0`` limit of the problem with ``eps·I`` added
to the input kernel (tests/theory/test_rank_deficient.py).

Structure: ``D`` is restricted to the blocks of time steps that the iterates can reach from the
start (:func:`.kernels.invariant_components`, within the components of the time-coupling
graph). When every class is a single time step (a DNN; an RNN's time-symmetric branch) all
kernels are block diagonal and are held as ``(T, P, P)`` stacks
(:class:`.layouts.TimeLocalLayout`), so a Newton step costs ``O(T P³)`` instead of ``O((TP)³)``;
on a singular prior covariance each step's block is held in that step's support coordinates
(:class:`.layouts.TimeLocalSupportLayout`, ``O(Σ_t r_t³)``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, NamedTuple, Sequence

import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import threadpool_limits

from ..model import Model, ModelResult, as_model
from ..observables import coherence_by_lag
from ..spec import Architecture, Prior, Task
from ..symmetry import parity_flip
from ..validation import positive_int, positive_real
from .action import (
    Point,
    backward_residual,
    derivatives,
    evaluate,
    forward_residual,
    hessian_vector,
    low_rank_objective,
)
from .kernels import Problem, make_problem, sym
from .layouts import TimeLocalLayout, layout
from .branch import Branch, ConvergenceWarning
from .closure import STOP_REASONS, check_gaussian_map, closure_branch, closure_broken_start, closure_support
from .lazy import lazy_kernel
from .linalg import inner
from .lowrank import FactoredInnovation
from .newton import armijo_slack, truncated_newton, within_rounding
from .particles import ParticleSettings, maximise_particles, time_symmetric_mask
from .predict import Prediction, predictive
from .starts import broken_factor, broken_start

__all__ = ["solve", "predict", "assemble", "Solution", "Branch", "ConvergenceWarning", "broken_start", "broken_factor"]


def _line_search(lay, x: Point, g, p):
    """Backtracking from the full step until Armijo's condition holds, up to the rounding of
    ``F``, at a positive definite point; ``None`` if no step length is accepted. A step within
    the rounding is kept only if it lowers the residual (:func:`_maximise`)."""
    slope = inner(g, p)
    rounding = armijo_slack(x.F)
    t = 1.0
    for _ in range(50):
        trial = evaluate(lay, x.D + t * p)
        if trial is not None and trial.F <= x.F + 1e-4 * t * slope + rounding:
            return trial
        t *= 0.5
    return None


def _whitened_factors(lay, A, L, count: int, threshold: float):
    """Factors ``L u √μ`` of ``A`` from the eigenpairs ``(μ, u)`` of ``Lᵀ A L`` per class of
    ``lay``: the ``count`` largest with ``μ > threshold``, each supported on its class. Returns
    the factors ``(n, k)`` and the class of each."""
    columns, labels = [], []
    for label in np.unique(lay.labels):
        idx = np.flatnonzero(lay.labels == label)
        Lc = L[np.ix_(idx, idx)]
        mu, U = np.linalg.eigh(sym(Lc.T @ A[np.ix_(idx, idx)] @ Lc))
        for k in range(1, min(count, len(mu)) + 1):
            if mu[-k] <= threshold:
                break
            column = np.zeros(lay.n)
            column[idx] = Lc @ U[:, -k] * np.sqrt(mu[-k])
            columns.append(column)
            labels.append(label)
    return np.array(columns).reshape(-1, lay.n).T, np.array(labels, dtype=int)


def _lbfgs_whitened(objective: FactoredInnovation, V, support, L, max_iter: int, tol: float):
    """Minimise ``F(V Vᵀ)`` by L-BFGS (SciPy) in the coordinates ``U = L⁻¹V``, stopped once the
    backward residual (:meth:`.lowrank.FactoredInnovation.backward_residual`) is below ``tol``;
    returns ``V``, the iterations taken and that residual."""
    shape = V.shape

    def value_and_gradient(u):
        F, gV = objective(L @ u.reshape(shape))
        return F, (L.T @ (gV * support)).ravel()

    def stop_when_stationary(intermediate_result):
        if objective.backward_residual(L @ intermediate_result.x.reshape(shape), below=tol) < tol:
            raise StopIteration

    result = scipy.optimize.minimize(value_and_gradient, scipy.linalg.solve_triangular(L, V, lower=True).ravel(),
                                     jac=True, method="L-BFGS-B", callback=stop_when_stationary,
                                     options={"maxcor": 300, "ftol": 1e-15, "gtol": 1e-10, "maxiter": max(max_iter, 1)})
    V = L @ result.x.reshape(shape)
    return V, result.nit, objective.backward_residual(V, below=tol)


def _low_rank_stage(lay, V: np.ndarray, classes: np.ndarray, max_iter: int, tol: float = 0.0,
                    grow_threshold: float = 1e-3, grow: int = 2, max_params: int = 4096, round_iter: int = 300):
    """Quasi-Newton ascent of ``S`` over positive semidefinite low-rank innovations ``D = V Vᵀ``
    (:class:`.lowrank.FactoredInnovation`), the fast first stage of :func:`_maximise` on dense
    layouts, from the factor ``V`` (column k supported on the class ``classes[k]``). Returns
    the objective (:class:`.lowrank.FactoredInnovation`, which gives the kernel, residuals and
    action at ``V``), the factor ``V`` reached and the number of iterations.

    L-BFGS (SciPy) in coordinates whitened by the start's ``K`` (``V = L_K U``, which absorbs
    most of the kernel's growth in time), at most ``round_iter`` steps a round (a rank too small
    for the maximum makes L-BFGS crawl), stopped once the backward residual is below ``tol / 2``
    (the Newton stage then only checks both residuals). Rank: once L-BFGS stops short of that,
    columns are added along the directions in which ``D`` should still grow (eigenvalues of
    ``L_Kᵀ(-∂F/∂D)L_K`` above ``grow_threshold``; per class at most ``grow`` or the mean number
    of columns per class, whichever is larger) and it is run again, while ``n·r <= max_params``.
    What is left (small components, or an innovation that is indefinite or of high rank) is
    left to the Newton stage."""
    C_in = lay.sweep(lay.K_in)
    objective = FactoredInnovation(lay, C_in)
    n_classes = len(np.unique(lay.labels))
    iterations = 0
    while True:
        if V.shape[1]:
            support = (lay.labels[:, None] == classes[None, :]).astype(np.float64)
            L = np.linalg.cholesky(lay.regularised(objective.prior_covariance(V)))
            V, nit, residual = _lbfgs_whitened(objective, V, support, L, min(round_iter, max_iter - iterations),
                                               0.5 * tol)
            iterations += nit
            if residual < 0.5 * tol:
                break
        gD = low_rank_objective(lay, C_in, V if V.shape[1] else np.zeros((lay.n, 1)), 1.0)[2]
        L = np.linalg.cholesky(lay.regularised(objective.prior_covariance(V)))  # C_in when V has no columns
        new, new_classes = _whitened_factors(lay, -gD, L, max(grow, V.shape[1] // n_classes), grow_threshold)
        if not len(new_classes) or lay.n * (V.shape[1] + len(new_classes)) > max_params or iterations >= max_iter:
            break
        V, classes = np.hstack([V, new]), np.concatenate([classes, new_classes])
    return objective, V, iterations


def _maximise(prob: Problem, C0, tol: float, max_iter: int, inner: int, init: str) -> Branch:
    """Newton's method from the kernel ``C0`` (at most ``max_iter`` Newton steps of at most
    ``inner`` conjugate-gradient iterations each), stopped once both residuals are below ``tol``
    or when the line search finds no decrease. ``C0`` may also be the triple of
    :func:`broken_factor`: where :func:`_low_rank_stage` ends at a point whose two residuals
    (in factored form, :meth:`.lowrank.FactoredInnovation.residuals`) are below ``tol``, that
    point is the branch; otherwise Newton's method starts there. ``max_iter`` bounds both
    stages' iterations together.

    The Newton system is solved to the relative accuracy ``eta``: loose far from the maximum,
    where such steps are cheaper, tight near it. On time-local layouts ``eta = min(0.3,
    residual)`` (quadratic convergence; DNN, n = 4096: 42 Hessian-vector products instead of 118
    with the former ``min(0.01, √residual)``; ``√residual`` left ill-conditioned problems, e.g. an
    input kernel regularised by 1e-4·I, at residual 2e-6), on dense ones, whose products cost
    about a factorisation, ``min(0.5, √residual)`` (superlinear). Near the maximum a step
    changes ``F`` by less than its rounding; such a step is kept only if it lowers the backward
    residual, and otherwise the iteration stops at the point before it. The residuals reported
    are those of :func:`.action.residuals`, at the final kernel."""
    iterations = 0
    if isinstance(C0, tuple):  # a low-rank innovation V on a dense layout (broken_factor)
        lay, V, classes = C0
        with threadpool_limits(limits=1, user_api="blas"):  # threads only slow its thin products down
            objective, V, iterations = _low_rank_stage(lay, V, classes, max_iter, tol)
        forward, backward = objective.residuals(V)
        if max(forward, backward) < tol:  # stationary: no Newton step needed
            gamma, energy = objective.parts(V)
            return Branch(C=objective.kernel(V), Ct=objective.conjugate_kernel(V), S=-(gamma + energy),
                          Gamma=gamma, E=energy, init=init, converged=True, residual_forward=float(forward),
                          residual_backward=float(backward), iterations=iterations)
        C = objective.kernel(V)
        if not prob.support.full:  # Newton in the support's coordinates
            lay = layout(prob, C)
            C = lay.restrict(C)
    else:
        C0 = np.asarray(C0, dtype=np.float64) * prob.block_mask()
        lay = layout(prob, C0)
        C = lay.restrict(C0)
    local = isinstance(lay, TimeLocalLayout)
    x = evaluate(lay, C - lay.K_in - lay.shift(C))  # D = C - K(C)
    if x is None:
        raise ValueError("init: K(C) is not positive definite at the initial kernel")
    stalled, flat, previous = False, False, None
    while True:
        d = derivatives(lay, x)
        backward = backward_residual(x, d)
        if flat and backward >= previous[2]:  # a step within F's rounding that did not lower the residual
            (x, d, backward), stalled = previous, True
        done = stalled or iterations >= max_iter
        forward = forward_residual(x, d) if backward < tol or done else np.inf
        if max(forward, backward) < tol or done:
            break
        g = lay.sweep_adjoint(d.G)
        p = truncated_newton(lambda v: hessian_vector(lay, x, d, v), x.K, g, max_cg=inner,
                             eta=min(0.3, backward) if local else min(0.5, np.sqrt(backward)))
        trial = _line_search(lay, x, g, p)
        if trial is None:
            stalled = True  # no step length decreases F
            continue
        # near the maximum a Newton step changes F by less than its rounding: progress is then
        # judged by the residual at the next iteration
        flat, previous = within_rounding(x.F, trial.F), (x, d, backward)
        x = trial
        iterations += 1
    C, Ct = lay.full(x.C), lay.full(lay.project(d.Ct))  # only ΠCtΠ enters q on the support
    return Branch(
        C=C,
        Ct=Ct,
        S=-x.F,
        Gamma=x.gamma,
        E=x.energy,
        init=init,
        converged=bool(max(forward, backward) < tol),
        residual_forward=float(forward),
        residual_backward=float(backward),
        iterations=iterations,
    )


def _same_branch(b1: Branch, b2: Branch, T: int, P: int, rtol: float = 1e-3) -> bool:
    """Equal up to the ``W -> -W`` symmetry (``C_ts -> (-1)^(t-s) C_ts``), within ``rtol`` or,
    for Monte Carlo solutions, within 5 combined standard errors."""
    noise = sum(np.linalg.norm(b.C_err) for b in (b1, b2) if b.C_err is not None)
    distance = min(np.linalg.norm(b1.C - b2.C), np.linalg.norm(b1.C - parity_flip(b2.C, T, P)))
    return distance < rtol * np.linalg.norm(b1.C) + 5.0 * noise


@dataclass(frozen=True, eq=False)
class Solution(ModelResult):
    """The dominant (largest-``S``) stationary point of the action and every branch found.

    ``C`` and ``Ct`` are ``(T*P, T*P)`` with time-major index ``t*P + a``; where the prior
    covariance is singular (``problem.support``, e.g. ``P > D``) ``C`` has the support's rank and
    ``Ct`` is its part on the support, ``ΠCtΠ`` (the rest enters nothing). ``arch``, ``task``,
    ``prior``, ``phi`` and ``kappa`` are those of ``model``. ``method``: the solver that produced
    it; ``"gaussian"`` is the Gaussian closure (:mod:`.closure`; an approximation for nonlinear
    ``phi``: ``S`` is a lower bound on the exact action), which also gives ``Sigma``.
    """

    model: Model
    branches: tuple[Branch, ...]
    problem: Problem = field(repr=False)
    seconds: float = 0.0
    method: str = "exact"

    @property
    def best(self) -> Branch:
        return max(self.branches, key=lambda b: b.S)

    C = property(lambda self: self.best.C, doc="trained kernel (dominant branch)")
    Ct = property(lambda self: self.best.Ct, doc="conjugate kernel from the backward equation")
    S = property(lambda self: self.best.S, doc="action of the dominant branch")
    Sigma = property(lambda self: self.best.Sigma, doc="preactivation covariance (dominant branch; closure only)")

    @property
    def converged(self) -> bool:
        """Every start converged. Only then is the dominant branch the largest-``S`` stationary
        point found: a start that did not converge has an ``S`` that is not its branch's (for the
        particle solver it may not even be finite), so a branch with larger ``S`` may hide behind it."""
        return all(b.converged for b in self.branches)

    residual = property(lambda self: self.best.residual, doc="max of the two stationarity residuals")

    C_centred = property(lambda self: self.best.C_centred, doc="centred kernel ``C - <φ><φ>ᵀ`` (dominant branch)")

    def predict(self, N: int | None = None) -> Prediction:
        """Posterior predictive at every ``(a, t)``; see :func:`kernelfield.theory.predict.predictive`."""
        return predictive(self.problem, self.C, N=N)

    def coherence_by_lag(self):
        """Temporal coherence per lag; see :func:`kernelfield.observables.coherence_by_lag`."""
        return coherence_by_lag(self)


class _Plan(NamedTuple):
    """What :func:`solve` runs: the assembled problem, the prior start (the lazy kernel; for the
    closure its preactivation kernel), one start of the chosen solver as ``run(start, init=label)``,
    the method, the iteration budget and the symmetry-broken start made from the prior start's
    branch (:func:`.starts.broken_factor` or :func:`.closure.closure_broken_start` where they
    apply, :func:`.starts.broken_start` otherwise)."""

    problem: Problem
    start: np.ndarray
    run: Callable[..., Branch]
    method: str
    max_iter: int
    broken: Callable[[Branch], object]


def solve(
    arch: Architecture | Model,
    task: Task | None = None,
    prior: Prior | None = None,
    phi=None,
    kappa: float | None = None,
    init="auto",
    tol: float = 1e-6,
    max_iter: int | None = None,
    inner: int | None = None,
    method: str = "auto",
    num_particles: int | None = None,
    mc_tol: float = 0.01,
    seed: int = 0,
    progress: bool = False,
) -> Solution:
    """Trained kernels: the maximiser of ``S(C) = -Gamma(C) - E(C)``.

    The model is a :class:`~kernelfield.Model` as first argument, or its parts ``arch, task``
    and ``prior`` (default ``Prior()``), ``phi`` (default ``"linear"``), ``kappa`` (default 0.1).

    method: ``"exact"`` (linear ``phi`` only: closed-form ``Gamma``, Newton's method; see the
    module docstring), ``"particles"`` (any ``phi``: mean-field Langevin dynamics of
    ``num_particles`` trajectories, default ``max(4096, 128·n)``, with Monte Carlo error bars,
    :mod:`.particles`), ``"gaussian"`` (the Gaussian closure, :mod:`.closure`: Newton's method
    over Gaussian single-neuron laws ``N(0, Sigma)``; exact for linear ``phi``, otherwise an
    approximation whose ``S`` is a lower bound) or ``"auto"``
    (exact for linear, particles otherwise). max_iter: Newton steps (default 5000) or particle
    iterations (default 5000) per start; inner: conjugate-gradient iterations (Hessian-vector
    products) per Newton step at most (default 10; for the closure on a dense layout, e.g. an
    RNN's broken branch, 100); mc_tol: the particle solver averages until the largest
    entrywise standard error of ``C`` (relative to ``sqrt(C_ii C_jj)``) is below it; seed: the
    particle solver's random seed.

    init: ``"auto"`` (default) starts from the prior kernel and from a symmetry-broken kernel
    (:func:`broken_start`; for the exact solver on a dense layout its innovation form
    :func:`broken_factor`) and keeps every distinct branch (the prior start alone where nothing
    couples two time steps, :attr:`.kernels.Problem.couples_steps`: a DNN); ``"prior"`` or
    ``"broken"`` uses one start; an ``(n, n)`` array is used as the start; ``"gaussian"`` (``method="particles"`` and a
    ``phi`` with a Gaussian map only) solves the Gaussian closure first and starts the particles of
    each of its branches (prior and broken) from ``N(0, Sigma)`` of that branch (a warm start). The
    returned solution is the branch with the largest ``S``. For ``method="gaussian"`` the starts
    and an array ``init`` are preactivation covariances ``Sigma``. A branch is converged when both stationarity residuals are below ``tol`` (for
    the particle solver: below ``tol`` or within 3 Monte Carlo standard errors of zero); the
    solution is converged when every branch is. A ``ConvergenceWarning`` (with the residual) is
    issued when the dominant branch or any other start did not converge.
    """
    model = as_model(arch, task, prior, phi, kappa)
    started = time.perf_counter()
    warm = isinstance(init, str) and init == "gaussian"
    plan = _plan(model, method, tol, max_iter, inner, num_particles, mc_tol, seed, progress, warm=warm)
    found = _warm_starts(model, plan, tol, inner) if warm else _run_starts(plan, init)
    return assemble(model, found, plan.problem, tol=tol, method=plan.method, max_iter=plan.max_iter,
                    seconds=time.perf_counter() - started)


def _plan(model: Model, method: str, tol, max_iter, inner, num_particles, mc_tol, seed, progress,
          warm: bool = False) -> _Plan:
    """Validate the solver settings (``warm``: for ``init="gaussian"``), assemble the problem and its
    lazy kernel and choose the solver."""
    nl = model.nonlinearity
    if method not in ("auto", "exact", "particles", "gaussian"):
        raise ValueError(f"method: must be 'auto', 'exact', 'particles' or 'gaussian', got {method!r}")
    if method == "auto":
        method = "exact" if nl.name == "linear" else "particles"
    if method == "exact" and nl.name != "linear":
        raise ValueError(f"method: 'exact' needs phi = 'linear' (closed-form Gamma); use 'particles' for {nl.name!r}")
    if warm:
        _check_warm_start(nl, method)
    if method == "gaussian":
        check_gaussian_map(nl)
    tol = positive_real("tol", tol)
    max_iter = positive_int("max_iter", 5000 if max_iter is None else max_iter)
    inner = None if inner is None else positive_int("inner", inner)
    prob = make_problem(model.arch, model.task, model.prior, model.kappa)
    C_prior = lazy_kernel(prob, nl)
    broken = lambda branch: broken_start(prob, branch.C)  # noqa: E731
    if method == "exact":
        run = partial(_maximise, prob, tol=tol, max_iter=max_iter, inner=10 if inner is None else inner)
        broken = lambda branch: broken_factor(prob, branch.C) or broken_start(prob, branch.C)  # noqa: E731
    elif method == "gaussian":
        C_prior = np.asarray(prob.K(C_prior))  # the closure starts from Sigma = K(C_lazy)
        support = closure_support(prob, C_prior)
        run = partial(closure_branch, prob, nl, tol=tol, max_iter=max_iter, inner=inner, support=support)
        broken = lambda branch: closure_broken_start(prob, nl, branch.Sigma, support=support)  # noqa: E731
    else:
        if num_particles is None:  # the finite-population bias is O(n/M)
            num_particles = max(4096, 128 * prob.n)
        settings = ParticleSettings(num_particles=num_particles, mc_tol=mc_tol, max_iter=max_iter, seed=seed,
                                    progress=progress)
        # a singular prior covariance (e.g. P > D): the trajectories live on the closure's support
        support = closure_support(prob, np.asarray(prob.K(C_prior)))
        run = partial(_maximise_particles, prob, nl, settings=settings, tol=tol, basis=support.basis)
    return _Plan(prob, C_prior, run, method, max_iter, broken)


def _run_starts(plan: _Plan, init) -> list[Branch]:
    """Run the starts that ``init`` asks for (see :func:`solve`), in order. ``"auto"`` skips the
    symmetry-broken start where nothing couples two time steps
    (:attr:`.kernels.Problem.couples_steps`): it could only return to the symmetric solution."""
    prob, run = plan.problem, plan.run
    if isinstance(init, str) and init in ("auto", "prior", "broken"):
        first = run(plan.start, init="prior")
        found = [first] if init != "broken" else []
        if init == "broken" or (init == "auto" and prob.couples_steps):
            found.append(run(plan.broken(first), init="broken"))
        return found
    if isinstance(init, str):
        raise ValueError(f"init: must be 'auto', 'prior', 'broken', 'gaussian' (method 'particles') or an (n, n) "
                         f"array, got {init!r}")
    C0 = np.asarray(init, dtype=np.float64)
    if C0.shape != (prob.n, prob.n) or not np.all(np.isfinite(C0)):
        raise ValueError(f"init: expected a finite ({prob.n}, {prob.n}) kernel, got shape {C0.shape}")
    try:
        np.linalg.cholesky(0.5 * (C0 + C0.T))
    except np.linalg.LinAlgError:
        raise ValueError("init: kernel is not positive definite") from None
    return [run(C0, init="user")]


class Preactivations(NamedTuple):
    """A particle start given by the covariance ``Sigma`` of the initial population
    ``h ~ N(0, Sigma)`` (instead of a kernel ``C0`` with ``h ~ N(0, K(C0))``)."""

    Sigma: np.ndarray


def _check_warm_start(nl, method: str) -> None:
    """``init="gaussian"`` needs the particle solver and a ``phi`` with a Gaussian map."""
    if method != "particles":
        raise ValueError(f"init: 'gaussian' (a warm start from the Gaussian closure) is a start of method "
                         f"'particles' only, got method {method!r} (phi = {nl.name!r})")
    try:
        check_gaussian_map(nl)
    except ValueError as error:
        raise ValueError(f"init: 'gaussian' needs the Gaussian closure of phi = {nl.name!r}, which has none "
                         f"({error}); use init='auto'") from None


def _warm_starts(model: Model, plan: _Plan, tol: float, inner: int | None) -> list[Branch]:
    """``init="gaussian"``: the Gaussian closure (``init="auto"``, default ``max_iter``), then one
    particle start per closure branch with the population drawn from ``N(0, Sigma)`` of that
    branch, the prior (time-symmetric) and the broken one (the prior one alone where nothing
    couples two steps, :attr:`.kernels.Problem.couples_steps`). Where the closure's broken start
    returned to its symmetric branch, the broken particle start is the closure's own broken
    start (:func:`broken_start` of the symmetric ``Sigma``), so a broken branch that only the
    exact action has can still be found."""
    closure = _plan(model, "gaussian", tol, None, inner, None, 0.01, 0, False)
    branches = {b.init: b for b in _run_starts(closure, "auto")}
    symmetric = branches["prior"].Sigma
    found = [plan.run(Preactivations(symmetric), init="prior")]
    if "broken" not in branches:  # nothing couples two steps: the symmetric solution is the only one
        return found
    broken = branches["broken"].Sigma
    if _same_branch(branches["broken"], branches["prior"], plan.problem.T, plan.problem.P):
        broken = broken_start(plan.problem, symmetric)
    return found + [plan.run(Preactivations(broken), init="broken")]


def assemble(model: Model, found: Sequence[Branch], problem: Problem, *, tol: float, method: str, max_iter: int,
             seconds: float = 0.0) -> Solution:
    """The :class:`Solution` from the branches the starts of :func:`solve` found (``method``
    ``"exact"``, ``"particles"`` or ``"gaussian"``, with ``tol`` and ``max_iter``): the distinct ones (up to
    ``W -> -W``; a branch keeps the label of the first start that found it) by decreasing ``S``,
    with a :class:`ConvergenceWarning` when a start did not converge."""
    branches: list[Branch] = []
    for b in found:
        if not any(_same_branch(b, other, problem.T, problem.P) for other in branches):
            branches.append(b)
    sol = Solution(model, tuple(sorted(branches, key=lambda b: -b.S)), problem, seconds, method)
    _warn_unconverged(sol, method, max_iter, tol)
    return sol


def _warn_unconverged(sol: Solution, method: str, max_iter: int, tol: float) -> None:
    """A :class:`ConvergenceWarning` when the dominant branch, or any other start, did not converge."""
    if not sol.best.converged:
        stopped = sol.best.stopped  # max_iter is in the message already
        why = f"; it stopped {STOP_REASONS[stopped]}" if stopped and stopped != "max_iter" else ""
        warnings.warn(
            f"solve: did not converge (residual {sol.residual:.2e} > tol {tol:.1e}) after "
            f"{sol.best.iterations} {'particle iterations' if method == 'particles' else 'Newton steps'} "
            f"(max_iter={max_iter}){why}; check sol.converged / sol.residual",
            ConvergenceWarning,
            stacklevel=4,
        )
    elif not sol.converged:
        failed = ", ".join(f"the {b.init!r} start (residual {b.residual:.2e}, S {b.S:.4g}, {b.iterations} iterations)"
                           for b in sol.branches if not b.converged)
        warnings.warn(
            f"solve: the dominant branch converged but {failed} did not (max_iter={max_iter}): that "
            "branch's action is unknown, so a branch with larger S may exist and sol.converged is "
            "False; raise max_iter or solve that start alone (init=...)",
            ConvergenceWarning,
            stacklevel=4,
        )


def _maximise_particles(prob: Problem, nl, C0: np.ndarray | Preactivations, settings: ParticleSettings, tol: float,
                        init: str, basis: np.ndarray | None = None) -> Branch:
    """One start of the particle solver: trajectories drawn from ``N(0, K(C0))``, or from
    ``N(0, Sigma)`` for ``C0 = Preactivations(Sigma)``, on the support ``basis`` where the prior
    covariance is singular. The prior start of an odd ``phi`` stays in the time-symmetric subspace
    where that subspace is invariant."""
    free = prob.block_mask()
    symmetric = time_symmetric_mask(prob, nl) if init == "prior" else None
    if symmetric is not None:
        free = free * symmetric
    K0 = C0.Sigma if isinstance(C0, Preactivations) else np.asarray(prob.K(C0))
    r = maximise_particles(prob, nl, K0, free, settings, label=init, basis=basis)
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
    (a :class:`~kernelfield.Prediction` with arrays of shape ``(P_new, T)``).

    New inputs need not lie in the span of the training inputs: the enlarged problem's support
    (:class:`.kernels.Support`) has the directions they add. Those rows are unsupervised, so the
    data term does not see them and the training rows' kernel is unchanged by appending them (the
    weights' posterior is fixed by the training data); the new rows follow from the same
    stationarity equations. For linear ``phi`` the prediction is linear in the new inputs: a
    combination of training sequences gets that combination of their predictions, and a component
    outside the span (weights along it are untouched by the data and symmetric under sign flip)
    gets zero mean and a positive variance (tests/theory/test_rank_deficient.py)."""
    enlarged = solve(replace(sol.model, task=sol.task.with_sequences(new_inputs)), **solve_kwargs)
    full = enlarged.predict(N=N)
    P = sol.task.P
    return Prediction(mean=full.mean[P:], var=full.var[P:], N=N)
