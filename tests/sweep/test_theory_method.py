"""The theory's method in sweeps: ``theory.method = "gaussian"`` (the Gaussian closure) runs the
closure at every point, the store records which solver produced each theory result, and the
report labels closure results as such. One tiny erf problem (T = 3, P = 2), solved in this process."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

import kernelfield as kf
from kernelfield import storage
from kernelfield.config import ConfigError
from kernelfield.report import write_report
from kernelfield.sweep import COMPUTATIONS, PointContext, parse_config

ERF = {
    "architecture": {"kind": "rnn", "T": 3},
    "task": {"generator": "endpoint_patterns", "P": 2, "D": 3, "seed": 0},
    "theory": {"phi": "erf", "kappa": 0.1, "method": "gaussian"},
}
SCALES = [0.2, 2.0]  # below and above the closure's transition of this RNN


@pytest.fixture(scope="module")
def closure_store(tmp_path_factory):
    sweep = parse_config({"compute": ["solve", "coherence"], "base": ERF, "axes": {"task.target_scale": SCALES}},
                         name="erf_closure")
    store = tmp_path_factory.mktemp("closure") / "store"
    kf.sweep.run(sweep, store, workers=0, progress=False)
    return store


def test_closure_sweep_records_the_method_and_equals_direct_solves(closure_store):
    ds = kf.sweep.load(closure_store)
    assert (ds["status"].values == "ok").all(), ds["error"].values
    assert list(ds["theory_method"].values) == ["gaussian", "gaussian"]
    for scale in SCALES:
        task = kf.tasks.endpoint_patterns(P=2, T=3, D=3, target_scale=scale, seed=0)
        sol = kf.solve(kf.Architecture.rnn(3), task, phi="erf", kappa=0.1, method="gaussian")
        assert sol.method == "gaussian"
        point = ds.sel(target_scale=scale)
        # same code, same inputs, same process: identical up to rounding
        np.testing.assert_allclose(storage.kernel_matrix(point["C_theory"]), sol.C, rtol=1e-12, atol=1e-14)
        assert float(point["S"]) == pytest.approx(sol.S, abs=1e-12)
        assert float(point["coherence_theory"]) == pytest.approx(kf.temporal_coherence(sol), abs=1e-12)
        assert "coherence_theory_err" not in ds  # deterministic: no Monte Carlo error bar
    rho = ds["coherence_theory"].values
    assert rho[0] < 1e-6 < 0.3 < rho[1]  # the symmetric kernel below the transition, a correlated one above


def test_report_labels_closure_results(closure_store, tmp_path, monkeypatch):
    saved = {}
    savefig = Figure.savefig

    def record(fig, path, *args, **kwargs):
        saved[path.name] = fig
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    text = write_report([closure_store], tmp_path).read_text()
    (ax,) = saved["erf_closure_coherence.png"].axes
    assert [line.get_label() for line in ax.get_lines()] == ["Gaussian closure"]
    assert "Theory solved by: Gaussian closure." in text and "lower bound" in text
    md = (tmp_path / "report.md").read_text()
    assert "| target_scale | status | method | seconds |" in md.replace("\n", " ")
    assert "| 0.2 | ok | gaussian |" in md


def test_method_is_an_axis_and_unknown_methods_are_named():
    sweep = parse_config({"compute": ["solve"], "base": ERF, "axes": {"theory.method": ["particles", "gaussian"]}})
    assert [a.name for a in sweep.axes] == ["method"]
    assert [p.config["theory"]["method"] for p in sweep.points] == ["particles", "gaussian"]
    assert len({p.key for p in sweep.points}) == 2
    with pytest.raises(ConfigError, match=r"axes\.theory\.method: Input should be 'auto', 'exact', 'particles' "
                                          r"or 'gaussian' \(got 'fast'\)"):
        parse_config({"compute": ["solve"], "base": ERF, "axes": {"theory.method": ["gaussian", "fast"]}})


def test_coherence_error_bars_of_monte_carlo_sources():
    """coherence_theory_err (particle solver: from its entrywise standard errors C_err) and
    coherence_sampled_err (standard error over chains), on hand-made kernels."""
    T, P = 3, 2
    point = PointContext(kf.config.parse_config({**ERF, "task": {**ERF["task"], "P": P}}))
    C = np.kron(np.diag([1.0, 4.0, 9.0]), np.eye(P))  # rho = 0; ||C_tt||_F = 1, 4, 9 times sqrt(2)
    C_err = np.zeros((T * P, T * P))
    C_err[2:4, 4:6] = C_err[4:6, 2:4] = 0.3  # blocks (1, 2) and (2, 1): ||E_12||_F = 0.6
    chains = [C + s * np.kron(np.ones((T, T)) - np.eye(T), np.eye(P)) for s in (0.1, 0.2, 0.6)]
    point.add_kernel("theory", C)
    point.add_kernel("sampled", np.mean(chains, axis=0))
    point.results["solve"] = SimpleNamespace(best=SimpleNamespace(C_err=C_err))
    point.results["sample"] = SimpleNamespace(num_chains=3, C_centred_chains=np.array(chains))
    out = COMPUTATIONS["coherence"].fn(point, None)
    assert out["coherence_theory"] == 0.0
    assert out["coherence_theory_err"] == pytest.approx(0.6 / (np.sqrt(2) * 6.0), rel=1e-12)  # sqrt(||C_11|| ||C_22||)
    per_chain = [s * np.sqrt(2) / (np.sqrt(2) * 6.0) for s in (0.1, 0.2, 0.6)]  # rho_12 of each chain
    assert out["coherence_sampled_err"] == pytest.approx(np.std(per_chain, ddof=1) / np.sqrt(3), rel=1e-12)
    point.results["solve"] = SimpleNamespace(best=SimpleNamespace(C_err=None))  # a deterministic solver
    assert "coherence_theory_err" not in COMPUTATIONS["coherence"].fn(point, None)


def test_example_sweeps_validate_and_the_closure_curve_covers_the_particle_points():
    examples = sorted((Path(__file__).resolve().parents[2] / "examples" / "sweeps").glob("*.toml"))
    sweeps = {path.stem: kf.sweep.load_config(path) for path in examples}
    assert {"erf_closure", "erf_endpoint", "erf_phase_diagram"} <= set(sweeps)
    for name in ("erf_closure", "erf_phase_diagram"):
        assert {p.config["theory"]["method"] for p in sweeps[name].points} == {"gaussian"}
    curve, points = sweeps["erf_closure"], sweeps["erf_endpoint"]
    scales = dict(zip([a.name for a in curve.axes], [a.values for a in curve.axes]))["target_scale"]
    assert len(scales) >= 11 and set(points.axes[1].values) <= set(scales)
    # the same task and theory apart from the method: the demo draws them in one figure
    def without(sweep, section, keys):
        return {k: v for k, v in sweep.points[0].config[section].items() if k not in keys}

    assert without(curve, "task", {"target_scale"}) == without(points, "task", {"target_scale"})
    particle_settings = {"method", "num_particles", "mc_tol"}
    assert without(curve, "theory", particle_settings) == without(points, "theory", particle_settings)
