"""The linear theory against closed forms, brute force and its own structural guarantees."""


import numpy as np
import pytest
import scipy.optimize

import kernelfield as kf
from conftest import endpoint_task
from kernelfield.theory.action import action, residuals
from kernelfield.theory.kernels import make_problem


def recursive_prior_kernel(arch, task, prior):
    """Independent closed form of the linear prior kernel:
    C_ts = sum_k g^(2k) [W_{t-j} ≡ W_{s-j} for j < k] (σ_u² [U ≡ U] x·x/D + σ_b² [b ≡ b]) at (t-k, s-k)."""
    T, P, D = task.T, task.P, task.D
    X, C = task.inputs, np.zeros((T, P, T, P))
    MU, Mb, MW = arch.mask("U"), arch.mask("b"), arch.mask("W")
    for t in range(T):
        for s in range(T):
            weight = 1.0
            for k in range(min(t, s) + 1):
                u, w = t - k, s - k
                C[t, :, s, :] += weight * (prior.sigma_u**2 * MU[u, w] * X[:, u] @ X[:, w].T / D + prior.sigma_b**2 * Mb[u, w])
                weight *= prior.g**2 * MW[u, w]
    return C.reshape(T * P, T * P)


@pytest.mark.parametrize("make_arch", [kf.Architecture.rnn, kf.Architecture.dnn, lambda T: kf.Architecture.tied_every(T, 2)])
def test_prior_kernel_closed_form(make_arch, sequential):
    prior = kf.Prior(g=0.8, sigma_u=1.2, sigma_b=0.5)
    arch = make_arch(sequential.T)
    C = kf.prior_kernel(arch, sequential, prior=prior)
    np.testing.assert_allclose(C, recursive_prior_kernel(arch, sequential, prior), rtol=1e-12, atol=1e-12)


def test_lazy_limit_is_the_weak_target_limit():
    """As y -> 0 the trained kernel tends to the prior kernel, with deviation O(y²)."""
    arch = kf.Architecture.rnn(3)
    C0 = kf.prior_kernel(arch, endpoint_task())
    devs = [np.abs(kf.solve(arch, endpoint_task(scale=s)).C - C0).max() for s in (1e-1, 1e-2)]
    assert devs[1] < 1e-3
    assert 50 < devs[0] / devs[1] < 200  # quadratic in the target scale


def test_solution_is_stationary_and_converged(sequential):
    for arch in (kf.Architecture.rnn(4), kf.Architecture.dnn(4)):
        sol = kf.solve(arch, sequential, kappa=0.1)
        assert sol.converged and sol.residual < 1e-6
        prob = make_problem(arch, sequential, kf.Prior(), 0.1)
        fwd, bwd, Ct = residuals(prob, sol.C)
        assert max(fwd, bwd) < 1e-6
        np.testing.assert_allclose(Ct, sol.Ct)
        # symmetric positive definite
        np.testing.assert_allclose(sol.C, sol.C.T, atol=1e-12)
        assert np.linalg.eigvalsh(sol.C)[0] > 0


def test_solution_is_a_local_maximum(sequential):
    """S decreases along random symmetric directions around the solution."""
    arch = kf.Architecture.rnn(4)
    sol = kf.solve(arch, sequential, kappa=0.1)
    prob = make_problem(arch, sequential, kf.Prior(), 0.1)
    rng = np.random.default_rng(1)
    for _ in range(5):
        A = rng.normal(size=sol.C.shape)
        direction = 1e-3 * (A + A.T) / np.linalg.norm(A + A.T) * np.linalg.norm(sol.C)
        assert action(prob, sol.C + direction) < sol.S
        assert action(prob, sol.C - direction) < sol.S


def test_matches_brute_force_maximisation():
    """Tiny problem (n = 4): Nelder–Mead over all entries of a Cholesky factor (no gradients,
    different parametrisation) finds the same maximum of S."""
    task = endpoint_task(P=2, T=2, D=3, scale=2.0)
    arch = kf.Architecture.rnn(2)
    sol = kf.solve(arch, task, kappa=0.2)
    prob = make_problem(arch, task, kf.Prior(), 0.2)
    rows, cols = np.tril_indices(4)
    L0 = np.linalg.cholesky(kf.prior_kernel(arch, task))

    def negative_S(x):
        L = np.zeros((4, 4))
        L[rows, cols] = x
        return -action(prob, L @ L.T)

    best = scipy.optimize.minimize(negative_S, L0[rows, cols], method="Nelder-Mead",
                                   options=dict(maxiter=40000, maxfev=40000, xatol=1e-10, fatol=1e-13))
    assert abs(-best.fun - sol.S) < 1e-7
    assert -best.fun <= sol.S + 1e-9


def test_one_code_path_for_all_patterns(endpoint):
    T = endpoint.T
    explicit = kf.Architecture(T, W_groups=[0] * T, U_groups=[0] * T, b_groups=[0] * T, v_groups=[0] * T)
    a, b = kf.solve(explicit, endpoint), kf.solve(kf.Architecture.rnn(T), endpoint)
    np.testing.assert_array_equal(a.C, b.C)
    assert a.S == b.S
    tied_one, dnn = kf.solve(kf.Architecture.tied_every(T, 1), endpoint), kf.solve(kf.Architecture.dnn(T), endpoint)
    np.testing.assert_allclose(tied_one.C, dnn.C, atol=1e-9)


def test_dnn_cross_layer_kernels_vanish(sequential):
    T, P = sequential.T, sequential.P
    sol = kf.solve(kf.Architecture.dnn(T), sequential, kappa=0.1)
    blocks = sol.C.reshape(T, P, T, P)
    for t in range(T):
        for s in range(T):
            if t != s:
                assert np.all(blocks[t, :, s, :] == 0.0)
    assert all(np.abs(blocks[t, :, t, :]).max() > 0.1 for t in range(T))


def test_rnn_and_dnn_coincide_for_weak_targets():
    task = endpoint_task(P=3, T=4, D=4, scale=0.3)
    rnn, dnn = kf.solve(kf.Architecture.rnn(4), task), kf.solve(kf.Architecture.dnn(4), task)
    np.testing.assert_allclose(rnn.C, dnn.C, atol=1e-6)
    assert abs(rnn.S - dnn.S) < 1e-9
    # and they are not trivially the prior kernel: the targets changed the kernel
    assert np.abs(rnn.C - kf.prior_kernel(kf.Architecture.rnn(4), task)).max() > 1e-3


def test_branches_are_reported_with_their_action(endpoint):
    sol = kf.solve(kf.Architecture.rnn(3), endpoint, init="auto")
    assert 1 <= len(sol.branches)
    assert sol.S == max(b.S for b in sol.branches)
    assert {b.init for b in sol.branches} <= {"prior", "broken"}
    only = kf.solve(kf.Architecture.rnn(3), endpoint, init="prior")
    assert len(only.branches) == 1 and only.branches[0].init == "prior"


def test_non_convergence_is_reported(sequential):
    with pytest.warns(kf.ConvergenceWarning, match="residual"):
        sol = kf.solve(kf.Architecture.rnn(4), sequential, max_iter=2, inner=2, init="prior")
    assert not sol.converged and sol.residual > 1e-6


def test_predictive_formula_and_new_sequences(sequential):
    arch = kf.Architecture.rnn(4)
    sol = kf.solve(arch, sequential, kappa=0.1)
    pred = sol.predict()
    # direct GP regression with G = σ_v² C on the supervised set
    S = sequential.supervised
    G = sol.C
    mean = G[:, S] @ np.linalg.solve(G[np.ix_(S, S)] + 0.1 * np.eye(len(S)), sequential.y_supervised)
    np.testing.assert_allclose(pred.mean, mean.reshape(4, 3).T, atol=1e-10)
    assert np.all(pred.var >= 0)
    assert np.allclose(sol.predict(N=100).var, pred.var / 100)
    # appending unsupervised sequences leaves the training kernel unchanged (marginal consistency)
    new = np.random.default_rng(5).normal(size=(1, 4, 5))
    bigger = kf.solve(arch, sequential.with_sequences(new), kappa=0.1)
    P = sequential.P
    old = bigger.C.reshape(4, P + 1, 4, P + 1)[:, :P, :, :P].reshape(4 * P, 4 * P)
    np.testing.assert_allclose(old, sol.C, atol=1e-5)
    np.testing.assert_allclose(kf.predict(sol, new).mean, bigger.predict().mean[P:], atol=1e-8)
    with pytest.raises(ValueError, match="N"):
        sol.predict(N=0)
