"""The Gaussian closure, ``method="gaussian"`` (THEORY.md §3): exact for linear phi, stationary
at every branch for nonlinear phi, derivatives consistent with its action (its accuracy against
the particle solver and the lower bound on the exact action: test_closure_accuracy.py)."""

from fractions import Fraction
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import endpoint_task, sequential_task

import kernelfield as kf
from kernelfield import schedules
from kernelfield.gaussian import expect_phiphi
from kernelfield.symmetry import parity_flip
from kernelfield.theory.closure import (
    ClosureObjective,
    at_rounding_floor,
    closure_broken_start,
    closure_support,
    free_mask,
    maximise_closure,
    trained_support,
)
from kernelfield.theory.closure_lowrank import LowRankStart
from kernelfield.theory.closure_maps import _kl_and_energy
from kernelfield.theory.kernels import make_problem, shift_adjoint, sym
from kernelfield.theory.lazy import lazy_kernel
from kernelfield.theory.starts import broken_start

ARCHS = {"rnn": kf.Architecture.rnn, "dnn": kf.Architecture.dnn, "tied2": lambda T: kf.Architecture.tied_every(T, 2)}


def _matched(exact, closure, T, P):
    """Pairs of branches of the two solutions that are the same branch (up to W -> -W)."""
    pairs = []
    for b in exact.branches:
        d = [min(np.abs(b.C - c.C).max(), np.abs(b.C - parity_flip(c.C, T, P)).max()) for c in closure.branches]
        pairs.append((b, closure.branches[int(np.argmin(d))], min(d)))
    return pairs


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("task", ["endpoint_weak", "endpoint_strong", "sequential"])
def test_linear_closure_equals_exact_solver(arch, task):
    t = {"endpoint_weak": endpoint_task(scale=0.3), "endpoint_strong": endpoint_task(scale=3.0),
         "sequential": sequential_task()}[task]
    a = ARCHS[arch](t.T)
    exact = kf.solve(a, t, tol=1e-9)
    closure = kf.solve(a, t, tol=1e-9, method="gaussian")
    assert closure.method == "gaussian" and exact.method == "exact"
    assert closure.converged and exact.converged
    assert len(closure.branches) == len(exact.branches)
    for b, c, dC in _matched(exact, closure, t.T, t.P):
        assert dC < 1e-8
        assert abs(b.S - c.S) < 1e-8
        np.testing.assert_allclose(c.Sigma, c.C, atol=1e-12)  # G_phi = id
    np.testing.assert_allclose(closure.predict().mean, exact.predict().mean, atol=1e-8)


def test_linear_closure_breaks_symmetry_above_transition():
    t = endpoint_task(scale=3.0)
    sol = kf.solve(kf.Architecture.rnn(t.T), t, method="gaussian")
    assert {b.init for b in sol.branches} == {"prior", "broken"}
    assert sol.best.init == "broken" and kf.temporal_coherence(sol) > 0.1


def test_low_rank_broken_start_reaches_the_branch_of_the_convex_mix_start():
    """The closure's low-rank broken start (L-BFGS over ``D = V Vᵀ``, then Newton) and plain
    Newton from the convex-mix start :func:`broken_start` find the same erf RNN broken branch:
    both are stationary to ``tol`` = 1e-7 (near the closure's rounding floor of ~1e-8 at this size), so
    S agrees to ~tol² and the kernels to ~tol times the conditioning (1e-5 asserted)."""
    t = endpoint_task(P=3, T=4, scale=1.0)
    sol = kf.solve(kf.Architecture.rnn(t.T), t, phi="erf", method="gaussian", tol=1e-7)
    assert sol.converged and sol.best.init == "broken" and kf.temporal_coherence(sol) > 0.3
    prob, nl = sol.problem, sol.model.nonlinearity
    symmetric = next(b for b in sol.branches if b.init == "prior").Sigma
    assert isinstance(closure_broken_start(prob, nl, symmetric), LowRankStart)
    plain = maximise_closure(prob, nl, broken_start(prob, symmetric), tol=1e-7, max_iter=500)
    assert plain.converged
    C_plain = np.asarray(plain.point.C)
    dC = min(np.abs(sol.C - C_plain).max(), np.abs(sol.C - parity_flip(C_plain, t.T, t.P)).max())
    assert dC < 1e-5
    assert abs(sol.S + float(plain.point.gamma + plain.point.energy)) < 1e-9


def test_low_rank_broken_start_only_where_the_symmetric_branch_is_time_local():
    """A DNN's broken start is time-local and a sequential task's symmetric branch is dense: both
    get the convex-mix start, as in the exact solver (:func:`broken_factor`)."""
    nl = kf.nonlinearities.get_nonlinearity("erf")
    for arch, t in [(kf.Architecture.dnn, endpoint_task()), (kf.Architecture.rnn, sequential_task())]:
        prob = make_problem(arch(t.T), t, kf.Prior(), 0.1)
        Sigma = np.asarray(prob.K(lazy_kernel(prob, nl)))  # the closure's prior start, as time-local as its solution
        np.testing.assert_allclose(closure_broken_start(prob, nl, Sigma), broken_start(prob, Sigma))


def _backward_field(prob, Sigma, C):
    """``Ct = ½ 𝒮ᵀ(K⁻¹ Sigma K⁻¹ - K⁻¹) + ½ M_v ∘ [a aᵀ]_S`` (THEORY.md §3), in numpy."""
    Kinv = np.linalg.inv(np.asarray(prob.K(C)))
    W = prob.MW * (Kinv @ Sigma @ Kinv - Kinv)
    S = prob.supervised
    a = np.linalg.solve((prob.Mv * C)[np.ix_(S, S)] + prob.kappa * np.eye(len(S)), prob.y)
    readout = np.zeros_like(C)
    readout[np.ix_(S, S)] = np.outer(a, a)
    return 0.5 * np.asarray(shift_adjoint(W, prob.P)) + 0.5 * prob.Mv * readout


def _price_field(Sigma, Ct, phi, eps=1e-5):
    """``∂/∂Sigma tr(Ct G_φ(Sigma))`` (symmetric convention) by central differences of the
    library's Gaussian map."""
    n = len(Sigma)
    out = np.zeros_like(Sigma)
    for i in range(n):
        for j in range(i, n):
            E = np.zeros_like(Sigma)
            E[i, j] = E[j, i] = eps
            diff = np.vdot(Ct, expect_phiphi(Sigma + E, phi)) - np.vdot(Ct, expect_phiphi(Sigma - E, phi))
            out[i, j] = out[j, i] = diff / (2 * eps) / (1.0 if i == j else 2.0)
    return out


@pytest.mark.parametrize("phi", ["erf", "tanh", "relu"])
@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_stationarity_at_every_branch(phi, scale):
    """``Sigma⁻¹ = K⁻¹ - 2 ∂/∂Sigma tr(Ct G_φ(Sigma))`` with ``Ct`` from the backward equation,
    both evaluated independently of the solver (numpy, finite differences of expect_phiphi)."""
    t = endpoint_task(P=2, T=3, scale=scale)
    arch = kf.Architecture.rnn(t.T)
    sol = kf.solve(arch, t, phi=phi, kappa=0.1, method="gaussian", tol=1e-7)
    prob = make_problem(arch, t, kf.Prior(), 0.1)
    assert sol.converged
    for b in sol.branches:
        assert b.residual < 1e-7
        np.testing.assert_allclose(b.C, expect_phiphi(b.Sigma, phi), atol=1e-10)
        Ct = _backward_field(prob, b.Sigma, b.C)
        np.testing.assert_allclose(b.Ct, Ct, atol=1e-8)
        mask = free_mask(prob, b.Sigma)
        lhs = np.linalg.inv(b.Sigma) * mask
        rhs = (np.linalg.inv(np.asarray(prob.K(b.C))) - 2 * _price_field(b.Sigma, Ct, phi)) * mask
        assert np.abs(lhs - rhs).max() < 1e-5 * np.abs(lhs).max()


def test_price_field_is_twice_ct_for_linear_phi():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(4, 4))
    Sigma, Ct = A @ A.T + np.eye(4), rng.normal(size=(4, 4))
    Ct = Ct + Ct.T
    np.testing.assert_allclose(_price_field(Sigma, Ct, "linear"), Ct, atol=1e-8)


@pytest.mark.parametrize("phi", ["erf", "tanh", "relu", "linear"])
def test_gradient_and_hessian_vector_products_match_finite_differences(phi):
    t = sequential_task(P=2, T=3, D=3, scale=0.7)
    prob = make_problem(kf.Architecture.rnn(t.T), t, kf.Prior(), 0.1)
    Sigma0 = np.asarray(prob.K(lazy_kernel(prob, phi)))
    mask = free_mask(prob, Sigma0)
    f = ClosureObjective(prob, kf.nonlinearities.get_nonlinearity(phi), mask, 60)
    rng = np.random.default_rng(0)
    A = rng.normal(size=mask.shape)
    D = 0.02 * (A @ A.T) * mask  # positive semidefinite: Sigma(D) stays positive definite
    V = rng.normal(size=mask.shape)
    V = (V + V.T) * mask
    F, g = f.value_and_gradient(D)
    assert np.isfinite(F) and F == pytest.approx(f.value(D), abs=1e-12)
    eps = 1e-5
    fd = (f.value(D + eps * V) - f.value(D - eps * V)) / (2 * eps)
    assert np.vdot(g, V) == pytest.approx(fd, rel=1e-6, abs=1e-9)
    fd_hv = (f.value_and_gradient(D + eps * V)[1] - f.value_and_gradient(D - eps * V)[1]) / (2 * eps)
    np.testing.assert_allclose(f.hessian_vector(D, V), fd_hv, atol=1e-5 * np.abs(fd_hv).max())


def test_relu_centred_kernel_and_records():
    t = endpoint_task(P=2, T=3, scale=0.5)
    sol = kf.solve(kf.Architecture.rnn(t.T), t, phi="relu", kappa=0.1, method="gaussian")
    m = np.sqrt(np.diag(sol.Sigma) / (2 * np.pi))  # <relu(h)>, h ~ N(0, v)
    np.testing.assert_allclose(sol.C_centred, sol.C - np.outer(m, m), atol=1e-10)
    pred = sol.predict()
    assert pred.mean.shape == (t.P, t.T) and np.all(np.isfinite(pred.mean))
    ds = kf.to_xarray(sol)
    assert ds.attrs["method"] == "gaussian"
    assert ds.attrs["note"] == "Gaussian closure: approximation, S is a lower bound"
    back = kf.storage.solution_from_dataset(ds)
    assert back.method == "gaussian" and back.S == sol.S


def test_exact_solution_records_its_method():
    t = endpoint_task(scale=0.3)
    sol = kf.solve(kf.Architecture.rnn(t.T), t)
    assert sol.method == "exact" and sol.Sigma is None
    assert "note" not in kf.to_xarray(sol).attrs


def test_phi_without_gaussian_map_is_refused():
    kf.register(kf.Nonlinearity("numpy_tanh_test", lambda h: np.tanh(np.asarray(h)), odd=True))
    t = endpoint_task(P=2, T=3)
    with pytest.raises(ValueError, match="method.*numpy_tanh_test"):
        kf.solve(kf.Architecture.rnn(t.T), t, phi="numpy_tanh_test", method="gaussian")
    with pytest.raises(ValueError, match="gaussian"):
        kf.solve(kf.Architecture.rnn(t.T), t, method="bogus")


@pytest.mark.parametrize("phi", ["erf", "tanh", "relu"])
def test_time_local_layout_equals_dense_layout(phi):
    """On time-block-diagonal innovations the ``(T, P, P)`` layout gives the dense layout's
    ``F``, gradient, Hessian-vector products and kernels to rounding (1e-10)."""
    t = endpoint_task(P=2, T=3, scale=0.7)
    prob = make_problem(kf.Architecture.dnn(t.T), t, kf.Prior(), 0.1)
    nl = kf.nonlinearities.get_nonlinearity(phi)
    Sigma0 = np.asarray(prob.K(lazy_kernel(prob, phi)))
    mask = free_mask(prob, Sigma0)
    dense, local = ClosureObjective(prob, nl, mask, 60), ClosureObjective.time_local(prob, nl, 60)
    rng = np.random.default_rng(0)
    A = rng.normal(size=mask.shape)
    D = 0.02 * (A @ A.T) * mask
    V = (A + A.T) * mask
    F, g = dense.value_and_gradient(D)
    F_local, g_local = local.value_and_gradient(local.restrict(D))
    assert F_local == pytest.approx(F, abs=1e-10)
    np.testing.assert_allclose(local.full(g_local), g, atol=1e-10)
    np.testing.assert_allclose(local.full(local.hessian_vector(local.restrict(D), local.restrict(V))),
                               dense.hessian_vector(D, V), atol=1e-9)
    same_step = np.kron(np.eye(t.T), np.ones((t.P, t.P)))  # a non-odd phi's C also has <φ><φ>ᵀ across steps
    for a, b in zip(dense.point(D), local.point(local.restrict(D))):
        np.testing.assert_allclose(local.full(b) if np.ndim(b) else b, a * same_step if np.ndim(a) else a, atol=1e-10)



def _exact_inverse(A):
    """The inverse of the float matrix ``A`` in exact rational arithmetic (Gauss–Jordan)."""
    n = len(A)
    M = [[Fraction(A[i][j]) for j in range(n)] + [Fraction(int(i == j)) for j in range(n)] for i in range(n)]
    for c in range(n):
        pivot = max(range(c, n), key=lambda r: abs(M[r][c]))
        M[c], M[pivot] = M[pivot], M[c]
        M[c] = [x / M[c][c] for x in M[c]]
        for r in range(n):
            if r != c and M[r][c] != 0:
                M[r] = [a - M[r][c] * b for a, b in zip(M[r], M[c])]
    return [row[n:] for row in M]


def test_kl_gradient_is_more_accurate_than_the_difference_of_inverses_at_an_ill_conditioned_prior():
    """The KL term's gradient ``K⁻¹ - Sigma⁻¹ = K⁻¹DSigma⁻¹`` (twice ``∂Gamma/∂D``), taken in the
    whitened innovation (the objective's :func:`_kl_gradients`, the residuals' :func:`kl_gradient`),
    against the exact value for the floating-point ``K`` and ``D`` (rational arithmetic), at ``K``
    with eigenvalues 1 … 1e-10 in a random basis (what the sequential erf RNN at P = 128 meets).
    Error in the solver's metric ``||Sigma (X - X*) Sigma|| / ||Sigma X* Sigma||``, summed over 10
    seeded draws (single draws scatter between 1e-8 and 7e-7 around ε·cond = 2e-6): the whitened
    forms must be 3× more accurate than ``inv(K) - inv(Sigma)`` (measured: 7× and 5×)."""
    import jax.numpy as jnp

    from kernelfield.theory.closure_maps import _kl_gradients, kl_gradient

    n, total = 8, np.zeros(3)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
        K = sym((Q * np.logspace(0, -10, n)) @ Q.T)
        L = np.linalg.cholesky(K)
        X = rng.normal(size=(n, n)) / np.sqrt(n)
        D = sym(L @ (0.3 * (X + X.T)) @ L.T)
        Sigma_exact = [[Fraction(K[i, j]) + Fraction(D[i, j]) for j in range(n)] for i in range(n)]
        Ki, Si = _exact_inverse(K), _exact_inverse(Sigma_exact)
        exact = np.array([[float(Ki[i][j] - Si[i][j]) for j in range(n)] for i in range(n)])
        Sigma = K + D
        forms = (np.asarray(_kl_gradients(jnp.asarray(K), jnp.asarray(D))[0]), kl_gradient(K, D),
                 np.linalg.inv(K) - np.linalg.inv(Sigma))
        total += [np.linalg.norm(Sigma @ (x - exact) @ Sigma) / np.linalg.norm(Sigma @ exact @ Sigma) for x in forms]
    assert total[0] < total[2] / 3 and total[1] < total[2] / 3, total


def test_only_an_interior_newton_step_shows_the_rounding_floor():
    """The closure's end-game (retries from the best point, judged by the residuals) starts only
    on a Newton step inside the trust region whose predicted decrease is below ``F``'s rounding
    (or that did not lower ``F``). A step cut short by a small radius predicts a small decrease
    far from the maximum too: at n = 1088 (erf RNN, P = 256) counting it reverted the solve to
    points of higher ``F`` until the radius was 0."""
    F, noise = 28.0, 28.0 * 1e-10
    assert at_rounding_floor(on_boundary=False, decrease=1e-12, noise=noise, F=F, F_new=F - 1e-12)
    assert at_rounding_floor(on_boundary=False, decrease=1e-3, noise=noise, F=F, F_new=F + 1e-15)
    assert not at_rounding_floor(on_boundary=False, decrease=1e-3, noise=noise, F=F, F_new=F - 1e-3)
    assert not at_rounding_floor(on_boundary=True, decrease=1e-12, noise=noise, F=F, F_new=F - 1e-12)
    assert not at_rounding_floor(on_boundary=True, decrease=1e-3, noise=noise, F=F, F_new=F + 1e-15)


def test_a_solve_below_the_rounding_floor_says_why_it_stopped(tmp_path):
    """A tolerance below what float64 reaches (1e-16; this solve ends at ~2e-16) stops on the
    rounding end-game, and the warning and the branch say so; the reason survives a netCDF round
    trip, and a converged solve or one cut by max_iter report theirs."""
    arch, task = kf.Architecture.rnn(4), sequential_task()
    with pytest.warns(kf.ConvergenceWarning, match="rounding floor of S_G"):
        floor = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian", tol=1e-16, init="prior")
    assert not floor.converged and floor.best.stopped == "rounding" and floor.residual < 1e-14
    back = kf.storage.solution_from_dataset(kf.load(kf.save(floor, tmp_path / "floor.nc")))
    assert back.best.stopped == "rounding"
    with pytest.warns(kf.ConvergenceWarning, match=r"max_iter=2\); check"):
        cut = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian", max_iter=2, init="prior")
    assert cut.best.stopped == "max_iter"
    done = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian", tol=1e-8, init="prior")
    assert done.converged and done.best.stopped == ""


@pytest.mark.parametrize("cond", [1e4, 1e10])
def test_kl_hessian_is_symmetric_where_k_is_ill_conditioned(cond):
    """The KL term's Hessian in ``(K, D)`` (forward over reverse, through the closed-form
    derivatives of :func:`.closure_maps._kl_gradients`) is symmetric to rounding where ``K`` is
    ill-conditioned and the innovation ``D`` small along ``K``'s small directions, as in trained
    kernels. With products of ``K⁻¹`` and ``Sigma⁻¹`` its asymmetry was 5e-7 at cond 1e10 (and
    the erf RNN at P = 256 missed the curvature of ``F`` by up to a factor 2); whitened it is 3e-14.
    The tolerance 1e-10 leaves a factor 1000 to the whitened code's rounding."""
    n = 16
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.normal(size=(n, n)))[0]
    K = sym(Q @ np.diag(np.logspace(0, -np.log10(cond), n)) @ Q.T)
    M = rng.normal(size=(n, n))
    D = sym(K @ (0.3 * (M + M.T) / np.linalg.norm(M)) @ K / np.linalg.norm(K))

    def gamma(x):
        return _kl_and_energy(x[0], x[1], jnp.eye(n), jnp.zeros(n))[0]

    _, hessian = jax.linearize(jax.grad(gamma), jnp.stack([K, D]))
    for _ in range(5):
        u, v = (np.stack([K @ (s + s.T) @ K for s in rng.normal(size=(2, n, n))]) for _ in range(2))
        uHv, vHu = float(jnp.vdot(u, hessian(v))), float(jnp.vdot(v, hessian(u)))
        assert abs(uHv - vHu) <= 1e-10 * max(abs(uHv), abs(vHu))


def test_a_closure_stalled_by_a_numerically_singular_trained_kernel_goes_on_on_its_support():
    """erf RNN on the integration task with D = 2 inputs and P = 32 sequences: training shrinks
    ``Sigma`` at t = 0, so ``K`` at t = 1 (``G_erf`` of a rank-2 ``Sigma``) becomes numerically
    singular on the lazy kernel's support (cond ~1e14) and the Newton iteration there stalls at
    residual 5e-4. Restarted on the trained kernel's support (rank 97 -> 88) it converges (8e-6
    < tol 1e-5; its rounding floor is about 3e-6). The restart lands on the same solution: ``S_G``
    within 2.7e-6 of the stalled point's (its residual 5e-4, squared, times ``|S_G|`` = 11; measured
    3.5e-7 and 3e-8 with one and two BLAS threads), kernels 2.4e-4 from it (relative; bound 1e-3),
    and it holds the dropped directions at the prior: ``Sigma = K`` there."""
    task = kf.tasks.integration(P=32, T=4, D=2, seed=0)
    prob = make_problem(kf.Architecture.rnn(4), task, kf.Prior(), 0.1)
    nl = kf.get_nonlinearity("erf")
    K_lazy = np.asarray(prob.K(lazy_kernel(prob, nl)))
    lazy = closure_support(prob, K_lazy)
    stalled = maximise_closure(prob, nl, K_lazy, 1e-5, 5000, support=lazy)
    assert not stalled.converged and stalled.residual > 1e-4

    sol = kf.solve(kf.Architecture.rnn(4), task, phi="erf", kappa=0.1, method="gaussian", init="prior", tol=1e-5)
    branch = sol.best
    assert sol.converged and branch.support.rank < lazy.rank
    assert abs(branch.S + float(stalled.point.gamma + stalled.point.energy)) < 2.7e-6
    assert np.max(np.abs(branch.C - np.asarray(stalled.point.C))) < 1e-3 * np.max(np.abs(branch.C))
    K = np.asarray(prob.K(branch.C))
    dropped = branch.support.complement - lazy.complement  # on the lazy support, off the trained one
    assert np.linalg.norm(dropped @ (branch.Sigma - K) @ dropped) < 1e-12 * np.linalg.norm(K)


def test_the_trained_support_is_the_lazy_one_where_training_keeps_k_well_conditioned():
    """No restart where the trained kernel keeps the lazy kernel's rank: ``trained_support`` is
    ``None`` at a converged solution of the sequential task (D = 3 inputs, P = 16)."""
    task = kf.tasks.integration(P=16, T=4, D=3, seed=0)
    sol = kf.solve(kf.Architecture.rnn(4), task, phi="erf", kappa=0.1, method="gaussian", init="prior")
    prob = make_problem(kf.Architecture.rnn(4), task, kf.Prior(), 0.1)
    lazy = closure_support(prob, np.asarray(prob.K(lazy_kernel(prob, kf.get_nonlinearity("erf")))))
    assert sol.converged and sol.best.support.rank == lazy.rank
    assert trained_support(prob, prob.K(sol.best.C), lazy) is None


def test_the_restart_on_the_trained_support_follows_a_line_search_stop_and_keeps_the_better_point(monkeypatch):
    """Control flow of :func:`maximise_closure_on_support` with the two runs replaced: no restart
    after a stop at the rounding floor; after a line-search stop, a restart that ends with larger
    residuals is dropped (the first point and its support come back, with both runs' iterations),
    and one that converges is kept with the trained support."""
    import kernelfield.theory.closure as closure

    def result(residual, stopped, iterations, label):
        return closure.ClosureResult(label, residual, residual, stopped == "", iterations, None, stopped)

    lazy, refined = object(), object()
    runs = []

    def fake_run(prob, nl, Sigma0, tol, max_iter, inner=None, order=None, support=None):
        runs.append(support)
        return outcomes[len(runs) - 1]

    monkeypatch.setattr(closure, "maximise_closure", fake_run)
    monkeypatch.setattr(closure, "trained_support", lambda prob, K, support: refined if support is lazy else None)
    point = closure.ClosurePoint(*(np.eye(2),) * 8)

    outcomes = [result(3e-6, "rounding", 50, point)]
    r, support = closure.maximise_closure_on_support(None, None, None, 1e-6, 100, support=lazy)
    assert (r.stopped, support, runs) == ("rounding", lazy, [lazy])

    runs.clear()
    outcomes = [result(1e-3, "line search", 20, point), result(2e-3, "rounding", 30, "restart")]
    r, support = closure.maximise_closure_on_support(None, None, None, 1e-6, 100, support=lazy)
    assert (r.point, r.iterations, support, runs) == (point, 50, lazy, [lazy, refined])

    runs.clear()
    outcomes = [result(1e-3, "line search", 20, point), result(1e-7, "", 5, "restart")]
    r, support = closure.maximise_closure_on_support(None, None, None, 1e-6, 100, support=lazy)
    assert (r.point, r.converged, r.iterations, support) == ("restart", True, 25, refined)


def test_a_time_local_closure_stalled_by_short_cg_solves_goes_on_with_longer_ones():
    """erf DNN on sequential digits (D = 8 < P = 48, steps 1 and 3 supervised) at tol 1e-7: with
    the time-local layout's 10 CG steps per Newton step the solve stops at its rounding floor,
    residual 1.3e-5 (measured), because the short solves of the ill-conditioned blocks no longer
    lower the residuals. By default such a stop goes on with 100 CG steps and converges (6.8e-9
    measured), at the same maximum: ``S_G`` within 1e-8 (the stalled residual squared times
    ``|S_G|`` ~ 20 is 3e-9), kernels 1.1e-4 apart (relative to the largest entry, measured; bound
    1e-3, as for the support restart: ten times the stalled residual amplified by the blocks'
    conditioning)."""
    task = schedules.supervise(kf.tasks.sequential_digits(P=48, T=4, D=8, classes=[0, 1, 2, 3], positive=[0, 2],
                                                          label="every", input_noise=0.1, seed=0),
                               schedules.every(2))
    solve = partial(kf.solve, kf.Architecture.dnn(4), task, phi="erf", kappa=0.1, method="gaussian", init="prior",
                    tol=1e-7)
    with pytest.warns(kf.ConvergenceWarning, match="rounding floor"):
        stalled = solve(inner=10)
    assert stalled.best.stopped == "rounding" and stalled.residual > 1e-6
    sol = solve()
    assert sol.converged and sol.residual < 1e-7
    assert abs(sol.S - stalled.S) < 1e-8
    assert np.max(np.abs(sol.C - stalled.C)) < 1e-3 * np.max(np.abs(sol.C))
