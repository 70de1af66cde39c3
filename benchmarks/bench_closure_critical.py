"""The Gaussian closure's critical signal (THEORY.md §3, §4) against the exact theory.

Endpoint task (``kf.tasks.endpoint_patterns``, T×P from ``--shape``, default 4×2, D = P, seed 0),
RNN, kappa = 0.1.

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
3. Sampled width-256 networks (``kf.sample``, ``--chains`` × ``--samples`` after ``--warmup``) at
   ``--sampled-factors`` × the critical scale of each ``--particle-phis``: the temporal coherence of
   the pooled mean kernel (``kf.temporal_coherence``) and per chain (mean ± its standard error over
   chains; chains may sit on opposite branches ``W -> -W``, which the pooled mean averages out), with
   ESS and acceptance, against the closure's and the particle solver's at the same ``y``. A
   finite-width network has a smooth crossover, not a sharp transition.
4. ``--closure-factors``: the closure alone (dominant branch's coherence, ``S_G`` gain over the
   symmetric branch) at those multiples of its critical scale.

    python benchmarks/bench_closure_critical.py --phis linear,erf,tanh --particle-phis erf
    python benchmarks/bench_closure_critical.py --shape 8x4 --phis erf,tanh --controls target_scale --factors 0.9,1.1
    python benchmarks/bench_closure_critical.py --phis erf --controls target_scale --factors "" --sampled-factors 0.8,1.2,1.6
    python benchmarks/bench_closure_critical.py --shape 8x4 --phis erf --controls target_scale --factors "" \
        --closure-factors 0.5,0.6,0.7,0.8,0.9,1.0,1.1
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import kernelfield as kf
from kernelfield.observables import mean_coherence
from kernelfield.theory.stability import CONTROLS

KAPPA = 0.1
T, P = 4, 2  # set from --shape in main()


def task_at(scale: float):
    return kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=scale, seed=0)


def critical_table(phis: list[str], controls: list[str]) -> dict[str, float]:
    arch = kf.Architecture.rnn(T)
    print(f"T×P = {T}×{P}")
    print("| phi | control | closure critical | exact critical | difference | evaluations | time (s) |")
    print("|---|---|---|---|---|---|---|")
    critical = {}
    for phi in phis:
        for control in controls:
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


def closure_gain(phi: str, y: float):
    """The closure at target scale ``y``: its dominant branch (``init="auto"``) and the ``S_G`` gain
    of that branch over the symmetric one (``init="prior"``)."""
    arch = kf.Architecture.rnn(T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        closure = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="gaussian")
        closure_sym = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="gaussian", init="prior")
    return closure, closure.S - closure_sym.S


def branch_following(phi: str, critical: float, factors: list[float], particles: int) -> None:
    arch = kf.Architecture.rnn(T)
    print(f"\n{phi}: closure critical target_scale {critical:.4f}")
    print("| y / y_c (closure) | y | particle rho (broken start) | particle S_broken - S_sym | closure rho | "
          "closure S_G gain | particle broken start: iterations, residual, converged | particle time (s) |")
    print("|---|---|---|---|---|---|---|---|")
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
        closure, closure_gain_y = closure_gain(phi, y)
        print(f"| {f:.2f} | {y:.4f} | {rho:.4f} | {gain:.2e} ± {err:.1e} | {kf.temporal_coherence(closure):.4f} | "
              f"{closure_gain_y:.2e} | {b_brk.iterations}, {b_brk.residual:.3f}, "
              f"{'yes' if b_brk.converged else 'no'} | {seconds:.0f} |", flush=True)
        if f > 1:
            broken.append((y, rho, kf.temporal_coherence(closure)))
    if len(broken) >= 2:
        y, rho, rho_closure = np.array(broken).T
        fits = [-np.polyfit(y, r**2, 1)[1] / np.polyfit(y, r**2, 1)[0] for r in (rho, rho_closure)]
        print(f"\ncritical target_scale from rho² = a (y - y_c) through {len(y)} points: particles {fits[0]:.4f}, "
              f"closure {fits[1]:.4f} (closure Hessian root {critical:.4f})")


def closure_scan(phi: str, critical: float, factors: list[float]) -> None:
    """The closure alone at ``factors × critical``: coherence of its dominant branch and its ``S_G``
    gain over the symmetric branch (a broken branch below ``y_c`` means the symmetric solution is
    still locally stable there but no longer the maximum: a discontinuous transition)."""
    print(f"\n{phi}: closure only, critical target_scale {critical:.4f}")
    print("| y / y_c (closure) | y | closure rho | closure S_G gain | dominant branch |")
    print("|---|---|---|---|---|")
    for f in factors:
        closure, gain = closure_gain(phi, f * critical)
        print(f"| {f:.2f} | {f * critical:.4f} | {kf.temporal_coherence(closure):.4f} | {gain:.2e} | "
              f"{closure.best.init} |", flush=True)


def sampled_coherence(phi: str, critical: float, factors: list[float], args) -> None:
    """Width-256 networks at ``factors × critical``: pooled and per-chain temporal coherence."""
    arch = kf.Architecture.rnn(T)
    print(f"\n{phi}: sampled width-256 networks ({args.chains} chains × {args.samples} after {args.warmup} warm-up)")
    print("| y / y_c (closure) | y | sampled rho (pooled mean kernel) | sampled rho per chain (mean ± s.e.) | "
          "chains' rho | ESS | acceptance | max C_sem | closure rho | particle rho | sampling time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for f in factors:
        y = f * critical
        t0 = time.perf_counter()
        s = kf.sample(arch, task_at(y), N=256, phi=phi, kappa=KAPPA, num_samples=args.samples, num_warmup=args.warmup,
                      num_chains=args.chains, seed=0, progress=False)
        seconds = time.perf_counter() - t0
        per_chain = np.array([mean_coherence(C, T, P) for C in s.C_centred_chains])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            closure = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="gaussian")
            particles = kf.solve(arch, task_at(y), phi=phi, kappa=KAPPA, method="particles", init="auto",
                                 num_particles=args.particles)
        chains = ", ".join(f"{r:.3f}" for r in per_chain)
        print(f"| {f:.2f} | {y:.4f} | {kf.temporal_coherence(s):.4f} | {per_chain.mean():.4f} ± "
              f"{per_chain.std(ddof=1) / np.sqrt(len(per_chain)):.4f} | {chains} | {s.ess:.0f} | "
              f"{s.acceptance_rate:.2f} | {np.max(s.C_sem):.3f} | {kf.temporal_coherence(closure):.4f} | "
              f"{kf.temporal_coherence(particles):.4f} | {seconds:.0f} |", flush=True)


def main() -> None:
    global T, P
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="4x2", help="T×P of the endpoint task (D = P)")
    ap.add_argument("--phis", default="linear,erf,tanh")
    ap.add_argument("--controls", default=",".join(CONTROLS))
    ap.add_argument("--particle-phis", default="erf")
    ap.add_argument("--factors", default="0.85,1.15,1.3,1.5")
    ap.add_argument("--particles", type=int, default=4096)
    ap.add_argument("--closure-factors", default="", help="y / y_c of a closure-only scan (none by default)")
    ap.add_argument("--sampled-factors", default="", help="y / y_c of the sampled networks (none by default)")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--chains", type=int, default=4)
    args = ap.parse_args()
    T, P = map(int, args.shape.split("x"))
    controls = [c for c in args.controls.split(",") if c]
    if any(c not in CONTROLS for c in controls):
        raise ValueError(f"--controls: must be among {CONTROLS}, got {args.controls!r}")
    critical = critical_table([p for p in args.phis.split(",") if p], controls)
    factors = [float(f) for f in args.factors.split(",") if f]
    sampled_factors = [float(f) for f in args.sampled_factors.split(",") if f]
    closure_factors = [float(f) for f in args.closure_factors.split(",") if f]
    for phi in filter(None, args.particle_phis.split(",")):
        value = critical.get(phi)
        if value is None:
            value = kf.critical_signal(kf.Architecture.rnn(T), task_at(1.0), phi=phi, kappa=KAPPA, tol=1e-6,
                                       method="gaussian").value
        if closure_factors:
            closure_scan(phi, value, closure_factors)
        if factors:
            branch_following(phi, value, factors, args.particles)
        if sampled_factors:
            sampled_coherence(phi, value, sampled_factors, args)


if __name__ == "__main__":
    main()
