"""The Gaussian closure when ``K(C)`` is singular (THEORY.md §3, "Rank-deficient prior
covariances"): more sequences than input dimensions, duplicate sequences.

References: for linear phi the exact solver at P > D (itself checked against the ``eps -> 0``
limit in test_rank_deficient.py); for erf the closure of the problem regularised by ``eps·I`` on
the input kernel, which is regular and must tend to the singular solution as ``eps -> 0``.
Tolerances: erf targets from a linear teacher are not realisable, so the linear rate sets in only
below ``eps ~ 1e-3`` (measured kernel differences at eps = 1e-2 / 1e-3 / 1e-4: RNN endpoint
0.023 / 0.0026 / 0.00027, DNN endpoint 0.031 / 0.0064 / 0.0007, RNN sequential
0.060 / 0.015 / 0.0017; benchmarks/RESULTS.md); asserted on the RNN endpoint case (compilation
dominates the time): a fall by at least 5x from eps = 1e-3 to 1e-4 in kernel and action, and a kernel
difference at eps = 1e-4 below 3e-3 of the kernel's scale."""

import numpy as np
import pytest
from test_rank_deficient import EPS_CASES, regularised, teacher_endpoint

import kernelfield as kf


ISSUE = EPS_CASES[0]  # linear RNN, endpoint task, T = 3, P = 6, D = 3: one shape (n = 18) for every test


@pytest.mark.parametrize("name, arch, task", [ISSUE], ids=[ISSUE[0]])
def test_linear_closure_equals_the_exact_solver_at_p_above_d(name, arch, task):
    exact = kf.solve(arch, task, kappa=0.1, tol=1e-9)
    closure = kf.solve(arch, task, kappa=0.1, tol=1e-9, method="gaussian")
    assert closure.converged and exact.problem.support.rank < exact.problem.n
    assert np.abs(closure.C - exact.C).max() < 1e-7
    assert abs(closure.S - exact.S) < 1e-9


@pytest.mark.parametrize("name, arch, task", [ISSUE], ids=[ISSUE[0]])
def test_erf_closure_is_the_limit_of_the_regularised_problem(name, arch, task):
    sol = kf.solve(arch, task, kappa=0.1, phi="erf", method="gaussian", init="prior")
    assert sol.converged
    diffs = []
    for eps in (1e-3, 1e-4):
        reg = kf.solve(arch, regularised(task, eps), kappa=0.1, phi="erf", method="gaussian", init="prior")
        assert reg.converged
        diffs.append([np.abs(reg.C - sol.C).max(), abs(reg.S - sol.S)])
    diffs = np.array(diffs)
    assert np.all(diffs[1] < 0.2 * diffs[0]), diffs
    assert diffs[1, 0] < 3e-3 * max(1.0, np.abs(sol.C).max()), diffs


def test_erf_closure_with_duplicate_sequences():
    """Two copies of each of 3 sequences in D = 2 (P = 6 rows, rank 2 at t = 0) and a target
    scale above the transition (both starts run, the broken one on the dense layout with its
    support): the copies' preactivations are equal at every step, so their rows of ``Sigma``
    agree."""
    base = teacher_endpoint(P=3, T=3, D=2, scale=3.0)
    task = kf.Task(np.concatenate([base.inputs, base.inputs]), np.concatenate([base.targets, base.targets]))
    sol = kf.solve(kf.Architecture.rnn(3), task, kappa=0.1, phi="erf", method="gaussian")
    assert sol.converged and len(sol.branches) == 2
    for b in sol.branches:
        rows = b.Sigma.reshape(3, 6, 3 * 6)
        np.testing.assert_allclose(rows[:, :3], rows[:, 3:], atol=1e-8)


def test_closure_critical_signal_on_the_support():
    """The closure's cross-time Hessian at P > D is taken on the support (``Sym(R)``): with linear
    phi its critical target scale is the exact solver's (2.62392 on the issue's example), and with
    erf it is the limit of the regularised closure's (measured differences 9.6e-4 / 5.0e-4 /
    5.4e-5 / 5.5e-6 at eps = 1e-3 / 1e-4 / 1e-5 / 1e-6, root tolerance 1e-7; asserted below 2e-4 at
    eps = 1e-5 with root tolerance 1e-5)."""
    _, arch, task = ISSUE
    exact = kf.critical_signal(arch, task, kappa=0.1, method="exact", tol=1e-6)
    closure = kf.critical_signal(arch, task, kappa=0.1, method="gaussian", tol=1e-6)
    assert closure.method == "gaussian" and abs(closure.value - exact.value) < 1e-5
    erf = kf.critical_signal(arch, task, kappa=0.1, phi="erf", method="gaussian", tol=1e-5)
    reg = kf.critical_signal(arch, regularised(task, 1e-5), kappa=0.1, phi="erf", method="gaussian", tol=1e-5)
    assert abs(erf.value - reg.value) < 2e-4 and abs(erf.value - exact.value) > 0.1
