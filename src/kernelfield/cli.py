"""Command line interface: ``kernelfield solve|sample|compare|phase-diagram|spectrum|generalization CONFIG --out DIR``,
``kernelfield sweep SWEEP.toml --store PATH`` and ``kernelfield report STORE --out DIR``.

solve ... spectrum read a TOML configuration (see :mod:`kernelfield.config` and ``examples/``),
``--method`` overriding its ``[theory] method`` (e.g. ``gaussian``, the Gaussian closure), write netCDF results (:mod:`kernelfield.storage`) and PNG heatmaps (:mod:`kernelfield.plots`)
to ``--out`` and prints a summary. Invalid configurations and invalid arguments are reported
as one red line on stderr with exit code 2 (no traceback).
"""

from __future__ import annotations

import shutil
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from ._version import __version__
from . import plots, plots_generalization, storage
from . import sweep as sweeps
from .compare import compare as compare_theory_and_samples
from .config import (
    ConfigError,
    load_config,
    load_generalization_config,
    parse_config,
    parse_generalization_config,
)
from .experiments import phase as phase_studies
from .experiments.generalization import learning_curves
from .observables import mean_coherence
from .progress import RichBars
from .report import write_report
from .finite.sampling import sample as sample_posterior
from .spec import Architecture
from .theory.solver import solve as solve_theory

app = typer.Typer(
    name="kernelfield",
    help="Trained kernels of recurrent and deep networks: mean-field theory (solve), "
    "finite-width posterior samples (sample) and their comparison (compare); the phase transition "
    "(phase-diagram, spectrum); learning curves on sequential tasks (generalization); "
    "parameter sweeps (sweep) and their report (report). "
    "Each command takes a TOML config; see examples/*.toml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
err_console = Console(stderr=True)

CONFIG_HELP = r"TOML configuration file (tables \[architecture], \[prior], \[task], \[theory], \[sampling]); see examples/."
OUT_HELP = "Output directory (created if missing); existing files of the same name are replaced."
TheoryMethod = Literal["auto", "exact", "particles", "gaussian"]
METHOD_OPTION = typer.Option(
    None, "--method", show_default=False,
    help=r"Theory solver, replacing the config's \[theory] method: exact (linear phi), particles (any phi), gaussian "
         "(the Gaussian closure: any phi, fast, approximate) or auto (exact for linear phi, particles otherwise).")


def _fail(message: str) -> None:
    err_console.print(f"error: {message}", style="bold red", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _run(fn):
    """Run ``fn`` turning library errors into one red line and exit code 2."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                return fn()
            finally:
                _warn_lines(caught)
    except typer.Exit:
        raise
    except ConfigError as e:
        _fail(str(e))
    except (ValueError, NotImplementedError, FloatingPointError) as e:
        _fail(str(e))
    except OSError as e:  # e.g. the output directory cannot be written
        _fail(f"{e.filename or ''}: {e.strerror or e}" if e.filename else str(e))


def _warn_lines(caught) -> None:
    for w in caught:
        err_console.print(f"warning: {w.message}", style="yellow", markup=False, highlight=False, soft_wrap=True)


def _bars(enabled: bool):
    """The progress display of one command: a :class:`RichBars` on the console that every run of
    the command reports to (``progress=bars``), or ``False`` (silent) when ``enabled`` is off."""
    return RichBars(console) if enabled else nullcontext(False)


def _load(config: Path, method: Optional[str], load=load_config, parse=parse_config):
    """The configuration at ``config``, with ``theory.method`` replaced by ``method`` when given."""
    cfg = load(config)
    if method is None:
        return cfg
    data = cfg.model_dump(exclude_none=True)
    data["theory"]["method"] = method
    return parse(data, source=f"{config} with --method {method}")


def _title(cfg) -> str:
    arch = cfg.build_architecture()
    closure = f", {plots.METHOD_LABELS['gaussian']}" if cfg.theory.method == "gaussian" else ""
    return (f"{arch.name}, T={arch.T}, {cfg.task.generator} (P={cfg.build_task().P}), "
            f"phi={cfg.theory.phi}, kappa={cfg.theory.kappa:g}{closure}")


def _do_solve(cfg, out: Path, progress):
    sol = solve_theory(**cfg.solve_kwargs(), progress=progress)  # a ConvergenceWarning is printed by _run
    storage.save(storage.solution_to_dataset(sol), out / "solution.nc")
    plots.plot_kernels(sol.C, None, sol.task.T, sol.task.P, out / "solution.png", title="theory: " + _title(cfg))
    return sol


def _print_solution(sol) -> None:
    T, P = sol.task.T, sol.task.P
    status = "[green]converged[/green]" if sol.converged else "[red]NOT converged[/red]"
    console.print(f"[bold]theory[/bold] {sol.arch.name} T={T} P={P} n={T * P}: S = {sol.S:.6g}, "
                  f"residual = {sol.residual:.2e}, {status}, {sol.seconds:.1f} s, method {sol.method}")
    if sol.method == "gaussian":
        console.print("Gaussian closure: an approximation for nonlinear phi (S is a lower bound on the exact action)")
    table = Table(title="branches (stationary points of S)", title_justify="left")
    for col in ("#", "init", "S", "Gamma", "E", "residual", "conv.", "rho"):
        table.add_column(col, justify="right", no_wrap=True)
    best = max(range(len(sol.branches)), key=lambda i: sol.branches[i].S)
    for i, b in enumerate(sol.branches):
        S = f"{b.S:.5g}" + (f" ± {b.S_err:.1g}" if b.S_err else "")
        table.add_row(f"{i}{'*' if i == best else ''}", b.init, S, f"{b.Gamma:.5g}", f"{b.E:.5g}",
                      f"{b.residual:.1e}", "yes" if b.converged else "no", f"{mean_coherence(b.C_centred, T, P):.3f}")
    console.print(table)
    console.print("* dominant branch (largest S); rho: mean temporal coherence over t != s >= 1")


def _do_sample(cfg, out: Path, progress):
    samples = sample_posterior(**cfg.sample_kwargs(), progress=progress)
    storage.save(storage.samples_to_dataset(samples), out / "samples.nc")
    T, P = samples.task.T, samples.task.P
    plots.plot_kernels(samples.C_mean, None, T, P, out / "samples.png",
                       title=f"sampled (N={samples.N}): " + _title(cfg))
    return samples


def _print_samples(s) -> None:
    step = np.atleast_1d(np.asarray(s.step_size, dtype=float))
    console.print(f"[bold]samples[/bold] {s.arch.name} N={s.N}: {s.num_chains} chains x {s.num_samples} samples "
                  f"(warm-up {s.num_warmup}), acceptance {s.acceptance_rate:.3f}, ESS {s.ess:.0f}, "
                  f"step size {step.min():.3g}-{step.max():.3g}, {s.seconds:.1f} s")
    if getattr(s, "num_divergent", 0):
        console.print(f"[yellow]{s.num_divergent} divergent transitions[/yellow]")


def _print_comparison(cmp) -> None:
    console.print(f"[bold]comparison[/bold] N={cmp.N}: kernel error {cmp.error:.4f} ± {cmp.error_bar:.4f} "
                  f"(sampling), prediction error {cmp.prediction_error:.4f}, parity {cmp.parity:+d}")
    table = Table(title="relative block errors ||C_samp - C_theory||_ts (± sampling error)", title_justify="left")
    table.add_column("t\\s", justify="right", no_wrap=True)
    for s in range(cmp.T):
        table.add_column(str(s), justify="right", no_wrap=True)
    for t in range(cmp.T):
        table.add_row(str(t), *(f"{cmp.block_error[t, s]:.4f} ± {cmp.block_error_bar[t, s]:.4f}" for s in range(cmp.T)))
    console.print(table)


@app.command()
def solve(
    config: Path = typer.Argument(..., help=CONFIG_HELP, show_default=False),
    out: Path = typer.Option(Path("results"), "--out", "-o", help=OUT_HELP),
    method: Optional[TheoryMethod] = METHOD_OPTION,
):
    """Solve the mean-field theory: the trained kernel C maximising the action S.

    Writes OUT/solution.nc (kernels, branches, predictions, provenance) and OUT/solution.png (kernel heatmap), and prints S, the residual, convergence and every branch found.
    """

    def go():
        cfg = _load(config, method)
        with _bars(True) as bars:
            sol = _do_solve(cfg, out, bars)
        _print_solution(sol)
        console.print(f"wrote {out / 'solution.nc'}, {out / 'solution.png'}")

    _run(go)


@app.command()
def sample(
    config: Path = typer.Argument(..., help=CONFIG_HELP, show_default=False),
    out: Path = typer.Option(Path("results"), "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the sampler's progress bar."),
):
    r"""Sample the finite-width posterior with HMC (\[sampling] table: N, chains, samples, ...).

    Writes OUT/samples.nc (mean and per-chain kernels, outputs, kept weights, diagnostics) and OUT/samples.png (heatmap of the mean kernel), and prints acceptance rate, ESS and timing.
    """

    def go():
        cfg = load_config(config)
        with _bars(progress) as bars:
            s = _do_sample(cfg, out, bars)
        _print_samples(s)
        console.print(f"wrote {out / 'samples.nc'}, {out / 'samples.png'}")

    _run(go)


@app.command()
def compare(
    config: Path = typer.Argument(..., help=CONFIG_HELP, show_default=False),
    out: Path = typer.Option(Path("results"), "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    method: Optional[TheoryMethod] = METHOD_OPTION,
):
    """Solve the theory, sample the finite-width network and compare them block by block.

    Writes OUT/solution.nc, OUT/samples.nc, OUT/comparison.nc, OUT/comparison.png (theory | sampled | difference) and OUT/block_errors.png, and prints the table of per-block relative errors with their sampling error bars (cross-time blocks compared up to W -> -W).
    """

    def go():
        cfg = _load(config, method)
        with _bars(progress) as bars:
            sol = _do_solve(cfg, out, bars)
            _print_solution(sol)
            s = _do_sample(cfg, out, bars)
        _print_samples(s)
        cmp = compare_theory_and_samples(sol, s)
        ds = storage.comparison_to_dataset(
            cmp, config=storage.config_json(sol.arch, sol.prior, sol.phi, sol.kappa, N=s.N, seed=s.seed))
        storage.save(ds, out / "comparison.nc")
        plots.plot_kernels(cmp.C_theory, cmp.C_sampled, cmp.T, cmp.P, out / "comparison.png",
                           title=f"N={cmp.N}: " + _title(cfg))
        plots.plot_block_errors(cmp, out / "block_errors.png")
        _print_comparison(cmp)
        console.print(f"wrote solution.nc, samples.nc, comparison.nc, comparison.png, block_errors.png to {out}")

    _run(go)


def _phase_build(cfg):
    """``build(**{field: value})`` for :func:`kernelfield.experiments.phase.phase_diagram`."""

    def build(**fields):
        c = cfg.with_values(**fields)
        return c.build_architecture(), c.build_task(), c.build_prior(), c.theory.kappa

    return build


@app.command("phase-diagram")
def phase_diagram(
    config: Path = typer.Argument(..., help=CONFIG_HELP, show_default=False),
    out: Path = typer.Option(Path("results"), "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    method: Optional[TheoryMethod] = METHOD_OPTION,
):
    r"""The phase transition: order parameter vs control for several sharing patterns, and the critical signal over a 2-D grid (\[phase] table).

    Writes OUT/bifurcation.nc and .png (theory curves, sampled networks at \[phase] widths with \[sampling] settings, critical values, the exponent of rho near the transition, the leading cross-time Hessian eigenvalue) and, when \[phase] has axes x and y, OUT/phase_diagram.nc and .png.
    """

    def go():
        cfg = _load(config, method)
        with _bars(progress) as bars:
            ph, base = cfg.phase, cfg.build_architecture()
            sampling = cfg.sampling.model_dump(exclude={"N", "keep_weights"})
            ds = phase_studies.bifurcation(ph.build_architectures(base.T), cfg.build_task(), ph.values, control=ph.control,
                                   prior=cfg.build_prior(), phi=cfg.theory.phi, kappa=cfg.theory.kappa, widths=ph.widths,
                                   sample_values=ph.sample_values, sampling=sampling, progress=bars,
                                   method=cfg.theory.method)
            storage.save(ds, out / "bifurcation.nc")
            plots.plot_bifurcation(ds, out / "bifurcation.png", title=_title(cfg))
            table = Table(title=f"critical {ph.control} (symmetric solution loses stability)", title_justify="left")
            for col in ("architecture", f"critical {ph.control}", "beta (rho ~ dist^beta)", f"rho at {ph.values[-1]:g}"):
                table.add_column(col, justify="right")
            for arch in ds["arch"].values:
                crit, beta = float(ds["critical"].sel(arch=arch)), float(ds["exponent"].sel(arch=arch))
                analysed = np.isfinite(ds["leading_eigenvalue"].sel(arch=arch)).any()
                table.add_row(str(arch), f"{crit:.4g}" if np.isfinite(crit) else
                              "none (stable)" if analysed else "n/a (no stability analysis for this phi, method)",
                              f"{beta:.3f}" if np.isfinite(beta) else "-",
                              f"{float(ds['coherence'].sel(arch=arch)[-1]):.3f}")
            console.print(table)
            written = ["bifurcation.nc", "bifurcation.png"]
            if ph.x is not None:
                grid = phase_studies.phase_diagram(_phase_build(cfg), (ph.x.field, ph.x.values), (ph.y.field, ph.y.values),
                                           control=ph.control, phi=cfg.theory.phi, tol=ph.tol, progress=bars,
                                           method=cfg.theory.method)
                storage.save(grid, out / "phase_diagram.nc")
                plots.plot_phase_diagram(grid, out / "phase_diagram.png", title=f"critical {ph.control}: {base.name}")
                failed = int((grid["status"] != "ok").sum())
                console.print(f"phase diagram: {grid['critical'].size - failed} of {grid['critical'].size} grid points "
                              f"with a transition" + (f"; see status in phase_diagram.nc for {failed} others" if failed else ""))
                written += ["phase_diagram.nc", "phase_diagram.png"]
            console.print(f"wrote {', '.join(written)} to {out}")

    _run(go)


@app.command()
def spectrum(
    config: Path = typer.Argument(..., help=CONFIG_HELP, show_default=False),
    out: Path = typer.Option(Path("results"), "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    method: Optional[TheoryMethod] = METHOD_OPTION,
):
    r"""Weight spectrum: predicted outlier eigenvalues of the recurrent matrix against sampled width-N networks (\[spectrum] table).

    Writes OUT/spectrum.nc and OUT/spectrum.png (complex spectra with the bulk circle and the predicted outlier; largest |lambda| vs control) and prints predicted vs sampled largest moduli.
    """

    def go():
        cfg = _load(config, method)
        sp = cfg.spectrum
        sampling = cfg.sampling.model_dump(exclude={"N"})
        base = cfg.build_architecture()
        archs = [base] + ([Architecture.dnn(base.T)] if sp.contrast_dnn and base.name != "dnn" else [])
        table = Table(title="largest |eigenvalue| of W: predicted outlier vs sampled (± s.e.)", title_justify="left")
        for col in ("architecture", sp.control, "predicted", *(f"N = {N}" for N in sp.widths)):
            table.add_column(col, justify="right")
        written = []
        with _bars(progress) as bars:
            for arch in archs:
                ds = phase_studies.weight_spectrum(arch, cfg.build_task(), sp.values, sp.widths, control=sp.control,
                                                   prior=cfg.build_prior(), phi=cfg.theory.phi,
                                                   kappa=cfg.theory.kappa, sampling=sampling, progress=bars,
                                                   method=cfg.theory.method)
                stem = "spectrum" if arch is base else f"spectrum_{arch.name}"
                storage.save(ds, out / f"{stem}.nc")
                plots.plot_spectrum(ds, path=out / f"{stem}.png", title=f"{arch.name}: " + _title(cfg))
                written += [f"{stem}.nc", f"{stem}.png"]
                predicted = np.abs(ds["predicted_real"].values + 1j * ds["predicted_imag"].values).max(axis=1)
                for i, v in enumerate(sp.values):
                    table.add_row(arch.name, f"{v:g}", f"{predicted[i]:.4f}", *(
                        f"{ds['top_modulus'].values[i, w]:.4f} ± {ds['top_modulus_err'].values[i, w]:.4f}"
                        for w in range(len(sp.widths))))
        console.print(table)
        console.print(f"bulk radius g = {cfg.prior.g:g}: an outlier is visible where predicted > g; "
                      f"wrote {', '.join(written)} to {out}")

    _run(go)


SWEEP_HELP = (r"TOML sweep file: compute = [...], \[base] (a run configuration), \[axes] (lists or ranges "
              r"per field), \[options.<computation>]; see examples/sweeps/ and kernelfield.sweep.")


@app.command()
def sweep(
    config: Path = typer.Argument(..., help=SWEEP_HELP, show_default=False),
    store: Path = typer.Option(..., "--store", "-s", help="Store directory (created if missing); an existing "
                               "store of this sweep is resumed: only points without a result are computed."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Address of a running Dask distributed "
                                            "scheduler (e.g. tcp://host:8786) to run the points on."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Also recompute points that failed before."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=0, help="Local worker processes "
                                          "(default: one per available CPU; 0 = in this process)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
):
    """Run a parameter sweep: every grid point's computations (solve, sample, compare, coherence, ...), locally or on a Dask cluster.

    Each finished point is written to STORE/points/<key>.nc at once (atomically) with its provenance; a point that raises is recorded in STORE/failed/<key>.json and the sweep goes on. Interrupted sweeps (Ctrl-C, SIGTERM) resume where they stopped. Exit code 1 when points failed.
    """
    def go():
        sw = sweeps.load_config(config)
        where = f"Dask scheduler {scheduler}" if scheduler else (
            "this process" if workers == 0 else f"{workers or sweeps.default_workers()} local processes")
        console.print(f"[bold]sweep[/bold] {sw.name}: {len(sw.points)} points "
                      f"({' x '.join(f'{a.name} {len(a.values)}' for a in sw.axes) or 'one point'}), "
                      f"compute {', '.join(sw.compute)}, on {where}")
        try:
            with _bars(progress) as bars:
                result = sweeps.run(sw, store, scheduler=scheduler, workers=workers, retry_failed=retry_failed,
                                    progress=bars)
        except sweeps.SweepInterrupted as e:
            err_console.print(f"interrupted: {e.finished} of {e.total} points are finished in {store}; run the "
                              "same command again to compute the rest", style="yellow", markup=False, highlight=False)
            raise typer.Exit(code=128 + e.signum)
        console.print(f"{result.computed} computed, {result.reused} already in the store, {result.failed} failed"
                      + (f", {result.skipped_failed} failed before (not retried; --retry-failed)"
                         if result.skipped_failed else "") + f" in {result.seconds:.1f} s; store: {store}")
        for key, error in result.failures.items():
            err_console.print(f"failed {key}: {error}", style="red", markup=False, highlight=False, soft_wrap=True)
        if result.failed or result.skipped_failed:
            err_console.print(f"tracebacks in {Path(store) / 'failed'}", style="red", markup=False, highlight=False)
            raise typer.Exit(code=1)

    _run(go)


@app.command()
def report(
    stores: list[Path] = typer.Argument(..., help="One or more sweep stores (written by kernelfield sweep).",
                                        show_default=False),
    out: Path = typer.Option(Path("report"), "--out", "-o", help=OUT_HELP),
):
    """Write an HTML and a Markdown report of sweep stores: figures (kernels, coherence vs control, phase diagram, spectra, learning curves) and a table of diagnostics.

    Writes OUT/report.html, OUT/report.md and OUT/figures/*.png and prints where the report is.
    """

    def go():
        html = write_report(stores, out)
        console.print(f"report: {html.resolve()} (and {html.with_suffix('.md').name})")

    _run(go)


GENERALIZATION_HELP = (r"TOML study configuration (tables \[task], \[schedule], \[study], \[prior], \[theory], "
                       r"\[sampling], \[langevin]); see examples/generalization/.")


def _print_generalization(ds) -> None:
    P = int(ds.P.values[-1])
    for sched in ds.schedule.values:
        table = Table(title=f"normalised MSE at P = {P}, {sched}", title_justify="left",
                      caption=f"mean ± s.e. over {ds.sizes['repeat']} draw(s); 1 = predicting 0; unsup.: unsupervised "
                              "steps of training sequences; fit: supervised steps", caption_justify="left")
        for col in ("arch", "predictor", "unsup.", "held-out", "fit"):
            table.add_column(col, justify="right", no_wrap=True)
        for arch in ds.arch.values:
            for pred in ds.predictor.values:
                cells = []
                for part in ("unsupervised", "heldout", "supervised"):
                    da = ds[f"nmse_{part}"].sel(arch=arch, predictor=pred, schedule=sched, P=P)
                    values = np.asarray(da, dtype=float)
                    values = values[np.isfinite(values)]
                    if not values.size:
                        cells.append("-")
                        continue
                    if values.size > 1:
                        err = values.std(ddof=1) / np.sqrt(values.size)
                    else:
                        err = float(ds[f"nmse_sem_{part}"].sel(arch=arch, predictor=pred, schedule=sched, P=P).max())
                    cells.append(f"{values.mean():.3f}" + (f" ± {err:.3f}" if np.isfinite(err) else ""))
                table.add_row(str(arch), str(pred), *cells)
        console.print(table)


@app.command()
def generalization(
    config: Path = typer.Argument(..., help=GENERALIZATION_HELP, show_default=False),
    out: Path = typer.Option(Path("results"), "--out", "-o", help=OUT_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    method: Optional[TheoryMethod] = METHOD_OPTION,
):
    """Generalisation on a sequential task: learning curves of several architectures.

    For every architecture, supervision schedule and training-set size P: the error at the unsupervised steps of the training sequences and on held-out sequences, from the theory, the lazy kernel and (optionally) sampled and Langevin-trained networks. Writes OUT/generalization.nc, OUT/learning_curve.png (error vs P), OUT/step_error.png (error per time step) and, with several schedules, OUT/fraction.png (error vs supervised fraction); prints the errors at the largest P.
    """

    def go():
        cfg = _load(config, method, load_generalization_config, parse_generalization_config)
        checkpoint = out / ".generalization-checkpoint"  # finished cells survive a stop; removed once saved
        if checkpoint.exists():
            console.print(f"resuming: {len(list(checkpoint.glob('*.npz')))} finished results in {checkpoint}")
        with _bars(progress) as bars:
            ds = learning_curves(**cfg.study_kwargs(), progress=bars, checkpoint=checkpoint)
        storage.save(ds, out / "generalization.nc")
        shutil.rmtree(checkpoint)
        written = ["generalization.nc", "learning_curve.png", "step_error.png"]
        plots_generalization.plot_learning_curves(ds, out / "learning_curve.png")
        plots_generalization.plot_step_errors(ds, path=out / "step_error.png")
        if ds.sizes["schedule"] > 1:
            plots_generalization.plot_fraction(ds, path=out / "fraction.png")
            written.append("fraction.png")
        _print_generalization(ds)
        console.print(f"{float(ds.attrs['seconds']):.1f} s; wrote {', '.join(written)} to {out}")

    _run(go)


@app.callback(invoke_without_command=True)
def _main(
    version: bool = typer.Option(False, "--version", help="Print the kernelfield version and exit.", is_eager=True),
):
    if version:
        console.print(f"kernelfield {__version__}")
        raise typer.Exit()


if __name__ == "__main__":  # pragma: no cover
    app()
