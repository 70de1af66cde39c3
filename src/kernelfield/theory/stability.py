"""The phase transition of THEORY.md §4: stability of the time-symmetric solution, the critical
learning signal, and the outlier eigenvalues of the recurrent weights.

Symmetric solution: in endpoint-supervised tasks (no input, bias or readout shared between
different time steps) the action restricted to time-block-diagonal kernels is the same for every
sharing pattern, so its maximiser there is the DNN's solution ``C_sym`` (computed with the DNN's
time-local solver). It is a stationary point of every pattern's action.

Stability: the Hessian of ``S`` at ``C_sym`` restricted to cross-time directions
``δC = L (X + Xᵀ) Lᵀ``, ``X`` strictly block upper triangular (blocks ``t < s``), ``L = chol C_sym``
(block diagonal, so ``δC`` has zero equal-time blocks; the whitening makes the Hessian
dimensionless). Its leading eigenvalue ``λ_max`` is negative while ``C_sym`` is the local maximum
and crosses zero at the critical signal (Sylvester's law of inertia: the sign does not depend on
the coordinates).

Rank-deficient prior covariances (THEORY.md §3, e.g. ``P > D``): kernels live on the support
``R`` (:class:`.kernels.Support`). Wherever the symmetric solution exists nothing couples time
steps in the prior, so ``R = ⊕_t R_t`` is a product over time (basis ``Q`` block diagonal with
blocks ``Q_t``, ``r_t = dim R_t``; inputs at ``t = 0`` only: every ``R_t`` is the span of the
inputs, ``r_t = D``). The cross-time directions are then ``δC = Q L (X + Xᵀ) Lᵀ Qᵀ`` with
``L = chol(Qᵀ C_sym Q)`` and ``X`` strictly block upper triangular in blocks ``r_t × r_s``:
``Σ_{t<s} r_t r_s`` of them, all of ``Sym(R)`` with zero equal-time blocks, and the action is
taken on the support (``action_terms(..., basis=Q)``). With full rank ``Q = I`` and nothing
changes.

Nonlinear ``phi`` (``theory="gaussian"``): the same analysis for the Gaussian closure (THEORY.md
§3), whose action ``S_G(Sigma)`` is a smooth function of the preactivation covariance: the
symmetric point is the DNN's closure solution ``Sigma_sym`` and the Hessian is taken over the
cross-time blocks of ``Sigma`` with ``C = G_φ(Sigma)`` following (:mod:`.closure_stability`). Its
critical signal is the closure's, an approximation of the exact theory's (for linear ``phi`` the
two coincide). The exact nonlinear action has no closed-form Hessian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse.linalg

from ..model import Model, as_model
from ..nonlinearities import Nonlinearity, get_nonlinearity
from ..spec import Architecture, Prior, Task
from ..validation import positive_int
from .action import action_terms
from .branch import Branch
from .closure import check_gaussian_map, closure_support
from .lazy import lazy_kernel
from .closure_stability import ClosureCrossTime, cross_kernel
from .kernels import SUPPORT_RTOL, Problem, make_problem
from .solver import Solution, solve

__all__ = [
    "Stability",
    "CriticalPoint",
    "NoTransitionError",
    "symmetric_solution",
    "stability",
    "critical_signal",
    "outlier_eigenvalues",
    "CONTROLS",
    "THEORY_METHODS",
]

#: Control parameters of :func:`critical_signal` (see :func:`_controlled` for what each sets).
CONTROLS = ("target_scale", "kappa", "g")

#: Theories of :func:`stability` and :func:`critical_signal`: ``"exact"`` (linear ``phi``: the
#: closed-form action), ``"gaussian"`` (the Gaussian closure ``S_G``, any ``phi`` with a Gaussian
#: map; an approximation for nonlinear ``phi``) and ``"auto"`` (exact for linear ``phi``, the
#: closure otherwise).
THEORY_METHODS = ("auto", "exact", "gaussian")


class NoTransitionError(ValueError):
    """The symmetric solution did not change stability inside the searched range."""


@dataclass(frozen=True)
class Stability:
    """Leading eigenvalues of the cross-time Hessian of ``S`` at the symmetric solution.

    eigenvalues: the ``k`` largest, descending (``> 0``: the symmetric solution is unstable);
    dimension: number of cross-time directions; gradient: relative size of the cross-time
    gradient at ``C_sym`` (~ 0: it is a stationary point); C_sym, S_sym: the symmetric kernel and
    its action; theory: ``"exact"`` (the closed-form action of linear networks) or ``"gaussian"``
    (the Gaussian closure: the Hessian of ``S_G`` over the cross-time blocks of the preactivation
    covariance, an approximation for nonlinear ``phi``, ``S_sym`` a lower bound on the exact
    action); Sigma_sym: the symmetric preactivation covariance (closure only, ``None`` otherwise).
    """

    eigenvalues: np.ndarray
    dimension: int
    gradient: float
    C_sym: np.ndarray
    S_sym: float
    theory: str = "exact"
    Sigma_sym: np.ndarray | None = None

    @property
    def leading(self) -> float:
        return float(self.eigenvalues[0])

    @property
    def stable(self) -> bool:
        return self.leading < 0


def _require_linear(nl: Nonlinearity, what: str) -> None:
    """The exact theory needs linear ``phi``: the closed-form (Wishart) action and its Hessian
    exist for linear networks only."""
    if nl.name != "linear":
        raise NotImplementedError(
            f"phi: {what} of the exact theory ('exact') is implemented for linear networks only (closed-form "
            f"action); got phi = {nl.name!r}: use 'gaussian' (the Gaussian closure's {what}, an approximation)")


def _theory(model: Model, value: str, argument: str, what: str, solved_by: str | None = None) -> str:
    """Resolve the theory ``value`` (one of :data:`THEORY_METHODS`, passed as ``argument``) for
    ``model``: ``"auto"`` is the closure when ``solved_by == "gaussian"`` or ``phi`` is nonlinear,
    the exact action otherwise."""
    if value not in THEORY_METHODS:
        raise ValueError(f"{argument}: must be one of {THEORY_METHODS}, got {value!r}")
    nl = model.nonlinearity
    if value == "auto":
        value = "gaussian" if solved_by == "gaussian" or nl.name != "linear" else "exact"
    if value == "exact":
        _require_linear(nl, what)
    else:
        check_gaussian_map(nl)
    return value


def _check_symmetric_exists(prob: Problem, nl: Nonlinearity) -> None:
    """The symmetric solution exists when nothing but ``W`` couples different time steps and,
    where ``W`` does, ``phi`` is odd (so uncorrelated preactivations give uncorrelated features)."""
    coupling = prob.direct_step_coupling
    if coupling is not None:
        what = "inputs or biases shared between different steps" if coupling == "inputs" else \
            "a readout shared between different supervised steps"
        raise ValueError(
            f"task: no time-symmetric solution for this architecture and task ({what} correlate "
            "time steps directly); stability analysis needs an endpoint-type task, e.g. inputs at "
            "one step only, sigma_b = 0 or unshared biases, supervision at one step"
        )
    if not nl.odd and prob.couples_steps:
        raise ValueError(
            f"phi: no time-symmetric solution for phi = {nl.name!r}: it is not odd, so its mean activity <phi> != 0 "
            "correlates the time steps through the shared W at any signal (no sign symmetry W -> -W to break); "
            "the phase transition needs an odd phi (linear, erf, tanh)")


def symmetric_solution(arch: Architecture | Model, task: Task | None = None, prior: Prior | None = None, phi=None,
                       kappa: float | None = None, **solve_kwargs) -> Solution:
    """The time-symmetric stationary point ``C_sym`` (cross-time blocks zero) of ``arch``'s action:
    the DNN's solution on the same task (see module docstring). The model is a
    :class:`~kernelfield.Model` or its parts; ``solve_kwargs`` go to :func:`~kernelfield.solve`
    (e.g. ``method="gaussian"`` for the closure's ``Sigma_sym``). Returns a :class:`Solution`."""
    model = as_model(arch, task, prior, phi, kappa)
    _check_symmetric_exists(_problem(model), model.nonlinearity)
    return solve(replace(model, arch=Architecture.dnn(model.arch.T)), init="prior", **solve_kwargs)


def _problem(model: Model) -> Problem:
    return make_problem(model.arch, model.task, model.prior, model.kappa)


def _cross_time_index(T: int, sizes) -> tuple[np.ndarray, np.ndarray]:
    """Flat (row, col) positions of the strictly block-upper-triangular entries (blocks t < s) of
    a matrix with diagonal blocks of ``sizes`` (one int for ``T`` equal blocks, or one per step)."""
    sizes = np.broadcast_to(np.asarray(sizes, dtype=int), (T,))
    start = np.concatenate([[0], np.cumsum(sizes)])
    rows, cols = [], []
    for t, s in zip(*np.triu_indices(T, k=1)):
        a, b = np.meshgrid(np.arange(start[t], start[t + 1]), np.arange(start[s], start[s + 1]), indexing="ij")
        rows.append(a.reshape(-1))
        cols.append(b.reshape(-1))
    return (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, int), np.zeros(0, int))


def _cross_time_action(x, rows, cols, C_sym, MW, Mv, K_in, S_idx, y, kappa, P: int, basis=None):
    """``S(C_sym + L (X + Xᵀ) Lᵀ)`` with ``X`` the cross-time entries ``x`` at ``(rows, cols)``;
    with a support ``basis`` ``Q``, ``C_sym`` is ``QᵀC_symQ`` and the kernel ``Q(·)Qᵀ``."""
    n = C_sym.shape[0]
    L = jnp.linalg.cholesky(C_sym)
    X = jnp.zeros((n, n)).at[rows, cols].set(x)
    C = C_sym + L @ (X + X.T) @ L.T
    return action_terms(jnp.linalg.cholesky(C), MW, Mv, K_in, S_idx, y, kappa, P, basis=basis)[0]


_action_and_gradient = jax.jit(jax.value_and_grad(_cross_time_action), static_argnames=("P",))
_hessian = jax.jit(jax.hessian(_cross_time_action), static_argnames=("P",))


@partial(jax.jit, static_argnames=("P",))
def _hvp(v, x, *args, P: int, basis=None):
    return jax.jvp(lambda z: jax.grad(_cross_time_action)(z, *args, P=P, basis=basis), (x,), (v,))[1]


def stability(sol, k: int = 3, method: str = "auto", theory: str = "auto") -> Stability:
    """Leading ``k`` eigenvalues of the Hessian of ``S`` restricted to cross-time directions at
    the symmetric solution of ``sol``'s model (``sol`` a :class:`~kernelfield.Model` or a result
    carrying one, such as a :class:`Solution`).

    method: the eigen-solver: ``"dense"`` (the full Hessian by autodiff, then ``eigvalsh``),
    ``"lanczos"`` (``scipy.sparse.linalg.eigsh`` on Hessian-vector products, for many directions)
    or ``"auto"`` (dense up to 1500 directions).
    theory: ``"exact"`` (linear ``phi``: the closed-form action ``S``), ``"gaussian"`` (the
    Gaussian closure's ``S_G`` over the cross-time blocks of the preactivation covariance; any
    odd ``phi`` with a Gaussian map, an approximation for nonlinear ``phi``) or ``"auto"`` (the
    closure for a solution with ``method="gaussian"`` or a nonlinear ``phi``, exact otherwise;
    the result's ``theory`` says which).
    """
    if method not in ("auto", "dense", "lanczos"):
        raise ValueError(f"method: must be 'auto', 'dense' or 'lanczos', got {method!r}")
    k = positive_int("k", k)
    model = sol if isinstance(sol, Model) else sol.model
    theory = _theory(model, theory, "theory", "stability", getattr(sol, "method", None))
    return _symmetric_stability(model, theory, k, method)


def _symmetric_stability(model: Model, theory: str, k: int, method: str) -> Stability:
    """:func:`stability` of ``model`` with a resolved ``theory`` (``"exact"`` or ``"gaussian"``)."""
    prob = _problem(model)
    sym = symmetric_solution(model, method=theory)
    if theory == "exact":
        return _stability(prob, sym.C, k, method)
    return _closure_stability(prob, model.nonlinearity, sym.best, k, method)


def _stability(prob: Problem, C_sym: np.ndarray, k: int, method: str) -> Stability:
    """Cross-time Hessian of the exact action at ``C_sym``, on the support (module docstring)."""
    support = prob.support
    if support.full:
        rows, cols = _cross_time_index(prob.T, prob.P)
        reduced, basis = jnp.asarray(C_sym), None
    else:
        if len(support.classes) != prob.T:  # unreachable: _check_symmetric_exists refuses time-coupled priors
            raise ValueError("task: the support couples time steps, so there is no time-symmetric solution")
        rows, cols = _cross_time_index(prob.T, [len(idx) if Q is None else Q.shape[1]
                                                for idx, Q in zip(support.classes, support.bases)])
        basis = jnp.asarray(support.basis)
        reduced = jnp.asarray(support.basis.T @ np.asarray(C_sym) @ support.basis)
    args = (jnp.asarray(rows), jnp.asarray(cols), reduced, prob.MW, prob.Mv, prob.K_in,
            jnp.asarray(prob.supervised), prob.y, prob.kappa)
    S0, gradient, eig = _spectrum(
        lambda x: _action_and_gradient(x, *args, P=prob.P, basis=basis),
        lambda x: _hessian(x, *args, P=prob.P, basis=basis),
        lambda v, x: _hvp(v, x, *args, P=prob.P, basis=basis), prob.T, rows.size, k, method)
    return Stability(eigenvalues=eig, dimension=rows.size, gradient=gradient, C_sym=np.asarray(C_sym), S_sym=S0)


def _closure_stability(prob: Problem, nl: Nonlinearity, sym: Branch, k: int, method: str) -> Stability:
    """Cross-time Hessian of the closure action ``S_G`` at the symmetric closure solution ``sym``
    (its ``Sigma``, ``C = G_φ(Sigma)``; :mod:`.closure_stability`), on the closure's support where
    the prior covariance is singular (the solution's; recomputed for one loaded from disk)."""
    support = sym.support
    if support is None:
        support = closure_support(prob, np.asarray(prob.K(lazy_kernel(prob, nl))))
    if support.full:
        rows, cols = _cross_time_index(prob.T, prob.P)
    elif len(support.classes) != prob.T:  # unreachable: _check_symmetric_exists refuses time-coupled priors
        raise ValueError("task: the support couples time steps, so there is no time-symmetric solution")
    else:
        rows, cols = _cross_time_index(prob.T, [len(idx) if Q is None else Q.shape[1]
                                                for idx, Q in zip(support.classes, support.bases)])
    f = ClosureCrossTime(prob, nl, sym.Sigma, rows, cols, support=support)
    S0, gradient, eig = _spectrum(f.value_and_gradient, f.hessian, f.hessian_vector, prob.T, rows.size, k, method)
    return Stability(eigenvalues=eig, dimension=rows.size, gradient=gradient, C_sym=np.asarray(sym.C), S_sym=S0,
                     theory="gaussian", Sigma_sym=np.asarray(sym.Sigma))


def _spectrum(value_and_gradient, hessian, hessian_vector, T: int, m: int, k: int, method: str):
    """``(S, relative cross-time gradient, k leading Hessian eigenvalues)`` at ``x = 0`` of an
    action on ``m`` cross-time directions, densely (``hessian(x)``) or by Lanczos on
    ``hessian_vector(v, x)``."""
    if T < 2:
        raise ValueError("arch: stability needs T >= 2 (there are no cross-time directions at T = 1)")
    x0 = jnp.zeros(m)
    S0, g0 = value_and_gradient(x0)
    gradient = float(jnp.linalg.norm(g0)) / max(1.0, abs(float(S0)))
    k = min(k, m)
    if method == "dense" or (method == "auto" and m <= 1500):
        H = np.asarray(hessian(x0))
        eig = np.linalg.eigvalsh(0.5 * (H + H.T))[::-1][:k]
    else:
        op = scipy.sparse.linalg.LinearOperator(
            (m, m), matvec=lambda v: np.asarray(hessian_vector(jnp.asarray(v), x0)), dtype=np.float64)
        eig = np.sort(scipy.sparse.linalg.eigsh(op, k=min(k, m - 1), which="LA", return_eigenvectors=False))[::-1]
    return float(S0), gradient, np.asarray(eig)


@dataclass(frozen=True)
class CriticalPoint:
    """Where the symmetric solution loses stability.

    control, value: the control parameter and its critical value (for ``"target_scale"`` the
    multiplier of ``task.targets``); tol: relative tolerance of ``value``; bracket and
    eigenvalues: the final bracket and the leading cross-time Hessian eigenvalues at its ends;
    evaluations: stability analyses done; branches: the branch-following check (``None`` if not
    requested): ``{"lower": {...}, "higher": {...}}`` for the control values ``value·(1 ∓ margin)``,
    each with the gain ``S_broken - S_sym`` of the best time-correlated branch found by
    :func:`~kernelfield.solve` (``nan`` when none was found). On the weak-signal side (``"lower"``
    for ``target_scale``, ``"higher"`` for ``kappa``) a continuous transition has none.
    method: the theory, ``"exact"`` (closed-form action, linear ``phi``) or ``"gaussian"`` (the
    Gaussian closure's critical signal: an approximation of the exact one for nonlinear ``phi``).
    """

    control: str
    value: float
    tol: float
    bracket: tuple[float, float]
    eigenvalues: tuple[float, float]
    evaluations: int
    branches: dict | None = None
    method: str = "exact"


def _controlled(arch, task, prior, kappa, control, value):
    """(task, prior, kappa) with the control parameter set to ``value``."""
    controlled = _with_control(Model(arch, task, prior, "linear", kappa), control, value)
    return controlled.task, controlled.prior, controlled.kappa


def _with_control(model: Model, control: str, value: float) -> Model:
    """``model`` with the control parameter set to ``value``."""
    if control == "target_scale":
        return replace(model, task=Task(model.task.inputs, model.task.targets * value))
    if control == "kappa":
        return replace(model, kappa=value)
    return replace(model, prior=replace(model.prior, g=value))


def critical_signal(arch: Architecture | Model, task: Task | None = None, prior: Prior | None = None, phi=None,
                    kappa: float | None = None, control: str = "target_scale", tol: float = 1e-4, bracket: tuple[float, float] | None = None,
                    verify: bool = False, margin: float = 0.1, method: str = "auto") -> CriticalPoint:
    """The value of ``control`` at which the symmetric solution loses stability: the root of the
    leading cross-time Hessian eigenvalue ``λ_max(value)`` (:func:`stability`), found by Brent's
    method to relative tolerance ``tol``. The model is a :class:`~kernelfield.Model` or its parts.

    control: ``"target_scale"`` (multiplier of ``task.targets``; the signal grows with it),
    ``"kappa"`` (the likelihood variance; the signal grows as it decreases) or ``"g"`` (the
    recurrent weight scale; ``λ_max`` is not monotone in ``g``, so the search expands both ways
    and finds the crossing nearest to ``prior.g`` on a log scale). bracket: ``(lo, hi)`` with
    ``λ_max`` of opposite signs at the ends; by default it is found by doubling/halving from the
    current value (1 for ``target_scale``).
    method: the theory (:data:`THEORY_METHODS`): ``"exact"`` (linear ``phi``), ``"gaussian"``
    (the Gaussian closure's critical signal, any odd ``phi`` with a Gaussian map: an
    approximation for nonlinear ``phi``, equal to the exact one for linear) or ``"auto"`` (exact
    for linear ``phi``, the closure otherwise); the result's ``method`` says which.
    verify: cross-check by branch following: solve ``arch`` (with the same theory) with
    ``init="auto"`` at ``value·(1 - margin)`` and ``value·(1 + margin)`` and record
    ``S_broken - S_sym`` on each side (see :class:`CriticalPoint`). Raises :class:`NoTransitionError`
    when no sign change is found.
    """
    model = as_model(arch, task, prior, phi, kappa)
    arch, prior, kappa = model.arch, model.prior, model.kappa
    if control not in CONTROLS:
        raise ValueError(f"control: must be one of {CONTROLS}, got {control!r}")
    method = _theory(model, method, "method", "critical_signal")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"tol: must be a number in (0, 1), got {tol!r}")
    if not (isinstance(margin, (int, float)) and 0 < margin < 1):
        raise ValueError(f"margin: must be a number in (0, 1), got {margin!r}")
    evaluations = 0

    def leading(value: float) -> float:
        nonlocal evaluations
        evaluations += 1
        return _symmetric_stability(_with_control(model, control, value), method, 1, "auto").leading

    prob = _problem(model)
    _check_symmetric_exists(prob, model.nonlinearity)
    if not prob.couples_steps:
        raise NoTransitionError(
            f"arch: {arch.name} couples no two time steps (no W shared across time), so the symmetric solution "
            "is stable at any signal: its cross-time Hessian is -identity (only log det C sees those blocks)")
    if bracket is None:
        start = {"target_scale": 1.0, "kappa": kappa, "g": prior.g}[control]
        lo, hi, f_lo, f_hi = _find_bracket(leading, start, {"target_scale": 2.0, "kappa": 0.5, "g": None}[control])
    else:
        lo, hi = (float(v) for v in bracket)
        if not (0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"bracket: must be (lo, hi) with 0 < lo < hi, got {bracket!r}")
        f_lo, f_hi = leading(lo), leading(hi)
        if f_lo * f_hi > 0:
            raise NoTransitionError(
                f"bracket: the leading cross-time eigenvalue has the same sign at {control} = {lo:g} "
                f"({f_lo:.3g}) and {hi:g} ({f_hi:.3g}); no transition inside")
    value = scipy.optimize.brentq(leading, lo, hi, xtol=tol * lo, rtol=tol)
    point = CriticalPoint(control, float(value), float(tol), (lo, hi), (f_lo, f_hi), evaluations, method=method)
    if verify:
        point = replace(point, branches=_branch_check(model, control, value, margin, method))
    return point


def _find_bracket(f, start: float, stronger: float | None, factor: float = 2.0, max_steps: int = 12):
    """Step geometrically from ``start`` until ``f`` changes sign: towards a stronger learning
    signal (multiply by ``stronger``) while ``f < 0`` and the other way while ``f > 0``; with
    ``stronger=None`` (no monotone direction, e.g. ``g``) alternately up and down by ``factor``."""
    f0 = f(start)
    if stronger is None:
        points = {1: (start, f0), -1: (start, f0)}
        for k in range(1, max_steps + 1):
            for sign in (1, -1):
                x_prev, f_prev = points[sign]
                x_new = start * factor ** (sign * k)
                f_new = f(x_new)
                if f_prev * f_new <= 0:
                    return (x_prev, x_new, f_prev, f_new) if sign > 0 else (x_new, x_prev, f_new, f_prev)
                points[sign] = (x_new, f_new)
        x = start * factor**max_steps
    else:
        x, fx = start, f0
        step = stronger if f0 < 0 else 1.0 / stronger
        for _ in range(max_steps):
            x_new = x * step
            f_new = f(x_new)
            if fx * f_new <= 0:
                return (x, x_new, fx, f_new) if x < x_new else (x_new, x, f_new, fx)
            x, fx = x_new, f_new
    state = "stable (no transition)" if f0 < 0 else "unstable (already past the transition)"
    raise NoTransitionError(
        f"no sign change of the leading cross-time eigenvalue between {start:g} and {x:g}: the symmetric "
        f"solution stays {state}; pass bracket=(lo, hi)")


def _branch_check(model: Model, control: str, value: float, margin: float, method: str) -> dict:
    """``S_broken - S_sym`` just below (``"lower"``) and above (``"higher"``) the critical value,
    both from the solver of the theory ``method``."""
    sides = {"lower": value * (1 - margin), "higher": value * (1 + margin)}
    out = {}
    for side, v in sides.items():
        controlled = _with_control(model, control, v)
        sol = solve(controlled, init="auto", tol=1e-7, method=method)
        sym = symmetric_solution(controlled, tol=1e-7, method=method)
        broken = [b for b in sol.branches if _cross_time_norm(b.C, model.arch.T, model.task.P) > 1e-3]
        out[side] = {"value": float(v),
                     "gain": max(b.S for b in broken) - sym.S if broken else float("nan")}
    return out


def _cross_time_norm(C: np.ndarray, T: int, P: int) -> float:
    """``||C_{t≠s}||_F / ||C||_F``."""
    blocks = np.asarray(C).reshape(T, P, T, P).copy()
    full = np.linalg.norm(blocks)
    for t in range(T):
        blocks[t, :, t, :] = 0.0
    return float(np.linalg.norm(blocks) / full)


def outlier_eigenvalues(sol, group: int | None = None) -> np.ndarray:
    """Predicted non-zero eigenvalues of the low-rank part of the posterior recurrent matrix
    (THEORY.md §4): the eigenvalues of the regression operator ``C_pp⁻¹ X_pn``, where ``n`` runs
    over ``(t, a)`` for the steps ``t >= 1`` that use the matrix and ``p`` over ``(t-1, a)``;
    ``C_pp`` is the feature kernel and ``X_pn = <φ(h_p) h_nᵀ>`` the activity-to-preactivation cross
    kernel (``C_pn`` for linear ``phi``). For nonlinear ``phi`` ``X`` needs the preactivation law:
    from a Gaussian-closure solution (``method="gaussian"``) it is ``Sigma_pn ∘ E[φ'(h_p)]``
    (Stein), an approximation like the closure itself; the particle solver does not record it.

    group: the ``W`` group label (default: the group of the last step, i.e. the shared matrix of
    an RNN). Returns the ``|group|·P`` eigenvalues (complex) sorted by decreasing modulus; on the
    symmetric solution the operator is a nilpotent chain and all of them vanish (numerically
    ~ ``residual^(1/chain length)``).

    A singular prior covariance (e.g. ``P > D``, :attr:`.kernels.Problem.support`) makes ``C_pp``
    singular: the regression is then the least-squares one on its range, ``C_pp⁺ X_pn`` (the
    ``eps -> 0`` limit of the regularised problem's), with at most ``rank C_pp`` non-zero eigenvalues.
    """
    arch, T, P = sol.arch, sol.task.T, sol.task.P
    labels = np.asarray(arch.W_groups)
    group = labels[T - 1] if group is None else group
    steps = np.flatnonzero(labels[1:] == group) + 1
    if steps.size == 0:
        raise ValueError(f"group: no step t >= 1 uses W group {group!r}; groups: {sorted(set(labels[1:].tolist()))}")
    a = np.arange(P)
    n_idx = (steps[:, None] * P + a).reshape(-1)
    p_idx = n_idx - P
    C_pp, X_pn = np.asarray(sol.C)[np.ix_(p_idx, p_idx)], _activity_to_preactivation(sol, p_idx, n_idx)
    prob = getattr(sol, "problem", None) or _problem(sol.model)
    if prob.support.full:
        A = np.linalg.solve(C_pp, X_pn)
    else:
        A = np.linalg.lstsq(C_pp, X_pn, rcond=SUPPORT_RTOL)[0]
    eig = np.linalg.eigvals(A)
    return eig[np.argsort(-np.abs(eig), kind="stable")]


def _activity_to_preactivation(sol, p_idx: np.ndarray, n_idx: np.ndarray) -> np.ndarray:
    """``<φ(h_p) h_nᵀ>``: ``C_pn`` for linear ``phi``, from the closure's ``Sigma`` otherwise."""
    nl = get_nonlinearity(sol.phi)
    if nl.name == "linear":
        return np.asarray(sol.C)[np.ix_(p_idx, n_idx)]
    Sigma = getattr(sol, "Sigma", None)
    if Sigma is None:
        raise NotImplementedError(
            f"phi: outlier_eigenvalues for phi = {nl.name!r} needs the activity-to-preactivation cross kernel "
            f"<phi(h) h^T>, which only a Gaussian-closure solution gives (got method "
            f"{getattr(sol, 'method', None)!r}); solve with method='gaussian'")
    return cross_kernel(np.asarray(Sigma), nl, p_idx, n_idx)
