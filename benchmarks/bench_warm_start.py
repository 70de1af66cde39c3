"""Warm start of the particle solver from the Gaussian closure (issue 14 item 5).

For each ``TxP`` in ``--shapes``: erf RNN, endpoint task (``kf.tasks.endpoint_patterns``,
D = P, target ``--target``, kappa 0.1), ``kf.solve(method="particles")`` with the default
population ``M = max(4096, 128·n)`` and seed 0, once with ``init="auto"`` (prior start, then the
broken start built from its kernel) and once with ``init="gaussian"`` (the closure first, then
particles from ``N(0, Sigma)`` of each closure branch), each start capped at ``--max-iter``
iterations. A short warm-up solve compiles the flow, the independent check and the closure
first, so no row pays compilation. Per start: particle iterations (burn-in included), the larger
stationarity residual, converged, S ± S_err; per solve: the total time (for ``gaussian`` the
closure's share separately). Rows go to stdout (Markdown) and as JSON lines to
``benchmarks/results/warm_start.jsonl`` as they finish.

    nice -n 5 python benchmarks/bench_warm_start.py --shapes 8x8,16x4,8x16 --max-iter 5000,2000,600
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import kernelfield as kf

RESULTS = Path(__file__).parent / "results" / "warm_start.jsonl"


def solve(arch, task, **kw):
    """``kf.solve`` without the convergence warnings (the rows report convergence) and its time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kf.ConvergenceWarning)
        started = time.perf_counter()
        sol = kf.solve(arch, task, phi="erf", kappa=0.1, seed=0, **kw)
        return sol, time.perf_counter() - started


def start_record(b) -> dict:
    return {"start": b.init, "iterations": b.iterations, "residual": b.residual, "converged": b.converged,
            "S": b.S, "S_err": b.S_err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="8x8")
    ap.add_argument("--max-iter", default="5000", help="per shape (comma separated) or one for all")
    ap.add_argument("--target", type=float, default=1.0)
    args = ap.parse_args()
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
    caps = [int(c) for c in args.max_iter.split(",")]
    caps = caps * len(shapes) if len(caps) == 1 else caps
    RESULTS.parent.mkdir(exist_ok=True)
    print("| T×P (n, M) | init | max_iter | start | iterations | residual | converged | S ± S_err | solve time (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (T, P), cap in zip(shapes, caps):
        task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=args.target, seed=0)
        arch = kf.Architecture.rnn(T)
        solve(arch, task, method="particles", init="prior", max_iter=20)  # compile the flow and the check
        _, closure_time = solve(arch, task, method="gaussian")  # compile the closure
        _, closure_time = solve(arch, task, method="gaussian")
        for init in ("auto", "gaussian"):
            sol, seconds = solve(arch, task, method="particles", init=init, max_iter=cap)
            starts = sorted(sol.branches, key=lambda b: b.init)  # 'broken' before 'prior'
            record = {"T": T, "P": P, "init": init, "max_iter": cap, "seconds": seconds,
                      "closure_seconds": closure_time if init == "gaussian" else 0.0,
                      "starts": [start_record(b) for b in starts]}
            with RESULTS.open("a") as f:
                f.write(json.dumps(record) + "\n")
            n = T * P
            timing = f"{seconds:.0f}" + (f" (closure {closure_time:.1f})" if init == "gaussian" else "")
            for b in starts:
                print(f"| {T}×{P} ({n}, {max(4096, 128 * n)}) | {init} | {cap} | {b.init} | {b.iterations} | "
                      f"{b.residual:.3f} | {b.converged} | {b.S:.3f} ± {b.S_err:.3f} | {timing} |", flush=True)


if __name__ == "__main__":
    main()
