"""The Gaussian closure's critical signal (THEORY.md §3, §4) against the exact theory.

Endpoint task (``kf.tasks.endpoint_patterns``, T = 4, P = 2, D = 2, seed 0), RNN, kappa = 0.1.

1. Critical signals from the closure's cross-time Hessian (``kf.critical_signal(method="gaussian")``)
   for every ``phi`` in ``--phis`` and every control, with the time of each search; for linear
   ``phi`` also the exact solver's and the difference.
2. Branch following with the exact nonlinear (particle) solver at target scales
   ``--factors`` × the closure's critical ``target_scale``: ``kf.solve(method="particles",
   init="auto")``; reported: the temporal coherence of the symmetry-broken start's branch (its Monte
   Carlo floor is the value below the transition), ``S_broken - S_symmetric`` with its error, and
   the closure's coherence at the same point (``rho = 0``: the broken start fell back to the
   symmetric branch). Near a pitchfork ``rho² ∝ (y - y_c)``, so a line through ``rho²`` of the
   points above ``y_c`` extrapolates a critical scale; done for both solvers at the same points,
   so the closure's extrapolation against its Hessian root shows the bias of the fit.

    python benchmarks/bench_closure_critical.py --phis linear,erf,tanh --particle-phis erf
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import kernelfield as kf
from kernelfield.observables import mean_coherence
from kernelfield.theory.stability import CONTROLS

T, P, D, KAPPA = 4, 2, 2, 0.1


def task_at(scale: float):
    return kf.tasks.endpoint_patterns(P=P, T=T, D=D, target_scale=scale, seed=0)


def critical_table(phis: list[str]) -> dict[str, float]:
    arch = kf.Architecture.rnn(T)
    print("| phi | control | closure critical | exact critical | difference | evaluations | time (s) |")
    print("|---|---|---|---|---|---|---|")
    critical = {}
    for phi in phis:
        for control in CONTROLS:
            t0 = time.perf_counter()
            point = kf.critical_signal(arch, task_at(1.0), phi=phi, kappa=KAPPA, control=control, tol=1e-6,
                                       method="gaussian")
            seconds = time.perf_counter() - t0
            exact = diff = "—"
            if phi == "linear":
                ref = kf.critical_signal(arch, task_at(1.0), kappa=KAPPA, control=control, tol=1e-6, method="exact")
                exact, diff = f"{ref.value:.6f}", f"{point.value - ref.value:.1e}"
            print(f"| {phi} | {control} | {point.value:.6f} | {exact} | {diff} | {point.evaluations} | {seconds:.1f} |",
                  flush=True)
            if control == "target_scale":
                critical[phi] = point.value
    return critical


def branch_following(phi: str, critical: float, factors: list[float], particles: int) -> None:
    arch = kf.Architecture.rnn(T)
    print(f"\n{phi}: closure critical target_scale {critical:.4f}")
    print("| y / y_c (closure) | y | particle rho (broken start) | particle S_broken - S_sym | closure rho | "
          "closure S_G gain | particle time (s) |")
    print("|---|---|---|---|---|---|---|")
    broken = []
    for f in factors:
        y = f * critical
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            sol = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="particles", init="auto",
                           num_particles=particles)
            seconds = time.perf_counter() - t0
        by_init = {b.init: b for b in sol.branches}
        b_brk = by_init.get("broken", sol.best)
        b_sym = by_init.get("prior", sol.best)
        rho = mean_coherence(b_brk.C_centred, T, P)
        gain, err = b_brk.S - b_sym.S, np.hypot(b_brk.S_err, b_sym.S_err)
        closure = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="gaussian")
        closure_sym = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="gaussian", init="prior")
        print(f"| {f:.2f} | {y:.4f} | {rho:.4f} | {gain:.2e} ± {err:.1e} | {kf.temporal_coherence(closure):.4f} | "
              f"{closure.S - closure_sym.S:.2e} | {seconds:.0f} |", flush=True)
        if f > 1:
            broken.append((y, rho, kf.temporal_coherence(closure)))
    if len(broken) >= 2:
        y, rho, rho_closure = np.array(broken).T
        fits = [-np.polyfit(y, r**2, 1)[1] / np.polyfit(y, r**2, 1)[0] for r in (rho, rho_closure)]
        print(f"\ncritical target_scale from rho² = a (y - y_c) through {len(y)} points: particles {fits[0]:.4f}, "
              f"closure {fits[1]:.4f} (closure Hessian root {critical:.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phis", default="linear,erf,tanh")
    ap.add_argument("--particle-phis", default="erf")
    ap.add_argument("--factors", default="0.85,1.15,1.3,1.5")
    ap.add_argument("--particles", type=int, default=4096)
    args = ap.parse_args()
    critical = critical_table([p for p in args.phis.split(",") if p])
    factors = [float(f) for f in args.factors.split(",")]
    for phi in filter(None, args.particle_phis.split(",")):
        value = critical.get(phi)
        if value is None:
            value = kf.critical_signal(kf.Architecture.rnn(T), task_at(1.0), phi=phi, kappa=KAPPA, tol=1e-6,
                                       method="gaussian").value
        branch_following(phi, value, factors, args.particles)


if __name__ == "__main__":
    main()
