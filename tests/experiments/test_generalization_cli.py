"""The generalisation study from the command line: configuration, figures, netCDF."""

import copy
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from matplotlib.figure import Figure
from typer.testing import CliRunner

import kernelfield as kf
from kernelfield import plots_generalization as pg
from kernelfield import schedules
from kernelfield.cli import app
from kernelfield.config import ConfigError, load_generalization_config, parse_generalization_config
from kernelfield.experiments.generalization import learning_curves
from figure_checks import assert_png

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "generalization").glob("*.toml"))
runner = CliRunner()

LAZY = """
[task]
generator = "integration"
T = 4
D = 8
supervise_every = 1
[schedule]
kind = "every"
k = [1, 2]
[study]
architectures = ["rnn", "dnn", "share_Uv"]
P = [1, 2, 3]
P_test = 2
repeats = 2
methods = ["lazy"]
"""


def test_one_example_per_task():
    names = {p.stem for p in EXAMPLES}
    assert {"integration", "delayed_copy", "oscillator", "digits", "sequential_digits", "sunspots",
            "endpoint_patterns", "integration_networks"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_load(path):
    cfg = load_generalization_config(path)
    kw = cfg.study_kwargs()
    assert kw["T"] == cfg.task.T and kw["P"] == sorted(cfg.study.P)
    assert all(isinstance(s, schedules.Schedule) for s in kw["schedules"])


DRAW_OF = re.compile(r"draw of\s+(?:#\s*)?([a-z_]+\.toml)")
SHARED_DRAWS = [(p, m.group(1)) for p in EXAMPLES
                for m in [DRAW_OF.search(p.read_text().split("\n[task]")[0])] if m]


def test_configs_that_share_a_draw_are_found():
    assert {p.stem for p, _ in SHARED_DRAWS} >= {
        "integration_erf_sampled", "digits_erf_sampled", "sunspots_erf_sampled", "digits_erf_sampled_32",
        "sunspots_erf_sampled_32", "integration_large_networks", "digits_large_networks"}


@pytest.mark.parametrize("path, other", SHARED_DRAWS, ids=lambda x: getattr(x, "name", x))
def test_a_config_on_another_configs_draw_has_its_pool_and_targets(path, other):
    """A networks config that says it uses another config's draw must produce the same pool (the
    generator, its arguments and seed, ``max(P) + P_test``) and the same supervised steps, so its
    networks stand at that study's points."""
    mine = load_generalization_config(path).study_kwargs()
    theirs = load_generalization_config(path.parent / other).study_kwargs()
    for key in ("task", "T", "task_kwargs", "seed", "P_test", "repeats", "phi", "kappa", "prior"):
        assert mine[key] == theirs[key], key
    assert max(mine["P"]) == max(theirs["P"])
    assert [s.label for s in mine["schedules"]] == [s.label for s in theirs["schedules"]]


def test_config_builds_study_arguments():
    cfg = parse_generalization_config(tomllib.loads(LAZY))
    kw = cfg.study_kwargs()
    assert [s.label for s in kw["schedules"]] == ["every 1", "every 2"]
    assert kw["methods"] == ["lazy"] and kw["sampling"] is None and kw["langevin"] is None
    assert kw["task_kwargs"] == {"D": 8, "supervise_every": 1}


BASE = tomllib.loads(LAZY)


def _with(section, **kw):
    data = copy.deepcopy(BASE)
    data.setdefault(section, {}).update(kw)
    return data


@pytest.mark.parametrize(
    "data, expected",
    [
        (_with("task", generator="xor"), r"task\.generator: unknown task generator 'xor'"),
        (_with("task", P=3), r"task\.P: set the training-set sizes in \[study\]"),
        (_with("task", delay=2), r"task\.delay: not an argument of task generator 'integration'"),
        ({**BASE, "schedule": {"kind": "random"}}, r"schedule\.fraction: required when kind = 'random'"),
        (_with("schedule", fraction=0.5), r"schedule\.fraction: not used with kind = 'every'"),
        (_with("schedule", k=[0]), r"k: must be an integer >= 1"),
        (_with("study", architectures=["lstm"]), r"study\.architectures: unknown architecture 'lstm'"),
        (_with("study", methods=["magic"]), r"study\.methods\.0: .*'theory', 'lazy', 'sampled' or 'langevin'"),
        (_with("study", P=[0, 2]), r"study\.P: .*>= 1"),
        (_with("sampling", P=[7]), r"sampling\.P: must be a subset of study\.P"),
        (_with("langevin", steps=10), r"langevin\.steps: unknown key.*allowed: N, num_networks"),
        (_with("study", colour=1), r"study\.colour: unknown key"),
    ],
)
def test_bad_study_config(data, expected):
    with pytest.raises(ConfigError, match=r"^bad\.toml: invalid configuration.*" + expected):
        parse_generalization_config(data, source="bad.toml")


def test_linear_study_takes_more_sequences_than_input_dimensions():
    """Linear phi, exact solver and lazy kernel at P + P_test = 8 > D = 2: no singular-input error,
    every solve converges, and the RNN's shared weights carry the signal to the unsupervised steps
    (integration task: the DNN's untied readout predicts zero there, nmse = 1)."""
    data = _with("task", D=2)
    data["schedule"]["k"] = 2
    data["study"] = {**data["study"], "P": [6], "repeats": 1, "architectures": ["rnn", "dnn"],
                     "methods": ["theory", "lazy"]}
    ds = learning_curves(**parse_generalization_config(data).study_kwargs(), progress=False)
    assert ds.attrs["theory_method"] == "exact" and np.all(ds.theory_converged == 1.0)
    assert np.all(np.isfinite(ds.nmse_heldout)) and np.all(np.isfinite(ds.nmse_unsupervised))
    unsupervised = ds.nmse_unsupervised.sel(predictor="theory").squeeze()
    assert unsupervised.sel(arch="rnn") < 0.5 and unsupervised.sel(arch="dnn") == 1.0  # measured: 0.14


@pytest.fixture(scope="module")
def lazy_study():
    cfg = parse_generalization_config(tomllib.loads(LAZY))
    return learning_curves(**cfg.study_kwargs(), progress=False)


def _with_networks(ds):
    """The lazy study with fake network rows, to draw every marker kind."""
    per = [v for v in ds.data_vars if "predictor" in ds[v].dims]
    fake = []
    for name, shift in (("sampled", 0.02), ("langevin", -0.02)):
        part = ds[per].assign_coords(predictor=[name]) + shift
        for v in per:
            if "_sem_" in v:
                part[v] = xr.full_like(part[v], 0.01)
        fake.append(part)
    return xr.merge([xr.concat([ds[per], *fake], dim="predictor"), ds.drop_vars(per)], join="outer", combine_attrs="override")


def _lines(ax, linestyle):
    """``ydata`` of the lines drawn with ``linestyle`` (one per architecture, in order)."""
    return [line.get_ydata() for line in ax.get_lines() if line.get_linestyle() == linestyle]


def _markers(ax, marker):
    """``ydata`` of the error-bar points drawn with ``marker`` (one per architecture, in order)."""
    return [c.lines[0].get_ydata() for c in ax.containers if c.lines[0].get_marker() == marker]


def test_figures(lazy_study, tmp_path):
    ds = _with_networks(lazy_study)
    archs = list(ds.arch.values)

    def mean(name, **sel):
        return [ds[name].sel(arch=a, **sel).mean("repeat").values for a in archs]

    fig = pg.plot_learning_curves(ds, tmp_path / "lc.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # 2 schedules x (unsupervised, held-out)
    assert [ax.get_title() for ax in fig.axes] == [
        "unsupervised steps of training sequences — every 1 (fraction 1.00)", "held-out sequences — every 1 (fraction 1.00)",
        "unsupervised steps of training sequences — every 2 (fraction 0.50)", "held-out sequences — every 2 (fraction 0.50)"]
    assert _lines(fig.axes[0], "--") == [] and not fig.axes[0].containers  # every step supervised: nothing to predict
    for ax, (sched, part) in zip(fig.axes[1:], [("every 1", "heldout"), ("every 2", "unsupervised"), ("every 2", "heldout")]):
        np.testing.assert_allclose(_lines(ax, "--"), mean(f"nmse_{part}", schedule=sched, predictor="lazy"), rtol=1e-12)
        np.testing.assert_allclose(_markers(ax, "o"), mean(f"nmse_{part}", schedule=sched, predictor="sampled"), rtol=1e-12)
        np.testing.assert_allclose(_markers(ax, "s"), mean(f"nmse_{part}", schedule=sched, predictor="langevin"), rtol=1e-12)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("training sequences P", "normalised MSE (1 = predict 0)")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == archs + ["Langevin-trained", "lazy kernel", "sampled networks"]
    arch_colours = [handle.get_color() for handle in fig.legends[0].legend_handles[:len(archs)]]
    assert len(set(arch_colours)) == len(archs)  # one colour per architecture, used for its curves
    assert [line.get_color() for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"] == arch_colours
    assert fig.get_suptitle().startswith("integration: T = 4, held-out sequences = 2")
    assert_png(tmp_path / "lc.png", fig)

    fig = pg.plot_step_errors(ds, P=2, path=tmp_path / "steps.png")
    assert len(fig.axes) == 4 and fig.axes[3].get_title() == "held-out sequences — every 2, P = 2"
    supervised = ds.supervised.sel(schedule="every 2").isel(a_train=slice(0, 2)).mean(("repeat", "a_train"))
    np.testing.assert_allclose([bar.get_height() for bar in fig.axes[2].patches], supervised)
    np.testing.assert_allclose(_lines(fig.axes[3], "--"), mean("step_nmse_heldout", schedule="every 2", predictor="lazy", P=2))
    assert {tuple(line.get_xdata()) for line in fig.axes[3].get_lines() if line.get_linestyle() == "--"} == {(0, 1, 2, 3)}
    assert_png(tmp_path / "steps.png", fig)

    fig = pg.plot_fraction(ds, path=tmp_path / "fraction.png")
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "supervised fraction of steps"
    by_fraction = [m[::-1] for m in mean("nmse_heldout", predictor="lazy", P=3)]  # fractions 1.0, 0.5 -> 0.5, 1.0
    np.testing.assert_allclose(_lines(fig.axes[1], "--"), by_fraction)
    assert_png(tmp_path / "fraction.png", fig)
    with pytest.raises(ValueError, match="^P:"):
        pg.plot_step_errors(ds, P=7)
    with pytest.raises(ValueError, match="^ds:"):
        pg.plot_learning_curves(xr.Dataset())
    with pytest.raises(ValueError, match="^metric:"):
        pg.plot_learning_curves(ds, metric="sign_error")


def test_help():
    result = runner.invoke(app, ["generalization", "--help"])
    assert result.exit_code == 0 and "CONFIG" in result.output.upper() and "--out" in result.output


def test_cli_writes_figures_and_netcdf(tmp_path):
    cfg = tmp_path / "lazy.toml"
    cfg.write_text(LAZY)
    out = tmp_path / "out"
    result = runner.invoke(app, ["generalization", str(cfg), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (out / "generalization.nc").is_file()
    assert not (out / ".generalization-checkpoint").exists()  # kept only while the study runs
    for name in ("learning_curve.png", "step_error.png", "fraction.png"):
        assert_png(out / name)
    assert "normalised MSE at P = 3" in result.output and "share_Uv" in result.output and "held-out" in result.output
    ds = kf.load(out / "generalization.nc")
    assert ds.attrs["kind"] == "generalization" and ds.sizes["schedule"] == 2 and ds.sizes["repeat"] == 2
    assert np.all(ds.nmse_unsupervised.sel(arch="dnn", schedule="every 2") == 1.0)


def test_cli_bad_config_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(LAZY.replace('"share_Uv"', '"lstm"'))
    result = runner.invoke(app, ["generalization", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "study.architectures" in lines[0]
    assert not (tmp_path / "o").exists()


def test_theory_method_from_the_config_and_the_command_line(tmp_path):
    cfg = parse_generalization_config(_with("theory", phi="erf", method="gaussian"))
    assert cfg.study_kwargs()["solve_kwargs"]["method"] == "gaussian"
    with pytest.raises(ConfigError, match=r"theory\.method: Input should be 'auto', 'exact', 'particles' or 'gaussian'"):
        parse_generalization_config(_with("theory", method="closure"))
    config = tmp_path / "lazy.toml"
    config.write_text(LAZY)
    result = runner.invoke(app, ["generalization", str(config), "--out", str(tmp_path / "out"), "--no-progress",
                                 "--method", "gaussian"])
    assert result.exit_code == 0, result.output
    ds = kf.load(tmp_path / "out" / "generalization.nc")
    assert json.loads(ds.attrs["config"])["solve"]["method"] == "gaussian"
    assert ds.attrs["theory_method"] == ""  # a lazy-only study solves no theory


def test_closure_theory_is_labelled(lazy_study):
    ds = lazy_study.assign_coords(predictor=["theory"]).assign_attrs(theory_method="gaussian")
    fig = pg.plot_learning_curves(ds)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-1] == "theory (Gaussian closure)"
    legend = [t.get_text() for t in pg.plot_learning_curves(ds.assign_attrs(theory_method="exact")).legends[0].get_texts()]
    assert legend[-1] == "theory"


def _coherence_sweep(scales, archs, method, seed, sampled=False):
    """The layout of kernelfield.sweep.load for axes (architecture, target_scale)."""
    rng = np.random.default_rng(seed)
    shape = (len(archs), len(scales))
    data = {"coherence_theory": (("architecture", "target_scale"), rng.random(shape)),
            "theory_method": (("architecture", "target_scale"), np.full(shape, method, dtype=object))}
    if sampled:
        data["coherence_sampled"] = (("architecture", "target_scale"), rng.random(shape))
    return xr.Dataset(data, coords={"architecture": archs, "target_scale": scales})


def test_headline_figure_draws_both_claims_from_the_same_panels(lazy_study, tmp_path):
    """Panels (a) and (b) are plot_theory_and_networks' axes, panel (c) the unsupervised panel of
    plot_learning_curves for the first schedule: the same lines, markers and legend."""
    from kernelfield.plots_headline import plot_headline

    linear = _coherence_sweep(np.linspace(0, 4, 9), ["rnn", "dnn", "tied_every_2"], "exact", 0)
    linear_points = _coherence_sweep([1.0, 3.0], ["rnn", "dnn", "tied_every_2"], "exact", 1, sampled=True)
    erf = _coherence_sweep(np.linspace(0, 2, 5), ["rnn", "dnn"], "gaussian", 2)
    erf_points = _coherence_sweep([0.5, 1.5], ["rnn", "dnn"], "particles", 3, sampled=True)
    ds = _with_networks(lazy_study)
    fig = plot_headline(linear, linear_points, erf, erf_points, ds, path=tmp_path / "headline.png")
    a, b, c = fig.axes
    assert [ax.get_title()[:3] for ax in (a, b, c)] == ["(a)", "(b)", "(c)"]
    labels = [line.get_label() for line in a.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["rnn: exact theory", "dnn: exact theory", "tied_every_2: exact theory"]
    np.testing.assert_array_equal(a.get_lines()[0].get_ydata(), linear["coherence_theory"].sel(architecture="rnn"))
    assert sorted(cont.get_label() for cont in b.containers) == [
        "dnn: particle solver", "dnn: sampled networks", "rnn: particle solver", "rnn: sampled networks"]
    first = pg.plot_learning_curves(ds.sel(schedule=[ds.schedule.values[0]])).axes[0]
    for style in ("-", "--"):
        np.testing.assert_array_equal(_lines(c, style), _lines(first, style))
    np.testing.assert_array_equal(_markers(c, "o"), _markers(first, "o"))
    assert [t.get_text() for t in c.get_legend().get_texts()][:len(ds.arch)] == list(ds.arch.values)
    assert (tmp_path / "headline.png").stat().st_size > 10_000


def test_learning_curves_take_a_log_axis_where_p_spans_a_factor_8(lazy_study):
    """P = 4 ... 256 crowds the small P on a linear axis: from a span of 8 on the axis is
    logarithmic (base 2), ticked and labelled at each P, with the network markers' offsets by a
    factor; below it stays linear."""
    P = lazy_study.P.values
    wide = _with_networks(lazy_study).assign_coords(P=P[0] * 8 ** np.arange(len(P)))
    ax = pg.plot_learning_curves(wide).axes[1]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(p) for p in wide.P.values]
    points = [c.lines[0].get_xdata() for c in ax.containers]
    np.testing.assert_allclose(np.ptp(np.log2(points), axis=0), np.ptp(np.log2(points), axis=0)[0])  # same shift at each P
    narrow = lazy_study.assign_coords(P=P[0] + np.arange(len(P)))
    assert pg.plot_learning_curves(narrow).axes[1].get_xscale() == "linear"


def test_learning_curves_cross_the_theory_points_that_did_not_converge(lazy_study):
    """A theory point whose solve did not converge in some repeat is crossed (in its
    architecture's colour, on both panels) and the legend says what the cross means; a study
    that converged everywhere has no crosses."""
    theory = lazy_study.sel(predictor=["lazy"]).assign_coords(predictor=["theory"])
    per = [v for v in lazy_study.data_vars if "predictor" in lazy_study[v].dims]
    ds = xr.merge([xr.concat([lazy_study[per], theory[per]], dim="predictor"), lazy_study.drop_vars(per)],
                  join="outer", combine_attrs="override")
    ds["theory_converged"] = xr.ones_like(ds.theory_converged.fillna(1.0))
    clean = pg.plot_learning_curves(ds)
    assert not any(line.get_marker() == "x" for ax in clean.axes for line in ax.get_lines())
    ds["theory_converged"][dict(arch=1, schedule=1, P=2, repeat=1)] = 0.0
    fig = pg.plot_learning_curves(ds)
    for ax, part in zip(fig.axes[2:], ("unsupervised", "heldout")):  # the second schedule's row
        crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
        assert len(crosses) == 1
        expected = ds[f"nmse_{part}"].sel(predictor="theory").isel(arch=1, schedule=1, P=2).mean("repeat")
        np.testing.assert_allclose(crosses[0].get_ydata(), [float(expected)])
        assert crosses[0].get_xdata()[0] == ds.P.values[2]
        assert crosses[0].get_color() == pg._colours(ds)[ds.arch.values[1]]
    assert "theory: not converged" in [t.get_text() for t in fig.legends[0].get_texts()]
