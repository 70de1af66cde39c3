"""The phase transition (THEORY.md §4): stability of the symmetric solution, the critical signal,
the order parameter and the predicted weight-spectrum outlier.

References that are not the code under test: the DNN's closed-form cross-time Hessian (-identity,
only log det C sees those blocks), finite differences of the action, branch following with the
solver, and (slow) eigenvalues of sampled width-256 recurrent matrices.
"""

import numpy as np
import pytest

import kernelfield as kf
from kernelfield.theory.action import action
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.stability import (
    NoTransitionError,
    _controlled,
    _cross_time_index,
    _hessian,
    critical_signal,
    outlier_eigenvalues,
    stability,
    symmetric_solution,
)

from conftest import sequential_task
from hessian_checks import curvature_pairs

T = 4


def task_at(scale):
    return kf.tasks.endpoint_patterns(P=3, T=T, D=4, target_scale=scale, seed=0)


@pytest.fixture(scope="module")
def critical():
    return critical_signal(kf.Architecture.rnn(T), task_at(1.0), kappa=0.1, tol=1e-5, verify=True, margin=0.1)


def test_dnn_cross_time_hessian_is_minus_identity():
    # closed form: for a DNN S depends on cross-time blocks only through +1/2 log det C, whose
    # second derivative in the whitened coordinates is -|x|^2
    sol = kf.solve(kf.Architecture.dnn(T), task_at(1.0), kappa=0.1)
    st = stability(sol, k=5)
    np.testing.assert_allclose(st.eigenvalues, -1.0, atol=1e-9)
    assert st.dimension == T * (T - 1) // 2 * 9 and st.stable


def test_symmetric_solution_is_stationary_and_shared_by_rnn_and_dnn():
    task = task_at(1.0)
    sym = symmetric_solution(kf.Architecture.rnn(T), task, kappa=0.1)
    C = sym.C
    blocks = C.reshape(T, 3, T, 3)
    assert all(np.abs(blocks[t, :, s, :]).max() == 0 for t in range(T) for s in range(T) if t != s)
    S_rnn = action(make_problem(kf.Architecture.rnn(T), task, kf.Prior(), 0.1), C)
    S_dnn = action(make_problem(kf.Architecture.dnn(T), task, kf.Prior(), 0.1), C)
    assert S_rnn == pytest.approx(S_dnn, abs=1e-12)
    st = stability(kf.solve(kf.Architecture.rnn(T), task, kappa=0.1))
    assert st.gradient < 1e-10  # cross-time gradient vanishes: a stationary point of the RNN's action
    assert st.S_sym == pytest.approx(sym.S, abs=1e-10)


def test_hessian_matches_finite_differences_of_the_action():
    task = task_at(1.0)
    arch = kf.Architecture.rnn(T)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    C_sym = symmetric_solution(arch, task, kappa=0.1).C
    rows, cols = _cross_time_index(T, 3)
    args = (rows, cols, C_sym, prob.MW, prob.Mv, prob.K_in, prob.supervised, prob.y, prob.kappa)
    H = np.asarray(_hessian(np.zeros(rows.size), *args, P=3))
    for curvature, fd in curvature_pairs(H, lambda C: action(prob, C), C_sym, rows, cols):
        assert curvature == pytest.approx(fd, rel=1e-4)  # central differences: ~1e-6 relative error


def test_dense_and_lanczos_eigenvalues_agree():
    sol = kf.solve(kf.Architecture.rnn(T), task_at(1.0), kappa=0.1)
    dense = stability(sol, k=2, method="dense").eigenvalues
    lanczos = stability(sol, k=2, method="lanczos").eigenvalues
    np.testing.assert_allclose(dense, lanczos, atol=1e-8)
    assert dense[0] > 0  # target scale 1 is past the transition (critical ~0.38)


def test_critical_point_agrees_with_branch_following(critical):
    assert 0.2 < critical.value < 0.6
    lo, hi = critical.eigenvalues
    assert lo < 0 < hi
    # weak side: the solver's symmetry-broken start falls back to the symmetric branch;
    # strong side: a time-correlated branch with larger S exists
    assert np.isnan(critical.branches["lower"]["gain"])
    assert critical.branches["higher"]["gain"] > 1e-5


def test_below_critical_rnn_equals_dnn_above_they_differ(critical):
    for factor, same in ((0.9, True), (1.2, False)):
        task = task_at(critical.value * factor)
        rnn = kf.solve(kf.Architecture.rnn(T), task, kappa=0.1)
        dnn = kf.solve(kf.Architecture.dnn(T), task, kappa=0.1)
        diff = np.linalg.norm(rnn.C - dnn.C) / np.linalg.norm(dnn.C)
        assert kf.temporal_coherence(dnn) == 0.0
        if same:  # identical to solver tolerance (residual 1e-6 -> kernel error ~1e-5)
            assert diff < 1e-4 and kf.temporal_coherence(rnn) < 1e-4 and rnn.S == pytest.approx(dnn.S, abs=1e-8)
        else:
            assert diff > 1e-2 and kf.temporal_coherence(rnn) > 0.05 and rnn.S > dnn.S + 1e-4


def test_order_parameter_continuous_with_square_root_onset(critical):
    from kernelfield.experiments.phase import order_parameter_exponent

    arch = kf.Architecture.rnn(T)
    rho = [kf.temporal_coherence(kf.solve(arch, task_at(critical.value * f), kappa=0.1, tol=1e-7))
           for f in (0.95, 1.002, 1.01, 1.05)]
    assert rho[0] < 1e-4 and 0 < rho[1] < rho[2] < rho[3] < 0.15  # zero below, small just above
    beta = order_parameter_exponent(arch, task_at(1.0), critical.value)
    assert beta == pytest.approx(0.5, abs=0.06)  # pitchfork; finite offsets bias beta by a few %


def test_kappa_control_has_the_signal_growing_as_kappa_falls():
    point = critical_signal(kf.Architecture.rnn(T), task_at(0.5), kappa=0.1, control="kappa", verify=True)
    t, p, kappa = _controlled(kf.Architecture.rnn(T), task_at(0.5), kf.Prior(), 0.1, "kappa", point.value)
    assert kappa == point.value and 0.1 < point.value < 10
    assert np.isnan(point.branches["higher"]["gain"]) and point.branches["lower"]["gain"] > 0


def test_tied_every_one_is_a_dnn_and_never_breaks():
    arch = kf.Architecture.tied_every(T, 1)
    sol = kf.solve(arch, task_at(2.0), kappa=0.1)
    assert kf.temporal_coherence(sol) == 0.0
    np.testing.assert_allclose(stability(sol).eigenvalues, -1.0, atol=1e-9)
    with pytest.raises(NoTransitionError, match="couples no two time steps"):
        critical_signal(arch, task_at(1.0))
    assert np.abs(outlier_eigenvalues(sol)).max() == 0.0


def test_outlier_eigenvalues_vanish_below_and_appear_above(critical):
    below = kf.solve(kf.Architecture.rnn(T), task_at(0.8 * critical.value), kappa=0.1)
    above = kf.solve(kf.Architecture.rnn(T), task_at(1.0), kappa=0.1)
    ev_below, ev_above = outlier_eigenvalues(below), outlier_eigenvalues(above)
    assert ev_below.shape == ((T - 1) * 3,)
    # nilpotent chain: exactly zero on the symmetric branch up to the solver's residual^(1/chain)
    assert np.abs(ev_below).max() < 1e-2
    assert abs(ev_above[0].imag) < 1e-9 and abs(ev_above[0].real) > 1.0  # a real outlier outside the bulk
    dnn = kf.solve(kf.Architecture.dnn(T), task_at(1.0), kappa=0.1)
    for group in range(1, T):  # every W_t of the DNN: no cross-layer kernel, no outlier
        assert np.abs(outlier_eigenvalues(dnn, group=group)).max() == 0.0
    with pytest.raises(ValueError, match="group"):
        outlier_eigenvalues(dnn, group=99)


def test_coherence_by_lag():
    sol = kf.solve(kf.Architecture.rnn(T), task_at(1.0), kappa=0.1)
    lags = sol.coherence_by_lag()
    assert lags.shape == (T - 2,) and np.all(lags > 0)
    pairs = np.array([T - 1 - lag for lag in range(1, T - 1)])  # pairs t < s >= 1 at each lag
    assert kf.temporal_coherence(sol) == pytest.approx(np.sum(lags * pairs) / pairs.sum())
    assert np.all(kf.coherence_by_lag(kf.solve(kf.Architecture.dnn(T), task_at(1.0), kappa=0.1)) == 0)


def test_bad_input_is_rejected_clearly():
    sol = kf.solve(kf.Architecture.rnn(T), task_at(1.0), kappa=0.1)
    with pytest.raises(ValueError, match="method"):
        stability(sol, method="svd")
    with pytest.raises(ValueError, match="k: must be an integer"):
        stability(sol, k=0)
    with pytest.raises(ValueError, match="control"):
        critical_signal(kf.Architecture.rnn(T), task_at(1.0), control="sigma_u")
    with pytest.raises(ValueError, match="tol"):
        critical_signal(kf.Architecture.rnn(T), task_at(1.0), tol=0)
    with pytest.raises(ValueError, match="bracket"):
        critical_signal(kf.Architecture.rnn(T), task_at(1.0), bracket=(0.5, 0.1))
    with pytest.raises(NoTransitionError, match="bracket"):
        critical_signal(kf.Architecture.rnn(T), task_at(1.0), bracket=(0.05, 0.1))
    seq = kf.solve(kf.Architecture.rnn(4), sequential_task(), kappa=0.1)
    with pytest.raises(ValueError, match="task: no time-symmetric solution"):
        stability(seq)


def test_direct_step_coupling_names_what_correlates_steps_besides_w():
    """:attr:`Problem.direct_step_coupling`, shared by the stability checks and the particle
    solver's time-symmetric subspace: inputs at every step of an RNN (shared U), a readout shared
    between two supervised steps, or nothing (endpoint task; a DNN's unshared readouts)."""
    def coupling(arch, task):
        return make_problem(arch, task, kf.Prior(), 0.1).direct_step_coupling

    assert coupling(kf.Architecture.rnn(4), sequential_task()) == "inputs"
    endpoint = task_at(1.0)
    targets = np.where(np.arange(T)[None] >= T - 2, 1.0, np.nan) * np.ones((endpoint.P, 1))
    two_steps = kf.Task(endpoint.inputs, targets)
    assert coupling(kf.Architecture.rnn(T), two_steps) == "readout"
    assert coupling(kf.Architecture.dnn(T), two_steps) is None
    assert coupling(kf.Architecture.rnn(T), task_at(1.0)) is None
