"""Feature-learning solver for any ``phi`` (THEORY.md §3, nonlinear networks): mean-field
Langevin dynamics of a population of single-neuron trajectories.

Variational form. By the Gibbs variational principle the prior rate is a minimum over
distributions ``q`` of one neuron's trajectory ``h ∈ Rⁿ``,
``Gamma(C) = sup_Ct [tr(Ct C) - log Z(Ct; K(C))] = min_{q: <φφᵀ>_q = C} KL(q || N(0, K(C)))``,
so the trained kernel maximises

    J(q) = -KL(q || N(0, K(C_q))) - E(C_q),     C_q = <φ(h) φ(h)ᵀ>_q ,  max_q J = max_C S.

Its first variation is ``-log q + log N(h; 0, K) + φ(h)ᵀ Ct φ(h)`` with ``K = K(C_q)`` and
``Ct = g² shiftᵀ(M_W ∘ ½(K⁻¹ Σ_q K⁻¹ - K⁻¹)) + ½ σ_v² M_v ∘ [(Ay)(Ay)ᵀ on S]``,
``Σ_q = <h hᵀ>_q``: exactly the backward equation. The Wasserstein gradient ascent of ``J`` is
therefore Langevin dynamics of every trajectory in the tilted potential, with ``K`` and ``Ct``
recomputed from the population's current moments. ``J`` never decreases along it and its fixed
points are the forward–backward equations, so it converges where the damped fixed-point
iteration (which moves ``C`` to ``<φφᵀ>`` of the current fields and is unstable for strong
signals) does not: the particles' relaxation rate grows with the tilt.

Implementation. ``num_particles`` trajectories take one BlackJAX MALA step per iteration
(Metropolis-adjusted, so for frozen fields the stationary law is exactly the tilted ``q``) in
coordinates whitened by the population covariance (a preconditioned flow; the step size
is Langevin time). Fields are recomputed at every step. After every window of
``window`` steps the pure step control of :mod:`.particle_control` decides. The step shrinks when
proposals are rejected and is halved when the flow overshoots along a stiff collective direction (per-iteration
summaries alternating: lag-1 autocorrelation below -0.2 in a window); a halving is undone after
``recover_after`` quiet burn-in windows (single windows alternate by chance, and a step kept far
below the stable one makes a slow drift look stationary). Burn-in ends
when the means of consecutive windows stop drifting relative to their scatter *and* the block
traces ``tr C_ts`` over the later half of all windows so far show no significant linear trend
(a horizon that grows with the run and survives step halvings, so that a slow collective
relaxation, invisible from one window to the next, is not mistaken for stationarity: the erf
RNN's broken branch at n = 128 relaxes over ~10⁵ iterations); then window means are averaged (Polyak)
until the largest entrywise standard error of ``C`` (batch means inflated by the correlation
between windows, relative to ``sqrt(C_ii C_jj)``) is below ``mc_tol`` and neither a Geweke test
nor the trend test finds a drift over the averaging window. The result is checked by an independent sampler
(:func:`kernelfield.finite.tilted.tilted_moments`, ChEES-HMC chains at the final fields): the
forward residual compares ``C`` with ``<φφᵀ>_q``, the backward one ``<hhᵀ>`` with the
``Σ`` that built ``Ct``, and ``log Z`` by thermodynamic integration gives
``Gamma = tr(Ct C) - log Z(Ct; K(C))``, the inner objective at the backward field (exact to
second order in the residual), hence ``S = -Gamma - E``.

Structure. Kernel blocks between time steps that the sharing pattern never couples (different
connected components, :class:`~.kernels.Problem`) are products of means, exactly zero for odd
``phi``. For odd ``phi`` on tasks whose inputs, biases and readouts couple no two steps, the
time-symmetric subspace (cross-time blocks zero) is invariant; the ``"prior"`` start is then
solved inside it, so the symmetric solution is represented exactly (as the linear solver,
started from the prior kernel, stays in it by symmetry).

Code. :func:`maximise_particles` plans (the initial population and the flow's constant inputs,
:class:`FlowArrays`), runs (windows of the jitted flow, each followed by
:func:`~.particle_control.control_step`) and assembles the :class:`ParticleResult`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from ..nonlinearities import Nonlinearity
from ..progress import ProgressEvent, reporter
from ..finite.tilted import support_factor, tilted_moments
from .linalg import data_fit
from .kernels import Problem, shift, shift_adjoint
from .particle_control import (ControlState, Decision, ParticleSettings, WindowSummary, averaged_windows,
                               batch_means_error, block_traces, control_step, init_control, relative_error)

__all__ = ["ParticleSettings", "ParticleResult", "FlowArrays", "maximise_particles", "time_symmetric_mask"]


@dataclass(frozen=True)
class ParticleResult:
    """What :func:`maximise_particles` found (turned into a ``Branch`` by the solver)."""

    C: np.ndarray
    C_err: np.ndarray
    Sigma: np.ndarray
    phi_mean: np.ndarray
    Ct: np.ndarray
    S: float
    S_err: float
    Gamma: float
    E: float
    mc_error: float
    residual_forward: float
    residual_backward: float
    residual_error: float
    burned_in: bool
    iterations: int
    acceptance_rate: float


class FlowArrays(NamedTuple):
    """The constant inputs of the flow (a pytree): ``free``, the kernel entries estimated from
    the particles, and of the problem ``M_W``, ``M_v``, ``K_in``, the supervised indices, the
    targets ``y`` and ``kappa``; where the prior covariance is singular, an orthonormal ``basis``
    ``Q`` ``(n, r)`` of the support on which the trajectories live (``None``: regular)."""

    free: np.ndarray
    MW: np.ndarray
    Mv: np.ndarray
    K_in: np.ndarray
    supervised: np.ndarray
    y: np.ndarray
    kappa: float
    basis: np.ndarray | None = None

    @classmethod
    def of(cls, prob: Problem, free: np.ndarray, basis: np.ndarray | None = None) -> "FlowArrays":
        return cls(np.asarray(free), prob.MW, prob.Mv, prob.K_in, np.asarray(prob.supervised), prob.y, prob.kappa,
                   None if basis is None else np.asarray(basis))


class WindowMeans(NamedTuple):
    """Window means of the flow (device arrays) and per iteration ``tr C``, ``tr(Ct C)``."""

    C: jax.Array
    Sigma: jax.Array
    phi_mean: jax.Array
    acceptance: jax.Array
    summaries: jax.Array


class _WindowCarry(NamedTuple):
    """Scan carry of :func:`_window`: the particles and running sums of the window means."""

    H: jax.Array
    sum_C: jax.Array
    sum_Sigma: jax.Array
    sum_phi_mean: jax.Array
    sum_acceptance: jax.Array


def time_symmetric_mask(prob: Problem, nl: Nonlinearity) -> np.ndarray | None:
    """Equal-time 0/1 block mask when the time-symmetric subspace is invariant under the flow
    (odd ``phi``; inputs, biases and readouts couple no two steps), else ``None``."""
    if not nl.odd or prob.direct_step_coupling is not None:
        return None
    t = np.repeat(np.arange(prob.T), prob.P)
    return (t[:, None] == t[None, :]).astype(np.float64)


def _moments(H, fn, free, zero_mean: bool):
    """``C = <φφᵀ>``, ``Σ = <hhᵀ>`` of the population; outside ``free`` the blocks factorise
    into products of means (zero for odd ``phi``)."""
    M = H.shape[0]
    Phi = fn(H)
    C, Sig = Phi.T @ Phi / M, H.T @ H / M
    if zero_mean:
        return free * C, free * Sig
    mp, mh = Phi.mean(axis=0), H.mean(axis=0)
    return free * C + (1 - free) * jnp.outer(mp, mp), free * Sig + (1 - free) * jnp.outer(mh, mh)


def _spd_inverse(A):
    return cho_solve((jnp.linalg.cholesky(0.5 * (A + A.T)), True), jnp.eye(A.shape[0]))


def _in_support_coordinates(X, basis):
    """``QᵀXQ`` (``X`` where ``basis`` is ``None``)."""
    return X if basis is None else basis.T @ X @ basis


def fields(C, Sig, arrays: FlowArrays, P: int):
    """``K = K(C)`` and the backward field
    ``Ct = g² shiftᵀ(M_W ∘ ½(K⁻¹ Σ K⁻¹ - K⁻¹)) + ½ σ_v² M_v ∘ [(Ay)(Ay)ᵀ on S]``,
    ``A = (G_S(C) + κI)⁻¹``; on a support ``Q``, ``K⁻¹`` is the pseudo-inverse ``Q(QᵀKQ)⁻¹Qᵀ``
    (the derivative of the KL divergence on the support, THEORY.md §3)."""
    MW, Mv, S_idx = arrays.MW, arrays.Mv, arrays.supervised
    K = MW * shift(C, P) + arrays.K_in
    Q = arrays.basis
    Kinv = _spd_inverse(K) if Q is None else Q @ _spd_inverse(Q.T @ K @ Q) @ Q.T
    Ay = jnp.linalg.solve((Mv * C)[S_idx][:, S_idx] + arrays.kappa * jnp.eye(S_idx.shape[0]), arrays.y)
    data = jnp.zeros_like(C).at[S_idx[:, None], S_idx[None, :]].set(jnp.outer(Ay, Ay))
    Ct = shift_adjoint(MW * 0.5 * (Kinv @ Sig @ Kinv - Kinv), P) + 0.5 * Mv * data
    return 0.5 * (K + K.T), 0.5 * (Ct + Ct.T)


@partial(jax.jit, static_argnames=("fn", "zero_mean", "length", "P"))
def _window(arrays: FlowArrays, key, H, step_size, fn, zero_mean: bool, length: int, P: int):
    """``length`` iterations: moments -> fields -> one MALA step of every particle in
    coordinates ``h = L z``, ``L = chol Σ`` (on a support ``Q``: ``h = Q L z``, ``L = chol QᵀΣQ``).
    Returns the particles and the :class:`WindowMeans`."""
    kernel = blackjax.mala.build_kernel()
    n = H.shape[1]

    Q = arrays.basis
    lift = (lambda u: u) if Q is None else (lambda u: u @ Q.T)  # noqa: E731  support coordinates -> h

    def one(carry: _WindowCarry, key):
        C, Sig = _moments(carry.H, fn, arrays.free, zero_mean)
        mean = jnp.zeros(n) if zero_mean else jnp.mean(fn(carry.H), axis=0)
        K, Ct = fields(C, Sig, arrays, P)
        Sig_r = _in_support_coordinates(Sig, Q)
        r = Sig_r.shape[0]
        Lp = jnp.linalg.cholesky(Sig_r + 1e-12 * jnp.trace(Sig_r) / r * jnp.eye(r))
        B = solve_triangular(jnp.linalg.cholesky(_in_support_coordinates(K, Q)), Lp, lower=True)

        def logdensity(z):
            p = fn(lift(Lp @ z))
            return -0.5 * jnp.sum((B @ z) ** 2) + p @ Ct @ p

        Z = solve_triangular(Lp, (carry.H if Q is None else carry.H @ Q).T, lower=True).T
        states = jax.vmap(lambda z: blackjax.mala.init(z, logdensity))(Z)
        step = lambda k, s: kernel(k, s, logdensity, step_size)  # noqa: E731
        states, info = jax.vmap(step)(jax.random.split(key, carry.H.shape[0]), states)
        summary = jnp.stack([jnp.trace(C), jnp.sum(Ct * C)])
        return _WindowCarry(lift(states.position @ Lp.T), carry.sum_C + C, carry.sum_Sigma + Sig,
                            carry.sum_phi_mean + mean, carry.sum_acceptance + jnp.mean(info.acceptance_rate)), summary

    zeros = jnp.zeros((n, n))
    carry, summaries = jax.lax.scan(one, _WindowCarry(H, zeros, zeros, jnp.zeros(n), 0.0),
                                    jax.random.split(key, length))
    return carry.H, WindowMeans(carry.sum_C / length, carry.sum_Sigma / length, carry.sum_phi_mean / length,
                                carry.sum_acceptance / length, summaries)


def _summarise(means: WindowMeans, H, T: int, P: int) -> WindowSummary:
    """The host-side :class:`~.particle_control.WindowSummary` of a window ending at particles ``H``."""
    C = np.asarray(means.C)
    return WindowSummary(C=C, Sigma=np.asarray(means.Sigma), phi_mean=np.asarray(means.phi_mean),
                         acceptance=float(means.acceptance), summaries=np.asarray(means.summaries),
                         traces=block_traces(C, T, P),
                         finite=bool(np.all(np.isfinite(C)) and np.all(np.isfinite(np.asarray(H)))))


def maximise_particles(prob: Problem, nl: Nonlinearity, K0: np.ndarray, free: np.ndarray,
                       settings: ParticleSettings, label: str = "", basis: np.ndarray | None = None) -> ParticleResult:
    """Run the mean-field Langevin flow from particles drawn from ``N(0, K0)``; ``free`` marks the
    kernel entries estimated from the particles (the rest factorise, see :func:`_moments`).
    ``basis``: where the prior covariance is singular, an orthonormal ``(n, r)`` basis of the
    support (:func:`.kernels.kernel_support`) on which the trajectories live."""
    arrays = FlowArrays.of(prob, free, basis)
    key, H = _initial_population(K0, settings, arrays.basis)
    advance = partial(_window, arrays, fn=nl.fn, zero_mean=bool(nl.odd), length=settings.window, P=prob.P)
    H, state = _run(advance, key, H, settings, prob.T, prob.P, label)
    return _assemble(arrays, nl, H, state, settings, prob.T, prob.P)


def _initial_population(K0: np.ndarray, settings: ParticleSettings, basis: np.ndarray | None = None):
    """The run's random key and ``num_particles`` trajectories drawn from ``N(0, K0)`` (on the
    support ``basis`` where given, :func:`~kernelfield.finite.tilted.support_factor`)."""
    key = jax.random.PRNGKey(settings.seed)
    key, k0 = jax.random.split(key)
    L0 = support_factor(K0, basis)
    return key, jax.random.normal(k0, (settings.num_particles, L0.shape[1])) @ jnp.asarray(L0).T


def _run(advance: Callable, key, H, settings: ParticleSettings, T: int, P: int,
         label: str) -> tuple[np.ndarray, ControlState]:
    """Windows of ``advance(key, H, step_size)``, each followed by :func:`control_step`, until it
    says converged or stop or ``max_iter`` is reached. A window that blew up is undone (the flow
    goes on from the last finite particles). Reports ``ProgressEvent("particles", ...)``."""
    state = init_control(settings)
    with reporter(settings.progress, transient=True) as report:
        while state.iterations + settings.window <= settings.max_iter:
            key, k = jax.random.split(key)
            H_next, means = advance(k, H, state.step_size)
            window = _summarise(means, H_next, T, P)
            state, decision = control_step(state, window, settings)
            if window.finite:
                H = H_next
            report(ProgressEvent("particles", state.iterations, settings.max_iter,
                                 {"start": label, "step": state.step_size, "phase": state.phase}))
            if decision in (Decision.CONVERGED, Decision.STOP):
                break
    return np.asarray(H), state


def _assemble(arrays: FlowArrays, nl: Nonlinearity, H: np.ndarray, state: ControlState, settings: ParticleSettings,
              T: int, P: int) -> ParticleResult:
    """Averages of the windows the control kept (:func:`~.particle_control.averaged_windows`),
    with the factorised blocks exactly the products of the means, then :func:`_finish`."""
    n = T * P
    batch_C, batch_Sigma, batch_mean = averaged_windows(state, n)
    C = np.mean(batch_C, axis=0)
    summaries = state.batch_summaries if batch_C is state.batch_C else ()  # burn-in fallback: plain batch means
    C_err = batch_means_error(batch_C, summaries)
    Sigma, mean = np.mean(batch_Sigma, axis=0), np.mean(batch_mean, axis=0)
    C = arrays.free * C + (1 - arrays.free) * np.outer(mean, mean)
    rate = float(np.mean(state.rates)) if state.rates else float("nan")
    return _finish(arrays, nl, C, C_err, Sigma, mean, H, settings, state.burned_in and len(batch_C) >= 2,
                   state.iterations, rate, P)


def _finish(arrays: FlowArrays, nl, C, C_err, Sigma, mean, H, settings, burned_in, iterations, rate,
            P: int) -> ParticleResult:
    """Fields at the averaged moments, the independent check and ``S``."""
    C, Sigma = 0.5 * (C + C.T), 0.5 * (Sigma + Sigma.T)
    nan = float("nan")
    if not np.all(np.isfinite(C)):
        return ParticleResult(C, C_err, Sigma, mean, np.full_like(C, np.nan), -np.inf, nan, nan, nan, nan, np.inf,
                              np.inf, nan, False, iterations, rate)
    K, Ct = (np.asarray(a) for a in fields(jnp.asarray(C), jnp.asarray(Sigma), arrays, P=P))
    num_chains = 64
    try:
        with warnings.catch_warnings():  # normalisability is decided by the chains: non-finite -> ValueError
            warnings.simplefilter("ignore", RuntimeWarning)
            check = tilted_moments(K, Ct, nl, num_chains=num_chains, num_samples=settings.check_samples,
                                   num_warmup=300, seed=settings.seed + 1, init=H[:num_chains], log_Z=True,
                                   basis=arrays.basis)
    except ValueError:  # the fields at the averaged moments give no normalisable q: not a solution
        return ParticleResult(C, C_err, Sigma, mean, Ct, -np.inf, nan, nan, nan, relative_error(C_err, C), np.inf,
                              np.inf, nan, False, iterations, rate)
    norm_C, norm_S = np.linalg.norm(C), np.linalg.norm(Sigma)
    forward = float(np.linalg.norm(C - check.phiphi) / norm_C)
    backward = float(np.linalg.norm(Sigma - check.hh) / norm_S)
    residual_error = float(max(np.sqrt(np.sum(C_err**2) + np.sum(check.phiphi_err**2)) / norm_C,
                               np.sqrt(np.sum(check.hh_err**2)) / norm_S))
    gamma = float(np.sum(Ct * C) - check.log_Z)
    fit = data_fit((arrays.Mv * C)[np.ix_(arrays.supervised, arrays.supervised)]
                   + arrays.kappa * np.eye(len(arrays.supervised)), arrays.y)
    energy = fit.energy if fit is not None else float("nan")
    return ParticleResult(C=C, C_err=C_err, Sigma=Sigma, phi_mean=mean, Ct=Ct, S=-gamma - energy, S_err=float(check.log_Z_err),
                          Gamma=gamma, E=energy, mc_error=relative_error(C_err, C), residual_forward=forward,
                          residual_backward=backward, residual_error=residual_error, burned_in=burned_in,
                          iterations=iterations, acceptance_rate=rate)
