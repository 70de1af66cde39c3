"""Gaussian closure on a sequential task at P > D: the dense solve on the support that the erf
learning curves (``examples/generalization/integration_large_erf.toml``) need at every P.

Integration task (``kf.tasks.integration``, T = 4, D = 4, steps 1 and 3 supervised), erf,
kappa 0.1, ``init="prior"``; for each ``--P``: the first call (compilation included) and a warm
call, Newton steps and Hessian-vector products (counted around :func:`.newton.steihaug_newton`).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_closure_sequential.py --P 32,64
"""

from __future__ import annotations

import argparse
import time

from _counting import NewtonCounter

import kernelfield as kf
from kernelfield import schedules


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--P", default="32,64", help="comma-separated numbers of training sequences")
    parser.add_argument("--arch", default="rnn")
    args = parser.parse_args()
    with NewtonCounter() as counts:
        for P in (int(p) for p in args.P.split(",")):
            task = schedules.supervise(kf.tasks.integration(P=P, T=4, D=4, supervise_every=1), schedules.every(2))
            arch = kf.Architecture.from_name(args.arch, 4)
            for call in ("first", "warm"):
                counts.reset()
                started = time.perf_counter()
                sol = kf.solve(arch, task, phi="erf", kappa=0.1, method="gaussian", init="prior")
                print(f"{args.arch} P = {P} (n = {4 * P}) {call} call: {time.perf_counter() - started:.1f} s, "
                      f"{counts.newton} Newton steps, {counts.products} Hessian-vector products, converged "
                      f"{sol.converged}, residual {sol.residual:.2g}, S {sol.S:.5f}", flush=True)


if __name__ == "__main__":
    main()
