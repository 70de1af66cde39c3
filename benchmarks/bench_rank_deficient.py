"""Time and peak memory of the exact linear solver at P > D (issue 15): RNN (both starts) and DNN
on the integration task with T = 16, D = 16 and P = 16 ... 256 (n = T·P = 256 ... 4096), each
size in its own process (peak resident memory is per process), BLAS on ``--threads`` threads.

    python benchmarks/bench_rank_deficient.py --max-n 1024            # table
    python benchmarks/bench_rank_deficient.py --profile rnn 64        # where the time goes (cProfile)

A size whose predecessor took longer than ``--budget`` seconds is skipped (the solver's cost grows
like n³ on dense layouts), and a run is stopped after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

T, D = 16, 16


def run_one(arch_name: str, P: int) -> dict:
    """Solve once (init='auto') and report time, peak memory, support rank and convergence."""
    import warnings

    import kernelfield as kf

    labelled = kf.tasks.integration(P=P, T=T, D=D, seed=0)
    task = kf.Task(labelled.inputs, labelled.targets)
    arch = kf.Architecture.rnn(T) if arch_name == "rnn" else kf.Architecture.dnn(T)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sol = kf.solve(arch, task, kappa=0.1)
    seconds = time.perf_counter() - started
    return dict(arch=arch_name, P=P, n=T * P, rank=sol.problem.support.rank, seconds=round(seconds, 2),
                peak_MB=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), converged=sol.converged,
                branches=len(sol.branches), iterations=[b.iterations for b in sol.branches])


def profile(arch_name: str, P: int) -> None:
    import cProfile
    import pstats

    cProfile.runctx("run_one(arch_name, P)", globals(), {"arch_name": arch_name, "P": P, "run_one": run_one},
                    "/tmp/bench_rank_deficient.prof")
    pstats.Stats("/tmp/bench_rank_deficient.prof").sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--one", nargs=2, metavar=("ARCH", "P"))
    parser.add_argument("--profile", nargs=2, metavar=("ARCH", "P"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    if args.profile:
        profile(args.profile[0], int(args.profile[1]))
        return
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    print(f"{'arch':5s} {'n':>5s} {'P':>4s} {'rank':>5s} {'seconds':>8s} {'peak MB':>8s} converged branches iterations")
    for arch_name in ("dnn", "rnn"):
        last = 0.0
        for P in (16, 32, 64, 128, 256):
            if T * P > args.max_n or last > args.budget:
                break
            try:
                out = subprocess.run([sys.executable, __file__, "--one", arch_name, str(P)], env=env, capture_output=True,
                                     text=True, timeout=args.timeout, check=True)
            except subprocess.TimeoutExpired:
                print(f"{arch_name:5s} {T * P:5d} {P:4d}  stopped after {args.timeout:.0f} s")
                break
            r = json.loads(out.stdout.strip().splitlines()[-1])
            last = r["seconds"]
            print(f"{r['arch']:5s} {r['n']:5d} {r['P']:4d} {r['rank']:5d} {r['seconds']:8.2f} {r['peak_MB']:8d} "
                  f"{str(r['converged']):9s} {r['branches']:8d} {r['iterations']}", flush=True)


if __name__ == "__main__":
    main()
