"""Cost and Monte Carlo error of the nonlinear (particle) solver, THEORY.md §3.

For n = T·P in ``--sizes`` (endpoint task from ``kf.tasks.endpoint_patterns``, T = P = sqrt(n)
or the nearest split with T <= P, D = P, kappa = 0.1, target scale ``--target``) and every
architecture in ``--archs`` this runs ``kf.solve(phi=..., init=--init)`` twice (the first call
includes XLA compilation; ``auto`` = the prior and the symmetry-broken start, the full solve) and reports the warm time, the particle iterations, the largest
entrywise relative standard error of C (``mc_error``, the quantity ``mc_tol`` controls), the
Frobenius relative error, both residuals with their Monte Carlo error scale, and S ± S_err.
For ``--phi linear`` the error against the exact solver is reported too.

    python benchmarks/bench_nonlinear.py --sizes 16,64,128 --phi erf
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np

import kernelfield as kf


def shape(n: int) -> tuple[int, int]:
    T = int(math.isqrt(n))
    while n % T:
        T -= 1
    return T, n // T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,64,128")
    ap.add_argument("--archs", default="dnn,rnn")
    ap.add_argument("--phi", default="erf")
    ap.add_argument("--target", type=float, default=1.0)
    ap.add_argument("--particles", type=int, default=4096)
    ap.add_argument("--mc-tol", type=float, default=0.01)
    ap.add_argument("--init", default="auto", choices=["auto", "prior", "broken"])
    args = ap.parse_args()
    print(f"phi = {args.phi}, target scale {args.target}, {args.particles} particles, mc_tol {args.mc_tol}, "
          f"init {args.init}")
    print("| arch | n (T×P) | warm solve (s) | first call (s) | iterations | mc_error (max entry) | "
          "rel. Frobenius error | residuals fwd / bwd | S ± S_err | branches | converged | vs exact |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for arch_name in args.archs.split(","):
        for n in map(int, args.sizes.split(",")):
            T, P = shape(n)
            task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=args.target, seed=0)
            arch = getattr(kf.Architecture, arch_name)(T)
            kw = dict(phi=args.phi, kappa=0.1, init=args.init, method="particles", num_particles=args.particles,
                      mc_tol=args.mc_tol)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                kf.solve(arch, task, seed=1, **kw)
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                sol = kf.solve(arch, task, seed=0, **kw)
                warm = time.perf_counter() - t0
            b = sol.best
            frob = np.linalg.norm(b.C_err) / np.linalg.norm(b.C)
            exact = ""
            if args.phi == "linear":
                C = kf.solve(arch, task, kappa=0.1, init=args.init).C
                exact = f"{np.linalg.norm(b.C - C) / np.linalg.norm(C):.2e}"
            print(f"| {arch_name} | {n} ({T}×{P}) | {warm:.1f} | {first:.1f} | {b.iterations} | {b.mc_error:.2e} | "
                  f"{frob:.2e} | {b.residual_forward:.3f} / {b.residual_backward:.3f} | {b.S:.3f} ± {b.S_err:.3f} | "
                  f"{'/'.join(x.init for x in sol.branches)} | {sol.converged} | {exact} |", flush=True)


if __name__ == "__main__":
    main()
