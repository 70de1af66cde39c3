"""One order-parameter path: every temporal coherence is measured on the centred kernel
(kernelfield.observables, THEORY.md §4), so ReLU's mean activity does not count as correlation
across time."""

import numpy as np
import pytest
from typer.testing import CliRunner

import kernelfield as kf
from kernelfield.cli import app
from kernelfield.observables import mean_coherence
from kernelfield.sweep import parse_config

RELU_DNN = {
    "architecture": {"kind": "dnn", "T": 3},
    "task": {"generator": "endpoint_patterns", "P": 2, "D": 2, "target_scale": 0.5, "seed": 0},
    "theory": {"phi": "relu", "kappa": 0.1, "mc_tol": 0.05},  # a looser Monte Carlo target: seconds, not a minute
}


@pytest.fixture(scope="module")
def cli_solve(tmp_path_factory):
    """`kernelfield solve` on RELU_DNN written as TOML: its console output and the solution it wrote."""
    out = tmp_path_factory.mktemp("relu_cli")
    config = out / "relu.toml"
    config.write_text(RELU_DNN_TOML)
    result = CliRunner().invoke(app, ["solve", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return result.output, kf.storage.solution_from_dataset(kf.load(out / "solution.nc"))


@pytest.fixture(scope="module")
def relu_point(tmp_path_factory, cli_solve):
    """A one-point sweep of a ReLU DNN and the same solution from the CLI (one particle solve each;
    the sweep's numbers must equal the CLI's)."""
    sweep = parse_config({"compute": ["solve", "lazy", "coherence"], "base": RELU_DNN}, name="relu_dnn")
    store = tmp_path_factory.mktemp("relu") / "store"
    kf.sweep.run(sweep, store, workers=0, progress=False)
    ds = kf.sweep.load(store)
    assert ds["status"].item() == "ok", ds["error"].item()
    return ds, cli_solve[1]


def test_relu_dnn_sweep_reports_the_centred_coherence(relu_point):
    ds, sol = relu_point
    coherence = float(ds["coherence_theory"])
    assert coherence == pytest.approx(kf.temporal_coherence(sol), abs=1e-12)
    assert abs(coherence) < 0.05  # untied weights: no correlation across time once the mean is removed
    T, P = sol.task.T, sol.task.P
    assert mean_coherence(sol.C, T, P) > 0.2  # the raw kernel's value, which the sweep reported before


def test_relu_dnn_lazy_coherence_is_centred(relu_point):
    """The lazy kernel's features have mean <relu(h)> = sqrt(K_ii / 2 pi): removing it leaves a
    DNN prior kernel with no cross-time blocks."""
    ds, sol = relu_point
    assert abs(float(ds["coherence_lazy"])) < 1e-10
    C = kf.storage.kernel_matrix(ds["C_lazy"].values)
    T, P = sol.task.T, sol.task.P
    assert mean_coherence(C, T, P) > 0.2


def test_branches_carry_their_centred_kernel(relu_point):
    _, sol = relu_point
    for b in sol.branches:
        assert b.phi_mean is not None
        np.testing.assert_allclose(b.C_centred, b.C - np.outer(b.phi_mean, b.phi_mean), rtol=0, atol=0)
    np.testing.assert_array_equal(sol.C_centred, sol.best.C_centred)


RELU_DNN_TOML = """
[architecture]
kind = "dnn"
T = 3
[task]
generator = "endpoint_patterns"
P = 2
D = 2
target_scale = 0.5
seed = 0
[theory]
phi = "relu"
kappa = 0.1
mc_tol = 0.05
"""


def test_cli_branch_table_reports_the_centred_coherence(cli_solve):
    output, sol = cli_solve
    rows = [line.split("│") for line in output.splitlines() if line.startswith("│")]
    rho = {row[2].strip(): row[-2].strip() for row in rows}  # init -> rho column
    assert rho == {b.init: f"{mean_coherence(b.C_centred, 3, 2):.3f}" for b in sol.branches}
    assert rho[sol.best.init] != f"{mean_coherence(sol.C, 3, 2):.3f}"  # not the raw kernel's
