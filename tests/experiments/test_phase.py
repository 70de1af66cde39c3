"""Phase-transition studies (kernelfield.experiments.phase), their figures and CLI commands."""

import inspect
import json

import numpy as np
import pytest
from typer.testing import CliRunner

import kernelfield as kf
from kernelfield import plots, storage
from kernelfield.cli import app
from kernelfield.experiments import phase
from kernelfield.observables import mean_coherence
from kernelfield.progress import RichBars
from figure_checks import assert_png

T = 4
runner = CliRunner()


def task():
    return kf.tasks.endpoint_patterns(P=3, T=T, D=4, target_scale=1.0, seed=0)


def test_bifurcation_theory_curves(tmp_path):
    archs = [kf.Architecture.rnn(T), kf.Architecture.dnn(T), kf.Architecture.tied_every(T, 2)]
    events = []
    ds = phase.bifurcation(archs, task(), [0.2, 0.5, 1.0], progress=events.append)
    # one event per solved value and per critical search: 3 archs x (3 values + 1)
    assert [(e.task, e.completed, e.total) for e in events] == [("bifurcation", k, 12) for k in range(1, 13)]
    coh = ds["coherence"]
    assert coh.sel(arch="dnn").max() == 0 and coh.sel(arch="rnn", value=0.2) < 1e-5
    assert coh.sel(arch="rnn", value=1.0) > coh.sel(arch="tied_every_2", value=1.0) > 0
    # the leading eigenvalue changes sign between the values bracketing each critical point
    crit = ds["critical"].sel(arch="rnn").item()
    assert 0.2 < crit < 0.5 and np.isnan(ds["critical"].sel(arch="dnn"))
    eig = ds["leading_eigenvalue"].sel(arch="rnn").values
    assert eig[0] < 0 < eig[1]
    assert ds["exponent"].sel(arch="rnn").item() == pytest.approx(0.5, abs=0.06)
    path = storage.save(ds, tmp_path / "bif.nc")
    back = storage.load(path)
    np.testing.assert_array_equal(back["coherence"].values, ds["coherence"].values)
    assert back.attrs["kind"] == "bifurcation" and "control" in back.attrs["config"]
    fig = plots.plot_bifurcation(ds, tmp_path / "bif.png")
    ax, ax_eig = fig.axes
    for arch in ("rnn", "dnn", "tied_every_2"):
        (line,) = [line for line in ax.get_lines() if line.get_label() == f"{arch} (theory)"]
        np.testing.assert_array_equal(line.get_ydata(), coh.sel(arch=arch))
        (eig_line,) = [line for line in ax_eig.get_lines() if line.get_label() == arch]
        np.testing.assert_array_equal(eig_line.get_ydata(), ds["leading_eigenvalue"].sel(arch=arch))
    finite = ds["critical"].values[np.isfinite(ds["critical"].values)]  # rnn and tied_every_2; none for the dnn
    assert [list(line.get_xdata()) for line in ax.get_lines() if line.get_linestyle() == ":"] == [[c, c] for c in finite]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("target_scale", "temporal coherence rho")
    assert_png(tmp_path / "bif.png", fig)


def test_bifurcation_rejects_bad_values():
    with pytest.raises(ValueError, match="values"):
        phase.bifurcation([kf.Architecture.rnn(T)], task(), [0.5, -1.0], progress=False)
    with pytest.raises(ValueError, match="names must be distinct"):
        phase.bifurcation([kf.Architecture.rnn(T), kf.Architecture.rnn(T)], task(), [0.5], progress=False)


def test_sampled_coherence_and_its_error_bar_come_from_the_centred_chain_kernels():
    sampling = dict(num_samples=30, num_warmup=20, num_chains=3, seed=0)
    ds = phase.bifurcation([kf.Architecture.rnn(T)], task(), [0.5, 1.0], widths=[8], sample_values=[1.0],
                           sampling=sampling, progress=False)
    s = kf.sample(kf.Architecture.rnn(T), task(), N=8, keep_weights=0, progress=False, **sampling)  # value 1.0
    stderr = lambda kernels: np.std([mean_coherence(C, T, 3) for C in kernels], ddof=1) / np.sqrt(3)  # noqa: E731
    assert ds["sampled_coherence"].item() == pytest.approx(kf.temporal_coherence(s), rel=1e-12)
    assert ds["sampled_coherence_err"].item() == pytest.approx(stderr(s.C_centred_chains), rel=1e-12)
    assert ds["sampled_coherence_err"].item() != pytest.approx(stderr(s.C_chains), rel=1e-6)


def test_phase_diagram_critical_signal_over_T_and_g(tmp_path):
    def build(T, g):
        return (kf.Architecture.rnn(int(T)), kf.tasks.endpoint_patterns(P=3, T=int(T), D=4, seed=0),
                kf.Prior(g=g), 0.1)

    events = []
    ds = phase.phase_diagram(build, ("T", [3, 4]), ("g", [0.9, 1.0]), tol=1e-3, progress=events.append)
    assert [(e.task, e.completed, e.total) for e in events] == [("phase diagram", k, 4) for k in range(1, 5)]
    crit = ds["critical"].values
    assert np.all(ds["status"].values == "ok") and np.all(np.isfinite(crit))
    # the point (T=4, g=1) is the critical value found directly
    direct = kf.critical_signal(kf.Architecture.rnn(4), task(), tol=1e-3).value
    assert crit[1, 1] == pytest.approx(direct, rel=2e-3)
    fig = plots.plot_phase_diagram(ds, tmp_path / "pd.png")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_array().reshape(2, 2), crit.T)  # x = T across, y = g up
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("T", "g")
    assert_png(tmp_path / "pd.png", fig)


def test_weight_spectrum_dataset_and_figure(tmp_path):
    events = []
    # the sampler settings (and width) of the test above, with one kept weight sample per chain:
    # one compilation of the sampler serves both tests
    ds = phase.weight_spectrum(kf.Architecture.rnn(T), task(), [0.2, 1.0], [8],
                               sampling=dict(num_samples=30, num_warmup=20, num_chains=3, keep_weights=1),
                               progress=events.append)
    # per value: its solve, then the sampled width
    assert [(e.task, e.completed, e.total) for e in events] == [("weight spectrum rnn", k, 4) for k in range(1, 5)]
    assert ds["eigenvalues_real"].shape == (2, 1, 3, 8)
    assert np.all(np.isfinite(ds["top_modulus"]))
    pred = np.abs(ds["predicted_real"] + 1j * ds["predicted_imag"]).max("mode").values
    assert pred[0] < 1e-2 and pred[1] > 1.0
    storage.save(ds, tmp_path / "spec.nc")
    fig = plots.plot_spectrum(ds, path=tmp_path / "spec.png")
    spectrum, summary = fig.axes  # one width: its spectrum at the last value, then |lambda| over the values
    sampled, circle, outlier, mirrored = spectrum.get_lines()
    eig = ds["eigenvalues_real"].values[-1, 0].ravel() + 1j * ds["eigenvalues_imag"].values[-1, 0].ravel()
    np.testing.assert_array_equal(sampled.get_xdata() + 1j * sampled.get_ydata(), eig)
    np.testing.assert_allclose(np.abs(circle.get_xdata() + 1j * circle.get_ydata()), ds["radius"].values[-1])
    assert abs(complex(outlier.get_xdata()[0], outlier.get_ydata()[0])) == pytest.approx(pred[1])
    assert mirrored.get_xdata()[0] == -outlier.get_xdata()[0]
    (bars,) = summary.containers
    np.testing.assert_array_equal(bars.lines[0].get_ydata(), ds["top_modulus"].sel(N=8))
    np.testing.assert_array_equal(summary.get_lines()[0].get_ydata(), pred)
    assert spectrum.get_title() == "N = 8, value = 1" and summary.get_ylabel() == "largest |lambda|"
    assert_png(tmp_path / "spec.png", fig)


CONFIG = """
[architecture]
kind = "rnn"
T = 3
[task]
generator = "endpoint_patterns"
P = 3
D = 3
[theory]
kappa = 0.1
[phase]
values = [0.2, 1.0]
architectures = ["rnn", "dnn"]
x = { field = "prior.g", values = [0.9, 1.0] }
y = { field = "theory.kappa", values = [0.1, 0.2] }
[spectrum]
values = [1.0]
widths = [16]
contrast_dnn = true
[sampling]
num_samples = 20
num_warmup = 20
num_chains = 2
keep_weights = 2
"""


@pytest.mark.slow
def test_cli_phase_diagram_and_spectrum(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    res = runner.invoke(app, ["phase-diagram", str(cfg), "--out", str(tmp_path / "ph"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "critical target_scale" in res.output and "none (stable)" in res.output
    for name in ("bifurcation.png", "phase_diagram.png"):
        assert_png(tmp_path / "ph" / name)
    assert storage.load(tmp_path / "ph" / "bifurcation.nc").sizes["arch"] == 2
    grid = storage.load(tmp_path / "ph" / "phase_diagram.nc")
    assert grid["critical"].dims == ("prior.g", "theory.kappa")
    res = runner.invoke(app, ["spectrum", str(cfg), "--out", str(tmp_path / "sp"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "predicted" in res.output
    assert_png(tmp_path / "sp" / "spectrum.png")
    assert storage.load(tmp_path / "sp" / "spectrum_dnn.nc").attrs["kind"] == "weight_spectrum"


def test_cli_phase_diagram_draws_one_display_for_all_its_studies(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.split("[spectrum]")[0].replace('["rnn", "dnn"]', '["rnn"]')
                   .replace("[0.9, 1.0]", "[1.0]").replace("[0.1, 0.2]", "[0.1]"))
    received = []

    def spy(study):
        def run(*args, progress, **kwargs):
            received.append(progress)
            return study(*args, progress=progress, **kwargs)
        return run

    monkeypatch.setattr(phase, "bifurcation", spy(phase.bifurcation))
    monkeypatch.setattr(phase, "phase_diagram", spy(phase.phase_diagram))
    res = runner.invoke(app, ["phase-diagram", str(cfg), "--out", str(tmp_path / "ph")])
    assert res.exit_code == 0, res.output
    bars, grid_bars = received
    assert isinstance(bars, RichBars) and grid_bars is bars
    assert "bifurcation" in res.output and "phase diagram" in res.output and "1/1" in res.output


def test_cli_phase_config_errors(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace('["rnn", "dnn"]', '["rnn", "lstm"]').replace('"theory.kappa"', '"prior.zeta"'))
    res = runner.invoke(app, ["phase-diagram", str(cfg), "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "phase.architectures" in res.output and "lstm" in res.output and "phase.y.field" in res.output


def test_sweep_computations_stability_and_outlier(tmp_path):
    sw = kf.sweep.parse_config({
        "compute": ["solve", "stability", "outlier"],
        "base": {"architecture": {"kind": "rnn", "T": T},
                 "task": {"generator": "endpoint_patterns", "P": 3, "D": 4, "seed": 0}},
        "axes": {"task.target_scale": [0.2, 1.0]},
    })
    kf.sweep.run(sw, tmp_path / "store", workers=0, progress=False)
    ds = kf.sweep.load(tmp_path / "store")
    for scale in (0.2, 1.0):
        sol = kf.solve(kf.Architecture.rnn(T), kf.tasks.endpoint_patterns(P=3, T=T, D=4, target_scale=scale, seed=0))
        point = ds.sel(target_scale=scale)
        assert float(point["leading_eigenvalue"]) == pytest.approx(kf.stability(sol).leading, abs=1e-8)
        assert float(point["outlier"]) == pytest.approx(abs(kf.outlier_eigenvalues(sol)[0]), abs=1e-6)
    assert float(ds["leading_eigenvalue"].sel(target_scale=0.2)) < 0 < float(ds["leading_eigenvalue"].sel(target_scale=1.0))


ERF_CONFIG = """
[architecture]
kind = "rnn"
T = 3
[task]
generator = "endpoint_patterns"
P = 2
D = 3
[theory]
phi = "erf"
kappa = 0.1
[phase]
values = [0.2, 2.0]
architectures = ["rnn", "dnn"]
"""


def test_cli_bifurcation_of_the_gaussian_closure(tmp_path):
    """phase-diagram --method gaussian: the erf order parameter from the closure (the config's
    method is "auto", i.e. the slow particle solver), labelled as the closure's."""
    cfg = tmp_path / "erf.toml"
    cfg.write_text(ERF_CONFIG)
    res = runner.invoke(app, ["phase-diagram", str(cfg), "--out", str(tmp_path / "ph"), "--no-progress",
                              "--method", "gaussian"])
    assert res.exit_code == 0, res.output
    ds = storage.load(tmp_path / "ph" / "bifurcation.nc")
    assert json.loads(ds.attrs["config"])["method"] == "gaussian"
    for scale in (0.2, 2.0):
        t = kf.tasks.endpoint_patterns(P=2, T=3, D=3, target_scale=scale, seed=0)
        sol = kf.solve(kf.Architecture.rnn(3), t, phi="erf", kappa=0.1, method="gaussian")
        sym = kf.solve(kf.Architecture.dnn(3), t, phi="erf", kappa=0.1, method="gaussian", init="prior")
        assert float(ds["coherence"].sel(arch="rnn", value=scale)) == pytest.approx(kf.temporal_coherence(sol), abs=1e-12)
        assert float(ds["S_gain"].sel(arch="rnn", value=scale)) == pytest.approx(sol.S - sym.S, abs=1e-12)
    assert float(ds["coherence"].sel(arch="rnn", value=0.2)) < 1e-6 < 0.3 < float(ds["coherence"].sel(arch="rnn", value=2.0))
    assert float(abs(ds["coherence"].sel(arch="dnn")).max()) < 1e-6
    (ax, _) = plots.plot_bifurcation(ds).axes
    assert {line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")} == {
        "rnn (Gaussian closure)", "dnn (Gaussian closure)"}


needs_closure_critical_signal = pytest.mark.skipif(
    "method" not in inspect.signature(kf.critical_signal).parameters,
    reason="kf.critical_signal(method=...) for nonlinear phi (issue 14, item 4) is not in this build")


@needs_closure_critical_signal
def test_phase_diagram_of_the_closures_critical_signal():
    def build(g, kappa):
        return kf.Architecture.rnn(3), kf.tasks.endpoint_patterns(P=2, T=3, D=3, seed=0), kf.Prior(g=g), kappa

    ds = phase.phase_diagram(build, ("g", [1.0]), ("kappa", [0.1]), phi="erf", method="gaussian", progress=False)
    assert ds["status"].item() == "ok" and json.loads(ds.attrs["config"])["method"] == "gaussian"
    direct = kf.critical_signal(*build(1.0, 0.1)[:3], "erf", 0.1, tol=1e-3, method="gaussian").value
    assert ds["critical"].item() == pytest.approx(direct, rel=1e-12)
    assert 0.2 < direct < 2.0  # the closure's solution is symmetric at 0.2 and time-correlated at 2.0 (test above)
