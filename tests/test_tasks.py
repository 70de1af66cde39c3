import socket

import numpy as np
import pytest

import kernelfield as kf
from kernelfield import tasks
from kernelfield.tasks import TASKS, LabelledTask, endpoint_patterns, integration


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
    assert TASKS["endpoint_patterns"] is endpoint_patterns and TASKS["integration"] is integration
    assert set(TASKS) == {"endpoint_patterns", "integration", "delayed_copy", "oscillator", "digits",
                          "sequential_digits", "sunspots", "file"}


# every generator: deterministic by seed, correct shapes, truth consistent with the targets
GENERATED = {
    "endpoint_patterns": dict(T=3, D=4),
    "integration": dict(T=5, D=3, supervise_every=1),
    "delayed_copy": dict(T=5, D=3, delay=2),
    "oscillator": dict(T=6, D=8, damping=0.1, cue=2),
    "digits": dict(T=3, D=8, classes=[3, 8, 5], positive=[3]),
    "sequential_digits": dict(T=4, D=8, label="every"),
    "sunspots": dict(T=5, D=6, horizon=2),
}


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generator_shapes_truth_and_seed(name):
    kw = GENERATED[name]
    a, b, c = (TASKS[name](P=6, seed=s, **kw) for s in (4, 4, 5))
    T, D = kw["T"], kw["D"]
    assert isinstance(a, LabelledTask) and isinstance(a, kf.Task) and a.name == name
    assert a.inputs.shape == (6, T, D) and a.targets.shape == a.truth.shape == (6, T)
    assert np.all(np.isfinite(a.inputs))
    supervised = ~np.isnan(a.targets)
    assert supervised.any() and not np.any(supervised & np.isnan(a.truth))
    for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.truth, b.truth)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.inputs, c.inputs)
    assert not a.truth.flags.writeable


def test_delayed_copy_and_oscillator_truth():
    task = tasks.delayed_copy(P=3, T=5, D=2, delay=2, seed=0)
    assert np.all(np.isnan(task.truth[:, :2]))
    np.testing.assert_array_equal(task.truth[:, 2:], task.inputs[:, :3, 0])
    osc = tasks.oscillator(P=2, T=6, D=4, frequency=0.5, frequency_spread=0.0, cue=1, input_noise=0.0, seed=0)
    assert np.all(osc.inputs[:, 1:] == 0)
    # the embedding at t = 0 holds s(0), s(-1), ...; the truth continues the same sine: s(t + 1)
    s = np.concatenate([osc.inputs[:, 0, ::-1], osc.truth], axis=1)  # s(-3..0), s(1..6)
    # a pure sine obeys s(t+1) = 2 cos(w) s(t) - s(t-1)
    np.testing.assert_allclose(s[:, 2:], 2 * np.cos(0.5) * s[:, 1:-1] - s[:, :-2], atol=1e-12)


def test_digits_classes_balance_and_projection():
    task = tasks.digits(P=8, T=2, D=12, classes=[0, 1, 2, 3], positive=[0, 2], seed=0)
    assert sorted(task.targets[:, 1]) == [-1.0] * 4 + [1.0] * 4 and task.classification
    assert np.all(task.inputs[:, 1] == 0)
    assert 0.3 < np.mean(task.inputs[:, 0] ** 2) < 3.0  # unit mean square up to projection noise
    with pytest.raises(ValueError, match="^classes:"):
        tasks.digits(P=2, T=2, classes=[1])
    with pytest.raises(ValueError, match="^positive:"):
        tasks.digits(P=2, T=2, classes=[1, 2], positive=[1, 2])


def test_sequential_digits_rows_and_labels():
    end = tasks.sequential_digits(P=4, T=8, D=8, seed=1)
    assert np.all(np.isnan(end.targets[:, :-1])) and set(np.abs(end.targets[:, -1])) == {1.0}
    every = tasks.sequential_digits(P=4, T=8, D=8, label="every", seed=1)
    np.testing.assert_array_equal(every.targets[:, -1], end.targets[:, -1])
    assert np.all(every.targets == every.targets[:, -1:])
    with pytest.raises(ValueError, match="^T:"):
        tasks.sequential_digits(P=2, T=9)


def test_sunspots_windows_forecast_the_series():
    years, activity = tasks.load_sunspots()
    assert years[0] == 1700 and len(activity) == 309
    task = tasks.sunspots(P=5, T=4, D=3, horizon=1, seed=2)
    # the target at t is the newest input value one step later
    np.testing.assert_allclose(task.truth[:, :-1], task.inputs[:, 1:, 0])
    np.testing.assert_allclose(task.inputs[:, 1:, 1], task.inputs[:, :-1, 0])  # delay embedding
    with pytest.raises(ValueError, match="^P:"):
        tasks.sunspots(P=400, T=4)


def test_real_data_loaders_need_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    tasks.load_digits.cache_clear()
    tasks.load_sunspots.cache_clear()
    images, labels = tasks.load_digits()
    assert images.shape == (1797, 8, 8) and set(labels) == set(range(10))
    years, activity = tasks.load_sunspots()
    assert activity.shape == (309,) and np.all(activity >= 0)
    assert tasks.sequential_digits(P=2, T=8, seed=0).P == 2


def test_labelled_task_rows_and_validation():
    task = integration(P=4, T=3, D=4, supervise_every=1, seed=0)
    sub = task.rows([2, 0])
    np.testing.assert_array_equal(sub.truth, task.truth[[2, 0]])
    assert isinstance(task.with_sequences(np.zeros((1, 3, 4))), kf.Task)
    with pytest.raises(ValueError, match="^truth:"):
        LabelledTask(task.inputs, task.targets, truth=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="^targets:"):
        LabelledTask(task.inputs, task.targets, truth=np.full((4, 3), np.nan))


def test_from_arrays_and_file(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 3, 2)), rng.normal(size=(5, 3))
    own = tasks.from_arrays(X, Y)
    np.testing.assert_array_equal(own.targets, Y)
    np.savez(tmp_path / "d.npz", inputs=X, truth=Y)
    loaded = TASKS["file"](P=3, T=3, path=str(tmp_path / "d.npz"))
    np.testing.assert_array_equal(loaded.inputs, X[:3])
    shuffled = TASKS["file"](P=3, T=3, path=str(tmp_path / "d.npz"), shuffle=True, seed=1)
    assert shuffled.P == 3
    with pytest.raises(ValueError, match="^T:"):
        TASKS["file"](P=3, T=4, path=str(tmp_path / "d.npz"))
    with pytest.raises(ValueError, match="^path:"):
        TASKS["file"](P=3, T=3, path=str(tmp_path / "missing.npz"))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: tasks.delayed_copy(3, 3, delay=3), "delay"),
        (lambda: tasks.oscillator(3, 3, frequency=0.0), "frequency"),
        (lambda: tasks.oscillator(3, 3, cue=4), "cue"),
        (lambda: tasks.oscillator(3, 3, input_noise=-1), "input_noise"),
        (lambda: tasks.sequential_digits(3, 4, label="middle"), "label"),
        (lambda: tasks.sunspots(3, 4, horizon=0), "horizon"),
        (lambda: tasks.digits(0, 3), "P"),
    ],
)
def test_new_generators_validate(call, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()
