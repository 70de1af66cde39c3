import importlib.metadata
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kernelfield as kf
from figure_checks import assert_png
from kernelfield import storage
from kernelfield.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()

TINY = """
[architecture]
kind = "rnn"
T = 3
[task]
generator = "endpoint_patterns"
P = 3
D = 3
[theory]
kappa = 0.2
[sampling]
N = 32
num_samples = 60
num_warmup = 60
num_chains = 2
keep_weights = 2
"""


@pytest.mark.parametrize("args", [["--help"], ["solve", "--help"], ["sample", "--help"], ["compare", "--help"]])
def test_help(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    if len(args) == 2:
        assert "CONFIG" in result.output.upper() and "--out" in result.output


def test_version():
    # the version printed is that of the installed distribution, which is also kernelfield.__version__
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"kernelfield {importlib.metadata.version('kernelfield')}\n"
    assert kf.__version__ == importlib.metadata.version("kernelfield")


def test_solve_example_writes_netcdf_and_png(tmp_path):
    out = tmp_path / "res"
    result = runner.invoke(app, ["solve", str(EXAMPLES / "linear_dnn_endpoint.toml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "S =" in result.output and "converged" in result.output and "branches" in result.output
    width, height = assert_png(out / "solution.png")
    assert 0.8 < width / height < 1.4  # one kernel panel with its colour bar
    ds = storage.load(out / "solution.nc")
    assert ds.attrs["kind"] == "solution" and ds["C"].shape == (4, 4, 4, 4)
    sol = storage.solution_from_dataset(ds)
    assert sol.arch.name == "dnn" and sol.task.P == 4


@pytest.mark.parametrize("command", ["solve", "sample", "compare"])
def test_bad_config_exits_2_with_clear_message(tmp_path, command):
    bad = tmp_path / "bad.toml"
    bad.write_text('[architecture]\nkind = "lstm"\nT = 3\n[task]\ngenerator = "integration"\nP = 2\n')
    result = runner.invoke(app, [command, str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "bad.toml" in lines[0] and "architecture.kind" in lines[0] and "'rnn'" in lines[0]
    assert not (tmp_path / "o").exists()


def test_missing_config_and_library_errors_exit_2(tmp_path):
    result = runner.invoke(app, ["solve", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "configuration file not found" in result.stderr
    erf = tmp_path / "erf.toml"
    erf.write_text(TINY.replace("kappa = 0.2", 'kappa = 0.2\nphi = "erf"\nmethod = "exact"'))
    result = runner.invoke(app, ["solve", str(erf), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.stderr.startswith("error: method: 'exact' needs phi = 'linear'")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["solve", "compare", "phase-diagram", "spectrum", "generalization"])
def test_method_option_is_offered(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--method" in result.output and "gaussian" in result.output


def test_method_option_replaces_the_configs_method(tmp_path):
    """--method overrides [theory] method: the solver's own check of method against phi answers
    (before any solve), and values outside the four methods are refused by name."""
    erf = tmp_path / "erf.toml"
    erf.write_text(TINY.replace("kappa = 0.2", 'kappa = 0.2\nphi = "erf"\nmethod = "gaussian"'))
    result = runner.invoke(app, ["solve", str(erf), "--out", str(tmp_path / "o"), "--method", "exact"])
    assert result.exit_code == 2 and result.stderr.startswith("error: method: 'exact' needs phi = 'linear'")
    result = runner.invoke(app, ["solve", str(erf), "--method", "closure"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "'closure' is not one of 'auto', 'exact', 'particles', 'gaussian'" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_compare_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", str(cfg), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    width, height = assert_png(out / "comparison.png")
    assert width > 2.5 * height  # theory | sampled | difference
    assert_png(out / "block_errors.png")
    assert storage.load(out / "solution.nc").attrs["kind"] == "solution"
    assert "block errors" in result.output and "(0,0)" not in result.output
    cmp = storage.load(out / "comparison.nc")
    assert cmp.attrs["kind"] == "comparison" and cmp["block_error"].shape == (3, 3)
    assert cmp.attrs["error"] < 0.5  # theory vs N = 32 samples: loose sanity bound
    samples = storage.samples_from_dataset(storage.load(out / "samples.nc"))
    assert samples.N == 32 and samples.C_mean.shape == (9, 9)
