"""Step control of the particle solver (:mod:`.particles`), a pure update of a typed state.

In the style of BlackJAX: :func:`init_control` gives the :class:`ControlState` of a run, and
after every window of MALA steps :func:`control_step` ``(state, window, settings) -> (state,
decision)`` reads the window's :class:`WindowSummary` and decides what happens next
(:class:`Decision`). Nothing here samples or mutates, so the control is tested on scripted
windows. The rules (THEORY.md §3, nonlinear networks):

* **Overshoot.** A window whose per-iteration summaries alternate (lag-1 autocorrelation below
  -0.2, :func:`_oscillating`) or that blew up halves the step and clears the averages; the
  block-trace history is kept, so the trend test sees the whole run. Below ``1e-6`` the run stops.
* **Recovery.** After ``recover_after`` quiet burn-in windows a halving is undone (the largest
  allowed step doubles, up to ``step_size``).
* **Acceptance.** The step shrinks when proposals are rejected and grows back towards the largest
  allowed step during burn-in (:func:`_adapt`).
* **Burn-in** ends when window means stop drifting (:func:`_drifting`) and the block traces of the
  later half of the run show no linear trend (:func:`_trending`).
* **Averaging** (batch means, inflated for the correlation between windows,
  :func:`batch_means_error`) until the largest relative standard error of ``C`` is below
  ``mc_tol`` and neither a Geweke test nor the trend test finds a drift; otherwise the first half
  of the batches is dropped as burn-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import numpy as np
import scipy.stats

from ..progress import ProgressArg
from ..validation import integer

__all__ = ["ParticleSettings", "WindowSummary", "ControlState", "Decision", "init_control", "control_step",
           "averaged_windows", "batch_means_error", "block_traces", "integrated_time", "relative_error"]


@dataclass(frozen=True)
class ParticleSettings:
    """num_particles: population size ``M`` (finite-population bias is ``O(n/M)``);
    step_size: MALA step in Langevin time (whitened); window: iterations per batch;
    mc_tol: stop averaging when the largest entrywise relative standard error of ``C`` is below
    it; min_batches: batches averaged at least; max_iter: iterations in all (burn-in included);
    seed: everything random derives from it; progress: ``True`` (rich progress bar), ``False`` or a
    callable receiving :class:`~kernelfield.progress.ProgressEvent` s (task ``"particles"``);
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
    progress: ProgressArg = False
    check_samples: int = 500
    recover_after: int = 25

    def __post_init__(self):
        for name, minimum in (("num_particles", 16), ("window", 2), ("min_batches", 2), ("max_iter", 1),
                              ("seed", 0), ("check_samples", 2), ("recover_after", 1)):
            integer(name, getattr(self, name), minimum)
        for name in ("step_size", "mc_tol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0):
                raise ValueError(f"{name}: must be a number > 0, got {value!r}")
        if not (self.progress is None or isinstance(self.progress, bool) or callable(self.progress)):
            raise ValueError(f"progress: must be True, False or a callable taking a ProgressEvent, "
                             f"got {self.progress!r}")


class WindowSummary(NamedTuple):
    """One window of the flow as the control sees it: window means of ``C``, ``Σ = <hhᵀ>``, ``<φ>``
    and of the acceptance rate; per iteration the summaries ``tr C``, ``tr(Ct C)`` (rows);
    :func:`block_traces` of ``C``; ``finite``: the window's ``C`` and final particles are finite."""

    C: np.ndarray
    Sigma: np.ndarray
    phi_mean: np.ndarray
    acceptance: float
    summaries: np.ndarray
    traces: np.ndarray
    finite: bool


class Decision(Enum):
    """What the run does after a window."""

    CONTINUE = "continue"  # take the next window
    HALVE = "halve"  # the step was halved and the averages cleared; go on (from the last finite particles)
    CONVERGED = "converged"  # the averages are accurate and stationary: stop
    STOP = "stop"  # the step fell below 1e-6: give up


class ControlState(NamedTuple):
    """The step control between windows. ``largest_step``: the step allowed now (lowered by
    halvings); ``quiet``: windows since the last halving or recovery; ``burn_*``: windows of the
    current burn-in, ``batch_*``: averaged windows (``batch_summaries``: their per-iteration
    summaries, for :func:`batch_means_error`); ``rates``: acceptance of every window that was
    not an overshoot; ``history``: their block traces (kept across halvings); ``last_finite``:
    ``(C, Σ, <φ>)`` of the last two finite windows, overshooting ones included."""

    step_size: float
    largest_step: float
    quiet: int = 0
    burned_in: bool = False
    iterations: int = 0
    burn_C: tuple = ()
    burn_Sigma: tuple = ()
    batch_C: tuple = ()
    batch_Sigma: tuple = ()
    batch_mean: tuple = ()
    batch_summaries: tuple = ()
    rates: tuple = ()
    history: tuple = ()
    last_finite: tuple = ()

    @property
    def phase(self) -> str:
        return "averaging" if self.burned_in else "burn-in"


def init_control(settings: ParticleSettings) -> ControlState:
    """The state before the first window: the full step, burning in."""
    return ControlState(step_size=float(settings.step_size), largest_step=float(settings.step_size))


def control_step(state: ControlState, window: WindowSummary,
                 settings: ParticleSettings) -> tuple[ControlState, Decision]:
    """The state after ``window`` and what to do next (rules in the module docstring)."""
    last_finite = state.last_finite
    if window.finite:
        last_finite = (*last_finite[-1:], (window.C, window.Sigma, window.phi_mean))
    state = state._replace(iterations=state.iterations + settings.window, last_finite=last_finite)
    if not window.finite or _oscillating(window.summaries):
        # the explicit flow overshoots along a stiff direction (strong learning signals couple the
        # fields tightly to the moments) or blew up. The block traces of the windows so far are
        # kept: the trend test must see the whole run, or a slow collective drift passes unseen
        # in the short stretches between halvings
        return _halve(state)
    state = _adapt_step(state, window.acceptance, settings)
    state = state._replace(history=state.history + (window.traces,))
    if not state.burned_in:
        burn_C, burn_Sigma = state.burn_C + (window.C,), state.burn_Sigma + (window.Sigma,)
        burned_in = not _drifting(burn_C) and not _trending(state.history)
        return state._replace(burn_C=burn_C, burn_Sigma=burn_Sigma, burned_in=burned_in), Decision.CONTINUE
    return _average(state, window, settings)


def _halve(state: ControlState) -> tuple[ControlState, Decision]:
    """Halve the step (it becomes the largest allowed) and start the averages afresh."""
    step = state.step_size * 0.5
    state = state._replace(step_size=step, largest_step=step, quiet=0)
    if step < 1e-6:
        return state, Decision.STOP
    return state._replace(burned_in=False, burn_C=(), burn_Sigma=(), batch_C=(), batch_Sigma=(),
                          batch_mean=(), batch_summaries=()), Decision.HALVE


def _adapt_step(state: ControlState, acceptance: float, settings: ParticleSettings) -> ControlState:
    """Record a window that did not overshoot: undo a halving after ``recover_after`` quiet
    burn-in windows (single windows alternate by chance, and a step kept far below the stable one
    slows the collective relaxation until a drift no longer shows against the noise; a step that
    really overshoots is halved again), then adapt the step to the acceptance."""
    largest, quiet = state.largest_step, state.quiet + 1
    if not state.burned_in and quiet >= settings.recover_after and largest < settings.step_size:
        largest, quiet = min(2.0 * largest, settings.step_size), 0
    step = _adapt(state.step_size, acceptance, largest if not state.burned_in else state.step_size)
    return state._replace(step_size=step, largest_step=largest, quiet=quiet, rates=state.rates + (acceptance,))


def _average(state: ControlState, window: WindowSummary, settings: ParticleSettings) -> tuple[ControlState, Decision]:
    """Add a batch; converged once the batch-means error of ``C`` is below ``mc_tol`` and neither
    the Geweke nor the trend test (on the averaged windows' block traces) finds a drift."""
    batch_C = state.batch_C + (window.C,)
    state = state._replace(batch_C=batch_C, batch_Sigma=state.batch_Sigma + (window.Sigma,),
                           batch_mean=state.batch_mean + (window.phi_mean,),
                           batch_summaries=state.batch_summaries + (window.summaries,))
    if len(batch_C) < settings.min_batches:
        return state, Decision.CONTINUE
    err = batch_means_error(batch_C, state.batch_summaries)
    if relative_error(err, np.mean(batch_C, axis=0)) >= settings.mc_tol:
        return state, Decision.CONTINUE
    if not _geweke_drift(batch_C) and _trend(np.stack(state.history[-len(batch_C):])) <= 1.0:
        return state, Decision.CONVERGED
    half = len(batch_C) // 2  # still drifting: the first half was burn-in
    return state._replace(batch_C=batch_C[half:], batch_Sigma=state.batch_Sigma[half:],
                          batch_mean=state.batch_mean[half:],
                          batch_summaries=state.batch_summaries[half:]), Decision.CONTINUE


def averaged_windows(state: ControlState, n: int) -> tuple[tuple, tuple, tuple]:
    """``(C, Σ, <φ>)`` of the windows the result averages: the batches, or with fewer than two
    (burn-in never ended, or the run blew up) the last two burn-in windows, or the last finite
    ones (the run ended just after a step halving cleared the averages); NaN without any."""
    if len(state.batch_C) >= 2:
        return state.batch_C, state.batch_Sigma, state.batch_mean
    if not state.last_finite:
        nan = np.full((n, n), np.nan)
        return (nan, nan), (nan, nan), (np.full(n, np.nan),)
    C, Sigma = (state.burn_C + state.batch_C)[-2:], (state.burn_Sigma + state.batch_Sigma)[-2:]
    if len(C) < 2:
        return tuple(zip(*state.last_finite))
    return C, Sigma, (state.last_finite[-1][2],)


def integrated_time(x: np.ndarray, c: float = 5.0) -> np.ndarray:
    """Integrated autocorrelation time ``τ = 1 + 2 Σ_{k=1..W} ρ_k`` of each column of ``x`` (one row
    per iteration), with Sokal's automatic window: the smallest ``W >= c·τ(W)`` (or the longest
    lag below ``N/2``). Columns without scatter get ``τ = 1``."""
    x = np.asarray(x, dtype=np.float64)
    N = len(x)
    if N < 4:
        return np.ones(x.shape[1])
    d = x - x.mean(axis=0)
    spectrum = np.fft.rfft(d, n=2 * N, axis=0)
    acov = np.fft.irfft(np.abs(spectrum) ** 2, axis=0)[:N]
    rho = acov / np.maximum(acov[0], 1e-300)
    tau = 1 + 2 * np.cumsum(rho[1:], axis=0)  # tau[W - 1] = τ(W)
    lags = np.arange(1, N)[:, None]
    inside = (lags < c * tau) & (lags < N // 2)
    W = np.argmin(inside, axis=0)  # index W - 1 of the first window that is long enough
    return np.where(acov[0] > 0, np.maximum(tau[W, np.arange(x.shape[1])], 1.0), 1.0)


def batch_means_error(batches, summaries=()) -> np.ndarray:
    """Entrywise standard error of the mean of the window means ``batches``: batch means,
    ``std/sqrt(B)``, inflated where the windows are correlated. A window of 20 MALA steps at a
    small step is not long against the collective relaxation of the population (its fields
    follow its own moments), so consecutive windows are correlated and plain batch means are too
    small (measured: seed-to-seed spread 1.7 times the error on a tanh DNN). The inflation is the
    ratio of the long-horizon variance of the mean of the per-iteration summaries ``summaries``
    (one ``(window, k)`` array per batch; ``2τσ²/N`` with :func:`integrated_time`) to their
    batch-means variance, the largest over the summaries, and at least 1."""
    x = np.stack(batches)
    B = len(x)
    err = np.std(x, axis=0, ddof=1) / np.sqrt(B)
    if len(summaries) != B or B < 2:
        return err
    per_window = np.stack(summaries)  # (B, window, k)
    series = per_window.reshape(-1, per_window.shape[-1])
    long_horizon = 2 * integrated_time(series) * series.var(axis=0, ddof=1) / len(series)
    short_horizon = per_window.mean(axis=1).var(axis=0, ddof=1) / B
    live = short_horizon > 1e-24 * np.maximum(np.abs(series).max(axis=0), 1e-300) ** 2
    if not np.any(live):
        return err
    return err * np.sqrt(max(1.0, float(np.max(long_horizon[live] / short_horizon[live]))))


def _drifting(batches, k: int = 3, threshold: float = 2.0) -> bool:
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


def _geweke_drift(batches, threshold: float = 3.0) -> bool:
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


def _trending(summaries, min_windows: int = 6) -> bool:
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


def relative_error(err: np.ndarray, C: np.ndarray) -> float:
    """Largest ``err_ij / sqrt(C_ii C_jj)``."""
    d = np.sqrt(np.maximum(np.diag(C), 1e-300))
    return float(np.max(err / np.outer(d, d)))

