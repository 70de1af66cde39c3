"""The linear theory against posterior samples of real width-N networks (THEORY.md §5).

Expected discrepancy: O(1/N) finite-width bias plus Monte Carlo error, which ``compare``
reports as ``error_bar`` (the sampling standard error in the same norm). Tolerance for the
relative kernel error at width N: ``3·error_bar + 2/N`` (3 standard errors of the sampler plus
twice the leading 1/N bias; the measured errors use a fifth to a half of it).
Every HMC run (4 chains x 1000 samples after 500 warm-up steps) is made once per module and shared
by the tests that need it. Seeds are fixed, so every run is the same.
"""

import pytest

import kernelfield as kf
from conftest import endpoint_task, sequential_task

SAMPLING = dict(kappa=0.1, num_samples=1000, num_warmup=500, num_chains=4, seed=0, keep_weights=0, progress=False)

# case -> (architecture, task, the two widths of the width check)
CASES = {
    "endpoint-rnn": (kf.Architecture.rnn, lambda: endpoint_task(P=3, T=3, D=4, scale=1.0), (64, 256)),
    "endpoint-dnn": (kf.Architecture.dnn, lambda: endpoint_task(P=3, T=3, D=4, scale=1.0), (32, 128)),
    "sequential-rnn": (kf.Architecture.rnn, lambda: sequential_task(P=3, T=4, D=5), (32, 128)),
    "sequential-dnn": (kf.Architecture.dnn, lambda: sequential_task(P=3, T=4, D=5), (32, 128)),
}


def tolerance(cmp):
    return 3 * cmp.error_bar + 2.0 / cmp.N


def model(case):
    make_arch, make_task, _ = CASES[case]
    task = make_task()
    return make_arch(task.T), task


@pytest.fixture(scope="module")
def sampled():
    """``sampled(case, N)``: the HMC samples of that case at width N, sampled on first use."""
    runs = {}

    def get(case, N):
        if (case, N) not in runs:
            runs[case, N] = kf.sample(*model(case), N=N, **SAMPLING)
        return runs[case, N]

    return get


def test_rnn_endpoint_matches_width_64_network(sampled):
    arch, task = model("endpoint-rnn")
    sol = kf.solve(arch, task, kappa=0.1)
    cmp = kf.compare(sol, sampled("endpoint-rnn", 64))
    assert cmp.error < tolerance(cmp)
    assert cmp.prediction_error < tolerance(cmp)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["endpoint-rnn", "sequential-rnn"])
def test_error_shrinks_with_width(case, sampled):
    """Widths N and 4N: both within tolerance, and the error at 4N is below 60% of that at N
    (bias ~1/N and noise ~1/sqrt(N) predict 25–50%). Measured errors (N / 4N): sequential RNN
    5.6% / 1.3%, with error bars 1.8% / 1.0% (the DNN cases, endpoint 3.1% / 0.9% and
    sequential, passed too and were dropped to keep the suite within its time budget: the DNN is
    the RNN's code path with another mask, and its agreement is checked in
    test_agreement_sequential.py and test_agreement_nonlinear.py). The endpoint RNN uses
    N = 64 / 256: at N = 32 its samples do not yet settle on the symmetry-broken branch (kernel
    error 26% against it, 17% against the symmetric one)."""
    arch, task = model(case)
    sol = kf.solve(arch, task, kappa=0.1)
    errors = []
    for N in CASES[case][2]:
        cmp = kf.compare(sol, sampled(case, N))
        assert cmp.error < tolerance(cmp), cmp.table()
        assert cmp.prediction_error < tolerance(cmp)
        errors.append(cmp.error)
    assert errors[1] < 0.6 * errors[0], errors


@pytest.mark.slow
def test_sampled_rnn_picks_the_dominant_branch(sampled):
    """Endpoint task where the RNN has a symmetric and a time-correlated branch: the width-256
    network agrees with the branch of larger S, not with the other one."""
    arch, task = model("endpoint-rnn")
    sol = kf.solve(arch, task, kappa=0.1)
    assert len(sol.branches) == 2 and sol.branches[0].init == "broken"
    samples = sampled("endpoint-rnn", 256)
    near = kf.compare(sol, samples)
    symmetric = kf.solve(arch, task, kappa=0.1, init="prior")
    far = kf.compare(symmetric, samples)
    assert near.error < tolerance(near)
    assert far.error > 5 * tolerance(far)
    # the DNN has only the symmetric branch, and its samples agree with it
    assert abs(symmetric.S - kf.solve(kf.Architecture.dnn(3), task, kappa=0.1).S) < 1e-8
