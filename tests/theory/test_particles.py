"""The particle (mean-field Langevin) solver for any phi (THEORY.md §3, nonlinear networks),
checked against the exact linear solver, the closed-form lazy kernel, and its own invariants.

Monte Carlo tolerances: with ``num_particles = M`` and averaging until the largest entrywise
standard error is ``mc_tol``, a kernel is uncertain by its reported ``C_err`` plus an ``O(1/M)``
finite-population bias; comparisons allow 4 standard errors plus that bias (stated per test).
Seeds are fixed.
"""

import numpy as np
import pytest

import kernelfield as kf
from kernelfield.progress import ProgressEvent
from kernelfield.theory.particles import _initial_population
from kernelfield.theory.particle_control import (Decision, ParticleSettings, WindowSummary, _trend, _trending,
                                                 averaged_windows, block_traces, control_step, init_control)
from kernelfield.symmetry import parity_flip
from conftest import endpoint_task

FAST = dict(kappa=0.1, num_particles=1024, mc_tol=0.03)


def relative(C, reference):
    return np.linalg.norm(C - reference) / np.linalg.norm(reference)


def test_linear_particles_reproduce_the_exact_solver_on_both_branches():
    """Strong signal, RNN: a symmetric and a time-correlated branch. With M = 4096 particles the
    kernels agree with the closed-form solver within 3 % (measured 0.9–1.4 %: MC error ~0.5 % in
    Frobenius norm plus the step-size and 1/M biases) and the actions within 3 S_err + 0.01."""
    task = endpoint_task(P=3, T=3, D=4, scale=1.0)
    arch = kf.Architecture.rnn(3)
    exact = kf.solve(arch, task, kappa=0.1)
    mc = kf.solve(arch, task, kappa=0.1, method="particles")
    assert [b.init for b in mc.branches] == [b.init for b in exact.branches] == ["broken", "prior"]
    for b_mc, b_exact in zip(mc.branches, exact.branches):
        assert b_mc.converged
        C = b_mc.C if relative(b_mc.C, b_exact.C) < 1 else parity_flip(b_mc.C, 3, 3)
        assert relative(C, b_exact.C) < 0.03
        assert abs(b_mc.S - b_exact.S) < 3 * b_mc.S_err + 0.01
    assert kf.temporal_coherence(mc) > 0.3


@pytest.mark.parametrize("make_arch", [kf.Architecture.rnn, kf.Architecture.dnn])
def test_erf_weak_targets_give_the_arcsine_prior_kernel(make_arch):
    """Lazy limit: targets 1e-3 leave the closed-form (arcsine) NNGP kernel; entrywise within
    4 standard errors plus 2e-3 (the 1/M bias at M = 1024 is below 1e-3 of the diagonal)."""
    task = endpoint_task(P=3, T=3, D=4, scale=1e-3)
    arch = make_arch(3)
    sol = kf.solve(arch, task, phi="erf", init="prior", **FAST)
    lazy = kf.prior_kernel(arch, task, phi="erf")
    assert np.all(np.abs(sol.C - lazy) <= 4 * sol.best.C_err + 2e-3)
    assert sol.converged and sol.best.mc_error < 0.03


def test_symmetric_start_is_exactly_time_uncorrelated_and_dnn_has_one_branch():
    task = endpoint_task(P=3, T=3, D=4, scale=1.0)
    cross = np.kron(1 - np.eye(3), np.ones((3, 3))) > 0
    rnn = kf.solve(kf.Architecture.rnn(3), task, phi="erf", **FAST)
    symmetric = [b for b in rnn.branches if b.init == "prior"][0]
    assert np.all(symmetric.C[cross] == 0) and np.all(symmetric.Ct[cross] == 0)
    assert rnn.branches[0].init == "broken" and rnn.branches[0].S > symmetric.S + 3 * symmetric.S_err
    dnn = kf.solve(kf.Architecture.dnn(3), task, phi="erf", **FAST)
    assert len(dnn.branches) == 1 and np.all(dnn.C[cross] == 0)
    assert abs(dnn.S - symmetric.S) < 3 * np.hypot(dnn.best.S_err, symmetric.S_err) + 0.01


def test_same_seed_same_result_and_errors_are_reported():
    task = endpoint_task(P=2, T=2, D=3, scale=0.5)
    arch = kf.Architecture.rnn(2)
    kw = dict(phi="tanh", init="prior", **FAST)
    a, b = kf.solve(arch, task, seed=3, **kw), kf.solve(arch, task, seed=3, **kw)
    np.testing.assert_array_equal(a.C, b.C)
    c = kf.solve(arch, task, seed=4, **kw)
    assert 0 < np.abs(a.C - c.C).max() and np.all(np.abs(a.C - c.C) <= 5 * np.hypot(a.best.C_err, c.best.C_err) + 1e-3)
    assert a.best.C_err.shape == a.C.shape and np.isfinite(a.best.S_err) and a.best.S_err > 0


def test_too_few_iterations_warn_with_the_residual():
    task = endpoint_task(P=2, T=2, D=3, scale=1.0)
    with pytest.warns(kf.ConvergenceWarning, match="residual"):
        sol = kf.solve(kf.Architecture.rnn(2), task, phi="erf", init="prior", max_iter=40, **FAST)
    assert not sol.converged and sol.best.iterations <= 40


def test_bad_solver_arguments():
    task = endpoint_task(P=2, T=2, D=3)
    arch = kf.Architecture.rnn(2)
    with pytest.raises(ValueError, match="method: 'exact' needs phi = 'linear'"):
        kf.solve(arch, task, phi="erf", method="exact")
    with pytest.raises(ValueError, match="method: must be"):
        kf.solve(arch, task, method="newton")
    with pytest.raises(ValueError, match="num_particles: must be an integer >= 16"):
        kf.solve(arch, task, phi="erf", num_particles=3)
    with pytest.raises(ValueError, match="mc_tol: must be a number > 0"):
        kf.solve(arch, task, phi="erf", mc_tol=0.0)


def test_block_traces_are_the_traces_of_the_time_blocks():
    T, P = 3, 2
    C = np.arange(36.0).reshape(6, 6)
    expected = [np.trace(C[t * P:(t + 1) * P, s * P:(s + 1) * P]) for t in range(T) for s in range(t, T)]
    np.testing.assert_array_equal(block_traces(C, T, P), expected)


def test_trend_test_catches_slow_drifts_and_not_correlated_noise():
    """``_trend`` is calibrated for a family-wise 1 % on independent windows: on stationary AR(1)
    noise (lag-1 correlation 0.3, 36 summaries, 10/30 windows) at most 3/40 false alarms (seeded);
    a drift of 0.1 noise standard deviations per window in one summary out of 36 is caught over
    30 windows; summaries that vanish identically are ignored."""
    rng = np.random.default_rng(0)

    def ar1(N, m=36, rho=0.3):
        x = np.empty((N, m))
        x[0] = rng.normal(size=m)
        for i in range(1, N):
            x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * rng.normal(size=m)
        return x

    for N in (10, 30):
        assert sum(_trend(ar1(N)) > 1 for _ in range(40)) <= 3
    x = ar1(30)
    x[:, 5] += 0.1 * np.arange(30)
    assert _trend(x) > 1
    assert _trending(list(np.vstack([ar1(30), x]))) and not _trending(list(ar1(60)))
    x[:, 7] = 0.0  # a summary that vanishes by symmetry
    assert np.isfinite(_trend(x)) and _trend(np.zeros((20, 4))) == 0.0
    assert _trending(list(ar1(11)))  # too few windows: still burning in


# -- the step control, driven with scripted windows (no sampling) --------------------------------

T_CTL, P_CTL = 2, 2  # windows of a kernel with n = 4


def scripted(C, acceptance=0.95, oscillating=False, finite=True, length=20):
    """A window as :func:`control_step` sees it: an overdamped flow relaxes smoothly within the
    window, an overshooting one alternates from one iteration to the next."""
    if oscillating:
        summaries = np.outer((-1.0) ** np.arange(length), [1.0, 1.0])
    else:
        summaries = np.outer(np.exp(-np.arange(length) / 5.0), [1.0, 2.0])
    C = np.asarray(C, dtype=float)
    return WindowSummary(C=C, Sigma=2.0 * C, phi_mean=np.zeros(len(C)), acceptance=acceptance,
                         summaries=summaries, traces=block_traces(C, T_CTL, P_CTL), finite=finite)


def drive(windows, settings):
    """Feed ``windows`` to the control; the steps the windows ran at, the states after each and
    the decisions."""
    state, steps, states, decisions = init_control(settings), [], [], []
    for w in windows:
        steps.append(state.step_size)
        state, decision = control_step(state, w, settings)
        states.append(state)
        decisions.append(decision)
    return steps, states, decisions


def test_a_run_that_ends_just_after_a_step_halving_reports_its_last_windows():
    """A step halving clears the averages. If max_iter ends the run right then, the branch reports
    its last finite windows (the overshooting one included), not burned in, instead of NaN with
    S = -inf ("not a solution"). That NaN hid the erf RNN's broken start at T = 16 (n = 64 and
    128) behind the symmetric branch."""
    settings = ParticleSettings(num_particles=16, max_iter=100)
    Cs = [np.eye(4) * (1.0 + 0.1 * w) for w in range(5)]
    windows = [scripted(C, oscillating=(w == 4)) for w, C in enumerate(Cs)]
    _, states, decisions = drive(windows, settings)
    state = states[-1]
    assert decisions == [Decision.CONTINUE] * 4 + [Decision.HALVE]
    assert state.iterations == 100 and state.step_size == 0.1 and not state.burned_in
    assert state.burn_C == () and state.batch_C == ()  # the halving cleared the averages
    C, Sigma, mean = averaged_windows(state, 4)
    assert len(C) == 2 and np.all(np.isfinite(C))
    np.testing.assert_array_equal(C[0], Cs[3])
    np.testing.assert_array_equal(C[1], Cs[4])
    np.testing.assert_array_equal(Sigma[1], 2.0 * Cs[4])
    # a window that blew up is not reported; with no finite window at all everything is NaN
    state, decision = control_step(state, scripted(np.full((4, 4), np.inf), finite=False), settings)
    assert decision == Decision.HALVE and state.step_size == 0.05
    np.testing.assert_array_equal(averaged_windows(state, 4)[0][1], Cs[4])
    C, _, mean = averaged_windows(init_control(settings), 4)
    assert np.all(np.isnan(C)) and np.all(np.isnan(mean))


def test_step_halvings_keep_the_trend_history_and_are_undone():
    """A scripted flow drifting by 10 noise standard deviations a window, 95 % accepted: the
    overshooting window 29 halves the step; the trend test then still sees the block traces of
    every window before it (a halving used to clear them, so that on the erf RNN's broken branch
    at n = 128 burn-in ended on short stretches of a slow drift, measured on a GPU: converged at
    tr C_77 = 10.2 while 100 000 iterations at a stable step reach 11.4), and after 25 quiet
    windows the largest allowed step doubles back, so the step returns to 0.2."""
    rng = np.random.default_rng(0)
    Cs = [np.eye(4) * (1.0 + 0.1 * w + 0.01 * rng.normal()) for w in range(80)]
    windows = [scripted(C, oscillating=(w == 29)) for w, C in enumerate(Cs)]
    steps, states, decisions = drive(windows, ParticleSettings(num_particles=16, max_iter=20 * 80))
    assert decisions[29] == Decision.HALVE and decisions.count(Decision.HALVE) == 1
    assert steps[29] == 0.2 and steps[30] == 0.1 and max(steps[30:55]) == 0.1 and steps[-1] == 0.2
    assert [len(s.history) for s in states] == list(range(1, 30)) + list(range(29, 80))
    kept = [w.traces for i, w in enumerate(windows) if i != 29]  # every window but the overshooting one
    np.testing.assert_array_equal(np.stack(states[-1].history), np.stack(kept))
    assert not any(s.burned_in for s in states) and _trending(states[-1].history)
    assert states[-1].burn_C[0] is Cs[30]  # the averages restarted after the halving


def test_burn_in_ends_on_stationary_windows_and_averaging_converges():
    """Stationary windows (1 % noise): burn-in ends once the trend test has 12 windows, then
    batches are averaged until their relative standard error is below mc_tol (at least
    min_batches); a halving during averaging restarts burn-in."""
    rng = np.random.default_rng(1)
    settings = ParticleSettings(num_particles=16, mc_tol=0.01, min_batches=10)
    windows = [scripted(np.eye(4) * (1.0 + 0.01 * rng.normal()) + 0.001 * rng.normal(size=(4, 4)))
               for _ in range(60)]
    steps, states, decisions = drive(windows, settings)
    first = next(i for i, s in enumerate(states) if s.burned_in)
    assert first == 11 and states[first].phase == "averaging" and states[first - 1].phase == "burn-in"
    done = decisions.index(Decision.CONVERGED)
    assert done == first + settings.min_batches and len(states[done].batch_C) == settings.min_batches
    C, _, _ = averaged_windows(states[done], 4)
    assert C == states[done].batch_C
    state, decision = control_step(states[done], scripted(np.eye(4), oscillating=True), settings)
    assert decision == Decision.HALVE and not state.burned_in and state.batch_C == ()
    assert len(state.history) == len(states[done].history)


def test_a_drift_found_while_averaging_drops_the_first_half_and_a_vanishing_step_stops():
    """Batches precise enough but drifting (Geweke / trend): the first half is dropped as burn-in
    and averaging goes on; a step halved below 1e-6 stops the run."""
    settings = ParticleSettings(num_particles=16, mc_tol=0.5, min_batches=10)
    rng = np.random.default_rng(2)
    state = init_control(settings)._replace(burned_in=True)
    for w in range(10):
        state, decision = control_step(state, scripted(np.eye(4) * (1.0 + 0.01 * w + 1e-4 * rng.normal())),
                                       settings)
    assert decision == Decision.CONTINUE and len(state.batch_C) == 5
    state, decision = control_step(state._replace(step_size=1.5e-6), scripted(np.eye(4), oscillating=True), settings)
    assert decision == Decision.STOP and state.step_size < 1e-6


def test_particle_progress_goes_to_a_callback():
    """``progress`` takes a callable: it receives one ProgressEvent per window."""
    events = []
    task = endpoint_task(P=2, T=2, D=3, scale=1.0)
    with pytest.warns(kf.ConvergenceWarning):
        kf.solve(kf.Architecture.rnn(2), task, phi="erf", init="prior", max_iter=60, progress=events.append, **FAST)
    assert [e.completed for e in events] == [20, 40, 60]
    assert all(isinstance(e, ProgressEvent) and e.task == "particles" and e.total == 60 for e in events)
    assert events[0].info["phase"] == "burn-in" and events[0].info["step"] > 0 and events[0].info["start"] == "prior"
    with pytest.raises(ValueError, match="progress: must be"):
        ParticleSettings(progress="yes")


# -- the warm start from the Gaussian closure (init="gaussian") ----------------------------------

def test_initial_population_has_the_start_covariance():
    """``h ~ N(0, Sigma)``: with M = 8192 trajectories every entry of the sample covariance is
    within 5 standard errors (``sqrt((Sigma_ii Sigma_jj + Sigma_ij²)/M)``) of ``Sigma``."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    Sigma = A @ A.T + 0.5 * np.eye(5)
    M = 8192
    _, H = _initial_population(Sigma, ParticleSettings(num_particles=M, seed=1))
    H = np.asarray(H)
    se = np.sqrt((np.outer(np.diag(Sigma), np.diag(Sigma)) + Sigma**2) / M)
    assert H.shape == (M, 5) and np.all(np.abs(H.T @ H / M - Sigma) < 5 * se)


@pytest.mark.slow
def test_warm_start_finds_both_erf_branches():
    """erf RNN above the transition: both warm starts (from the closure's two branches) converge,
    the broken one dominates, and each branch's action is above the closure's lower bound S_G of
    the same branch up to 3 standard errors + 0.01 (the 1/M bias at M = 1024, n = 6)."""
    task = endpoint_task(P=2, T=3, D=3, scale=1.0)
    arch = kf.Architecture.rnn(3)
    warm = kf.solve(arch, task, phi="erf", init="gaussian", **FAST)
    closure = {b.init: b.S for b in kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian").branches}
    assert warm.converged and [b.init for b in warm.branches] == ["broken", "prior"] == list(closure)
    for b in warm.branches:
        assert b.S > closure[b.init] - 3 * b.S_err - 0.01


def test_warm_start_refuses_other_methods_and_phi_without_a_gaussian_map():
    task = endpoint_task(P=2, T=2, D=3)
    arch = kf.Architecture.rnn(2)
    for method, phi in (("exact", "linear"), ("gaussian", "erf"), ("auto", "linear")):
        with pytest.raises(ValueError, match="init: 'gaussian'.*method 'particles' only"):
            kf.solve(arch, task, phi=phi, method=method, init="gaussian")
    kf.register(kf.Nonlinearity("numpy_tanh_warm", lambda h: np.tanh(np.asarray(h)), odd=True))
    with pytest.raises(ValueError, match="init: 'gaussian' needs the Gaussian closure of phi = 'numpy_tanh_warm'"):
        kf.solve(arch, task, phi="numpy_tanh_warm", method="particles", init="gaussian")
    with pytest.raises(ValueError, match="init: must be .*'gaussian'"):
        kf.solve(arch, task, phi="erf", init="warm")
