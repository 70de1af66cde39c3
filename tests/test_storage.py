import dataclasses
import json
import os

import numpy as np
import pytest
import xarray as xr

import kernelfield as kf
from kernelfield import storage
from kernelfield.tasks import endpoint_patterns


@pytest.fixture(scope="module")
def solution():
    task = endpoint_patterns(P=3, T=3, D=3, target_scale=1.0, seed=0)
    return kf.solve(kf.Architecture.rnn(3), task, kf.Prior(g=0.9, sigma_b=0.1), kappa=0.2)


def _fake_samples(T=3, P=3, D=3, chains=2, N=8):
    rng = np.random.default_rng(0)
    n = T * P
    A = rng.normal(size=(chains, n, n))
    C_chains = A @ A.transpose(0, 2, 1) / n
    return kf.Samples(
        model=kf.Model(kf.Architecture.dnn(T), endpoint_patterns(P, T, D, seed=1)), N=N, seed=3, num_samples=50, num_chains=chains, num_warmup=20, num_integration_steps=8, thin=1,
        C_chains=C_chains, C_mean=C_chains.mean(0), C_sem=C_chains.std(0), C_centred=0.9 * C_chains.mean(0),
        C_centred_chains=0.9 * C_chains,
        f_mean=rng.normal(size=(P, T)), f_var=rng.random((P, T)),
        weights={"W": rng.normal(size=(4, T, N, N)), "U": rng.normal(size=(4, T, N, D)),
                 "b": rng.normal(size=(4, T, N)), "v": rng.normal(size=(4, T, N))},
        acceptance_rate=0.8, num_divergent=0, ess=123.0, step_size=np.array([0.1, 0.2]), seconds=1.5,
    )


def test_solution_dataset_layout(solution):
    ds = storage.solution_to_dataset(solution)
    T, P = 3, 3
    assert ds["C"].dims == ("t", "a", "t2", "a2") and ds["C"].shape == (T, P, T, P)
    np.testing.assert_array_equal(storage.kernel_matrix(ds["C"]), solution.C)
    # time-major: entry (t, a, s, b) is C[t*P + a, s*P + b]
    assert ds["C"].values[2, 1, 0, 2] == solution.C[2 * P + 1, 0 * P + 2]
    np.testing.assert_array_equal(storage.kernel_matrix(ds["Ct"]), solution.Ct)
    assert ds["inputs"].dims == ("a", "t", "d") and ds["targets"].dims == ("a", "t")
    assert ds["prediction_mean"].dims == ("a", "t")
    np.testing.assert_allclose(ds["prediction_mean"].values, solution.predict().mean)
    assert ds.sizes["branch"] == len(solution.branches)
    np.testing.assert_array_equal(ds["branch_S"].values, [b.S for b in solution.branches])
    cfg = json.loads(ds.attrs["config"])
    assert cfg["architecture"] == solution.arch.to_dict() and cfg["prior"] == solution.prior.to_dict()
    assert cfg["phi"] == "linear" and cfg["kappa"] == 0.2
    assert ds.attrs["kernelfield_version"] == kf.__version__
    assert ds.attrs["S"] == solution.S and ds.attrs["converged"] == int(solution.converged)
    assert ds.attrs["residual"] == solution.residual and "created" in ds.attrs and "seconds" in ds.attrs


def test_solution_netcdf_round_trip(solution, tmp_path):
    ds = storage.solution_to_dataset(solution)
    path = storage.save(ds, tmp_path / "out" / "solution.nc")
    assert sorted(os.listdir(tmp_path / "out")) == ["solution.nc"]  # no temp files left
    back = storage.load(path)
    assert back.identical(storage.load(path))
    for name in ("C", "Ct", "targets", "inputs", "branch_C", "branch_S", "prediction_mean"):
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert np.isnan(back["targets"].values[:, :-1]).all()
    assert set(back.attrs) == set(ds.attrs)
    for key, value in ds.attrs.items():
        assert back.attrs[key] == value, key
    # rebuild the solution and use it
    sol = storage.solution_from_dataset(back)
    assert sol.arch == solution.arch and sol.prior == solution.prior
    assert sol.phi == solution.phi and sol.kappa == solution.kappa
    np.testing.assert_array_equal(sol.task.targets, solution.task.targets)
    np.testing.assert_array_equal(sol.C, solution.C)
    assert sol.S == solution.S and sol.converged == solution.converged
    np.testing.assert_allclose(sol.predict(N=64).var, solution.predict(N=64).var)


def test_load_closes_file_and_overwrite(solution, tmp_path):
    path = tmp_path / "s.nc"
    storage.save(storage.solution_to_dataset(solution), path)
    first = storage.load(path)
    storage.save(storage.solution_to_dataset(solution), path)  # replace while `first` is alive
    os.remove(path)  # nothing holds the file open
    assert first["C"].values.shape == (3, 3, 3, 3)
    with pytest.raises(FileNotFoundError, match="path"):
        storage.load(path)


def test_failed_write_is_atomic(solution, tmp_path, monkeypatch):
    path = tmp_path / "s.nc"
    storage.save(storage.solution_to_dataset(solution), path)
    before = path.read_bytes()

    def boom(self, target, *args, **kwargs):
        with open(target, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        storage.save(storage.solution_to_dataset(solution), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["s.nc"]


def test_samples_round_trip(tmp_path):
    s = _fake_samples()
    ds = storage.samples_to_dataset(s)
    assert ds["C"].dims == ("t", "a", "t2", "a2") and ds["C_chains"].dims[0] == "chain"
    assert ds["weights_W"].shape == (4, 3, 8, 8) and ds["weights_W"].dims[:2] == ("sample", "W_group")
    cfg = json.loads(ds.attrs["config"])
    assert cfg["N"] == 8 and cfg["seed"] == 3 and cfg["num_samples"] == 50
    back = storage.load(storage.save(ds, tmp_path / "samples.nc"))
    assert back.attrs["acceptance_rate"] == 0.8 and back.attrs["ess"] == 123.0
    r = storage.samples_from_dataset(back)
    np.testing.assert_array_equal(r.C_mean, s.C_mean)
    np.testing.assert_array_equal(r.C_centred, s.C_centred)
    np.testing.assert_array_equal(r.C_chains, s.C_chains)
    np.testing.assert_array_equal(r.C_centred_chains, s.C_centred_chains)
    assert back["C_centred_chains"].dims == ("chain", "t", "a", "t2", "a2")
    np.testing.assert_array_equal(r.weights["v"], s.weights["v"])
    np.testing.assert_array_equal(r.step_size, s.step_size)
    assert r.arch == s.arch and r.prior == s.prior and r.N == 8 and r.kappa == 0.1


def test_comparison_dataset(solution, tmp_path):
    from kernelfield.compare import compare

    T, P = 3, 3
    n = solution.C.shape[0]
    fake = dataclasses.replace(_fake_samples(), model=solution.model, N=64, C_mean=solution.C * 1.01,
                               C_sem=0.01 * np.abs(solution.C), C_chains=np.stack([solution.C] * 2),
                               f_mean=solution.predict().mean)
    assert fake.C_chains.shape == (2, n, n)
    cmp = compare(solution, fake)
    ds = kf.to_xarray(cmp)
    assert ds["block_error"].dims == ("t", "t2") and ds["C_theory"].shape == (T, P, T, P)
    back = storage.load(storage.save(ds, tmp_path / "c.nc"))
    np.testing.assert_array_equal(back["block_error"].values, cmp.block_error)
    assert back.attrs["error"] == cmp.error and back.attrs["parity"] == cmp.parity and back.attrs["N"] == 64
    cfg = json.loads(back.attrs["config"])  # provenance from the comparison's model and the samples' seed
    assert cfg["architecture"] == solution.arch.to_dict() and cfg["kappa"] == 0.2 and cfg["seed"] == 3
    assert back.attrs["seed"] == 3 and back.attrs["kernelfield_version"] == kf.__version__


def _particle_like(sol, phi="relu"):
    """``sol`` (an exact solve) dressed as a particle solution of the ``phi`` network: the dominant
    branch carries the Monte Carlo fields a particle solve fills in (``C_err``, ``S_err``,
    ``mc_error``, ``<φ>``), a second branch has ``<φ>`` zero by symmetry (``None``). Storage only
    reads these fields, so a real particle solve (a compilation of the flow and of its check)
    would test nothing more here."""
    rng = np.random.default_rng(5)
    n = sol.C.shape[0]
    best = dataclasses.replace(sol.best, C_err=0.01 * np.abs(sol.C) + 1e-3 * rng.random((n, n)), S_err=0.02,
                               mc_error=0.013, phi_mean=rng.normal(size=n), init="broken")
    other = dataclasses.replace(sol.best, S=sol.S - 1.0, C_err=np.full((n, n), 0.005), S_err=0.03, mc_error=0.02,
                                phi_mean=None, init="prior")
    return dataclasses.replace(sol, model=dataclasses.replace(sol.model, phi=phi), branches=(best, other),
                               method="particles")


def test_particle_solution_round_trip_keeps_monte_carlo_errors(tmp_path):
    task = endpoint_patterns(P=2, T=2, D=3, target_scale=0.5, seed=0)
    exact_sol = kf.solve(kf.Architecture.rnn(2), task)
    sol = _particle_like(exact_sol)
    back = storage.solution_from_dataset(storage.load(storage.save(storage.solution_to_dataset(sol), tmp_path / "s.nc")))
    assert back.method == "particles" and back.phi == "relu" and len(back.branches) == 2
    for mine, theirs in zip(back.branches, sol.branches):
        for name in ("C", "C_err"):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name))
        assert (mine.S_err, mine.mc_error, mine.init) == (theirs.S_err, theirs.mc_error, theirs.init)
    np.testing.assert_array_equal(back.best.phi_mean, sol.best.phi_mean)
    assert back.branches[1].phi_mean is None
    np.testing.assert_array_equal(back.C_centred, sol.C_centred)
    exact = storage.solution_from_dataset(storage.solution_to_dataset(exact_sol))
    assert exact.best.C_err is None and exact.best.phi_mean is None


def test_to_xarray_dispatches_on_the_result_type_and_save_takes_a_result(solution, tmp_path):
    assert kf.to_xarray(solution).attrs["kind"] == "solution"
    assert kf.to_xarray(_fake_samples()).attrs["kind"] == "samples"
    path = kf.save(solution, tmp_path / "direct.nc")  # a result, converted by to_xarray
    back = storage.solution_from_dataset(kf.load(path))
    np.testing.assert_array_equal(back.C, solution.C)
    assert back.model == solution.model and isinstance(back, kf.Solution)
    with pytest.raises(TypeError, match="result: cannot convert a dict"):
        kf.to_xarray({"C": solution.C})
    with pytest.raises(TypeError, match="cannot convert"):
        kf.save(np.zeros(3), tmp_path / "x.nc")


def test_samples_round_trip_rebuilds_real_samples(tmp_path):
    s = _fake_samples()
    back = storage.samples_from_dataset(kf.load(kf.save(s, tmp_path / "s.nc")))
    assert type(back) is kf.Samples and back.model == s.model
    np.testing.assert_array_equal(back.C, s.C_mean)


def test_provenance_stamp_has_config_version_seed_and_time():
    stamp = storage.provenance("study", {"a": np.int64(2)}, seed=np.int64(7))
    assert json.loads(stamp["config"]) == {"a": 2} and stamp["seed"] == 7 and isinstance(stamp["seed"], int)
    assert stamp["kind"] == "study" and stamp["kernelfield_version"] == kf.__version__
    assert stamp["created"].endswith("+00:00")
    assert "seed" not in storage.provenance("study", "{}")


def test_trained_round_trip(trained_rnn, tmp_path):
    run = trained_rnn
    ds = kf.to_xarray(run)
    assert ds.attrs["kind"] == "trained" and ds["C_networks"].dims == ("network", "t", "a", "t2", "a2")
    assert ds["params_W"].dims[:2] == ("network", "W_group") and ds["loss"].dims == ("chunk", "network")
    cfg = json.loads(ds.attrs["config"])
    assert (cfg["N"], cfg["seed"], cfg["num_networks"], cfg["burn_in"]) == (16, 2, 3, 100)
    back = storage.trained_from_dataset(storage.load(kf.save(run, tmp_path / "trained.nc")))
    for name in ("C_mean", "C_sem", "C_centred", "C_networks", "f_networks", "f_mean", "f_sem", "f_var", "loss", "step"):
        np.testing.assert_array_equal(getattr(back, name), getattr(run, name), err_msg=name)
    for fam in run.params:
        np.testing.assert_array_equal(back.params[fam], run.params[fam])
    assert (back.model.arch, back.prior, back.phi, back.kappa) == (run.arch, run.prior, run.phi, run.kappa)
    np.testing.assert_array_equal(back.task.targets, run.task.targets)
    assert (back.N, back.seed, back.num_steps, back.record_every, back.step_size, back.num_records) == (
        run.N, run.seed, run.num_steps, run.record_every, run.step_size, run.num_records)
    assert back.lambda_max == run.lambda_max > 0  # measured: the step size was "auto"
    given = dataclasses.replace(run, lambda_max=float("nan"))  # a given step size records no lambda_max
    assert np.isnan(storage.trained_from_dataset(storage.load(kf.save(given, tmp_path / "given.nc"))).lambda_max)
    with pytest.raises(ValueError, match="not trained networks"):
        storage.trained_from_dataset(storage.lazy_kernel_to_dataset(kf.prior_kernel(run.model)))


@pytest.mark.parametrize("phi", ["relu", "erf"])
def test_lazy_kernel_round_trip(tmp_path, phi):
    lazy = kf.prior_kernel(kf.Architecture.dnn(3), endpoint_patterns(P=2, T=3, D=2, seed=0), kf.Prior(g=1.1),
                           phi=phi, kappa=0.3)
    ds = kf.to_xarray(lazy)
    assert ds.attrs["kind"] == "lazy_kernel" and json.loads(ds.attrs["config"])["kappa"] == 0.3
    np.testing.assert_array_equal(storage.kernel_matrix(ds["C_centred"].values), lazy.C_centred)
    back = storage.lazy_kernel_from_dataset(storage.load(kf.save(lazy, tmp_path / "lazy.nc")))
    np.testing.assert_array_equal(back.C, lazy.C)
    np.testing.assert_array_equal(back.C_centred, lazy.C_centred)
    assert (back.mean_outer is None) == (phi == "erf")  # odd phi: no feature mean
    np.testing.assert_array_equal(back.predict().mean, lazy.predict().mean)
    assert back.model.prior == lazy.prior and back.phi == phi
