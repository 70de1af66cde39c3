"""Order parameter on centred features (THEORY.md §4)."""

import numpy as np
import pytest

import kernelfield as kf
from kernelfield.observables import coherence_matrix, lag_coherence, mean_coherence


def test_relu_dnn_mean_activity_is_not_counted_as_temporal_coherence():
    # ReLU features have a positive mean, so the raw kernel of a DNN has large cross-time blocks
    # (rho ~ 0.5-0.9) although nothing is shared across time; on centred features what remains is
    # finite-width noise, O(1/sqrt(N)) per entry: with N = 64 and P = 3 we allow 0.25.
    task = kf.tasks.endpoint_patterns(P=3, T=4, D=4, target_scale=1.0, seed=0)
    s = kf.sample(kf.Architecture.dnn(4), task, N=64, phi="relu", kappa=0.1, num_samples=60, num_warmup=60,
                  num_chains=2, keep_weights=0, seed=0, progress=False)
    raw = mean_coherence(s.C_mean, 4, 3)
    centred = kf.temporal_coherence(s)
    assert raw > 0.4 and centred < 0.25 and centred < raw / 2
    assert kf.coherence_by_lag(s).shape == (2,)


def test_relu_dnn_theory_centres_with_the_mean_activity():
    # In a DNN the trajectory law factorises over time steps, so the cross-time blocks of C are
    # exactly <phi_t><phi_s>^T: large for ReLU, and zero once centred.
    task = kf.tasks.endpoint_patterns(P=3, T=3, D=4, target_scale=0.5, seed=0)
    sol = kf.solve(kf.Architecture.dnn(3), task, phi="relu", kappa=0.1, init="prior", num_particles=512,
                   mc_tol=0.05)
    assert mean_coherence(sol.C, 3, 3) > 0.3
    assert kf.temporal_coherence(sol) == 0.0
    m = sol.best.phi_mean
    np.testing.assert_allclose(sol.C[:3, 3:6], np.outer(m[:3], m[3:6]), rtol=1e-12)
    # C_centred = C - <phi><phi>^T is the covariance of the features: a positive semi-definite
    # block per step, with variances below the second moments. For a Gaussian preactivation
    # <relu>^2 / <relu^2> = 1/pi; the trained law is near-Gaussian at this signal.
    np.testing.assert_allclose(sol.C_centred, sol.C - np.outer(m, m), rtol=1e-12, atol=1e-15)
    for t in range(3):
        block = sol.C_centred[3 * t:3 * t + 3, 3 * t:3 * t + 3]
        assert np.linalg.eigvalsh(block).min() > 0
    ratio = m**2 / np.diag(sol.C)
    assert np.all((0.8 / np.pi < ratio) & (ratio < 1.5 / np.pi))


def test_coherence_of_a_kernel_with_known_time_structure():
    # C_ts = R_ts A (time-major Kronecker product): rho_ts = |R_ts| / sqrt(R_tt R_ss) for any A.
    R = np.array([[1.0, 0.2, 0.1, 0.0], [0.2, 2.0, -0.6, 0.3], [0.1, -0.6, 0.5, 0.25], [0.0, 0.3, 0.25, 1.0]])
    A = np.array([[1.0, 0.3], [0.3, 2.0]])
    rho = np.abs(R) / np.sqrt(np.outer(np.diag(R), np.diag(R)))
    C = np.kron(R, A)
    np.testing.assert_allclose(coherence_matrix(C, 4, 2), rho, rtol=1e-12)
    # the mean over t != s >= 1 (t = 0 excluded) and the mean per lag |t - s| = 1, 2
    assert mean_coherence(C, 4, 2) == pytest.approx((rho[1, 2] + rho[1, 3] + rho[2, 3]) / 3, rel=1e-12)
    np.testing.assert_allclose(lag_coherence(C, 4, 2), [(rho[1, 2] + rho[2, 3]) / 2, rho[1, 3]], rtol=1e-12)
