"""The nonlinear theory (particle solver) against posterior samples of real width-N networks
(THEORY.md §5, issue: nonlinear networks).

Expected discrepancy: O(1/N) finite-width bias, the sampler's Monte Carlo error (``compare``'s
``error_bar``) and the solver's own Monte Carlo error (``||C_err||/||C||``). Tolerance for the
relative kernel error and the prediction error at width N:
``3·sqrt(error_bar² + theory_error²) + 2/N``, as for the linear theory plus the theory's error.
Seeds are fixed, so every run is the same.
"""

import numpy as np
import pytest

import kernelfield as kf
from conftest import endpoint_task, sequential_task

SOLVE = dict(kappa=0.1, num_particles=2048, mc_tol=0.02)
SAMPLING = dict(kappa=0.1, num_samples=400, num_warmup=300, num_chains=4, seed=0, keep_weights=0, progress=False)


def tolerance(cmp, sol):
    theory_error = np.linalg.norm(sol.best.C_err) / np.linalg.norm(sol.C)
    return 3 * np.hypot(cmp.error_bar, theory_error) + 2.0 / cmp.N


# Ordered by (phi, architecture): every case has the same sizes (P = 3, T = 3, D = 4, N = 128), so
# cases with the same phi share the particle flow's and its check's compilation, and cases with the
# same (phi, architecture) also the sampler's; neighbours tend to run in the same test worker.
# Weak signals (target 0.2: erf RNN, tanh DNN), the tanh RNN and the erf DNN on the endpoint task
# passed here too and were dropped to keep the suite under its time budget; the weak-signal limit is checked against the closed-form arcsine kernel in
# tests/theory/test_particles.py and against the Gaussian closure in tests/theory/test_closure.py.
CASES = [
    ("erf", "rnn", "endpoint", 1.0),
    ("erf", "dnn", "sequential", 1.0),
    ("tanh", "rnn", "sequential", 1.0),
    ("relu", "dnn", "endpoint", 0.5),
]


def make(arch_name, task_name, scale):
    task = endpoint_task(P=3, T=3, D=4, scale=scale) if task_name == "endpoint" else \
        sequential_task(P=3, T=3, D=4, scale=scale)
    return getattr(kf.Architecture, arch_name)(3), task


@pytest.mark.slow
@pytest.mark.parametrize("phi, arch_name, task_name, scale", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_theory_matches_width_128_networks(phi, arch_name, task_name, scale):
    arch, task = make(arch_name, task_name, scale)
    sol = kf.solve(arch, task, phi=phi, **SOLVE)
    assert sol.converged
    cmp = kf.compare(sol, kf.sample(arch, task, N=128, phi=phi, **SAMPLING))
    assert cmp.error < tolerance(cmp, sol), cmp.table()
    assert cmp.prediction_error < tolerance(cmp, sol)


@pytest.mark.slow
def test_gap_shrinks_from_width_128_to_512():
    """tanh, one layer (T = 1, where every sharing pattern is the same network), P = 6 patterns,
    strong targets: with 4000 samples per width the sampling error is small enough to see the
    finite-width gap (measured 1.6 % at N = 32, 0.56 % at 128, 0.26 % at 512, sampling error
    0.14 % / 0.08 %). Both widths within tolerance, and the gap at 512 below 60 % of that at 128
    (bias ~1/N and noise ~1/sqrt(N) predict 25–50 %). The theory uses 16384 particles, so its
    own Monte Carlo error (0.09 %) and 1/M bias stay below the gap at 512."""
    task = endpoint_task(P=6, T=1, D=7, scale=1.5)
    arch = kf.Architecture.dnn(1)
    sol = kf.solve(arch, task, phi="tanh", kappa=0.1, num_particles=16384, mc_tol=0.005)
    errors = {}
    for N in (128, 512):
        cmp = kf.compare(sol, kf.sample(arch, task, N=N, phi="tanh", **dict(SAMPLING, num_samples=1000)))
        assert cmp.error < tolerance(cmp, sol), cmp.table()
        errors[N] = cmp.error
    assert errors[512] < 0.6 * errors[128], errors
