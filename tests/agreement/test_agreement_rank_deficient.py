"""The exact theory at P > D (THEORY.md §3, "Rank-deficient prior covariances") against
posterior samples of width-N networks, which have no singularity at all: the linear solver
(below) and, for erf, the particle solver on the support (last test: endpoint and sequential
tasks, RNN and DNN).

P = 6 sequences of D = 3 input dimensions, T = 3: the prior covariance is singular (the support
has rank 9 of 18 for the endpoint task and the sequential RNN, 15 for the sequential DNN).
Tolerance as in test_agreement_linear.py: relative kernel and prediction error below
``3·error_bar + 2/N`` (three standard errors of the sampler plus twice the leading 1/N bias).
Sampling is kept cheap (4 chains x 300 samples after 200 warm-up steps), so the error bar is
larger than there; the tolerance grows with it. Measured (kernel / prediction error, error bar,
tolerance): endpoint RNN N = 128: 0.023 / 0.032, 0.033, 0.11; endpoint DNN N = 64 (passed, dropped
for the suite's time budget): 0.063 / 0.021, 0.037, 0.14; sequential RNN N = 64: 0.025 / 0.011, 0.026, 0.11; sequential DNN N = 64:
0.028 / 0.006, 0.031, 0.12 (a fifth to a half of the tolerance). About 40 s CPU in all. A linear network's kernel lies on the support
sample by sample (``h(t) = Σ W^k U x``), so the sampled mean kernel must too, to rounding.
"""

import numpy as np
import pytest

import kernelfield as kf
from conftest import endpoint_task, sequential_task

SAMPLING = dict(kappa=0.1, num_samples=300, num_warmup=200, num_chains=4, seed=0, keep_weights=0, progress=False)

# case -> (architecture, task, width)
CASES = {
    "endpoint-rnn": (kf.Architecture.rnn, endpoint_task(P=6, T=3, D=3, scale=1.0), 128),
    "sequential-rnn": (kf.Architecture.rnn, sequential_task(P=6, T=3, D=3), 64),
    "sequential-dnn": (kf.Architecture.dnn, sequential_task(P=6, T=3, D=3), 64),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_theory_matches_sampled_networks_at_more_sequences_than_inputs(case):
    make_arch, task, N = CASES[case]
    arch = make_arch(task.T)
    sol = kf.solve(arch, task, kappa=0.1)
    support = sol.problem.support
    assert sol.converged and support.rank < sol.problem.n
    samples = kf.sample(arch, task, N=N, **SAMPLING)
    cmp = kf.compare(sol, samples)
    tolerance = 3 * cmp.error_bar + 2.0 / N
    assert cmp.error < tolerance, cmp.table()
    assert cmp.prediction_error < tolerance, cmp.table()
    Q = support.basis
    on_support = Q @ (Q.T @ cmp.C_sampled @ Q) @ Q.T
    assert np.abs(cmp.C_sampled - on_support).max() < 1e-8 * np.abs(cmp.C_sampled).max()


ERF_CASES = {
    "endpoint-rnn": (kf.Architecture.rnn, endpoint_task(P=6, T=3, D=3, scale=1.0)),
    "sequential-dnn": (kf.Architecture.dnn, sequential_task(P=6, T=3, D=3)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", ERF_CASES)
def test_erf_particle_theory_matches_sampled_networks_at_more_sequences_than_inputs(case):
    """erf networks, P = 6 > D = 3: the particle solver on the support (exact in the mean-field
    limit) against width-128 erf networks. Tolerance as in test_agreement_nonlinear.py:
    ``3·sqrt(error_bar² + theory_error²) + 2/N`` (the theory's own Monte Carlo error added).
    Measured (kernel / prediction error, error bar, theory error, tolerance): endpoint RNN (the
    dominant branch is the symmetry-broken one, coherence 0.65) 0.025 / 0.011, 0.016, 0.010, 0.073;
    sequential DNN 0.017 / 0.003, 0.014, 0.006, 0.060. The endpoint DNN (0.025 / 0.007, tolerance
    0.082) and the sequential RNN (0.012 / 0.003, tolerance 0.053) passed and are left out for the
    suite's time budget."""
    make_arch, task = ERF_CASES[case]
    arch = make_arch(task.T)
    sol = kf.solve(arch, task, phi="erf", kappa=0.1, method="particles", num_particles=2048, mc_tol=0.02)
    assert sol.converged and sol.problem.support.rank < sol.problem.n
    cmp = kf.compare(sol, kf.sample(arch, task, N=128, phi="erf", **SAMPLING))
    theory_error = np.linalg.norm(sol.best.C_err) / np.linalg.norm(sol.C)
    tolerance = 3 * np.hypot(cmp.error_bar, theory_error) + 2.0 / cmp.N
    assert cmp.error < tolerance, cmp.table()
    assert cmp.prediction_error < tolerance, cmp.table()
