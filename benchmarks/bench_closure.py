"""Gaussian-closure solve time (``kf.solve(..., method="gaussian")``) against one dense Cholesky.

For n = T*P in ``--sizes`` (T = P = sqrt(n); ``kf.tasks.endpoint_patterns(P, T, D=P,
target_scale=1)``, kappa = 0.1, default Prior), for every ``--cases`` entry ``arch:phi:init``
(default: erf and tanh RNN with ``init="prior"`` and ``init="auto"`` (two starts), erf DNN) this
measures the first call (compile + run), a second (warm) call, Newton steps per branch, the
residual, convergence and ``S``; and one dense numpy Cholesky of the same n (median) and the ratio
warm solve / Cholesky. With ``--particles``, one particle solve of the erf RNN at n = 64 (T = P = 8,
``init="auto"``, default settings) for the speed-up of the warm closure solve over it.

Every case runs in a child process with a hard wall-clock limit (``--timeout``): a case that runs
away is recorded as "timeout". Timings on a shared machine are noisy: compare ratios within one run.

    OPENBLAS_NUM_THREADS=1 nice -n 5 python benchmarks/bench_closure.py --sizes 64,256,1024 --particles
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from _report import write_report
from bench_solver import cholesky_times, environment, fmt

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_CASES = "rnn:erf:prior,rnn:erf:auto,rnn:tanh:prior,rnn:tanh:auto,dnn:erf:auto"


def run_case(arch_name: str, phi: str, init: str, n: int, method: str) -> dict:
    """One solve, twice (first call, then warm), and the Cholesky reference."""
    import warnings

    import kernelfield as kf

    T = P = math.isqrt(n)
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=1.0, seed=0)
    arch = getattr(kf.Architecture, arch_name)(T)
    times = []
    for _ in range(1 if method == "particles" else 2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kf.ConvergenceWarning)
            t0 = time.perf_counter()
            sol = kf.solve(arch, task, phi=phi, kappa=0.1, init=init, method=method)
            times.append(time.perf_counter() - t0)
    return {"arch": arch_name, "phi": phi, "init": init, "n": n, "T": T, "P": P, "method": method, "status": "ok",
            "first_s": times[0], "warm_s": times[-1], "iterations": [int(b.iterations) for b in sol.branches],
            "residual": float(sol.residual), "converged": bool(sol.converged), "S": float(sol.S),
            "numpy_cholesky_s": cholesky_times(n, 0)["numpy_cholesky_s"]}


def markdown(rows: list[dict], env: dict) -> str:
    closure = [r for r in rows if r.get("method") == "gaussian"]
    particle = next((r for r in rows if r.get("method") == "particles" and r["status"] == "ok"), None)
    lines = [f"Machine: {env['platform']}, {env['cpu_count']} CPUs, load average at start {env['loadavg_at_start']}, "
             f"jax {env['jax']}, {env['date']}.", "",
             "| arch | phi | init | n | first call s | warm s | numpy chol ms | warm / chol | Newton steps | residual "
             "| conv. | S |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in closure:
        head = f"| {r['arch']} | {r['phi']} | {r['init']} | {r['n']} "
        if r["status"] != "ok":
            lines.append(head + f"| {r['status']} |" + " |" * 7)
            continue
        lines.append(head + f"| {r['first_s']:.1f} | {r['warm_s']:.2f} | {1e3 * r['numpy_cholesky_s']:.4f} "
                     f"| {r['warm_s'] / r['numpy_cholesky_s']:.3g} | {'+'.join(map(str, r['iterations']))} "
                     f"| {r['residual']:.1e} | {'yes' if r['converged'] else 'NO'} | {r['S']:.6g} |")
    if particle is not None:
        same = next((r for r in closure if r["status"] == "ok" and (r["arch"], r["phi"], r["init"], r["n"])
                     == ("rnn", "erf", "auto", particle["n"])), None)
        speedup = fmt(None if same is None else particle["first_s"] / same["warm_s"], ".3g")
        lines += ["", f"Particle solver, erf RNN n = {particle['n']} (init auto): {particle['first_s']:.1f} s, "
                  f"S = {particle['S']:.6g}; speed-up of the warm closure solve: {speedup}×."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,256,1024", help="comma-separated n = T*P, each a perfect square")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated arch:phi:init")
    parser.add_argument("--particles", action="store_true", help="also one particle solve (erf RNN, n = 64)")
    parser.add_argument("--timeout", type=float, default=900.0, help="wall-clock limit of one case, seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="")
    parser.add_argument("--_case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)
    if args._case:
        print("@@RESULT@@" + json.dumps(run_case(**json.loads(args._case))))
        return 0
    env = environment()
    cases = [dict(zip(("arch_name", "phi", "init"), c.split(":")), n=n, method="gaussian")
             for n in [int(s) for s in args.sizes.split(",")] for c in args.cases.split(",")]
    if args.particles:
        cases.append({"arch_name": "rnn", "phi": "erf", "init": "auto", "n": 64, "method": "particles"})
    rows = []
    for case in cases:
        label = {"arch": case["arch_name"], "phi": case["phi"], "init": case["init"], "n": case["n"],
                 "method": case["method"]}
        print(f"{label} ...", flush=True)
        try:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_case", json.dumps(case)],
                                  capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            rows.append({**label, "status": f"timeout > {args.timeout:.0f} s"})
            continue
        found = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")]
        rows.append(json.loads(found[-1][len("@@RESULT@@"):]) if found else
                    {**label, "status": "error: " + ((proc.stderr or "?").strip().splitlines() or ["?"])[-1][:200]})
        print(f"  {rows[-1]}", flush=True)
    env["loadavg_at_end"] = list(__import__("os").getloadavg())
    stem = "bench_closure" + (f"_{args.tag}" if args.tag else "")
    write_report(args.out, stem, {"benchmark": "closure", "environment": env, "rows": rows}, markdown(rows, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
