"""Validation of the specification objects: every bad input names its field."""

import numpy as np
import pytest

import kernelfield as kf
from conftest import endpoint_task


def test_presets_and_masks():
    T = 4
    rnn, dnn = kf.Architecture.rnn(T), kf.Architecture.dnn(T)
    assert np.all(rnn.mask("U") == 1) and np.all(rnn.mask("W")[1:, 1:] == 1)
    assert np.all(rnn.mask("W")[0] == 0) and np.all(rnn.mask("W")[:, 0] == 0)
    assert np.array_equal(dnn.mask("v"), np.eye(T))
    assert kf.Architecture(T, [0] * T, [0] * T, [0] * T, [0] * T) == rnn
    tied = kf.Architecture.tied_every(T, 2)
    assert tied.W_groups[1:] == (0, 0, 1)
    assert np.array_equal(kf.Architecture.tied_every(T, 1).mask("W"), dnn.mask("W"))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(W_groups=[0, 0]), "W_groups"),
        (dict(v_groups=[0.5, 0, 0]), "v_groups"),
        (dict(U_groups=[[0], [0], [0]]), "U_groups"),
    ],
)
def test_architecture_group_errors(kwargs, field):
    base = dict(W_groups=[0] * 3, U_groups=[0] * 3, b_groups=[0] * 3, v_groups=[0] * 3)
    base.update(kwargs)
    with pytest.raises(ValueError, match=field):
        kf.Architecture(3, **base)


def test_architecture_T_and_k_errors():
    with pytest.raises(ValueError, match="T"):
        kf.Architecture.rnn(0)
    for k in (0, True, 2.0, "2"):
        with pytest.raises(ValueError, match=r"^k: must be an integer >= 1, got "):
            kf.Architecture.tied_every(4, k)
    assert kf.Architecture.tied_every(4, np.int64(2)).name == "tied_every_2"


@pytest.mark.parametrize("field, value", [("g", 0.0), ("sigma_u", -1.0), ("sigma_v", 0.0), ("sigma_b", -0.1), ("g", np.nan), ("g", "x")])
def test_prior_errors(field, value):
    with pytest.raises(ValueError, match=field):
        kf.Prior(**{field: value})


def test_prior_defaults():
    # the documented defaults, and the prior the kernels use when none is given: for a linear RNN
    # with g = sigma_u = 1 and no bias, C_ts = sum_{k <= min(t, s)} x_{t-k} . x_{s-k} / D
    assert kf.Prior().to_dict() == {"g": 1.0, "sigma_u": 1.0, "sigma_b": 0.0, "sigma_v": 1.0}
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2, 3, 4)), np.zeros((2, 3))
    expected = np.zeros((3, 2, 3, 2))
    for t in range(3):
        for s in range(3):
            expected[t, :, s, :] = sum(X[:, t - k] @ X[:, s - k].T / 4 for k in range(min(t, s) + 1))
    C = kf.prior_kernel(kf.Architecture.rnn(3), kf.Task(X, Y))
    np.testing.assert_allclose(C, expected.reshape(6, 6), rtol=1e-12, atol=1e-12)


def test_task_errors():
    X = np.ones((2, 3, 4))
    Y = np.full((2, 3), np.nan)
    with pytest.raises(ValueError, match="nothing is supervised"):
        kf.Task(X, Y)
    Y[0, 2] = 1.0
    with pytest.raises(ValueError, match=r"inputs.*\(P, T, D\)"):
        kf.Task(X[0], Y)
    with pytest.raises(ValueError, match="targets.*shape"):
        kf.Task(X, Y[:, :2])
    bad = X.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="inputs.*NaN"):
        kf.Task(bad, Y)
    Yinf = Y.copy()
    Yinf[1, 1] = np.inf
    with pytest.raises(ValueError, match="targets.*inf"):
        kf.Task(X, Yinf)


def test_task_is_immutable_and_indices():
    task = endpoint_task(P=3, T=3)
    with pytest.raises(ValueError):
        task.inputs[0, 0, 0] = 1.0
    assert list(task.supervised) == [6, 7, 8]  # t = 2, a = 0..2 in time-major order
    bigger = task.with_sequences(np.zeros((2, 3, 4)))
    assert bigger.P == 5 and np.all(np.isnan(bigger.targets[3:]))
    with pytest.raises(ValueError, match="new_inputs"):
        task.with_sequences(np.zeros((2, 4, 4)))


def test_solver_input_errors(endpoint):
    rnn = kf.Architecture.rnn(3)
    with pytest.raises(ValueError, match="kappa"):
        kf.solve(rnn, endpoint, kappa=0.0)
    with pytest.raises(ValueError, match="kappa"):
        kf.solve(rnn, endpoint, kappa=-1)
    with pytest.raises(ValueError, match="phi.*allowed"):
        kf.solve(rnn, endpoint, phi="sigmoid")
    with pytest.raises(ValueError, match="T = 3"):
        kf.solve(kf.Architecture.rnn(4), endpoint)
    with pytest.raises(ValueError, match="init"):
        kf.solve(rnn, endpoint, init="random")
    with pytest.raises(ValueError, match="init.*positive definite"):
        kf.solve(rnn, endpoint, init=-np.eye(9))
    with pytest.raises(ValueError, match="tol"):
        kf.solve(rnn, endpoint, tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        kf.solve(rnn, endpoint, max_iter=0)
    with pytest.raises(ValueError, match="inner"):
        kf.solve(rnn, endpoint, inner=1.5)


def test_singular_input_kernel_is_accepted():
    # P = 3 sequences in D = 2 dimensions: x(0) x(0)ᵀ has rank 2 < 3. The exact linear solver and
    # the prior kernel take it, as do the particle solver and the Gaussian closure
    # (tests/theory/test_rank_deficient.py, tests/theory/test_closure_rank_deficient.py).
    task = endpoint_task(P=3, T=2, D=2)
    sol = kf.solve(kf.Architecture.rnn(2), task)
    assert sol.converged and not sol.problem.support.full
    assert np.all(np.isfinite(kf.prior_kernel(kf.Architecture.rnn(2), task).C))
    # a bias lifts the deficiency (rank 2 + 1)
    assert kf.solve(kf.Architecture.rnn(2), task, prior=kf.Prior(sigma_b=1.0)).problem.support.full
