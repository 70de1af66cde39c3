"""Langevin training (kernelfield.finite.training): the optimiser is the unadjusted Langevin algorithm,
and the trainer's bookkeeping (shapes, seeds, validation)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import kernelfield as kf
from conftest import TRAIN_RUN, train_run_model
from kernelfield.finite.training import langevin_optimizer


def test_optimizer_samples_the_gaussian_posterior():
    """On E(z) = λ z²/2 with weight decay 1 the stationary law is N(0, 1/c), c = 1 + λ, and ULA
    with step η inflates it to 1/(c (1 - ηc/2)). 4000 chains × 400 steps after burn-in; the
    variance estimate has a relative standard error of about 1%."""
    lam, eta = 3.0, 0.05
    c = 1.0 + lam
    opt = langevin_optimizer(eta, jax.random.PRNGKey(1))

    @jax.jit
    def run(z):
        state = opt.init(z)

        def step(carry, _):
            z, state = carry
            updates, state = opt.update({"z": lam * z["z"]}, state, z)
            z = optax.apply_updates(z, updates)
            return (z, state), z["z"]

        _, trace = jax.lax.scan(step, (z, state), None, length=600)
        return trace[200:]

    trace = np.asarray(run({"z": jnp.zeros(4000)}))
    expected = 1.0 / (c * (1.0 - eta * c / 2.0))
    assert abs(trace.var() / expected - 1.0) < 0.04
    assert abs(trace.mean()) < 0.02


def test_train_shapes_seed_and_diagnostics(trained_rnn):
    a, b = trained_rnn, kf.train(*train_run_model(), **TRAIN_RUN)
    np.testing.assert_array_equal(a.f_mean, b.f_mean)
    assert a.f_networks.shape == (3, 2, 3) and a.f_mean.shape == a.f_sem.shape == a.f_var.shape == (2, 3)
    assert a.C_networks.shape == (3, 6, 6) and a.C_mean.shape == (6, 6)
    assert a.params["W"].shape == (3, 1, 16, 16)
    assert a.num_records == 40 and a.loss.shape == (len(a.step), 3)
    assert a.lambda_max > 0 and np.isclose(a.step_size, 0.2 / (1 + a.lambda_max))
    assert np.all(np.isfinite(a.f_mean)) and a.predict().mean is a.f_mean


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(N=0), "N"),
        (dict(num_networks=0), "num_networks"),
        (dict(burn_in=1.5), "burn_in"),
        (dict(num_steps=10, burn_in=10), "burn_in"),
        (dict(step_size="fast"), "step_size"),
        (dict(step_size=-1.0), "step_size"),
        (dict(kappa=0.0), "kappa"),
        (dict(safety=3.0), "safety"),
    ],
)
def test_train_validation(kwargs, name):
    task = kf.tasks.integration(P=2, T=3, D=3, seed=0)
    with pytest.raises(ValueError, match=rf"^{name}:"):
        kf.train(kf.Architecture.rnn(3), task, **{"progress": False, **kwargs})


def test_divergence_is_reported():
    task = kf.tasks.integration(P=2, T=3, D=3, seed=0)
    with pytest.raises(FloatingPointError, match="^step_size:"):
        kf.train(kf.Architecture.rnn(3), task, N=8, num_networks=1, num_steps=200, step_size=1.9, progress=False)
