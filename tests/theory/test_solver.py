"""The linear theory against closed forms, brute force and its own structural guarantees."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import kernelfield as kf
from conftest import endpoint_task, sequential_task
from kernelfield.theory import action as act
from kernelfield.theory.action import action, action_terms, residuals
from kernelfield.theory.kernels import invariant_components, make_problem, shift
from kernelfield.theory.layouts import DenseLayout, TimeLocalLayout
from kernelfield.symmetry import parity_flip
from kernelfield.theory import solver
from kernelfield.theory.solver import _low_rank_stage, _maximise, broken_factor, broken_start


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
    C = kf.prior_kernel(arch, sequential, prior=prior).C
    np.testing.assert_allclose(C, recursive_prior_kernel(arch, sequential, prior), rtol=1e-12, atol=1e-12)


def test_lazy_limit_is_the_weak_target_limit():
    """As y -> 0 the trained kernel tends to the prior kernel, with deviation O(y²)."""
    arch = kf.Architecture.rnn(3)
    C0 = kf.prior_kernel(arch, endpoint_task()).C
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
        np.testing.assert_allclose(Ct, sol.Ct, atol=1e-14 * np.abs(sol.Ct).max())  # rounding depends on BLAS threads
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
    L0 = np.linalg.cholesky(kf.prior_kernel(arch, task).C)

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
    assert np.abs(rnn.C - kf.prior_kernel(kf.Architecture.rnn(4), task).C).max() > 1e-3


def test_branches_are_reported_with_their_action(endpoint):
    # Above the critical signal (0.61 for this task) two stationary points: the time-local prior
    # branch and the time-correlated broken branch, whose action is larger; the solution is the broken one.
    arch = kf.Architecture.rnn(3)

    def largest_cross_time_entry(C):
        blocks = np.abs(C.reshape(3, 3, 3, 3))  # (t, a, s, b)
        return max(blocks[t, :, s, :].max() for t in range(3) for s in range(3) if t != s)

    sol = kf.solve(arch, endpoint, init="auto")
    assert sorted(b.init for b in sol.branches) == ["broken", "prior"]
    prob = make_problem(arch, endpoint, kf.Prior(), 0.1)
    for b in sol.branches:
        assert b.converged and b.S == pytest.approx(action(prob, b.C), rel=1e-12)
    prior, broken = sorted(sol.branches, key=lambda b: b.init != "prior")
    assert broken.S > prior.S + 0.01
    assert sol.S == broken.S and np.array_equal(sol.C, broken.C)
    assert largest_cross_time_entry(prior.C) == 0.0 and largest_cross_time_entry(broken.C) > 0.1
    # below it the broken start falls back onto the prior branch: one branch
    weak = kf.solve(arch, endpoint_task(scale=0.3), init="auto")
    assert [b.init for b in weak.branches] == ["prior"] and largest_cross_time_entry(weak.C) == 0.0
    only = kf.solve(arch, endpoint, init="prior")
    assert len(only.branches) == 1 and only.branches[0].init == "prior"
    np.testing.assert_allclose(only.C, prior.C, rtol=1e-12, atol=1e-14)


def test_non_convergence_is_reported(sequential):
    with pytest.warns(kf.ConvergenceWarning, match="residual"):
        sol = kf.solve(kf.Architecture.rnn(4), sequential, max_iter=2, inner=2, init="prior")
    assert not sol.converged and sol.residual > 1e-6


def test_a_start_that_did_not_converge_leaves_the_solution_unconverged():
    """A start that did not converge has an S that is not its branch's (the particle solver's
    broken start at T = 16, P = 8 came back as NaN, S = -inf, while the prior start converged), so the
    dominant branch found is not known to be the maximiser: sol.converged is False and the
    warning names the start. Here the broken start (the true dominant branch, S -1.740 against
    -1.785) is made to report no convergence and a lower S."""
    arch, task = kf.Architecture.rnn(3), endpoint_task(scale=1.0)
    prior_start = kf.solve(arch, task, init="prior")
    broken = kf.solve(arch, task, init="broken").best
    assert broken.S > prior_start.S  # the broken start finds the dominant branch when it converges
    failed = dataclasses.replace(broken, converged=False, S=broken.S - 1.0)
    with pytest.warns(kf.ConvergenceWarning, match="the 'broken' start .* did not"):
        sol = solver.assemble(prior_start.model, [prior_start.best, failed], prior_start.problem, tol=1e-6,
                              method="exact", max_iter=5000)
    assert sol.best.init == "prior" and sol.best.converged
    assert not sol.converged and [b.converged for b in sol.branches] == [True, False]


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


def _negative_action_of_innovation(prob):
    """``-S`` as a function of the full innovation ``D`` (jax autodiff through :func:`action_terms`,
    independent of the closed-form derivatives): ``C = (I - 𝒮)⁻¹(K_in + D)`` by ``T - 1`` sweeps."""
    def F(D):
        B = prob.K_in + 0.5 * (D + D.T)
        C = B
        for _ in range(prob.T - 1):
            C = prob.MW * shift(C, prob.P) + B
        S, _, _ = action_terms(jnp.linalg.cholesky(C), prob.MW, prob.Mv, prob.K_in, jnp.asarray(prob.supervised), prob.y,
                               prob.kappa, prob.P)
        return -S
    return F


@pytest.mark.parametrize("make_arch, task", [
    (kf.Architecture.rnn, sequential_task(T=3)),
    (lambda T: kf.Architecture.tied_every(T, 2), sequential_task(T=4)),
    (kf.Architecture.dnn, sequential_task(T=3)),
    (kf.Architecture.rnn, endpoint_task(T=4)),
])
def test_closed_form_derivatives_match_autodiff(make_arch, task):
    """Gradient and Hessian-vector products of the Newton solver (both layouts) against jax
    autodiff of the action at a point away from the prior."""
    arch = make_arch(task.T)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    C_prior = kf.prior_kernel(arch, task).C
    rng = np.random.default_rng(3)
    layouts = [DenseLayout(prob, invariant_components(prob, np.ones_like(C_prior) * prob.block_mask()))]
    if np.array_equal(invariant_components(prob, C_prior), np.arange(task.T)):
        layouts.append(TimeLocalLayout(prob))
    F = _negative_action_of_innovation(prob)
    for lay in layouts:
        C = lay.restrict(C_prior)
        G = rng.normal(size=C_prior.shape)
        PSD = lay.restrict(G @ G.T * prob.block_mask())  # keeps C and K positive definite
        D = 0.3 * PSD / np.linalg.norm(PSD) + (C - lay.K_in - lay.shift(C))
        x = act.evaluate(lay, D)
        d = act.derivatives(lay, x)
        V = lay.restrict(rng.normal(size=C_prior.shape) * prob.block_mask())
        V /= np.linalg.norm(V)
        Dfull, Vfull = jnp.asarray(lay.full(D)), jnp.asarray(lay.full(V))
        value, slope = jax.jvp(F, (Dfull,), (Vfull,))
        curvature = jax.jvp(jax.grad(F), (Dfull,), (Vfull,))[1]
        assert abs(x.F - float(value)) < 1e-10 * max(1.0, abs(x.F))
        g = lay.sweep_adjoint(d.G)
        np.testing.assert_allclose(np.vdot(g, V), float(slope), rtol=1e-9)
        Hv = lay.full(act.hessian_vector(lay, x, d, V))
        np.testing.assert_allclose(Hv, np.asarray(curvature), rtol=1e-7, atol=1e-9 * np.abs(Hv).max())


def test_iterates_stay_in_the_blocks_reachable_from_the_start(endpoint, sequential):
    """An RNN started from its prior kernel on an endpoint task keeps a time-block-diagonal kernel,
    so it is solved in the time-local layout; the result is stationary for the full RNN action
    (checked in the dense layout, cross-time blocks included) and is the DNN's solution. A broken
    start, or inputs at every step, couple all time steps."""
    T = endpoint.T
    rnn = kf.Architecture.rnn(T)
    prob = make_problem(rnn, endpoint, kf.Prior(), 0.1)
    assert np.array_equal(invariant_components(prob, kf.prior_kernel(rnn, endpoint).C), np.arange(T))
    sol = kf.solve(rnn, endpoint, init="prior")
    assert np.all(invariant_components(prob, broken_start(prob, sol.C)) == 0)
    rnn_seq = kf.Architecture.rnn(sequential.T)
    prob_seq = make_problem(rnn_seq, sequential, kf.Prior(), 0.1)
    assert np.all(invariant_components(prob_seq, kf.prior_kernel(rnn_seq, sequential).C) == 0)

    dense = DenseLayout(prob, np.zeros(T, dtype=int))
    x = act.evaluate(dense, sol.C - dense.K_in - dense.shift(sol.C))
    d = act.derivatives(dense, x)
    assert max(act.forward_residual(x, d), act.backward_residual(x, d)) < 1e-6
    np.testing.assert_allclose(dense.full(d.Ct), sol.Ct, atol=1e-10)
    np.testing.assert_allclose(sol.C, kf.solve(kf.Architecture.dnn(T), endpoint, init="prior").C, atol=1e-10)


@pytest.mark.parametrize("make_arch", [kf.Architecture.rnn, kf.Architecture.dnn])
def test_action_never_decreases_along_the_iterates(make_arch, sequential):
    """The k-th Newton iterate (``max_iter = k``) has an action at least that of the previous one,
    starting from the prior kernel (the line search rejects steps that lower S)."""
    arch = make_arch(sequential.T)
    prob = make_problem(arch, sequential, kf.Prior(), 0.1)
    S = [action(prob, kf.prior_kernel(arch, sequential).C)]
    with pytest.warns(kf.ConvergenceWarning):
        for k in range(1, 5):
            S.append(kf.solve(arch, sequential, init="prior", max_iter=k).S)
    assert np.all(np.diff(S) > 0)
    assert S[-1] <= kf.solve(arch, sequential, init="prior").S + 1e-12


@pytest.mark.parametrize("make_arch, task", [
    (kf.Architecture.rnn, endpoint_task(T=4)),
    (lambda T: kf.Architecture.tied_every(T, 2), sequential_task(T=4)),
])
def test_low_rank_objective_matches_action_and_differences(make_arch, task):
    """``F(V Vᵀ)`` of the low-rank stage (Sylvester/Woodbury, one factorisation of K) equals -S
    from :func:`action` (Cholesky factors of C and K) at ``C = K(C) + V Vᵀ``, and its gradient in
    ``V`` matches central differences (step 1e-6: truncation and rounding ~1e-9 relative)."""
    arch = make_arch(task.T)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    lay = DenseLayout(prob, invariant_components(prob, np.ones((prob.n, prob.n)) * prob.block_mask()))
    classes = np.array([lay.labels[0], lay.labels[-1]])
    support = (lay.labels[:, None] == classes[None, :]).astype(float)
    rng = np.random.default_rng(5)
    V = 0.7 * rng.normal(size=(prob.n, 2)) * support
    C_in = lay.sweep(lay.K_in)
    F, gV, _, C = act.low_rank_objective(lay, C_in, V, support)
    np.testing.assert_allclose(C - prob.K(C), V @ V.T, atol=1e-12)
    assert abs(F + action(prob, C)) < 1e-10 * max(1.0, abs(F))
    E = rng.normal(size=V.shape) * support
    h = 1e-6
    slope = (act.low_rank_objective(lay, C_in, V + h * E, support)[0]
             - act.low_rank_objective(lay, C_in, V - h * E, support)[0]) / (2 * h)
    np.testing.assert_allclose(np.vdot(gV, E), slope, rtol=1e-6)


def _endpoint_patterns(T, P):
    t = kf.tasks.endpoint_patterns(P=P, T=T, D=P, seed=0)
    return kf.Task(t.inputs, t.targets)


def test_low_rank_stage_finds_the_newton_branch():
    """The RNN's symmetry-broken branch (T = P = 8, above the transition) from the innovation-form
    start (:func:`broken_factor`, low-rank stage then Newton) is the branch plain Newton reaches
    from the convex-mix start :func:`broken_start`: the same S and kernel (up to W -> -W) within
    what the residual tolerance 1e-6 allows. The kernel solved to 1e-10 has an innovation
    ``D = C - K(C)`` with two singular values above 1e-5 of the largest out of 64: the near
    low-rank structure the stage uses (the rest is left to the Newton stage)."""
    task, arch = _endpoint_patterns(8, 8), kf.Architecture.rnn(8)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    sol = kf.solve(arch, task, init="broken")
    assert sol.converged and sol.branches[0].init == "broken"
    symmetric = kf.solve(arch, task, init="prior").C
    newton = _maximise(prob, broken_start(prob, symmetric), tol=1e-6, max_iter=5000, inner=10, init="broken")
    assert newton.converged and abs(sol.S - newton.S) < 1e-6 and sol.S > kf.solve(arch, task, init="prior").S + 0.1
    assert min(np.linalg.norm(sol.C - C) for C in (newton.C, parity_flip(newton.C, 8, 8))) < 1e-5 * np.linalg.norm(sol.C)
    exact = kf.solve(arch, task, init="broken", tol=1e-10)
    assert exact.converged
    singular = np.linalg.svd(exact.C - prob.K(exact.C), compute_uv=False)
    assert singular[1] > 1e-5 * singular[0] and singular[2] < 1e-5 * singular[0]


def test_low_rank_stage_grows_its_rank():
    """Started at rank 1 where the maximum needs rank 2 (T = P = 8), the stage adds the direction
    in which D should grow: its end point is stationary to 1e-5, while the best rank-1 point has
    residual > 1e-3 (growth switched off)."""
    task, arch = _endpoint_patterns(8, 8), kf.Architecture.rnn(8)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    lay, V, classes = broken_factor(prob, kf.solve(arch, task, init="prior").C, rank=1)
    grown, V_grown, _ = _low_rank_stage(lay, V, classes, max_iter=5000)
    fixed, V_fixed, _ = _low_rank_stage(lay, V, classes, max_iter=5000, grow_threshold=np.inf)
    assert max(residuals(prob, grown.kernel(V_grown))[:2]) < 1e-5
    assert max(residuals(prob, fixed.kernel(V_fixed))[:2]) > 1e-3


@pytest.mark.parametrize("name, coupled", [("dnn", False), ("rnn", True), ("tied_every_2", True), ("share_Uv", True)])
def test_only_coupled_steps_get_a_symmetry_broken_start(name, coupled, monkeypatch):
    """init="auto" builds the broken start only where something couples two steps (shared W, a
    readout shared between supervised steps, inputs correlated across steps); for a DNN it could
    only return to the symmetric solution, which the explicit broken start confirms."""
    task = sequential_task()
    arch = kf.Architecture.from_name(name, task.T)
    assert make_problem(arch, task, kf.Prior(), 0.1).couples_steps == coupled
    built = []
    monkeypatch.setattr(solver, "broken_factor", lambda prob, C: built.append(C))  # None: the convex mix follows
    auto = kf.solve(arch, task, kappa=0.1, tol=1e-9)
    assert bool(built) == coupled
    if not coupled:  # both to 1e-9: at the default 1e-6 two converged kernels may differ by 1e-5
        assert [b.init for b in auto.branches] == ["prior"]
        monkeypatch.undo()
        np.testing.assert_allclose(kf.solve(arch, task, kappa=0.1, init="broken", tol=1e-9).C, auto.C, atol=1e-6)
