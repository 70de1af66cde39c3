import numpy as np
import pytest

import kernelfield as kf
from kernelfield.tasks import TASKS, endpoint_patterns, integration


def test_endpoint_patterns_shapes_and_nan_pattern():
    task = endpoint_patterns(P=5, T=4, D=3, target_scale=2.0, seed=1)
    assert isinstance(task, kf.Task)
    assert task.inputs.shape == (5, 4, 3) and task.targets.shape == (5, 4)
    assert np.all(task.inputs[:, 1:] == 0) and np.all(task.inputs[:, 0] != 0)
    assert np.all(np.isnan(task.targets[:, :-1]))
    assert set(np.abs(task.targets[:, -1])) == {2.0}
    assert sorted(task.targets[:, -1]) == [-2.0, -2.0, 2.0, 2.0, 2.0]  # balanced signs
    assert list(task.supervised) == [3 * 5 + a for a in range(5)]


def test_endpoint_patterns_deterministic_by_seed():
    a, b, c = endpoint_patterns(4, 3, 4, seed=7), endpoint_patterns(4, 3, 4, seed=7), endpoint_patterns(4, 3, 4, seed=8)
    np.testing.assert_array_equal(a.inputs, b.inputs)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.array_equal(a.inputs, c.inputs)


def test_integration_targets_and_supervision():
    task = integration(P=3, T=5, D=2, supervise_every=2, seed=0)
    assert task.inputs.shape == (3, 5, 2) and np.all(task.inputs != 0)
    expected = np.cumsum(task.inputs[:, :, 0], axis=1) / np.sqrt(np.arange(1, 6))
    supervised = [1, 3]
    np.testing.assert_allclose(task.targets[:, supervised], expected[:, supervised])
    assert np.all(np.isnan(task.targets[:, [0, 2, 4]]))
    every = integration(P=2, T=3, supervise_every=1, seed=0)
    assert not np.any(np.isnan(every.targets))


def test_integration_deterministic_and_noise():
    a, b = integration(3, 4, 2, seed=3, noise=0.1), integration(3, 4, 2, seed=3, noise=0.1)
    np.testing.assert_array_equal(a.targets, b.targets)
    clean = integration(3, 4, 2, seed=3)
    np.testing.assert_array_equal(a.inputs, clean.inputs)
    assert not np.allclose(a.targets[:, 1], clean.targets[:, 1])


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: endpoint_patterns(0, 3, 3), "P"),
        (lambda: endpoint_patterns(3, 0, 3), "T"),
        (lambda: endpoint_patterns(3, 3, 2.5), "D"),
        (lambda: endpoint_patterns(3, 3, 3, target_scale=float("nan")), "target_scale"),
        (lambda: endpoint_patterns(3, 3, 3, seed=-1), "seed"),
        (lambda: integration(3, 3, supervise_every=0), "supervise_every"),
        (lambda: integration(3, 3, supervise_every=4), "supervise_every"),
        (lambda: integration(3, 3, noise=-1.0), "noise"),
    ],
)
def test_validation_names_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()


def test_registry():
    assert TASKS == {"endpoint_patterns": endpoint_patterns, "integration": integration}
