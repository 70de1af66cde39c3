"""Sweeps (kernelfield.sweep), their store and report, and the sweep/report commands.

Fast tests compute in this process (``workers=0``) on T = P = 3 linear problems; the process
pool, SIGTERM/resume and Dask tests start worker processes (import + JIT compilation, several
seconds each) and are marked slow.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from typer.testing import CliRunner

import kernelfield as kf
from figure_checks import assert_png
from kernelfield import storage
from kernelfield.cli import app
from kernelfield.config import ConfigError
from kernelfield.report import write_report
from kernelfield.sweep import COMPUTATIONS, SweepInterrupted, parse_config, register_computation

runner = CliRunner()
SRC = str(Path(kf.__file__).resolve().parents[1])

BASE = {
    "architecture": {"kind": "rnn", "T": 3},
    "task": {"generator": "endpoint_patterns", "P": 3, "D": 3, "seed": 0},
    "theory": {"kappa": 0.2},
}


def endpoint_sweep(**extra):
    data = {"compute": ["solve", "lazy", "coherence"], "base": BASE,
            "axes": {"architecture": [{"kind": "rnn"}, {"kind": "dnn"}], "task.target_scale": [0.5, 2.0]}}
    data.update(extra)
    return parse_config(data, name="endpoint")


@pytest.fixture(scope="module")
def endpoint_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("sweep") / "store"
    result = kf.sweep.run(endpoint_sweep(), store, workers=0, progress=False)
    assert (result.total, result.computed, result.failed) == (4, 4, 0)
    return store


def test_grid_expansion_labels_and_keys():
    sweep = parse_config({
        "compute": ["solve"], "base": BASE,
        "axes": {"architecture": [{"kind": "rnn"}, {"kind": "tied_every", "k": 2}, {"kind": "dnn", "label": "deep"}],
                 "task.target_scale": {"start": 0.0, "stop": 1.0, "num": 3},
                 "task.seed": [0, 1], "sampling.seed": {"start": 1, "stop": 4, "num": 4}},
    })
    assert [a.name for a in sweep.axes] == ["architecture", "target_scale", "task_seed", "sampling_seed"]
    assert sweep.shape == (3, 3, 2, 4) and len(sweep.points) == 72
    assert sweep.axes[0].labels == ("rnn", "tied_every_2", "deep")
    assert sweep.axes[1].labels == (0.0, 0.5, 1.0) and sweep.axes[3].labels == (1, 2, 3, 4)
    assert len({p.key for p in sweep.points}) == 72
    point = sweep.points[-1]
    assert point.coords == {"architecture": "deep", "target_scale": 1.0, "task_seed": 1, "sampling_seed": 4}
    assert point.config["architecture"]["kind"] == "dnn" and point.config["sampling"]["seed"] == 4
    # keys depend on content only: writing out a default does not change them, a real change does
    explicit = parse_config({"compute": ["solve"], "base": {**BASE, "prior": {"g": 1.0}}})
    assert explicit.points[0].key == parse_config({"compute": ["solve"], "base": BASE}).points[0].key
    assert parse_config({"compute": ["solve", "lazy"], "base": BASE}).points[0].key != explicit.points[0].key


@pytest.mark.parametrize("data, expected", [
    ({"compute": ["solve"], "base": BASE, "axis": {}}, "axis: unknown key"),
    ({"compute": ["solve", "fit"], "base": BASE}, "compute: unknown computation 'fit'; allowed: solve"),
    ({"compute": [], "base": BASE}, "compute:"),
    ({"compute": ["compare", "solve"], "base": BASE}, "compute: 'compare' needs 'solve' and 'sample'"),
    ({"compute": ["coherence"], "base": BASE}, "'coherence' needs at least one of 'solve', 'lazy', 'sample'"),
    ({"compute": ["solve"], "base": {**BASE, "training": {}}}, "base.training: unknown section"),
    ({"compute": ["solve"], "base": {**BASE, "theory": {"kappa": -1}}}, "base.theory.kappa: Input should be greater than 0"),
    ({"compute": ["solve"], "base": BASE, "axes": {"prior.gain": [1, 2]}}, "axes.prior.gain: unknown field of [prior]; allowed: g,"),
    ({"compute": ["solve"], "base": BASE, "axes": {"model.g": [1]}}, "axes.model.g: unknown field"),
    ({"compute": ["solve"], "base": BASE, "axes": {"prior.g": []}}, "axes.prior.g: needs at least one value"),
    ({"compute": ["solve"], "base": BASE, "axes": {"prior.g": [1.0, 1.0]}}, "axes.prior.g: value 1.0 given more than once"),
    ({"compute": ["solve"], "base": BASE, "axes": {"prior.g": {"start": 1, "stop": 2}}}, "axes.prior.g.num: required"),
    ({"compute": ["solve"], "base": BASE, "axes": {"prior.g": {"start": 0, "stop": 2, "num": 3, "spacing": "log"}}},
     "axes.prior.g.spacing: 'log' needs start > 0"),
    ({"compute": ["solve"], "base": BASE, "axes": {"task.target_scale": [1.0, -1.0]}},
     "axes.task.target_scale: must be finite and >= 0, got -1.0 (at axis value -1.0)"),
    ({"compute": ["solve"], "base": BASE, "axes": {"architecture": [{"kind": "tied_every"}]}},
     "axes.architecture.k: required when kind = 'tied_every'"),
    ({"compute": ["solve"], "base": BASE, "axes": {"architecture": ["rnn"]}}, "axes.architecture: a whole-section axis takes a list of tables"),
    ({"compute": ["solve"], "base": BASE, "axes": {"architecture": [{"kind": "custom", **{f"{f}_groups": [0, 0, 0] for f in "WUbv"}},
                                                                      {"kind": "custom", **{f"{f}_groups": [0, 1, 2] for f in "WUbv"}}]}},
     "axes.architecture: two values have the label 'custom'"),
    ({"compute": ["solve", "predictive_error"], "base": BASE}, "options.predictive_error.truth: required but missing"),
    ({"compute": ["solve", "predictive_error"], "base": BASE, "options": {"predictive_error": {"truth": {"target_scale": 2.0}}}},
     "options.predictive_error.truth: must give a target at every unsupervised step"),
    ({"compute": ["solve"], "base": BASE, "options": {"predictive_error": {"truth": {}}}}, "options.predictive_error: not a computation"),
])
def test_bad_configs_name_the_field(data, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: invalid sweep configuration") and expected in message, message


def test_base_error_in_some_points_names_them():
    data = {"compute": ["solve"], "base": {**BASE, "task": {"generator": "integration", "P": 2, "D": 3,
                                                              "supervise_every": 3}},
            "axes": {"architecture.T": [2, 3]}}
    with pytest.raises(ConfigError, match=r"base.task.supervise_every: must be <= T = 2.*\(at point T=2\)"):
        parse_config(data)


def test_loaded_dataset_matches_direct_computation(endpoint_store):
    ds = kf.sweep.load(endpoint_store)
    assert ds["status"].dims == ("architecture", "target_scale")
    assert list(ds["architecture"].values) == ["rnn", "dnn"] and list(ds["target_scale"].values) == [0.5, 2.0]
    assert (ds["status"].values == "ok").all()
    assert ds["C_theory"].dims == ("architecture", "target_scale", "t", "a", "t2", "a2")
    for arch in (kf.Architecture.rnn(3), kf.Architecture.dnn(3)):
        for scale in (0.5, 2.0):
            task = kf.tasks.endpoint_patterns(P=3, T=3, D=3, target_scale=scale, seed=0)
            sol = kf.solve(arch, task, kappa=0.2)
            point = ds.sel(architecture=arch.name, target_scale=scale)
            # same code, same inputs, same process: identical up to rounding
            np.testing.assert_allclose(storage.kernel_matrix(point["C_theory"]), sol.C, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(point["coherence_theory"], kf.temporal_coherence(sol), atol=1e-12)
            np.testing.assert_allclose(storage.kernel_matrix(point["C_lazy"]), kf.prior_kernel(arch, task), atol=1e-14)
            assert float(point["S"]) == pytest.approx(sol.S, abs=1e-12)
    assert float(ds["coherence_theory"].sel(architecture="rnn", target_scale=2.0)) > 0.3  # RNN above transition
    assert float(abs(ds["coherence_theory"].sel(architecture="dnn")).max()) < 1e-6        # the DNN never is


def test_point_files_carry_provenance(endpoint_store):
    index = json.loads((endpoint_store / "index.json").read_text())
    assert index["compute"] == ["solve", "lazy", "coherence"] and len(index["points"]) == 4
    ds = storage.load(endpoint_store / "points" / f"{index['points'][0]['key']}.nc")
    attrs = ds.attrs
    assert attrs["kernelfield_version"] == kf.__version__ and attrs["sweep_config_hash"] == index["config_hash"]
    assert attrs["point_key"] == index["points"][0]["key"] and attrs["task_seed"] == 0 and attrs["sampling_seed"] == 0
    assert json.loads(attrs["config"])["architecture"]["kind"] == "rnn"
    assert attrs["seconds"] >= attrs["seconds_solve"] >= 0 and attrs["started"] <= attrs["finished"]
    for diagnostic in ("S", "residual", "converged", "iterations", "n_branches"):
        assert diagnostic in ds
    assert not list((endpoint_store / "points").glob(".*.tmp"))


def test_rerun_computes_only_missing_points(endpoint_store, tmp_path):
    again = kf.sweep.run(endpoint_sweep(), endpoint_store, workers=0, progress=False)
    assert (again.reused, again.computed) == (4, 0)
    # one more axis value: only the new points are computed, the old ones are reused
    store = tmp_path / "copy"
    for path in [endpoint_store / "index.json", *sorted((endpoint_store / "points").iterdir())]:
        (store / path.relative_to(endpoint_store)).parent.mkdir(parents=True, exist_ok=True)
        (store / path.relative_to(endpoint_store)).write_bytes(path.read_bytes())
    bigger = endpoint_sweep(axes={"architecture": [{"kind": "rnn"}, {"kind": "dnn"}], "task.target_scale": [0.5, 1.0, 2.0]})
    result = kf.sweep.run(bigger, store, workers=0, progress=False)
    assert (result.total, result.reused, result.computed) == (6, 4, 2)
    assert kf.sweep.load(store)["coherence_theory"].shape == (2, 3)


@pytest.fixture
def flaky():
    """A computation that raises at target_scale 2.0 while ``flaky.fail`` is true."""

    class Switch:
        fail = True

    @register_computation("flaky_test", requires=("solve",))
    def flaky_test(point, options):
        """Test computation."""
        if Switch.fail and point.task.targets[0, -1] ** 2 == 4.0:
            raise RuntimeError("flaky point")
        return {"flaky_S": point.results["solve"].S}

    yield Switch
    COMPUTATIONS.pop("flaky_test")


def test_failing_point_is_recorded_and_retried(flaky, tmp_path):
    sweep = endpoint_sweep(compute=["solve", "flaky_test"], axes={"task.target_scale": [0.5, 2.0]})
    first = kf.sweep.run(sweep, tmp_path, workers=0, progress=False)
    assert (first.computed, first.failed) == (1, 1)
    (key, error), = first.failures.items()
    assert error == "RuntimeError: flaky point"
    record = json.loads((tmp_path / "failed" / f"{key}.json").read_text())
    assert record["attempts"] == 1 and "raise RuntimeError" in record["traceback"]
    assert record["coords"] == {"target_scale": 2.0}
    ds = kf.sweep.load(tmp_path)
    assert list(ds["status"].values) == ["ok", "failed"] and np.isnan(ds["flaky_S"].values[1])
    assert ds["error"].values[1] == "RuntimeError: flaky point"

    second = kf.sweep.run(sweep, tmp_path, workers=0, progress=False)  # failures are not retried by default
    assert (second.computed, second.failed, second.skipped_failed) == (0, 0, 1)
    third = kf.sweep.run(sweep, tmp_path, workers=0, progress=False, retry_failed=True)
    assert (third.failed, json.loads((tmp_path / "failed" / f"{key}.json").read_text())["attempts"]) == (1, 2)
    flaky.fail = False
    fourth = kf.sweep.run(sweep, tmp_path, workers=0, progress=False, retry_failed=True)
    assert (fourth.computed, fourth.failed, fourth.reused) == (1, 0, 1)
    assert not (tmp_path / "failed" / f"{key}.json").exists()
    assert list(kf.sweep.load(tmp_path)["status"].values) == ["ok", "ok"]


def test_predictive_error_at_unsupervised_steps(tmp_path):
    task_args = {"generator": "integration", "P": 3, "D": 3, "supervise_every": 2, "seed": 1}
    sweep = parse_config({"compute": ["solve", "lazy", "predictive_error"],
                          "base": {**BASE, "task": task_args},
                          "axes": {"architecture": [{"kind": "rnn"}, {"kind": "dnn"}]},
                          "options": {"predictive_error": {"truth": {"supervise_every": 1}}}})
    kf.sweep.run(sweep, tmp_path, workers=0, progress=False)
    ds = kf.sweep.load(tmp_path)
    task = kf.tasks.integration(P=3, T=3, D=3, supervise_every=2, seed=1)
    truth = kf.tasks.integration(P=3, T=3, D=3, supervise_every=1, seed=1).targets
    unsupervised = np.isnan(task.targets)
    sol = kf.solve(kf.Architecture.rnn(3), task, kappa=0.2)
    expected = np.mean((sol.predict().mean[unsupervised] - truth[unsupervised]) ** 2)
    assert float(ds["pred_error_theory"].sel(architecture="rnn")) == pytest.approx(expected, rel=1e-10)
    assert set(ds.data_vars) >= {"pred_error_lazy", "prediction_theory", "prediction_lazy"}


def test_store_that_is_not_a_sweep_store_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="store: .* is not empty and not a kernelfield sweep store"):
        kf.sweep.run(endpoint_sweep(), tmp_path, workers=0, progress=False)
    with pytest.raises(ValueError, match="store: .* is not a kernelfield sweep store"):
        kf.sweep.load(tmp_path)
    with pytest.raises(ValueError, match="workers: must be an integer >= 0"):
        kf.sweep.run(endpoint_sweep(), tmp_path / "new", workers=-1)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, by design
def test_sigterm_whose_exception_python_swallows_still_stops_the_sweep(tmp_path):
    """A SIGTERM whose handler runs inside a weakref callback: Python prints the handler's
    exception and drops it ("Exception ignored"). Seen once in the subprocess SIGTERM test: the
    sweep then ran to the end and exited 0. The sweep must still stop after the point in hand,
    with that point stored and the rest left for a resume."""
    import weakref

    sent = []

    def signal_after_first_point(event):  # called after each point is stored
        if event.completed == 1 and not sent:
            sent.append(True)

            class Target:
                pass

            def callback(_):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100_000):  # the handler runs at a bytecode boundary in here
                    pass

            target = Target()
            ref = weakref.ref(target, callback)  # noqa: F841  (kept alive until target dies)
            del target

    with pytest.raises(SweepInterrupted) as stopped:
        kf.sweep.run(endpoint_sweep(), tmp_path, workers=0, progress=signal_after_first_point)
    assert (stopped.value.signum, stopped.value.finished, stopped.value.total) == (signal.SIGTERM, 1, 4)
    assert len(list((tmp_path / "points").glob("*.nc"))) == 1


def test_interrupted_sweep_counts_finished_points_in_the_store(tmp_path):
    """The signal can land after a point's file is written and before the loop counts it (seen in
    CI: 2 files, "1 of 12 points are finished"), so the count comes from the store: here it
    includes a point from an earlier run, which this run never counted."""
    kf.sweep.run(endpoint_sweep(axes={"architecture": [{"kind": "rnn"}], "task.target_scale": [0.5]}), tmp_path,
                 workers=0, progress=False)

    def interrupt_after_first_point(event):  # called after each point is stored
        if event.completed == 1:
            raise SweepInterrupted(signal.SIGTERM)

    with pytest.raises(SweepInterrupted) as stopped:
        kf.sweep.run(endpoint_sweep(), tmp_path, workers=0, progress=interrupt_after_first_point)
    assert (stopped.value.finished, stopped.value.total) == (2, 4)
    assert len(list((tmp_path / "points").glob("*.nc"))) == 2


@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib Figure saved while the test runs, by the file name it was saved to."""
    saved = {}
    savefig = Figure.savefig

    def record(fig, path, *args, **kwargs):
        saved[Path(path).name] = fig
        result = savefig(fig, path, *args, **kwargs)
        if not hasattr(fig.canvas, "get_renderer"):  # a bare Figure: give it the canvas that drew the PNG
            FigureCanvasAgg(fig)
        return result

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def test_report_writes_html_markdown_and_figures(endpoint_store, tmp_path, saved_figures):
    html = write_report([endpoint_store], tmp_path)
    text = html.read_text()
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert "endpoint_coherence.png" in figures and "endpoint_spectra.png" in figures
    assert sum(name.startswith("endpoint_kernels_") for name in figures) == 2  # one per architecture
    assert set(saved_figures) == set(figures)
    for name in figures:
        assert f'src="figures/{name}"' in text
        width, height = assert_png(tmp_path / "figures" / name)
        fig = saved_figures[name]
        if name.startswith("endpoint_kernels_"):  # saved with a tight box: checked against it
            assert_png(tmp_path / "figures" / name, fig)
        else:  # saved whole at 120 dpi
            assert (width, height) == tuple(np.round(fig.get_size_inches() * 120).astype(int))
    # the coherence figure draws the stored coherence of each architecture and source against target_scale
    ds = kf.sweep.load(endpoint_store)
    (ax,) = saved_figures["endpoint_coherence.png"].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {f"architecture={a}, {src}" for a in ("rnn", "dnn") for src in ("theory", "lazy")}
    for arch in ("rnn", "dnn"):
        for source in ("theory", "lazy"):
            line = lines[f"architecture={arch}, {source}"]
            np.testing.assert_array_equal(line.get_xdata(), ds["target_scale"].values)
            np.testing.assert_array_equal(line.get_ydata(), ds[f"coherence_{source}"].sel(architecture=arch).values)
    assert ds["coherence_theory"].sel(architecture="rnn", target_scale=2.0) > 0.1  # the curves are not all zero
    assert ax.get_ylabel().startswith("temporal coherence") and ax.get_xlabel() == "target_scale"
    assert text.count("<tr>") == 1 + 4  # header and one row per point
    md = (tmp_path / "report.md").read_text()
    assert "### Diagnostics" in md and "| rnn | 2 | ok |" in md


def test_report_of_two_stores_with_a_phase_diagram(endpoint_store, tmp_path, saved_figures):
    grid = parse_config({"compute": ["solve", "coherence"], "base": BASE, "axes": {
        "task.target_scale": [0.5, 1.0, 2.0], "theory.kappa": [0.1, 0.2]}}, name="grid")
    kf.sweep.run(grid, tmp_path / "grid", workers=0, progress=False)
    text = write_report([endpoint_store, tmp_path / "grid"], tmp_path / "out").read_text()
    assert "Sweep endpoint" in text and "Sweep grid" in text
    fig = saved_figures["grid_phase_diagram.png"]
    assert_png(tmp_path / "out" / "figures" / "grid_phase_diagram.png", fig)
    panel = fig.axes[0]  # then the colour bar
    stored = kf.sweep.load(tmp_path / "grid")["coherence_theory"].transpose("kappa", "target_scale").values
    np.testing.assert_array_equal(np.asarray(panel.collections[0].get_array()).reshape(stored.shape), stored)
    assert (panel.get_xlabel(), panel.get_ylabel()) == ("target_scale", "kappa")
    assert "Phase diagram: coherence_theory over target_scale and kappa" in text


def test_outputs_of_different_sizes_are_nan_padded(tmp_path):
    sweep = parse_config({"compute": ["lazy", "coherence"], "base": BASE, "axes": {"architecture.T": [2, 3]}})
    kf.sweep.run(sweep, tmp_path, workers=0, progress=False)
    ds = kf.sweep.load(tmp_path)
    assert ds["C_lazy"].shape == (2, 3, 3, 3, 3)
    short = ds["C_lazy"].sel(T=2).values
    assert np.isnan(short[2]).all() and np.isnan(short[:, :, 2]).all() and np.isfinite(short[:2, :, :2]).all()
    task = kf.tasks.endpoint_patterns(P=3, T=2, D=3, seed=0)
    np.testing.assert_allclose(storage.kernel_matrix(short[:2, :, :2]), kf.prior_kernel(kf.Architecture.rnn(2), task),
                               atol=1e-14)


def test_cli_sweep_and_report(tmp_path, flaky):
    config = tmp_path / "tiny.toml"
    config.write_text('compute = ["solve", "flaky_test"]\n[base]\narchitecture = { kind = "rnn", T = 3 }\n'
                      'task = { generator = "endpoint_patterns", P = 3, D = 3 }\ntheory = { kappa = 0.2 }\n'
                      '[axes]\n"task.target_scale" = [0.5, 2.0]\n')
    store = tmp_path / "store"
    result = runner.invoke(app, ["sweep", str(config), "--store", str(store), "--workers", "0", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "1 computed, 0 already in the store, 1 failed" in result.output
    assert "RuntimeError: flaky point" in result.stderr
    flaky.fail = False
    result = runner.invoke(app, ["sweep", str(config), "--store", str(store), "--workers", "0", "--no-progress",
                                 "--retry-failed"])
    assert result.exit_code == 0 and "1 computed, 1 already in the store, 0 failed" in result.output
    result = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0 and str((tmp_path / "report" / "report.html").resolve()) in result.output.replace("\n", "")
    bad = tmp_path / "bad.toml"
    bad.write_text('compute = ["solve"]\n[base]\narchitecture = { kind = "lstm", T = 3 }\n'
                   'task = { generator = "endpoint_patterns", P = 3, D = 3 }\n')
    result = runner.invoke(app, ["sweep", str(bad), "--store", str(tmp_path / "b")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: ") and "base.architecture.kind" in result.stderr
    assert not (tmp_path / "b").exists()


def test_sigterm_in_process_keeps_finished_points(tmp_path):
    state = {"calls": 0, "kill_at": 3}

    @register_computation("terminate_test", requires=("solve",))
    def terminate_test(point, options):
        """Test computation: SIGTERM to this process at call number ``kill_at``."""
        state["calls"] += 1
        if state["calls"] == state["kill_at"]:
            os.kill(os.getpid(), signal.SIGTERM)
        return {}

    try:
        sweep = endpoint_sweep(compute=["solve", "terminate_test"], axes={"task.target_scale": [0.25, 0.5, 1.0, 2.0]})
        with pytest.raises(SweepInterrupted) as info:
            kf.sweep.run(sweep, tmp_path, workers=0, progress=False)
        assert info.value.signum == signal.SIGTERM and (info.value.finished, info.value.total) == (2, 4)
        assert len(list((tmp_path / "points").glob("*.nc"))) == 2
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored
        state["kill_at"] = None
        result = kf.sweep.run(sweep, tmp_path, workers=0, progress=False)
        assert (result.reused, result.computed) == (2, 2)
    finally:
        COMPUTATIONS.pop("terminate_test")


# --------------------------------------------------------------------------------------------
# worker processes: a local pool (spawn), SIGTERM to the sweep command, a local Dask cluster


SAMPLED = """
compute = COMPUTE
[base]
architecture = { kind = "rnn", T = 3 }
task = { generator = "endpoint_patterns", P = 3, D = 3, seed = 0 }
theory = { kappa = 0.2 }
sampling = { N = 8, num_samples = NUM, num_warmup = 100, num_chains = 1, keep_weights = 1 }
[axes]
"task.target_scale" = SCALES
"""


def _subprocess_env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")]))}


def _point_files(store: Path) -> dict:
    return {p.name: (storage.load(p).attrs["run_id"], p.stat().st_mtime_ns) for p in (store / "points").glob("*.nc")}


@pytest.mark.slow
def test_sigterm_then_resume_loses_and_recomputes_nothing(tmp_path):
    config = tmp_path / "sampled.toml"
    scales = [round(0.1 * k, 1) for k in range(1, 7)]
    config.write_text(SAMPLED.replace("COMPUTE", '["sample", "coherence"]').replace("NUM", "3000")
                      .replace("SCALES", str(scales)))
    store = tmp_path / "store"
    command = [sys.executable, "-m", "kernelfield.cli", "sweep", str(config), "--store", str(store), "--workers", "1",
               "--no-progress"]
    proc = subprocess.Popen(command, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while len(list((store / "points").glob("*.nc"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stdout + stderr
    before = _point_files(store)
    assert 2 <= len(before) < len(scales), "the sweep finished before it could be interrupted"
    assert f"interrupted: {len(before)} of {len(scales)} points are finished" in stderr
    assert not list((store / "points").glob(".*.tmp"))
    worker = int(storage.load(next((store / "points").glob("*.nc"))).attrs["pid"])
    with pytest.raises(ProcessLookupError):  # the worker was terminated with the sweep (slow under load)
        for _ in range(300):
            os.kill(worker, 0)
            time.sleep(0.1)

    done = subprocess.run(command, env=_subprocess_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(scales) - len(before)} computed, {len(before)} already in the store, 0 failed" in done.stdout
    after = _point_files(store)
    assert len(after) == len(scales)
    assert all(after[name] == before[name] for name in before)  # finished points untouched (run id, mtime)
    new_runs = {after[name][0] for name in after if name not in before}
    assert len(new_runs) == 1 and new_runs.isdisjoint({run for run, _ in before.values()})
    assert (kf.sweep.load(store)["status"].values == "ok").all()


@pytest.mark.slow
def test_dask_cluster_gives_the_same_numbers_as_the_process_pool(tmp_path):
    pytest.importorskip("distributed")
    sweep_file = tmp_path / "sampled.toml"
    sweep_file.write_text(SAMPLED.replace("COMPUTE", '["solve", "sample", "coherence"]').replace("NUM", "200")
                          .replace("SCALES", "[0.5, 2.0]"))
    kf.sweep.run(sweep_file, tmp_path / "pool", workers=1, progress=False)
    # The cluster, its client and the Dask worker run in a child process, which leaves no
    # distributed threads in this pytest worker. The Dask worker reuses the programs the pool
    # compiled (JAX's persistent cache): saves the compile time.
    script = (
        "import sys, distributed, kernelfield as kf\n"
        "with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as c:\n"
        "    r = kf.sweep.run(sys.argv[1], sys.argv[2], scheduler=c.scheduler_address, progress=False)\n"
        "print(r.computed, r.failed)\n"
    )
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "pool" / kf.sweep.JAX_CACHE)}
    child = subprocess.run([sys.executable, "-c", script, str(sweep_file), str(tmp_path / "dask")], env=env,
                           capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, child.stderr[-3000:]
    assert child.stdout.split()[-2:] == ["2", "0"]  # computed, failed
    pool, dask = kf.sweep.load(tmp_path / "pool"), kf.sweep.load(tmp_path / "dask")
    assert (dask["status"].values == "ok").all()
    outputs = [v for v in pool.data_vars if pool[v].dtype != object and not v.startswith("seconds")
               and not v.endswith("_seconds")]
    assert {"C_theory", "C_sampled", "coherence_sampled", "acceptance_rate"} <= set(outputs)
    sampler = {"C_sampled", "C_sem", "coherence_sampled", "acceptance_rate", "ess", "num_divergent", "step_size"}
    for name in outputs:
        if name in ("iterations", "residual"):
            continue  # solver diagnostics: depend on rounding
        # same code, seeds and machine in a different worker process: the sampler is identical up
        # to rounding; the theory is determined to its residual tolerance (1e-6), since L-BFGS in the
        # solver's low-rank stage amplifies rounding differences (BLAS threads per worker) to ~1e-8
        tight = name in sampler
        np.testing.assert_allclose(dask[name].values, pool[name].values, rtol=1e-12 if tight else 1e-6,
                                   atol=1e-14 if tight else 1e-9, err_msg=name)
    assert set(dask["run_id"].values.ravel()).isdisjoint(set(pool["run_id"].values.ravel()))


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ValueError, match="scheduler: cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
            kf.sweep.run(endpoint_sweep(), tmp_path, scheduler="tcp://127.0.0.1:9", progress=False)

