"""The kernel and phase figures draw the data they are given, with their labels; the PNG written
is a valid image of that figure."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure

from figure_checks import assert_png
from kernelfield import plots


def _kernel(n, seed):
    A = np.random.default_rng(seed).normal(size=(n, n))
    return A @ A.T / n


def _panels(fig):
    """The axes that show a heatmap (colour bars excluded), in drawing order."""
    return [ax for ax in fig.axes if ax.images]


def _block_lines(ax):
    """Positions of the horizontal and vertical separators between time blocks."""
    rows = sorted(line.get_ydata()[0] for line in ax.get_lines() if np.ptp(line.get_ydata()) == 0)
    cols = sorted(line.get_xdata()[0] for line in ax.get_lines() if np.ptp(line.get_xdata()) == 0)
    return rows, cols


def test_plot_kernels_theory_sampled_and_difference(tmp_path):
    T, P = 3, 2
    C1, C2 = _kernel(6, 0), _kernel(6, 1)
    fig = plots.plot_kernels(C1, C2, T, P, tmp_path / "k.png", title="a title")
    assert isinstance(fig, Figure)
    theory, sampled, diff = _panels(fig)
    assert len(fig.axes) == 5  # three panels, a shared colour bar and the difference's colour bar
    np.testing.assert_array_equal(theory.images[0].get_array(), C1)
    np.testing.assert_array_equal(sampled.images[0].get_array(), C2)
    np.testing.assert_allclose(diff.images[0].get_array(), C2 - C1)
    shared = np.abs(np.concatenate([C1, C2])).max()
    assert theory.images[0].get_clim() == sampled.images[0].get_clim() == (-shared, shared)
    assert diff.images[0].get_clim() == (-np.abs(C2 - C1).max(), np.abs(C2 - C1).max())
    rel = np.linalg.norm(C2 - C1) / np.linalg.norm(C1)
    assert [ax.get_title() for ax in (theory, sampled, diff)] == ["theory", "sampled", f"sampled - theory (rel. {rel:.3f})"]
    assert fig.get_suptitle() == "a title"
    for ax in (theory, sampled, diff):
        assert _block_lines(ax) == ([1.5, 3.5], [1.5, 3.5])  # between t = 0|1 and 1|2 for P = 2
        assert [tick.get_text() for tick in ax.get_xticklabels()] == ["t=0", "t=1", "t=2"]
    colour_bar_labels = {ax.get_ylabel() for ax in fig.axes if not ax.images}
    assert colour_bar_labels == {"C (shared scale)", "difference"}
    assert_png(tmp_path / "k.png", fig)


def test_plot_kernels_single_kernel_in_stored_layout(tmp_path):
    C = _kernel(6, 0)
    fig = plots.plot_kernels(C.reshape(3, 2, 3, 2), None, 3, 2, tmp_path / "one.png")
    (panel,) = _panels(fig)
    assert len(fig.axes) == 2  # the panel and its colour bar
    np.testing.assert_array_equal(panel.images[0].get_array(), C)
    assert panel.get_title() == "kernel C" and fig.get_suptitle() == ""
    assert_png(tmp_path / "one.png", fig)
    with pytest.raises(ValueError, match="^C_sampled:"):
        plots.plot_kernels(C, _kernel(4, 0), 3, 2)


def test_plot_kernels_writes_nothing_without_a_path(tmp_path):
    plots.plot_kernels(_kernel(6, 0), None, 3, 2)
    assert list(tmp_path.iterdir()) == []


def test_plot_block_errors_annotates_each_block(tmp_path):
    err = np.random.default_rng(0).random((3, 3))
    bar = np.arange(9.0).reshape(3, 3) / 100
    cmp = SimpleNamespace(block_error=err, block_error_bar=bar, N=16)
    fig = plots.plot_block_errors(cmp, tmp_path / "b.png")
    (ax,) = _panels(fig)
    np.testing.assert_array_equal(ax.images[0].get_array(), err)
    assert ax.images[0].get_clim() == (0.0, err.max())
    annotations = {(text.get_position()): text.get_text() for text in ax.texts}
    assert annotations == {(s, t): f"{err[t, s]:.3f}\n±{bar[t, s]:.3f}" for t in range(3) for s in range(3)}
    assert ax.get_title() == "block error (N = 16)"
    assert [tick.get_text() for tick in ax.get_yticklabels()] == ["t=0", "t=1", "t=2"]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["s=0", "s=1", "s=2"]
    assert fig.axes[-1].get_ylabel() == "relative block error"
    assert_png(tmp_path / "b.png", fig)


def _bifurcation_dataset():
    """The layout of :func:`kernelfield.experiments.phase.bifurcation` with sampled widths."""
    value, sample_value, widths = [0.2, 0.5, 1.0], [0.2, 1.0], [32, 64]
    rng = np.random.default_rng(1)
    return xr.Dataset(
        {
            "coherence": (("arch", "value"), [[0.0, 0.3, 0.5], [0.0, 0.0, 0.0]]),
            "leading_eigenvalue": (("arch", "value"), [[-0.1, 0.2, 0.4], [-1.0, -1.0, -1.0]]),
            "critical": ("arch", [0.35, np.nan]),
            "sampled_coherence": (("arch", "N", "sample_value"), rng.random((2, 2, 2))),
            "sampled_coherence_err": (("arch", "N", "sample_value"), rng.random((2, 2, 2)) / 10),
        },
        coords={"arch": ["rnn", "dnn"], "value": value, "N": widths, "sample_value": sample_value},
        attrs={"kind": "bifurcation", "config": json.dumps({"control": "target_scale"})},
    )


def test_plot_bifurcation_draws_theory_samples_and_critical_values(tmp_path):
    ds = _bifurcation_dataset()
    fig = plots.plot_bifurcation(ds, tmp_path / "bif.png", title="bifurcation")
    ax, ax_eig = fig.axes
    theory = {line.get_label(): line for line in ax.get_lines() if line.get_label().endswith("(theory)")}
    assert list(theory) == ["rnn (theory)", "dnn (theory)"]
    for arch in ("rnn", "dnn"):
        np.testing.assert_array_equal(theory[f"{arch} (theory)"].get_xdata(), ds["value"])
        np.testing.assert_array_equal(theory[f"{arch} (theory)"].get_ydata(), ds["coherence"].sel(arch=arch))
    critical = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(critical) == 1 and list(critical[0].get_xdata()) == [0.35, 0.35]  # none for the DNN (NaN)
    assert critical[0].get_color() == theory["rnn (theory)"].get_color()
    bars = {c.get_label(): c for c in ax.containers}
    assert sorted(bars) == ["dnn, N = 32", "dnn, N = 64", "rnn, N = 32", "rnn, N = 64"]
    for arch in ("rnn", "dnn"):
        for N in (32, 64):
            data_line, _, (bar_segments,) = bars[f"{arch}, N = {N}"]
            np.testing.assert_array_equal(data_line.get_xdata(), ds["sample_value"])
            np.testing.assert_array_equal(data_line.get_ydata(), ds["sampled_coherence"].sel(arch=arch, N=N))
            half_lengths = [abs(seg[1, 1] - seg[0, 1]) / 2 for seg in bar_segments.get_segments()]
            np.testing.assert_allclose(half_lengths, ds["sampled_coherence_err"].sel(arch=arch, N=N))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("target_scale", "temporal coherence rho")
    assert {t.get_text() for t in ax.get_legend().get_texts()} == set(theory) | set(bars)
    eig = {line.get_label(): line.get_ydata() for line in ax_eig.get_lines() if not line.get_label().startswith("_")}
    np.testing.assert_array_equal(eig["rnn"], ds["leading_eigenvalue"].sel(arch="rnn"))
    np.testing.assert_array_equal(eig["dnn"], ds["leading_eigenvalue"].sel(arch="dnn"))
    assert ax_eig.get_ylabel() == "leading cross-time Hessian eigenvalue" and fig.get_suptitle() == "bifurcation"
    assert_png(tmp_path / "bif.png", fig)


def test_plot_phase_diagram_masks_cells_without_a_transition(tmp_path):
    crit = np.array([[0.3, 0.4, 0.5], [0.35, np.nan, 0.6], [0.45, 0.5, 0.7]])
    ds = xr.Dataset({"critical": (("prior.g", "architecture.T"), crit, {"description": "critical target_scale"})},
                    coords={"prior.g": [0.8, 0.9, 1.0], "architecture.T": [3, 4, 5]})
    fig = plots.plot_phase_diagram(ds, tmp_path / "pd.png")
    ax, colour_bar = fig.axes
    (mesh,) = ax.collections[:1]
    drawn = mesh.get_array()
    np.testing.assert_array_equal(drawn.mask.reshape(3, 3), np.isnan(crit.T))
    np.testing.assert_array_equal(drawn.filled(np.nan).reshape(3, 3), crit.T)
    assert len(ax.collections) > 1  # the level lines (>= 4 finite cells)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("prior.g", "architecture.T", "critical learning signal")
    assert colour_bar.get_ylabel() == "critical target_scale"
    assert_png(tmp_path / "pd.png", fig)


def test_closure_studies_are_labelled_as_such():
    config = json.dumps({"control": "target_scale", "method": "gaussian"})
    fig = plots.plot_bifurcation(_bifurcation_dataset().assign_attrs(config=config))
    labels = [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels[:2] == ["rnn (Gaussian closure)", "dnn (Gaussian closure)"]
    grid = xr.Dataset({"critical": (("g", "kappa"), [[0.5, 0.6]])}, coords={"g": [1.0], "kappa": [0.1, 0.2]},
                      attrs={"config": config})
    assert plots.plot_phase_diagram(grid).axes[0].get_title() == "critical learning signal (Gaussian closure)"


def _sweep_like(scales, methods, seed, errors=False):
    """The layout of kernelfield.sweep.load for axes (architecture, target_scale)."""
    rng = np.random.default_rng(seed)
    shape = (2, len(scales))
    data = {"coherence_theory": (("architecture", "target_scale"), rng.random(shape)),
            "theory_method": (("architecture", "target_scale"), np.full(shape, methods, dtype=object))}
    if errors:
        data.update(coherence_theory_err=(("architecture", "target_scale"), rng.random(shape) / 10),
                    coherence_sampled=(("architecture", "target_scale"), rng.random(shape)),
                    coherence_sampled_err=(("architecture", "target_scale"), rng.random(shape) / 10))
    return xr.Dataset(data, coords={"architecture": ["rnn", "dnn"], "target_scale": scales})


def test_plot_theory_and_networks_draws_the_curve_and_the_points_with_error_bars(tmp_path):
    curve = _sweep_like(np.linspace(0.1, 2.0, 11), "gaussian", 0)
    points = _sweep_like([0.2, 1.0], "particles", 1, errors=True)
    fig = plots.plot_theory_and_networks(curve, points, path=tmp_path / "m.png", title="erf")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    bars = {c.get_label(): c for c in ax.containers}
    assert sorted(lines) == ["dnn: Gaussian closure", "rnn: Gaussian closure"]
    assert sorted(bars) == ["dnn: particle solver", "dnn: sampled networks", "rnn: particle solver",
                            "rnn: sampled networks"]
    for arch in ("rnn", "dnn"):
        np.testing.assert_array_equal(lines[f"{arch}: Gaussian closure"].get_ydata(),
                                      curve["coherence_theory"].sel(architecture=arch))
        for source, label in (("theory", "particle solver"), ("sampled", "sampled networks")):
            data_line, _, (segments,) = bars[f"{arch}: {label}"]
            np.testing.assert_array_equal(data_line.get_xdata(), [0.2, 1.0])
            np.testing.assert_array_equal(data_line.get_ydata(), points[f"coherence_{source}"].sel(architecture=arch))
            half = [abs(seg[1, 1] - seg[0, 1]) / 2 for seg in segments.get_segments()]
            np.testing.assert_allclose(half, points[f"coherence_{source}_err"].sel(architecture=arch))
        assert bars[f"{arch}: particle solver"][0].get_color() == lines[f"{arch}: Gaussian closure"].get_color()
    assert (ax.get_xlabel(), ax.get_ylabel(), fig.get_suptitle()) == ("target_scale", "temporal coherence rho", "erf")
    assert_png(tmp_path / "m.png", fig)
    with pytest.raises(ValueError, match="^curve: coherence_theory must have one axis besides 'architecture'"):
        plots.plot_theory_and_networks(curve.expand_dims(seed=[0, 1]))
