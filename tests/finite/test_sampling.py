"""Finite-width ground truth: the network functions and the HMC sampler (THEORY.md §1, §2, §5)."""

import jax
import numpy as np
import pytest

from kernelfield.finite import networks
from kernelfield.nonlinearities import available
from kernelfield.observables import mean_coherence
from kernelfield.finite.sampling import Samples, sample
from kernelfield.spec import FAMILIES, Architecture, Prior, Task
from kernelfield.symmetry import align_to_first, parity_flip
from kernelfield.tasks import endpoint_patterns
from kernelfield.theory.lazy import prior_kernel
from kernelfield.theory.predict import Prediction

T, P, D = 3, 3, 4
N = 128
# Small runs: 4 chains x 200 samples. Every call below with the same (arch, N, sizes) reuses one
# compilation, which keeps the file fast.
RUN = dict(N=N, num_samples=200, num_warmup=150, num_chains=4, keep_weights=5, progress=False)


def _task(target: float) -> Task:
    rng = np.random.default_rng(1)
    y = np.full((P, T), np.nan)
    y[:, -1] = target
    return Task(rng.normal(size=(P, T, D)), y)


# Essentially the prior: targets 1e-6 and kappa = 1e3 make the likelihood term
# (N / 2 kappa) sum f^2 ~ 1e-3, so the sampled kernel must be the prior (lazy) kernel.
PRIOR_TASK = _task(1e-6)
PRIOR_KAPPA = 1e3


@pytest.fixture(scope="module")
def rnn_prior() -> Samples:
    return sample(Architecture.rnn(T), PRIOR_TASK, kappa=PRIOR_KAPPA, seed=0, **RUN)


@pytest.fixture(scope="module")
def dnn_prior() -> Samples:
    return sample(Architecture.dnn(T), PRIOR_TASK, kappa=PRIOR_KAPPA, seed=0, **RUN)


def test_shapes(rnn_prior, dnn_prior):
    n = T * P
    for s, groups in ((rnn_prior, 1), (dnn_prior, T)):
        assert s.C_chains.shape == (4, n, n)
        assert s.C_mean.shape == s.C_sem.shape == (n, n)
        assert s.f_mean.shape == s.f_var.shape == (P, T)
        assert np.all(s.C_sem > 0) and np.all(s.f_var > 0)
        assert s.step_size.shape == (4,)
        assert (s.N, s.num_samples, s.num_chains, s.num_warmup, s.keep_weights, s.phi) == (N, 200, 4, 150, 5, "linear")
        w = s.weights
        assert set(w) == set(FAMILIES)
        W_groups = groups if groups == 1 else T - 1  # W_groups[0] is ignored
        assert w["W"].shape == (4 * 5, W_groups, N, N)
        assert w["U"].shape == (4 * 5, groups, N, D)
        assert w["b"].shape == w["v"].shape == (4 * 5, groups, N)
        assert np.all(w["b"] == 0)  # default prior has sigma_b = 0
        pred = s.predict()
        assert isinstance(pred, Prediction) and pred.N == N
        np.testing.assert_array_equal(pred.mean, s.f_mean)
        np.testing.assert_array_equal(pred.var, s.f_var)


def test_weights_in_natural_units(rnn_prior):
    # Prior draws of W have entry variance g^2 / N = 1/128; 20 x 128^2 entries pin it to ~1%.
    assert np.var(rnn_prior.weights["W"]) == pytest.approx(1.0 / N, rel=0.05)
    assert np.var(rnn_prior.weights["U"]) == pytest.approx(1.0 / D, rel=0.1)


def test_sampler_health(rnn_prior, dnn_prior):
    for s in (rnn_prior, dnn_prior):
        assert 0.3 < s.acceptance_rate < 0.99
        assert s.num_divergent == 0
        assert s.ess > 100  # of 800 draws; the prior is easy, HMC mixes well
        assert s.seconds > 0


def test_deterministic_and_rnn_pattern_equivalent(rnn_prior):
    """Same seed -> identical results; the RNN written out as explicit group labels is the RNN."""
    explicit = Architecture(T, W_groups=[0] * T, U_groups=[0] * T, b_groups=[0] * T, v_groups=[0] * T)
    again = sample(explicit, PRIOR_TASK, kappa=PRIOR_KAPPA, seed=0, **RUN)
    np.testing.assert_array_equal(again.C_mean, rnn_prior.C_mean)
    np.testing.assert_array_equal(again.f_mean, rnn_prior.f_mean)
    np.testing.assert_array_equal(again.weights["W"], rnn_prior.weights["W"])


def test_different_seed_differs(rnn_prior):
    other = sample(Architecture.rnn(T), PRIOR_TASK, kappa=PRIOR_KAPPA, seed=1, **RUN)
    assert not np.allclose(other.C_mean, rnn_prior.C_mean)


@pytest.mark.parametrize("which", ["rnn", "dnn"])
def test_prior_kernel_matches_closed_form(which, rnn_prior, dnn_prior):
    """Linear network at (essentially) zero signal: sampled <Phi^T Phi / N> = prior kernel.

    Tolerance per entry: 5 standard errors of a Wishart average,
    sqrt((C_ii C_jj + C_ij^2) / (N * ess)) (Gaussian features at width N, ess effective draws),
    plus, for the RNN only, a finite-width bias allowance 3 max|C| / N: reusing one W at every
    step makes <C> pick up O(1/N) fourth-moment corrections of W (at most one per pair of
    steps sharing it, T(T-1)/2 = 3). The DNN's <C> is exact at any N (each W is used once).
    """
    s = rnn_prior if which == "rnn" else dnn_prior
    C0 = prior_kernel(s.arch, PRIOR_TASK).C
    d = np.diag(C0)
    sem = np.sqrt((np.outer(d, d) + C0**2) / (N * s.ess))
    bias = 3 * np.abs(C0).max() / N if which == "rnn" else 0.0
    np.testing.assert_array_less(np.abs(s.C_mean - C0), 5 * sem + bias)
    # The reported standard error is of the same size as the Wishart estimate.
    assert 0.3 < np.median(s.C_sem / sem) < 3


def test_predict_near_zero_in_prior(rnn_prior):
    # f = v.phi/N has prior variance sigma_v^2 C_aa / N ~ 1e-2; the posterior barely moves it.
    assert np.all(np.abs(rnn_prior.f_mean) < 5 * np.sqrt(rnn_prior.f_var / rnn_prior.ess) + 1e-3)
    expected = np.diag(prior_kernel(rnn_prior.arch, PRIOR_TASK).C).reshape(T, P).T / N
    np.testing.assert_allclose(rnn_prior.f_var, expected, rtol=0.3)  # ~3 sigma of a variance from ~250 ESS


def test_empirical_kernel_matches_numpy():
    rng = np.random.default_rng(2)
    phi_h = rng.normal(size=(T, P, 7))
    direct = np.zeros((T * P, T * P))
    for t in range(T):
        for a in range(P):
            for s in range(T):
                for b in range(P):
                    direct[t * P + a, s * P + b] = phi_h[t, a] @ phi_h[s, b] / 7
    np.testing.assert_allclose(networks.empirical_kernel(phi_h), direct, rtol=1e-13)


def test_network_matches_loop_for_any_sharing():
    arch = Architecture(4, W_groups=[7, 3, 3, 1], U_groups=[0, 1, 0, 1], b_groups=[2, 2, 5, 5], v_groups=[0, 0, 0, 1])
    n_, d_, p_ = 6, 3, 2
    z = networks.init_standardised(jax.random.PRNGKey(0), arch, n_, d_)
    assert {f: z[f].shape[0] for f in FAMILIES} == {"W": 2, "U": 2, "b": 2, "v": 2}
    prior = Prior(g=1.3, sigma_u=0.7, sigma_b=0.4, sigma_v=1.1)
    params = {f: np.asarray(x) for f, x in networks.scale(z, prior, n_, d_).items()}
    x = np.random.default_rng(3).normal(size=(p_, 4, d_))
    h = np.asarray(networks.preactivations(params, arch, x, "tanh"))
    f = np.asarray(networks.outputs(params, arch, x, "tanh"))
    index = {fam: {label: i for i, label in enumerate(sorted(set(getattr(arch, f"{fam}_groups")[fam == "W":])))}
             for fam in FAMILIES}
    for a in range(p_):
        for t in range(4):
            expect = params["U"][index["U"][arch.U_groups[t]]] @ x[a, t] + params["b"][index["b"][arch.b_groups[t]]]
            if t:
                expect += params["W"][index["W"][arch.W_groups[t]]] @ np.tanh(h[t - 1, a])
            np.testing.assert_allclose(h[t, a], expect, rtol=1e-12)
            v = params["v"][index["v"][arch.v_groups[t]]]
            np.testing.assert_allclose(f[a, t], v @ np.tanh(h[t, a]) / n_, rtol=1e-12)


@pytest.mark.parametrize("phi", available())
def test_log_posterior(phi):
    """Equals -|z|^2/2 - N/(2 kappa) sum_S (f - y)^2; relabelling groups changes nothing; the
    gradient is finite for every registered phi (NaN targets are skipped)."""
    rnn, relabelled = Architecture.rnn(T), Architecture(T, [9, 4, 4], [2] * T, [5] * T, [1] * T)
    z = networks.init_standardised(jax.random.PRNGKey(1), rnn, 8, D)
    task, prior, kappa = _task(0.5), Prior(sigma_b=0.3), 0.2
    f = np.asarray(networks.outputs(networks.scale(z, prior, 8, D), rnn, task.inputs, phi))
    sq = sum(np.sum(np.asarray(x) ** 2) for x in z.values())
    expect = -0.5 * sq - 8 / (2 * kappa) * np.sum((f[:, -1] - 0.5) ** 2)
    value_and_grad = jax.jit(jax.value_and_grad(networks.log_posterior), static_argnums=(1, 4, 5))
    for arch in (rnn, relabelled):
        value, grad = value_and_grad(z, arch, task.inputs, task.targets, prior, phi, kappa)
        assert float(value) == pytest.approx(expect, rel=1e-12)
        assert all(np.all(np.isfinite(g)) for g in grad.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(N=0), "N: must be an integer >= 1"),
        (dict(N=2.5), "N: must be an integer >= 1"),
        (dict(N=True), "N: must be an integer >= 1"),
        (dict(num_samples=1), "num_samples: must be an integer >= 2"),
        (dict(num_warmup=9), "num_warmup: must be an integer >= 10"),
        (dict(num_chains=0), "num_chains: must be an integer >= 1"),
        (dict(seed=-1), "seed: must be an integer >= 0"),
        (dict(num_integration_steps=0), "num_integration_steps: must be an integer >= 1"),
        (dict(thin=0), "thin: must be an integer >= 1"),
        (dict(keep_weights=-1), "keep_weights: must be an integer >= 0"),
        (dict(num_samples=10, keep_weights=11), "keep_weights: must be <= num_samples"),
        (dict(kappa=0.0), "kappa: must be finite and > 0"),
        (dict(kappa=float("inf")), "kappa: must be finite and > 0"),
        (dict(kappa="big"), "kappa: must be a real number"),
        (dict(phi="cubic"), "phi: unknown nonlinearity"),
        (dict(prior={"g": 1.0}), "prior: must be a kernelfield Prior"),
        (dict(task=np.zeros((P, T, D))), "task: must be a kernelfield Task"),
        (dict(arch=Architecture.rnn(T + 1)), "task.inputs: has T = 3 time steps"),
        (dict(arch="rnn"), "arch: must be a kernelfield Architecture"),
        (dict(progress="yes"), "progress: must be True, False, None or a callable"),
    ],
)
def test_validation(kwargs, match):
    args = dict(arch=Architecture.rnn(T), task=PRIOR_TASK) | kwargs
    with pytest.raises(ValueError, match=match):
        sample(**args)


def test_relu_samples_keep_each_chains_centred_kernel():
    """ReLU features have a positive mean over neurons, which the raw per-chain kernels count as
    correlation across time; the per-chain centred kernels (the error bar of the sampled order
    parameter) do not."""
    task = endpoint_patterns(P=2, T=3, D=2, target_scale=0.5, seed=0)
    s = sample(Architecture.dnn(3), task, N=32, phi="relu", num_samples=50, num_warmup=50, num_chains=3,
               keep_weights=0, progress=False)
    assert s.C_centred_chains.shape == s.C_chains.shape == (3, 6, 6)
    _, flipped = align_to_first(s.C_chains, 3, 2)
    aligned = np.where(flipped[:, None, None], parity_flip(s.C_centred_chains, 3, 2), s.C_centred_chains)
    np.testing.assert_allclose(aligned.mean(axis=0), s.C_centred, rtol=1e-12, atol=1e-15)
    for raw, centred in zip(s.C_chains, s.C_centred_chains):
        assert mean_coherence(raw, 3, 2) > 0.25 and abs(mean_coherence(centred, 3, 2)) < 0.1
