"""Generalisation at unsupervised steps (THEORY.md §4, sequential tasks) and the study built on it."""

import numpy as np
import pytest

import kernelfield as kf
from kernelfield import schedules
from kernelfield.experiments.generalization import architecture, evaluate, learning_curves

T = 6
STUDY = dict(task="integration", T=T, P=[3], archs=["rnn", "dnn"], schedules=schedules.every(2),
             P_test=2, repeats=5, task_kwargs=dict(D=8, supervise_every=1), progress=False)


@pytest.fixture(scope="module")
def study():
    return learning_curves(**STUDY)


def test_rnn_generalises_to_unsupervised_steps(study):
    """Integration task, steps 1, 3, 5 supervised: at the unsupervised steps 0, 2, 4 of the training
    sequences the DNN's untied readout predicts exactly 0 (normalised error 1), the RNN's shared
    weights do better, and its trained (feature-learning) kernel beats its own lazy kernel.
    Averaged over 5 task draws (P = 3): measured 0.44 (theory) vs 0.63 (lazy) vs 1 (DNN)."""
    err = study.nmse_unsupervised.sel(P=3).isel(schedule=0)
    rnn, rnn_lazy = err.sel(arch="rnn", predictor="theory"), err.sel(arch="rnn", predictor="lazy")
    dnn = err.sel(arch="dnn", predictor="theory")
    np.testing.assert_allclose(dnn, 1.0, atol=1e-12)
    np.testing.assert_allclose(study.prediction_train.sel(arch="dnn", predictor="theory", P=3).isel(schedule=0)
                               .values[:, :, ::2], 0.0, atol=1e-12)
    assert np.all(rnn < dnn)  # every draw
    assert float(rnn.mean()) < float(rnn_lazy.mean()) - 0.1  # on average, by a clear margin
    assert float(rnn.mean()) < 0.6
    assert bool(study.theory_converged.all())


def test_heldout_rows_agree_with_kf_predict(study):
    """Held-out rows solved together with the training rows = kf.predict on the training solution;
    the training predictions equal those of the training rows alone (adding unsupervised rows does
    not change the theory)."""
    r, P = 1, 3
    X, Y = study.inputs.values[r], study.targets.values[r]
    mask = study.supervised.values[0, r, :P].astype(bool)
    train = kf.Task(X[:P], np.where(mask, Y[:P], np.nan))
    for arch in ("rnn",):
        sol = kf.solve(architecture(arch, T), train, kappa=0.1)
        sel = dict(arch=arch, predictor="theory", P=P, repeat=r)
        np.testing.assert_allclose(study.prediction_train.sel(sel).isel(schedule=0).values[:P], sol.predict().mean,
                                   atol=1e-5)
        held = kf.predict(sol, X[P:])  # the pool's last P_test = 2 rows
        np.testing.assert_allclose(study.prediction_heldout.sel(sel).isel(schedule=0).values, held.mean, atol=1e-5)


def test_dataset_layout_and_storage(study, tmp_path):
    assert list(study.predictor.values) == ["theory", "lazy"] and list(study.arch.values) == ["rnn", "dnn"]
    assert study.nmse_heldout.dims == ("predictor", "arch", "schedule", "P", "repeat")
    assert study.step_nmse_unsupervised.sizes["t"] == T
    assert "sign_error_heldout" not in study  # regression task
    assert float(study.supervised_fraction[0]) == 0.5
    np.testing.assert_array_equal(study.supervised.values[0, 0, 0], [0, 1, 0, 1, 0, 1])
    assert np.all(np.isnan(study.nmse_sem_unsupervised))  # exact predictors carry no sampling error
    path = kf.save(study, tmp_path / "g.nc")
    back = kf.load(path)
    assert back.attrs["kind"] == "generalization" and back.attrs["task"] == "integration"
    assert back.attrs["theory_method"] == "exact"  # the solver that ran (linear phi, method "auto")
    np.testing.assert_allclose(back.nmse_unsupervised.values, study.nmse_unsupervised.values)


def test_evaluate():
    truth = np.array([[1.0, -2.0, np.nan], [0.5, 1.0, 2.0]])
    mean = np.array([[0.0, -1.0, 5.0], [0.5, 2.0, 1.0]])
    mask = np.array([[True, True, True], [False, True, True]])
    out = evaluate(mean, truth, mask, sem=np.full((2, 3), 0.1), classification=True)
    r = np.array([-1.0, 1.0, 1.0, -1.0])  # entries (0,0), (0,1), (1,1), (1,2); (0,2) has no truth
    assert np.isclose(out["mse"], np.mean(r**2)) and np.isclose(out["nmse"], out["mse"] / np.mean([1, 4, 1, 4]))
    assert np.isclose(out["mse_sem"], np.sqrt(np.sum((2 * r * 0.1) ** 2)) / 4)
    assert np.isclose(out["sign_error"], 0.25)  # (0, 0): predicted 0 for +1
    np.testing.assert_allclose(out["step_mse"], [1.0, 1.0, 1.0])
    empty = evaluate(mean, truth, np.zeros((2, 3), bool))
    assert np.isnan(empty["nmse"]) and np.all(np.isnan(empty["step_mse"]))


def test_architecture_names():
    assert architecture("rnn", 4) == kf.Architecture.rnn(4) and architecture("dnn", 4) == kf.Architecture.dnn(4)
    assert architecture("tied_every_2", 4) == kf.Architecture.tied_every(4, 2)
    uv = architecture("share_Uv", 4)
    assert uv.U_groups == uv.v_groups == (0, 0, 0, 0) and uv.W_groups == uv.b_groups == (0, 1, 2, 3)
    assert architecture("share_WUbv", 3) == kf.Architecture.rnn(3)
    for bad in ("lstm", "share_X", "share_WW", "tied_every_0"):
        with pytest.raises(ValueError, match="^architectures:"):
            architecture(bad, 4)


def test_lazy_only_study_works_for_nonlinear_phi():
    """phi is a parameter throughout: the lazy kernel (and the networks) take any phi."""
    kw = dict(STUDY, P=[1, 2], repeats=1, archs=["rnn", "dnn", "share_Uv"])
    ds = learning_curves(**kw, phi="erf", methods=["lazy"])
    assert list(ds.predictor.values) == ["lazy"] and np.all(np.isfinite(ds.nmse_heldout))
    assert np.all(np.isnan(ds.prediction_train.sel(P=1).values[..., 1:, :]))  # padding beyond P
    assert np.all(np.isfinite(ds.nmse_unsupervised)) and np.all(ds.nmse_unsupervised.sel(arch="dnn") == 1.0)


def test_classification_task_reports_sign_errors():
    ds = learning_curves("digits", T=3, P=[4], archs=["rnn"], P_test=4, task_kwargs=dict(D=16), methods=["lazy"],
                         progress=False)
    assert "sign_error_heldout" in ds and 0.0 <= float(ds.sign_error_heldout.max()) <= 1.0
    assert np.all(np.isnan(ds.nmse_unsupervised))  # endpoint task: no unsupervised step has a target


def test_study_progress_goes_to_a_callback():
    """``progress`` takes a callable: one event before each (architecture, schedule, P, repeat)
    job, naming it, and a last one when all are done."""
    events = []
    learning_curves(**{**STUDY, "P": [1, 2], "repeats": 1, "methods": ["lazy"], "progress": events.append})
    assert [(e.task, e.completed, e.total) for e in events] == [("generalisation", i, 4) for i in range(5)]
    assert [e.info.get("job") for e in events[:2]] == ["rnn · every 2 · P=1 · repeat 0", "dnn · every 2 · P=1 · repeat 0"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(methods=["magic"]), ValueError, "^methods:"),
        (dict(P=[0]), ValueError, "^P:"),
        (dict(sampling={"P": [5]}, methods=["sampled"]), ValueError, "^sampled.P:"),
        (dict(schedules=schedules.first(1) & schedules.every(2)), ValueError, "^schedules:"),
        (dict(task="nope"), ValueError, "^task:"),
        (dict(archs=["rnn", "rnn"]), ValueError, "^archs:"),
    ],
)
def test_study_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        learning_curves(**{**STUDY, "repeats": 1, "methods": ["lazy"], **kwargs})


@pytest.mark.slow
def test_pool_and_heldout_batches_agree():
    """A fixed pool (your own arrays) is shuffled per repeat; solving held-out rows in batches of
    one gives the same predictions as solving them together."""
    pool = kf.tasks.integration(P=6, T=4, D=8, supervise_every=1, seed=3)
    kw = dict(task=pool, T=4, P=[3], archs=["rnn"], schedules=schedules.every(2), P_test=2, progress=False)
    joint = learning_curves(**kw)
    batched = learning_curves(**kw, heldout_batch=1)
    np.testing.assert_allclose(batched.prediction_heldout.values, joint.prediction_heldout.values, atol=1e-5)
    np.testing.assert_allclose(batched.prediction_train.values, joint.prediction_train.values, atol=1e-5)
    rows = [list(pool.inputs[:, 0, 0]).index(x) for x in joint.inputs.values[0, :, 0, 0]]
    assert sorted(rows) == sorted(set(rows)) and len(rows) == 5


def test_a_stopped_study_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A study stopped after its first job (an exception out of the progress callback, as a
    SIGINT would) and run again with the same checkpoint recomputes only what had not finished,
    and gives the numbers of an uninterrupted run; another study is refused that directory."""
    import kernelfield.experiments.generalization as generalization

    kwargs = {**STUDY, "repeats": 2}
    calls = []
    run = generalization._run
    monkeypatch.setattr(generalization, "_run", lambda method, *a: calls.append(method) or run(method, *a))

    def stop_after_first_job(event):
        if event.completed == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        learning_curves(**{**kwargs, "progress": stop_after_first_job}, checkpoint=tmp_path / "ckpt")
    assert calls == ["theory", "lazy"]  # the first job (rnn, repeat 0) finished, then the stop
    calls.clear()
    resumed = learning_curves(**kwargs, checkpoint=tmp_path / "ckpt")
    assert len(calls) == 2 * 2 * 2 - 2  # 2 repeats x 2 archs x 2 methods, less the one finished job
    fresh = learning_curves(**kwargs)
    for name in ("nmse_unsupervised", "nmse_heldout", "prediction_train", "theory_residual"):
        np.testing.assert_array_equal(resumed[name].values, fresh[name].values)
    with pytest.raises(ValueError, match="checkpoint: .* another study"):
        learning_curves(**{**kwargs, "P": [2]}, checkpoint=tmp_path / "ckpt")
