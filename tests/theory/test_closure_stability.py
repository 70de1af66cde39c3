"""The Gaussian closure's phase transition (THEORY.md §3, §4): cross-time Hessian of ``S_G`` at the
symmetric closure solution, the closure's critical signal and its outlier eigenvalues.

References that are not the code under test: the exact linear theory (the closure is exact for
linear phi), finite differences of ``S_G`` assembled from ``closure_action`` and the public
Gaussian map, and branch following with the closure solver itself (init="broken").
"""

from dataclasses import replace

import numpy as np
import pytest

import kernelfield as kf
from kernelfield.gaussian import expect_phiphi
from kernelfield.nonlinearities import get_nonlinearity
from kernelfield.theory.closure import closure_action
from kernelfield.theory.closure_stability import ClosureCrossTime
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.stability import CONTROLS, NoTransitionError, _cross_time_index, _with_control

from hessian_checks import curvature_pairs

T, P = 4, 2


def task_at(scale):
    return kf.tasks.endpoint_patterns(P=P, T=T, D=2, target_scale=scale, seed=0)


def rnn_model(phi, scale=1.0, kappa=0.1):
    return kf.Model(kf.Architecture.rnn(T), task_at(scale), phi=phi, kappa=kappa)


@pytest.fixture(scope="module")
def erf_critical():
    return kf.critical_signal(rnn_model("erf"), tol=1e-6, method="gaussian")


def cross_time_entries(Sigma):
    blocks = np.asarray(Sigma).reshape(T, P, T, P).copy()
    for t in range(T):
        blocks[t, :, t, :] = 0.0
    return np.abs(blocks).max()


def test_linear_closure_hessian_and_critical_signal_equal_the_exact_ones():
    # for linear phi G_phi = id and S_G = S: same Hessian (same coordinates), same critical
    # signal; the two solvers' symmetric solutions agree to their tolerance (~1e-7 in C)
    model = rnn_model("linear")
    exact, closure = kf.stability(model, k=3, theory="exact"), kf.stability(model, k=3, theory="gaussian")
    assert exact.theory == "exact" and closure.theory == "gaussian"
    np.testing.assert_allclose(closure.eigenvalues, exact.eigenvalues, atol=1e-6)
    assert closure.gradient < 1e-10 and closure.S_sym == pytest.approx(exact.S_sym, abs=1e-8)
    ref = kf.critical_signal(model, tol=1e-8, bracket=(0.3, 0.5))
    point = kf.critical_signal(model, tol=1e-8, bracket=(0.3, 0.5), method="gaussian")
    assert ref.method == "exact" and point.method == "gaussian"
    assert point.value == pytest.approx(ref.value, rel=1e-6)


def test_closure_hessian_matches_finite_differences_of_the_closure_action():
    model = rnn_model("erf")
    prob = make_problem(model.arch, model.task, model.prior, model.kappa)
    st = kf.stability(model, k=1)
    Sigma_sym = st.Sigma_sym
    assert cross_time_entries(Sigma_sym) == 0.0 and st.gradient < 1e-10  # a stationary point
    rows, cols = _cross_time_index(T, P)
    H = np.asarray(ClosureCrossTime(prob, get_nonlinearity("erf"), Sigma_sym, rows, cols).hessian(np.zeros(rows.size)))

    def S_G(Sigma):
        gamma, energy = closure_action(prob, Sigma, expect_phiphi(Sigma, "erf"))
        return -float(gamma + energy)

    assert S_G(Sigma_sym) == pytest.approx(st.S_sym, abs=1e-10)
    for curvature, fd in curvature_pairs(H, S_G, Sigma_sym, rows, cols):
        assert curvature == pytest.approx(fd, rel=1e-4)  # central differences: ~1e-6 relative error
    assert np.linalg.eigvalsh(H)[-1] == pytest.approx(st.leading, abs=1e-10)


def test_erf_closure_breaks_above_its_critical_signal_and_not_below(erf_critical):
    # branch following with the closure solver from a symmetry-broken start: back to the symmetric
    # branch just below the critical target scale, a time-correlated branch with larger S_G above
    assert erf_critical.method == "gaussian" and 0.2 < erf_critical.value < 0.6
    lo, hi = erf_critical.eigenvalues
    assert lo < 0 < hi
    arch = kf.Architecture.rnn(T)
    for factor, broken in ((0.9, False), (1.15, True)):
        task = task_at(erf_critical.value * factor)
        sol = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian", init="broken")
        sym = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian", init="prior")
        assert sol.converged and cross_time_entries(sym.Sigma) == 0.0
        if broken:
            assert cross_time_entries(sol.Sigma) > 1e-2 and sol.S > sym.S + 1e-6
        else:  # solver tolerance 1e-6 on the residuals
            assert cross_time_entries(sol.Sigma) < 1e-4 and sol.S == pytest.approx(sym.S, abs=1e-9)


@pytest.mark.parametrize("control", CONTROLS)
def test_every_control_puts_the_erf_closure_at_marginal_stability(control, erf_critical):
    # the three controls move along different lines of parameter space; each search must end
    # where the leading eigenvalue vanishes and changes sign
    model = rnn_model("erf")
    point = erf_critical if control == "target_scale" else kf.critical_signal(model, control=control, tol=1e-6)
    assert point.method == "gaussian"
    at, below, above = (kf.stability(_with_control(model, control, point.value * f), k=1).leading
                        for f in (1.0, 0.97, 1.03))
    assert abs(at) < 1e-4 and below * above < 0
    if control == "target_scale":  # stable on the weak-signal side
        assert below < 0


def test_outlier_eigenvalues_of_closure_solutions(erf_critical):
    # linear: the closure's cross kernel is Sigma = C, so the outlier equals the exact solver's
    # both solved to 1e-9: the outliers move with the residual (4.7e-6 apart at the default 1e-6)
    exact = kf.solve(rnn_model("linear"), tol=1e-9)
    closure = kf.solve(rnn_model("linear"), method="gaussian", tol=1e-9)
    ev_closure, ev_exact = kf.outlier_eigenvalues(closure), kf.outlier_eigenvalues(exact)
    # the two outliers agree; the rest vanish up to each solver's residual^(1/chain length)
    np.testing.assert_allclose(ev_closure[:2], ev_exact[:2], atol=1e-6)
    assert abs(ev_exact[0]) > 1.0 and np.abs(ev_closure[2:]).max() < 1e-2 and np.abs(ev_exact[2:]).max() < 1e-2
    # erf: none on the symmetric branch (nilpotent chain), a real one on the broken branch
    below = kf.solve(rnn_model("erf", 0.8 * erf_critical.value), method="gaussian")
    above = kf.solve(rnn_model("erf", 2.0), method="gaussian")
    assert np.abs(kf.outlier_eigenvalues(below)).max() < 1e-2
    top = kf.outlier_eigenvalues(above)[0]
    assert abs(top.imag) < 1e-9 and abs(top.real) > 0.5
    # particle solutions record no cross kernel <phi(h) h^T>
    particles = replace(above, method="particles", branches=tuple(replace(b, Sigma=None) for b in above.branches))
    with pytest.raises(NotImplementedError, match="phi: outlier_eigenvalues for phi = 'erf'.*method='gaussian'"):
        kf.outlier_eigenvalues(particles)


def test_nonodd_phi_and_bad_methods_are_refused_clearly():
    with pytest.raises(ValueError, match="phi: no time-symmetric solution for phi = 'relu'"):
        kf.critical_signal(rnn_model("relu"), method="gaussian")
    with pytest.raises(NotImplementedError, match="phi: stability of the exact theory.*'erf'.*'gaussian'"):
        kf.stability(rnn_model("erf"), theory="exact")
    with pytest.raises(NotImplementedError, match="phi: critical_signal of the exact theory.*'tanh'"):
        kf.critical_signal(rnn_model("tanh"), method="exact")
    with pytest.raises(ValueError, match="method: must be one of"):
        kf.critical_signal(rnn_model("erf"), method="particles")
    with pytest.raises(ValueError, match="theory: must be one of"):
        kf.stability(rnn_model("erf"), theory="closure")
    with pytest.raises(NoTransitionError, match="couples no two time steps"):
        kf.critical_signal(kf.Model(kf.Architecture.dnn(T), task_at(1.0), phi="erf"), method="gaussian")
