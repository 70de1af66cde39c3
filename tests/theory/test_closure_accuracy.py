"""The Gaussian closure stays within its documented error of the exact (particle) solver
(issue 14 item 3; THEORY.md §3: max entrywise kernel difference 0.006 at y = 0.3 and 0.077 at
y = 1.0 for the erf RNN, T = 4, P = 2, endpoint targets ±y, kappa = 0.1).

Tolerance: the documented difference plus the particle solver's Monte Carlo error (4 times its
largest entrywise standard error ``C_err``) plus its O(n/M) finite-population bias (bounded by
n/M times the largest diagonal entry: 0.004·max C_ii at M = 2048). The closure is deterministic.
Measured with these settings (seed 0): 0.0036 at y = 0.3 (tolerance 0.0098) and 0.066 at y = 1.0
(``benchmarks/bench_closure_accuracy.py``; tolerance about 0.089), so the test fails if the
closure drifts above its documented error by more than the Monte Carlo scale. The closure's
action is a lower bound: ``S_G <= S + 3 S_err`` (measured S - S_G = 0.005 and 0.12).
Cost: about 35 s (closure and particle compilation included), 70 s on a loaded machine.
"""

import numpy as np
import pytest

import kernelfield as kf
from kernelfield.symmetry import parity_flip

T, P, M = 4, 2, 2048


@pytest.mark.slow
@pytest.mark.parametrize("scale, documented, branch", [(0.3, 0.006, "prior"), (1.0, 0.077, "broken")])
def test_closure_within_its_documented_error_of_the_particle_solver(scale, documented, branch):
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=scale, seed=0)
    arch = kf.Architecture.rnn(T)
    closure = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian")
    exact = kf.solve(arch, task, phi="erf", kappa=0.1, method="particles", num_particles=M, mc_tol=0.02)
    assert exact.converged and closure.converged
    assert closure.best.init == exact.best.init == branch
    C = min((exact.C, parity_flip(exact.C, T, P)), key=lambda X: np.linalg.norm(closure.C - X))
    difference = np.abs(closure.C - C).max()
    tolerance = documented + 4 * exact.best.C_err.max() + T * P / M * np.diag(exact.C).max()
    assert difference <= tolerance, (difference, tolerance)
    assert closure.S <= exact.S + 3 * exact.best.S_err
