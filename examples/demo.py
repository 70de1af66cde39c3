"""Quick reproduction of kernelfield's headline results through the sweep machinery (the README's
``make demo``).

Runs the sweeps in ``examples/sweeps/`` (local process pool, one worker per CPU), each into its
own store under ``OUT/sweeps/``, then writes one report of all of them:

1. ``endpoint_coherence``: the order parameter (temporal coherence of the trained kernel) against
   the learning signal (target scale) on the endpoint task, for RNN, DNN and ``tied_every(2)``:
   zero for the DNN, switching on continuously for the RNN (theory).
2. ``endpoint_sampled``: the same at two signals, below and above the RNN's transition, against
   HMC samples of width-128 networks (kernels compared block by block, coherence of both).
3. ``sequential``: the integration task supervised on every other step: error at the
   unsupervised steps for RNN and DNN, from the trained theory, the lazy kernel and width-128
   networks.
4. ``erf_endpoint``: the nonlinear (erf) theory, solved by the particle solver, against HMC
   samples of width-128 erf networks, RNN and DNN, below and above the RNN's transition.
5. ``erf_closure``: the same erf theory from the Gaussian closure (fast, approximate) over 14
   target scales; one figure draws its coherence curve with the particle solver's and the sampled
   networks' points of ``erf_endpoint`` (``figures/erf_closure_particles_sampled.png``).
6. ``sunspots_headline``: a learning curve on real data (``examples/generalization/``): error at
   the unsupervised steps of training sequences against P = 4 ... 64 > D = 4, RNN vs DNN, from the
   theory and the lazy kernel, with width-64 networks trained by Langevin dynamics at P = 8 and 32
   as points; stored in ``OUT/generalization/sunspots_headline.nc`` and reused on a re-run.

The headline figure ``figures/headline.png`` puts the two claims side by side: coherence against
the learning signal for linear (1, 2) and erf (4, 5) networks, and the real-data learning curve (6).

The workers share compiled programs through JAX's persistent compilation cache
(``OUT/sweeps/.jax_cache``). Re-running resumes: points already in the stores are not recomputed.
Writes
``OUT/report.html`` (and ``report.md``, ``figures/``), prints a summary and where the report is.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import kernelfield as kf
from kernelfield import plots, storage
from kernelfield.config import load_generalization_config
from kernelfield.experiments.generalization import learning_curves
from kernelfield.plots_headline import plot_headline
from kernelfield.report import write_report

SWEEPS = Path(__file__).resolve().parent / "sweeps"
STUDY = Path(__file__).resolve().parent / "generalization" / "sunspots_headline.toml"
NAMES = ("endpoint_coherence", "endpoint_sampled", "sequential", "erf_endpoint", "erf_closure")


def summary(stores: dict[str, Path]) -> list[str]:
    """Headline numbers from the stores (the report has them all)."""
    lines = []
    ds = kf.sweep.load(stores["endpoint_coherence"])
    rho = ds["coherence_theory"]
    top = float(rho["target_scale"][-1])
    lines.append(f"coherence at target scale {top:g} (theory): "
                 + ", ".join(f"{a} {float(rho.sel(architecture=a)[-1]):.3f}" for a in rho["architecture"].values))
    on = rho.sel(architecture="rnn")
    first = on["target_scale"].values[np.argmax(on.values > 1e-3)] if (on.values > 1e-3).any() else None
    lines.append(f"RNN coherence first > 1e-3 at target scale {first:g}" if first is not None else
                 "RNN coherence stays 0 on this grid")
    eig = ds["leading_eigenvalue"].sel(architecture="rnn")
    unstable = eig["target_scale"].values[eig.values > 0]
    lines.append(f"RNN symmetric solution unstable (cross-time Hessian eigenvalue > 0) from target scale "
                 f"{unstable.min():g}; DNN eigenvalue {float(ds['leading_eigenvalue'].sel(architecture='dnn').max()):.3f}"
                 if unstable.size else "RNN symmetric solution stable on this grid")
    lines.append(f"predicted outlier |lambda| of the RNN's W at target scale {top:g}: "
                 f"{float(ds['outlier'].sel(architecture='rnn')[-1]):.3f} (bulk radius g = 1)")
    ds = kf.sweep.load(stores["endpoint_sampled"])
    for scale in ds["target_scale"].values:
        point = ds.sel(target_scale=scale)
        lines.append(f"target scale {scale:g}, N=128: coherence theory / sampled: " + ", ".join(
            f"{a} {float(point['coherence_theory'].sel(architecture=a)):.3f} / "
            f"{float(point['coherence_sampled'].sel(architecture=a)):.3f}" for a in ds["architecture"].values))
    ds = kf.sweep.load(stores["sequential"])
    for a in ds["architecture"].values:
        p = ds.sel(architecture=a)
        lines.append(f"integration task, {a}: MSE at unsupervised steps: theory {float(p['pred_error_theory']):.4f}, "
                     f"lazy {float(p['pred_error_lazy']):.4f}, sampled N=128 {float(p['pred_error_sampled']):.4f}")
    ds = kf.sweep.load(stores["erf_endpoint"])
    for scale in ds["target_scale"].values:
        point = ds.sel(target_scale=scale)
        lines.append(f"erf, target scale {scale:g}, N=128: kernel error, coherence theory / sampled: " + ", ".join(
            f"{a} {float(point['kernel_error'].sel(architecture=a)):.3f} "
            f"(± {float(point['kernel_error_bar'].sel(architecture=a)):.3f}), "
            f"{float(point['coherence_theory'].sel(architecture=a)):.3f} / "
            f"{float(point['coherence_sampled'].sel(architecture=a)):.3f}" for a in ds["architecture"].values))
    return lines + closure_summary(kf.sweep.load(stores["erf_closure"]), ds)


def closure_summary(closure, particles) -> list[str]:
    """The Gaussian closure's erf curve against the particle solver and sampled networks."""
    rho = closure["coherence_theory"].sel(architecture="rnn")
    on = rho["target_scale"].values[rho.values > 1e-3]
    lines = [f"erf, Gaussian closure over {rho.size} target scales ({closure['seconds'].sum().item():.0f} s of "
             f"compute): RNN coherence first > 1e-3 at target scale {on.min():g}" if on.size else
             "erf, Gaussian closure: RNN coherence stays 0 on this grid"]
    for scale in particles["target_scale"].values:
        for a in particles["architecture"].values:
            point, curve = particles.sel(target_scale=scale, architecture=a), closure.sel(target_scale=scale, architecture=a)
            diff = np.abs(storage.kernel_matrix(curve["C_theory"].values)
                          - storage.kernel_matrix(point["C_theory"].values)).max()
            lines.append(f"erf, target scale {scale:g}, {a}: coherence closure {float(curve['coherence_theory']):.3f}, "
                         f"particles {with_error(point, 'coherence_theory')}, "
                         f"sampled {with_error(point, 'coherence_sampled')}; max |C_closure - C_particles| = {diff:.3f}")
    return lines


def real_data_study(path: Path):
    """The learning curve of :data:`STUDY` (a generalization study), computed once and stored at
    ``path``, read back on a re-run."""
    if path.is_file():
        return storage.load(path)
    started = time.perf_counter()
    ds = learning_curves(**load_generalization_config(STUDY).study_kwargs(), progress=False)
    storage.save(ds, path)
    print(f"sunspots_headline: {time.perf_counter() - started:.0f} s")
    return ds


def study_summary(ds) -> list[str]:
    """Unsupervised-step errors of the real-data study per P."""
    unsup = ds["nmse_unsupervised"].isel(schedule=0, repeat=0)
    lines = []
    for P in ds.P.values:
        parts = [f"{a} {p} {float(unsup.sel(arch=a, predictor=p, P=P)):.3f}"
                 for a in ds.arch.values for p in ds.predictor.values if np.isfinite(unsup.sel(arch=a, predictor=p, P=P))]
        lines.append(f"sunspots, P = {P}: normalised MSE at unsupervised steps: " + ", ".join(parts))
    return lines


def with_error(point, name: str) -> str:
    """``value ± error`` of a stored observable (the error bar is absent in stores of older versions)."""
    err = point.get(f"{name}_err")
    return f"{float(point[name]):.3f}" + ("" if err is None else f" ± {float(err):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: results)")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per CPU)")
    args = parser.parse_args()
    started = time.perf_counter()
    stores = {name: args.out / "sweeps" / name for name in NAMES}
    # one JAX compilation cache for the workers of all sweeps: each program is compiled once
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str((args.out / "sweeps" / ".jax_cache").resolve()))
    failed = 0
    for name, store in stores.items():
        result = kf.sweep.run(SWEEPS / f"{name}.toml", store, workers=args.workers)
        print(f"{name}: {result.computed} computed, {result.reused} from the store, {result.failed} failed, "
              f"{result.seconds:.0f} s")
        failed += result.failed + result.skipped_failed
    figure = args.out / "figures" / "erf_closure_particles_sampled.png"
    plots.plot_theory_and_networks(kf.sweep.load(stores["erf_closure"]), kf.sweep.load(stores["erf_endpoint"]),
                                   path=figure, title="erf RNN and DNN, T = 3, P = 3: Gaussian closure vs particle "
                                                      "solver vs width-128 networks")
    caption = ("Temporal coherence of erf networks against the target scale: the Gaussian closure (lines, "
               "erf_closure), the particle solver (filled markers) and sampled width-128 networks (open markers, "
               "erf_endpoint), with their Monte Carlo error bars.")
    study = real_data_study(args.out / "generalization" / "sunspots_headline.nc")
    headline = args.out / "figures" / "headline.png"
    plot_headline(kf.sweep.load(stores["endpoint_coherence"]), kf.sweep.load(stores["endpoint_sampled"]),
                  kf.sweep.load(stores["erf_closure"]), kf.sweep.load(stores["erf_endpoint"]), study, path=headline)
    headline_caption = ("Headline: (a, b) temporal coherence against the target scale on the endpoint task, linear "
                        "(exact theory) and erf (Gaussian closure; particle solver and sampled width-128 networks as "
                        "points): only the RNN and tied_every_2 break the time symmetry. (c) Yearly sunspots, "
                        "T = 4, D = 4 < P, steps 1 and 3 supervised: error at the unsupervised steps against P, RNN "
                        "vs DNN, trained theory (lines) and lazy kernel (dashed).")
    report = write_report(list(stores.values()), args.out, figures=[(headline, headline_caption), (figure, caption)])
    print("\n".join(["", *summary(stores), *study_summary(study), ""]))
    print(f"Total time: {time.perf_counter() - started:.0f} s" + (f"; {failed} points FAILED" if failed else ""))
    print(f"Report: {report.resolve()} (Markdown: {report.with_suffix('.md').resolve()})")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
