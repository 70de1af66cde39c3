"""Order parameter on centred features (THEORY.md §4)."""

import numpy as np

import kernelfield as kf
from kernelfield.observables import mean_coherence


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
    linear = kf.solve(kf.Architecture.rnn(3), task, kappa=0.1)
    np.testing.assert_array_equal(linear.C_centred, linear.C)
