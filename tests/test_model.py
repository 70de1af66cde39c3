"""The model record and the result protocol shared by solve, sample, train and prior_kernel."""

import jax
import numpy as np
import pytest

import kernelfield as kf
from kernelfield.progress import ProgressEvent
from kernelfield.tasks import endpoint_patterns
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.predict import predictive

TASK = endpoint_patterns(P=2, T=3, D=3, target_scale=1.0, seed=0)
MODEL = kf.Model(kf.Architecture.rnn(3), TASK, kf.Prior(g=0.9), "linear", 0.2)


def test_model_validates_its_parts():
    with pytest.raises(ValueError, match="kappa: must be finite and > 0"):
        kf.Model(kf.Architecture.rnn(3), TASK, kappa=0.0)
    with pytest.raises(ValueError, match="kappa: must be finite"):
        kf.Model(kf.Architecture.rnn(3), TASK, kappa=float("inf"))
    with pytest.raises(ValueError, match="phi: unknown nonlinearity"):
        kf.Model(kf.Architecture.rnn(3), TASK, phi="softsign")
    with pytest.raises(ValueError, match="T = 3 time steps but the architecture has T = 4"):
        kf.Model(kf.Architecture.rnn(4), TASK)
    with pytest.raises(ValueError, match="task: must be a kernelfield Task"):
        kf.Model(kf.Architecture.rnn(3), TASK.inputs)
    unregistered = kf.Nonlinearity("unregistered_softsign", lambda h: h / (1 + abs(h)), odd=True)
    with pytest.raises(ValueError, match="phi: nonlinearity 'unregistered_softsign' is not registered"):
        kf.Model(kf.Architecture.rnn(3), TASK, phi=unregistered)
    assert kf.Model(kf.Architecture.rnn(3), TASK, phi=kf.get_nonlinearity("erf")).phi == "erf"  # stored by name


def test_models_are_equal_when_they_describe_the_same_posterior():
    copy = kf.Model(kf.Architecture.rnn(3), kf.Task(TASK.inputs.copy(), TASK.targets.copy()), kf.Prior(g=0.9),
                    "linear", 0.2)
    assert copy == MODEL and hash(copy) == hash(MODEL)
    other_targets = kf.Task(TASK.inputs, 2 * TASK.targets)
    assert kf.Model(MODEL.arch, other_targets, MODEL.prior, "linear", 0.2) != MODEL
    assert kf.Model(kf.Architecture.dnn(3), TASK, kf.Prior(g=0.9), "linear", 0.2) != MODEL


def test_solve_takes_a_model_or_its_parts_with_identical_results():
    by_model = kf.solve(MODEL)
    by_parts = kf.solve(MODEL.arch, TASK, prior=kf.Prior(g=0.9), phi="linear", kappa=0.2)
    np.testing.assert_array_equal(by_model.C, by_parts.C)
    assert by_model.model == by_parts.model == MODEL
    assert (by_parts.arch, by_parts.prior, by_parts.phi, by_parts.kappa) == (MODEL.arch, MODEL.prior, "linear", 0.2)
    assert by_parts.task is TASK
    with pytest.raises(ValueError, match="kappa: pass either a Model or"):
        kf.solve(MODEL, kappa=0.3)
    with pytest.raises(ValueError, match="task: required"):
        kf.solve(MODEL.arch)


def test_prior_kernel_is_a_result_with_the_nngp_predictive():
    lazy = kf.prior_kernel(MODEL)
    assert isinstance(lazy, kf.LazyKernel) and lazy.model == MODEL
    np.testing.assert_array_equal(np.asarray(lazy), lazy.C)  # usable where an array is expected
    np.testing.assert_array_equal(lazy.C_centred, lazy.C)  # odd phi: features have zero mean
    expected = predictive(make_problem(MODEL.arch, TASK, MODEL.prior, 0.2), lazy.C)
    np.testing.assert_array_equal(lazy.predict().mean, expected.mean)
    # the lazy kernel depends on neither the targets nor kappa
    np.testing.assert_array_equal(kf.prior_kernel(MODEL.arch, TASK, MODEL.prior, kappa=5.0).C, lazy.C)


def test_lazy_relu_centred_kernel_removes_the_closed_form_mean():
    lazy = kf.prior_kernel(MODEL.arch, TASK, MODEL.prior, phi="relu")
    K = np.asarray(make_problem(MODEL.arch, TASK, MODEL.prior, 0.1).K(lazy.C))
    mean = np.sqrt(np.diag(K) / (2 * np.pi))  # <relu(h)> for h ~ N(0, K_ii)
    np.testing.assert_allclose(lazy.C_centred, lazy.C - np.outer(mean, mean), rtol=1e-12, atol=1e-14)
    assert np.abs(lazy.C_centred - lazy.C).max() > 1e-2


def test_stability_takes_a_model_or_a_solution():
    task = endpoint_patterns(P=2, T=3, D=2, target_scale=1.0, seed=1)
    model = kf.Model(kf.Architecture.rnn(3), task)
    np.testing.assert_array_equal(kf.stability(model).eigenvalues, kf.stability(kf.solve(model)).eigenvalues)


def test_compare_names_what_differs_between_the_models():
    sol = kf.solve(MODEL)
    samples = kf.sample(kf.Model(MODEL.arch, TASK, MODEL.prior, "linear", 0.3), N=4, num_samples=2, num_warmup=10,
                        num_chains=1, keep_weights=0, progress=False)
    with pytest.raises(ValueError, match=r"same model as the solution; differs in kappa: 0.2 vs 0.3"):
        kf.compare(sol, samples)


def test_problem_is_a_pytree_that_passes_through_jit():
    prob = make_problem(MODEL.arch, TASK, MODEL.prior, MODEL.kappa)
    leaves, treedef = jax.tree_util.tree_flatten(prob)
    assert len(leaves) == 7  # MW, Mv, K_in, supervised, y, kappa, components; T and P are static
    C = kf.prior_kernel(MODEL).C
    np.testing.assert_allclose(jax.jit(lambda p, C: p.K(C))(prob, C), prob.K(C), rtol=1e-14, atol=1e-15)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, prob)
    assert doubled.T == prob.T and doubled.P == prob.P and doubled.kappa == 2 * prob.kappa


def _events(run):
    events = []
    result = run(events.append)
    return result, events


def test_sample_reports_progress_to_a_callable():
    samples, events = _events(lambda cb: kf.sample(MODEL, N=4, num_samples=45, num_warmup=10, num_chains=1,
                                                   keep_weights=0, progress=cb))
    assert all(isinstance(e, ProgressEvent) for e in events)
    warmup = [e for e in events if e.task.startswith("warm-up")]
    sampling = [e for e in events if e.task.startswith("sampling")]
    assert [(e.completed, e.total) for e in warmup] == [(1, 1)]
    done = [e.completed for e in sampling]
    assert len(done) > 1 and all(b > a for a, b in zip(done, done[1:]))
    assert done[-1] == 45 and {e.total for e in sampling} == {45}
    np.testing.assert_array_equal(samples.C, samples.C_mean)
    np.testing.assert_array_equal(samples.predict().mean, samples.f_mean)
    with pytest.raises(ValueError, match="progress: must be True, False, None or a callable"):
        kf.sample(MODEL, N=4, num_samples=4, num_warmup=10, num_chains=1, keep_weights=0, progress="yes")


def test_train_reports_progress_to_a_callable_and_shares_the_protocol():
    run, events = _events(lambda cb: kf.train(MODEL, N=4, num_networks=2, num_steps=120, progress=cb))
    done = [e.completed for e in events]
    assert done == sorted(set(done)) and done[-1] == 120 and {e.total for e in events} == {120}
    assert all("train MSE" in e.info for e in events)
    assert run.model == MODEL
    np.testing.assert_array_equal(run.C, run.C_mean)
    np.testing.assert_allclose(run.C_centred, run.C_mean, atol=0.5 * np.abs(run.C_mean).max())
    assert not np.array_equal(run.C_centred, run.C_mean)  # features minus their mean over neurons
    np.testing.assert_array_equal(run.predict().mean, run.f_mean)
