"""The lazy (NNGP) kernel for nonlinear phi (THEORY.md §4) against random finite networks drawn
from the prior, and for the DNN against the standard deep NNGP recursion."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernelfield as kf
from kernelfield.finite import networks
from kernelfield.theory.kernels import make_problem

T, P, D = 3, 3, 4
N, DRAWS = 2048, 12
PHIS = ("erf", "tanh", "relu")
PRIOR = kf.Prior(g=1.2, sigma_u=1.0, sigma_b=0.3)
TASK = kf.Task(np.random.default_rng(0).normal(size=(P, T, D)), np.ones((P, T)))  # inputs at all steps
ARCHS = {"rnn": kf.Architecture.rnn(T), "dnn": kf.Architecture.dnn(T)}


@pytest.fixture(scope="module", params=list(ARCHS))
def empirical(request):
    """Kernels C = phi(h)ᵀ phi(h) / N of DRAWS independent width-N networks from the prior, for all
    PHIS on the same weights: array (DRAWS, len(PHIS), n, n)."""
    arch = ARCHS[request.param]

    @jax.jit
    def draw(key):
        params = networks.scale(networks.init_standardised(key, arch, N, D), PRIOR, N, D)
        return jnp.stack([networks.empirical_kernel(networks.features(params, arch, TASK.inputs, phi)) for phi in PHIS])

    keys = jax.random.split(jax.random.PRNGKey(1), DRAWS)
    return request.param, np.stack([np.asarray(draw(k)) for k in keys])


def _tolerance(draws, C):
    """Per-entry tolerance. Statistical part: 5 standard errors of the mean over the DRAWS, plus one
    average standard error as a floor (an SE estimated from 12 draws is itself uncertain by ~20%).
    One draw fluctuates by O(max|C|/sqrt(N)) (measured up to 1.6 max|C|/sqrt(N) for erf/tanh and
    3.2 for relu), so the statistical part is ~5·1.6/sqrt(N·DRAWS) ≈ 0.05 max|C| at most. Bias
    part: the mean of a finite network differs from the N -> ∞ kernel by O(1/N) — for the RNN
    mostly from reusing W across steps; measured at N = 32 and 128 with 2·10⁴ draws:
    ≈ 0.5 max|C|/N (erf, tanh) and 1.1 max|C|/N (relu) for the RNN, ≤ 0.2 max|C|/N for the DNN —
    allowed for as 2 max|C|/N (1e-3 max|C| here)."""
    se = draws.std(axis=0, ddof=1) / np.sqrt(len(draws))
    return 5 * se + se.mean() + 2 * np.abs(C).max() / N


@pytest.mark.parametrize("phi", PHIS)
def test_prior_kernel_matches_finite_networks(empirical, phi):
    name, Cs = empirical
    arch = ARCHS[name]
    draws = Cs[:, PHIS.index(phi)]
    C = kf.prior_kernel(arch, TASK, PRIOR, phi=phi).C
    assert C.shape == (T * P, T * P)
    np.testing.assert_array_equal(C, C.T)
    assert np.linalg.eigvalsh(C)[0] > -1e-12
    tol = _tolerance(draws, C)
    mean = draws.mean(axis=0)
    ratio = np.abs(mean - C) / tol
    assert ratio.max() < 1, f"{name}/{phi}: error/tolerance up to {ratio.max():.3g}"  # measured <= 0.71
    # The test has power (measured ratios >= 8.8): the preactivation covariance K(C), and the
    # kernel of the other sharing pattern, are both rejected.
    K = np.asarray(make_problem(arch, TASK, PRIOR, kappa=1.0).K(C))
    other = kf.prior_kernel(ARCHS["dnn" if name == "rnn" else "rnn"], TASK, PRIOR, phi=phi).C
    assert (np.abs(mean - K) / tol).max() > 3
    assert (np.abs(mean - other) / tol).max() > 3


def test_dnn_erf_is_the_deep_nngp_recursion():
    """Standard deep NNGP recursion, written out: layer t has preactivation covariance
    K_t = g² C_{t-1} + σ_u² x(t)x(t)ᵀ/D + σ_b² (no C term at t = 0) and feature kernel
    C_t = (2/pi) arcsin(2 K_t / sqrt((1 + 2 diag K_t)(1 + 2 diag K_t)ᵀ)); untied layers are
    independent, so with odd erf every cross-layer block is 0."""
    prior = kf.Prior(g=1.5, sigma_u=0.8, sigma_b=0.4)
    X = TASK.inputs
    expected = np.zeros((T, P, T, P))
    C_prev = np.zeros((P, P))
    for t in range(T):
        K_t = prior.g**2 * C_prev + prior.sigma_u**2 * X[:, t] @ X[:, t].T / D + prior.sigma_b**2
        d = 1 + 2 * np.diag(K_t)
        C_prev = (2 / np.pi) * np.arcsin(2 * K_t / np.sqrt(np.outer(d, d)))
        expected[t, :, t, :] = C_prev
    C = kf.prior_kernel(kf.Architecture.dnn(T), TASK, prior, phi="erf").C
    np.testing.assert_allclose(C, expected.reshape(T * P, T * P), rtol=1e-13, atol=1e-15)


def test_rnn_relu_cross_time_structure():
    """The result is a fixed point: C equals the arc-cosine formula (written out with arccos) applied
    to K(C), cross-time blocks included. For the DNN, untied layers are independent, so the
    cross-layer blocks are products of means E[relu(h)] = sqrt(v / (2 pi))."""
    for name, arch in ARCHS.items():
        C = kf.prior_kernel(arch, TASK, PRIOR, phi="relu").C
        K = np.asarray(make_problem(arch, TASK, PRIOR, kappa=1.0).K(C))
        d = np.sqrt(np.diag(K))
        rho = np.clip(K / np.outer(d, d), -1, 1)
        theta = np.arccos(rho)
        by_hand = np.outer(d, d) / (2 * np.pi) * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
        np.testing.assert_allclose(C, by_hand, rtol=1e-7, atol=1e-12, err_msg=name)
        if name == "dnn":
            cross = np.outer(d, d) / (2 * np.pi)
            same = np.kron(np.eye(T), np.ones((P, P))) > 0
            np.testing.assert_allclose(C[~same], cross[~same], rtol=1e-12)
