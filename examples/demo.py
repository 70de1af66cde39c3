"""Quick reproduction of kernelfield's headline comparisons (the README's ``make demo``).

1. Endpoint task (input at t = 0, target at t = T-1), linear RNN and DNN: theory kernels
   against posterior samples of width-N networks (N = 64, 256); the RNN's dominant branch is
   correlated across time, the DNN's is not.
2. Temporal coherence (order parameter) against the target scale, RNN vs DNN vs tied_every(2).
3. Sequential (integration) task supervised on every other step: predictive error at the
   unsupervised steps for RNN, DNN and the RNN's lazy kernel, theory and sampled networks.

Writes netCDF files, PNG figures and ``summary.md`` into ``--out`` (default ``results/``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import kernelfield as kf
from kernelfield import plots, storage
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.predict import predictive

SAMPLING = dict(num_samples=1000, num_warmup=500, num_chains=4, seed=0, progress=True)
KAPPA = 0.1


def endpoint_comparison(out: Path, lines: list[str]) -> None:
    task = kf.tasks.endpoint_patterns(P=3, T=3, D=4, target_scale=1.0, seed=0)
    lines += ["## 1. Endpoint task: theory vs finite-width networks", "",
              "P=3, T=3, D=4, targets ±1 at t=T-1, kappa=0.1, linear phi; HMC, 4 chains × 1000 samples.", "",
              "| arch | branches (S) | N | kernel error | sampling error bar | prediction error | coherence theory | coherence sampled |",
              "|---|---|---|---|---|---|---|---|"]
    for arch in (kf.Architecture.rnn(3), kf.Architecture.dnn(3)):
        sol = kf.solve(arch, task, kappa=KAPPA)
        storage.save(sol.to_xarray(), out / f"endpoint_{arch.name}_solution.nc")
        branches = ", ".join(f"{b.init}: {b.S:.4f}" for b in sol.branches)
        for N in (64, 256):
            samples = kf.sample(arch, task, N=N, kappa=KAPPA, **SAMPLING)
            cmp = kf.compare(sol, samples)
            stem = f"endpoint_{arch.name}_N{N}"
            storage.save(storage.samples_to_dataset(samples), out / f"{stem}_samples.nc")
            storage.save(cmp.to_xarray(), out / f"{stem}_comparison.nc")
            plots.plot_kernels(cmp.C_theory, cmp.C_sampled, 3, 3, out / f"{stem}_kernels.png",
                               title=f"{arch.name}, endpoint task, N = {N}")
            lines.append(f"| {arch.name} | {branches} | {N} | {cmp.error:.4f} | {cmp.error_bar:.4f} | "
                         f"{cmp.prediction_error:.4f} | {kf.temporal_coherence(sol):.3f} | "
                         f"{kf.temporal_coherence(samples):.3f} |")
    lines.append("")


def coherence_curve(out: Path, lines: list[str]) -> None:
    scales = np.linspace(0.0, 2.0, 11)
    archs = {"rnn": kf.Architecture.rnn(4), "dnn": kf.Architecture.dnn(4), "tied_every_2": kf.Architecture.tied_every(4, 2)}
    rho = {name: [] for name in archs}
    for scale in scales:
        task = kf.tasks.endpoint_patterns(P=3, T=4, D=4, target_scale=max(scale, 1e-9), seed=0)
        for name, arch in archs.items():
            rho[name].append(kf.temporal_coherence(kf.solve(arch, task, kappa=KAPPA)))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for name, values in rho.items():
        ax.plot(scales, values, "o-", label=name, ms=4)
    ax.set(xlabel="target scale (learning signal)", ylabel="temporal coherence ρ (t≠s≥1)",
           title="linear network, endpoint task, P=3, T=4")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "coherence_vs_signal.png", dpi=120)
    import xarray as xr

    ds = xr.Dataset({name: ("target_scale", np.array(v)) for name, v in rho.items()},
                    coords={"target_scale": scales}, attrs={"kappa": KAPPA, "phi": "linear", "P": 3, "T": 4})
    storage.save(ds, out / "coherence_vs_signal.nc")
    lines += ["## 2. Order parameter vs learning signal (theory)", "",
              "| target scale | " + " | ".join(rho) + " |", "|---" * (len(rho) + 1) + "|"]
    lines += [f"| {s:.1f} | " + " | ".join(f"{rho[k][i]:.3f}" for k in rho) + " |" for i, s in enumerate(scales)]
    lines.append("")


def sequential_generalisation(out: Path, lines: list[str]) -> None:
    P, T, D = 4, 6, 6
    task = kf.tasks.integration(P=P, T=T, D=D, supervise_every=2, seed=0)
    truth = kf.tasks.integration(P=P, T=T, D=D, supervise_every=1, seed=0).targets
    unsupervised = np.isnan(task.targets)
    mse = lambda mean: float(np.mean((mean[unsupervised] - truth[unsupervised]) ** 2))  # noqa: E731
    rows = {}
    for arch in (kf.Architecture.rnn(T), kf.Architecture.dnn(T)):
        sol = kf.solve(arch, task, kappa=KAPPA)
        storage.save(sol.to_xarray(), out / f"sequential_{arch.name}_solution.nc")
        lazy = predictive(make_problem(arch, task, sol.prior, KAPPA), kf.prior_kernel(arch, task))
        samples = kf.sample(arch, task, N=128, kappa=KAPPA, **SAMPLING)
        storage.save(storage.samples_to_dataset(samples), out / f"sequential_{arch.name}_N128_samples.nc")
        rows[arch.name] = (mse(sol.predict().mean), mse(lazy.mean), mse(samples.f_mean))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    x = np.arange(len(rows))
    for i, label in enumerate(("theory (feature learning)", "lazy kernel", "sampled network N=128")):
        ax.bar(x + (i - 1) * 0.27, [r[i] for r in rows.values()], width=0.27, label=label)
    ax.set_xticks(x, list(rows))
    ax.set(ylabel="MSE at unsupervised steps", title=f"integration task, P={P}, T={T}, every 2nd step supervised")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sequential_generalisation.png", dpi=120)
    lines += ["## 3. Sequential task: error at unsupervised steps", "",
              f"Integration task P={P}, T={T}, D={D}, targets on steps 1, 3, 5; error against the true running sum "
              "on steps 0, 2, 4 (target variance 1).", "",
              "| arch | theory | lazy kernel | sampled N=128 |", "|---|---|---|---|"]
    lines += [f"| {k} | {a:.4f} | {b:.4f} | {c:.4f} |" for k, (a, b, c) in rows.items()]
    lines.append("")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: results)")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    lines = [f"# kernelfield {kf.__version__}: headline comparisons", ""]
    for part in (endpoint_comparison, coherence_curve, sequential_generalisation):
        part(out, lines)
    lines.append(f"Total time: {time.perf_counter() - started:.0f} s.")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nResults (netCDF, PNG, summary.md) written to {out.resolve()}")


if __name__ == "__main__":
    main()
