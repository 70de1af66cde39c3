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
is Langevin time). Fields are recomputed at every step. The step shrinks when proposals are
rejected and is halved when the flow overshoots along a stiff collective direction (per-iteration
summaries alternating: lag-1 autocorrelation below -0.2 in a window); a halving is undone after
``recover_after`` quiet burn-in windows (single windows alternate by chance, and a step kept far
below the stable one makes a slow drift look stationary). Burn-in ends
when the means of consecutive windows stop drifting relative to their scatter *and* the block
traces ``tr C_ts`` over the later half of all windows so far show no significant linear trend
(a horizon that grows with the run and survives step halvings, so that a slow collective
relaxation, invisible from one window to the next, is not mistaken for stationarity: the erf
RNN's broken branch at n = 128 relaxes over ~10⁵ iterations); then window means are averaged (Polyak)
until the largest entrywise standard error of ``C`` (batch means, relative to
``sqrt(C_ii C_jj)``) is below ``mc_tol`` and neither a Geweke test nor the trend test finds a
drift over the averaging window. The result is checked by an independent sampler
(:func:`kernelfield.tilted.tilted_moments`, ChEES-HMC chains at the final fields): the
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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.scipy.linalg import cho_solve, solve_triangular
from rich.progress import Progress

from ..nonlinearities import Nonlinearity
from ..tilted import tilted_moments
from .kernels import Problem, shift, shift_adjoint

__all__ = ["ParticleSettings", "maximise_particles", "time_symmetric_mask"]


@dataclass(frozen=True)
class ParticleSettings:
    """num_particles: population size ``M`` (finite-population bias is ``O(n/M)``);
    step_size: MALA step in Langevin time (whitened); window: iterations per batch;
    mc_tol: stop averaging when the largest entrywise relative standard error of ``C`` is below
    it; min_batches: batches averaged at least; max_iter: iterations in all (burn-in included);
    seed: everything random derives from it; progress: show a rich progress bar;
    check_samples: samples per chain of the independent check (64 chains); recover_after: burn-in
    windows without an overshoot after which the largest allowed step doubles again (up to
    ``step_size``) when it was halved."""

    num_particles: int = 4096
    step_size: float = 0.2
    window: int = 20
    mc_tol: float = 0.01
    min_batches: int = 10
    max_iter: int = 5000
    seed: int = 0
    progress: bool = False
    check_samples: int = 500
    recover_after: int = 25

    def __post_init__(self):
        for name, minimum in (("num_particles", 16), ("window", 2), ("min_batches", 2), ("max_iter", 1),
                              ("seed", 0), ("check_samples", 2), ("recover_after", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
        for name in ("step_size", "mc_tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0):
                raise ValueError(f"{name}: must be a number > 0, got {value!r}")


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


def time_symmetric_mask(prob: Problem, nl: Nonlinearity) -> np.ndarray | None:
    """Equal-time 0/1 block mask when the time-symmetric subspace is invariant under the flow
    (odd ``phi``; inputs, biases and readouts couple no two steps), else ``None``."""
    T, P = prob.T, prob.P
    if not nl.odd:
        return None
    t = np.repeat(np.arange(T), P)
    cross = t[:, None] != t[None, :]
    supervised = np.zeros(prob.n, dtype=bool)
    supervised[prob.supervised] = True
    readout = prob.Mv * supervised[:, None] * supervised[None, :]
    if np.any(prob.K_in[cross] != 0) or np.any(readout[cross] != 0):
        return None
    return (~cross).astype(np.float64)


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


def fields(C, Sig, MW, Mv, K_in, S_idx, y, kappa, P: int):
    """``K = K(C)`` and the backward field
    ``Ct = g² shiftᵀ(M_W ∘ ½(K⁻¹ Σ K⁻¹ - K⁻¹)) + ½ σ_v² M_v ∘ [(Ay)(Ay)ᵀ on S]``,
    ``A = (G_S(C) + κI)⁻¹``."""
    K = MW * shift(C, P) + K_in
    Kinv = _spd_inverse(K)
    Ay = jnp.linalg.solve((Mv * C)[S_idx][:, S_idx] + kappa * jnp.eye(S_idx.shape[0]), y)
    data = jnp.zeros_like(C).at[S_idx[:, None], S_idx[None, :]].set(jnp.outer(Ay, Ay))
    Ct = shift_adjoint(MW * 0.5 * (Kinv @ Sig @ Kinv - Kinv), P) + 0.5 * Mv * data
    return 0.5 * (K + K.T), 0.5 * (Ct + Ct.T)


@partial(jax.jit, static_argnames=("fn", "zero_mean", "length", "P"))
def _window(key, H, step_size, free, MW, Mv, K_in, S_idx, y, kappa, fn, zero_mean: bool, length: int, P: int):
    """``length`` iterations: moments -> fields -> one MALA step of every particle in
    coordinates ``h = L z``, ``L = chol Σ``. Returns the particles, the window means of ``C``,
    ``Σ``, ``<φ>`` and of the acceptance rate, and per iteration the summaries ``tr C``, ``tr(Ct C)``."""
    kernel = blackjax.mala.build_kernel()
    n = H.shape[1]

    def one(carry, key):
        H, sum_C, sum_Sig, sum_mean, sum_rate = carry
        C, Sig = _moments(H, fn, free, zero_mean)
        mean = jnp.zeros(n) if zero_mean else jnp.mean(fn(H), axis=0)
        K, Ct = fields(C, Sig, MW, Mv, K_in, S_idx, y, kappa, P)
        Lp = jnp.linalg.cholesky(Sig + 1e-12 * jnp.trace(Sig) / n * jnp.eye(n))
        B = solve_triangular(jnp.linalg.cholesky(K), Lp, lower=True)

        def logdensity(z):
            p = fn(Lp @ z)
            return -0.5 * jnp.sum((B @ z) ** 2) + p @ Ct @ p

        Z = solve_triangular(Lp, H.T, lower=True).T
        states = jax.vmap(lambda z: blackjax.mala.init(z, logdensity))(Z)
        step = lambda k, s: kernel(k, s, logdensity, step_size)  # noqa: E731
        states, info = jax.vmap(step)(jax.random.split(key, H.shape[0]), states)
        H = states.position @ Lp.T
        summary = jnp.stack([jnp.trace(C), jnp.sum(Ct * C)])
        return (H, sum_C + C, sum_Sig + Sig, sum_mean + mean, sum_rate + jnp.mean(info.acceptance_rate)), summary

    zeros = jnp.zeros((n, n))
    (H, sum_C, sum_Sig, sum_mean, sum_rate), summaries = jax.lax.scan(
        one, (H, zeros, zeros, jnp.zeros(n), 0.0), jax.random.split(key, length))
    return H, sum_C / length, sum_Sig / length, sum_mean / length, sum_rate / length, summaries


def _drifting(batches: list[np.ndarray], k: int = 3, threshold: float = 2.0) -> bool:
    """Whether the last ``2k`` window means still drift: the squared difference of the means of
    the last ``k`` and the previous ``k`` windows over its expectation for stationary, independent
    windows (``2/k`` times the windows' scatter) is ~1 for noise and ~3k/2 for a steady trend."""
    if len(batches) < 2 * k:
        return True
    recent = np.stack(batches[-2 * k:])
    difference = recent[k:].mean(axis=0) - recent[:k].mean(axis=0)
    scatter = np.sum(recent.var(axis=0, ddof=1))
    return bool(np.sum(difference**2) > threshold * (2.0 / k) * scatter + 1e-30)


def _oscillating(summaries: np.ndarray, threshold: float = -0.2) -> bool:
    """Whether a summary of the population alternates from one iteration to the next (lag-1
    autocorrelation below ``threshold``; an overdamped flow gives positive values, a flow that
    overshoots along a stiff collective direction values near -1, and stationary uncorrelated
    summaries of a window of 20 iterations scatter by about ±0.22 around 0, so some halvings are
    false alarms: they cost time, while averaging an overshooting flow biases the result)."""
    x = summaries - summaries.mean(axis=0)
    rho = np.sum(x[1:] * x[:-1], axis=0) / np.maximum(np.sum(x**2, axis=0), 1e-300)
    return bool(np.min(rho) < threshold)


def _geweke_drift(batches: list[np.ndarray], threshold: float = 3.0) -> bool:
    """Geweke-type test over the averaging window: the squared difference of the means of the
    first 30 % and the last 50 % of the batches over its expectation for a stationary sequence
    (summed over all entries, with the lag-1 autocorrelation ρ of the batches pooled over entries,
    so ~1 without drift). Catches slow drifts that the window-to-window burn-in test misses."""
    x = np.stack(batches)
    a, b = x[: max(2, int(0.3 * len(x)))], x[len(x) // 2:]
    expected = np.sum(a.var(axis=0, ddof=1) / len(a) + b.var(axis=0, ddof=1) / len(b))
    d = x - x.mean(axis=0)  # correlated batches: inflate the variance of the means by (1 + ρ)/(1 - ρ)
    rho = np.clip(np.sum(d[1:] * d[:-1]) / max(np.sum(d**2), 1e-300), 0.0, 0.9)
    expected *= (1 + rho) / (1 - rho)
    return bool(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2) > threshold * expected + 1e-30)


def block_traces(C: np.ndarray, T: int, P: int) -> np.ndarray:
    """Traces of the ``T × T`` time blocks of ``C`` (upper triangle, flattened): linear summaries
    of the kernel in which a collective drift (e.g. the slow relaxation of the late-time blocks on
    a symmetry-broken branch) is not diluted by the noise of all ``n²`` entries."""
    return np.einsum("tasa->ts", np.asarray(C).reshape(T, P, T, P))[np.triu_indices(T)]


def _trend(x: np.ndarray, alpha: float = 0.01) -> float:
    """Largest ``|t|`` statistic of the least-squares slopes of the columns of ``x`` (one row per
    window, one column per summary) against the window index, over its critical value: the
    two-sided Student-t quantile at ``alpha`` Bonferroni-corrected over the columns, so a value
    above 1 means a significant trend. The residual variance is inflated by ``(1 + ρ)/(1 - ρ)``
    with ρ the residuals' lag-1 autocorrelation, pooled over the columns and corrected for its
    small-sample bias (``+ (2 + 4ρ)/N``, clipped to ``[0, 0.9]``). Columns without scatter
    (summaries that vanish by symmetry) are left out."""
    N = len(x)
    k = np.arange(N, dtype=np.float64)
    k -= k.mean()
    slope = k @ (x - x.mean(axis=0)) / (k @ k)
    resid = x - x.mean(axis=0) - np.outer(k, slope)
    var = np.sum(resid**2, axis=0) / (N - 2)
    live = var > 1e-24 * np.maximum(np.abs(x).max(axis=0), 1e-300) ** 2
    if N < 4 or not np.any(live):
        return 0.0
    r = resid[:, live]
    rho = np.sum(r[1:] * r[:-1]) / np.sum(r**2)
    rho = float(np.clip(rho + (2 + 4 * rho) / N, 0.0, 0.9))
    t = np.abs(slope[live]) / np.sqrt(var[live] * (1 + rho) / (1 - rho) / (k @ k))
    critical = scipy.stats.t.ppf(1 - alpha / (2 * np.count_nonzero(live)), N - 2)
    return float(np.max(t) / critical)


def _trending(summaries: list[np.ndarray], min_windows: int = 6) -> bool:
    """Whether the summaries of the later half of the windows so far still follow a linear trend
    (:func:`_trend`). The horizon grows with the run, so a drift too slow to show from one window
    to the next is still caught once it shows on the scale of the run itself, which is what the
    final averages would be biased by. Fewer than ``2·min_windows`` windows count as trending."""
    if len(summaries) < 2 * min_windows:
        return True
    return _trend(np.stack(summaries[len(summaries) // 2:])) > 1.0


def _adapt(step_size: float, acceptance: float, largest: float) -> float:
    """MALA step after a window with mean ``acceptance``: shrink fast when proposals are rejected
    (a strong tilt far from the fixed point makes the target stiff in whitened coordinates), grow
    back towards ``largest`` when nearly all are accepted (only during burn-in; the largest step
    drops whenever the flow oscillated)."""
    if acceptance < 0.3:
        return step_size * 0.25
    if acceptance < 0.5:
        return step_size * 0.7
    if acceptance > 0.9:
        return min(step_size * 1.5, largest)
    return step_size


def _relative_error(err: np.ndarray, C: np.ndarray) -> float:
    """Largest ``err_ij / sqrt(C_ii C_jj)``."""
    d = np.sqrt(np.maximum(np.diag(C), 1e-300))
    return float(np.max(err / np.outer(d, d)))


def maximise_particles(prob: Problem, nl: Nonlinearity, K0: np.ndarray, free: np.ndarray,
                       settings: ParticleSettings, label: str = "") -> ParticleResult:
    """Run the mean-field Langevin flow from particles drawn from ``N(0, K0)``; ``free`` marks the
    kernel entries estimated from the particles (the rest factorise, see :func:`_moments`)."""
    s = settings
    key = jax.random.PRNGKey(s.seed)
    key, k0 = jax.random.split(key)
    L0 = np.linalg.cholesky(0.5 * (K0 + K0.T))
    H = jax.random.normal(k0, (s.num_particles, prob.n)) @ jnp.asarray(L0).T
    zero_mean = bool(nl.odd)
    arrays = (jnp.asarray(free), prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.supervised), prob.y, prob.kappa)
    run = partial(_window, fn=nl.fn, zero_mean=zero_mean, length=s.window, P=prob.P)
    burn_C: list[np.ndarray] = []
    burn_Sig: list[np.ndarray] = []
    batch_C: list[np.ndarray] = []
    batch_Sig: list[np.ndarray] = []
    batch_mean: list[np.ndarray] = []
    rates: list[float] = []
    history: list[np.ndarray] = []  # block traces of every window but the overshooting ones
    last_finite: list[tuple] = []  # (C, Σ, <φ>) of the last two finite windows, overshooting ones included
    burned_in, iterations = False, 0
    step_size = largest_step = float(s.step_size)
    quiet = 0  # windows since the step was last halved
    with Progress(transient=True, disable=not s.progress) as bar:
        task = bar.add_task(f"mean-field Langevin {label}".strip(), total=s.max_iter)
        while iterations + s.window <= s.max_iter:
            key, k = jax.random.split(key)
            H_before = H
            H, C_w, Sig_w, mean_w, rate, summaries = run(k, H, step_size, *arrays)
            C_w, Sig_w, rate = np.asarray(C_w), np.asarray(Sig_w), float(rate)
            iterations += s.window
            bar.update(task, advance=s.window)
            finite = bool(np.all(np.isfinite(C_w)) and np.all(np.isfinite(np.asarray(H))))
            if finite:
                last_finite = [*last_finite[-1:], (C_w, Sig_w, np.asarray(mean_w))]
            if not finite or _oscillating(np.asarray(summaries)):
                # the explicit flow overshoots along a stiff direction (strong learning signals
                # couple the fields tightly to the moments) or blew up: halve the step, go back to
                # the last finite population and start the averages afresh. The block traces of
                # the windows so far are kept: the trend test must see the whole run, or a slow
                # collective drift passes unseen in the short stretches between halvings
                if not finite:
                    H = H_before
                step_size *= 0.5
                largest_step, quiet = step_size, 0
                if step_size < 1e-6:
                    break
                burned_in = False
                burn_C, burn_Sig, batch_C, batch_Sig, batch_mean = [], [], [], [], []
                continue
            rates.append(rate)
            quiet += 1
            if not burned_in and quiet >= s.recover_after and largest_step < s.step_size:
                # a halving is not permanent: single windows alternate by chance, and a step kept
                # far below the stable one slows the collective relaxation until a drift no
                # longer shows against the noise (burn-in would then end on a point that is
                # not stationary); a step that really overshoots is halved again
                largest_step, quiet = min(2.0 * largest_step, s.step_size), 0
            step_size = _adapt(step_size, rate, largest_step if not burned_in else step_size)
            history.append(block_traces(C_w, prob.T, prob.P))
            if not burned_in:
                burn_C.append(C_w)
                burn_Sig.append(Sig_w)
                burned_in = not _drifting(burn_C) and not _trending(history)
                continue
            batch_C.append(C_w)
            batch_Sig.append(Sig_w)
            batch_mean.append(np.asarray(mean_w))
            if len(batch_C) >= s.min_batches:
                err = np.std(batch_C, axis=0, ddof=1) / np.sqrt(len(batch_C))
                mc_error = _relative_error(err, np.mean(batch_C, axis=0))
                if mc_error < s.mc_tol:
                    trend = _trend(np.stack(history[-len(batch_C):]))  # the averaged windows' block traces
                    if not _geweke_drift(batch_C) and trend <= 1.0:
                        break
                    half = len(batch_C) // 2  # still drifting: the first half was burn-in
                    batch_C, batch_Sig, batch_mean = batch_C[half:], batch_Sig[half:], batch_mean[half:]
    if len(batch_C) < 2:  # burn-in never ended (or the run blew up): report what the last windows say
        batch_C, batch_Sig = (burn_C + batch_C)[-2:], (burn_Sig + batch_Sig)[-2:]
        batch_mean = [last_finite[-1][2]] if last_finite else [np.asarray(mean_w)]
        if len(batch_C) < 2 and last_finite:  # the run ended just after a step halving cleared the averages
            batch_C, batch_Sig, batch_mean = (list(x) for x in zip(*last_finite))
        if not batch_C:  # no finite window at all
            batch_C = batch_Sig = [np.full((prob.n, prob.n), np.nan)] * 2
    C = np.mean(batch_C, axis=0)
    C_err = np.std(batch_C, axis=0, ddof=1) / np.sqrt(len(batch_C))
    Sigma, mean = np.mean(batch_Sig, axis=0), np.mean(batch_mean, axis=0)
    C = free * C + (1 - free) * np.outer(mean, mean)  # factorised blocks: exactly the product of the means
    return _finish(prob, nl, C, C_err, Sigma, mean, np.asarray(H), settings, burned_in and len(batch_C) >= 2,
                   iterations, float(np.mean(rates)) if rates else float("nan"))


def _finish(prob, nl, C, C_err, Sigma, mean, H, settings, burned_in, iterations, rate) -> ParticleResult:
    """Fields at the averaged moments, the independent check and ``S``."""
    C, Sigma = 0.5 * (C + C.T), 0.5 * (Sigma + Sigma.T)
    nan = float("nan")
    if not np.all(np.isfinite(C)):
        return ParticleResult(C, C_err, Sigma, mean, np.full_like(C, np.nan), -np.inf, nan, nan, nan, nan, np.inf,
                              np.inf, nan, False, iterations, rate)
    K, Ct = (np.asarray(a) for a in fields(jnp.asarray(C), jnp.asarray(Sigma), prob.MW, prob.Mv, prob.K_in,
                                            jnp.asarray(prob.supervised), prob.y, prob.kappa, P=prob.P))
    num_chains = 64
    try:
        with warnings.catch_warnings():  # normalisability is decided by the chains: non-finite -> ValueError
            warnings.simplefilter("ignore", RuntimeWarning)
            check = tilted_moments(K, Ct, nl, num_chains=num_chains, num_samples=settings.check_samples,
                                   num_warmup=300, seed=settings.seed + 1, init=H[:num_chains], log_Z=True)
    except ValueError:  # the fields at the averaged moments give no normalisable q: not a solution
        return ParticleResult(C, C_err, Sigma, mean, Ct, -np.inf, nan, nan, nan, _relative_error(C_err, C), np.inf,
                              np.inf, nan, False, iterations, rate)
    norm_C, norm_S = np.linalg.norm(C), np.linalg.norm(Sigma)
    forward = float(np.linalg.norm(C - check.phiphi) / norm_C)
    backward = float(np.linalg.norm(Sigma - check.hh) / norm_S)
    residual_error = float(max(np.sqrt(np.sum(C_err**2) + np.sum(check.phiphi_err**2)) / norm_C,
                               np.sqrt(np.sum(check.hh_err**2)) / norm_S))
    gamma = float(np.sum(Ct * C) - check.log_Z)
    A = (prob.Mv * C)[np.ix_(prob.supervised, prob.supervised)] + prob.kappa * np.eye(len(prob.supervised))
    energy = float(0.5 * prob.y @ np.linalg.solve(A, prob.y))
    return ParticleResult(C=C, C_err=C_err, Sigma=Sigma, phi_mean=mean, Ct=Ct, S=-gamma - energy, S_err=float(check.log_Z_err),
                          Gamma=gamma, E=energy, mc_error=_relative_error(C_err, C), residual_forward=forward,
                          residual_backward=backward, residual_error=residual_error, burned_in=burned_in,
                          iterations=iterations, acceptance_rate=rate)
