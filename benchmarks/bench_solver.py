"""Solver cost against the cost of one dense Cholesky factorisation.

For n = T*P in ``--sizes`` (T = P = sqrt(n), D = P, inputs only at t = 0 drawn N(0, 1), endpoint
targets +-1 at t = T-1, kappa = 0.1, default Prior) and for ``Architecture.rnn(T)`` and
``Architecture.dnn(T)`` this measures

* ``kf.solve(arch, task, kappa=0.1, init="prior")``: the first call (includes one-time set-up) and
  a second, warm call (``--repeats`` warm calls: median and minimum);
* ``init="auto"`` (prior start + symmetry-broken start), warm (best and median of ``--repeats``
  calls), for n up to ``--auto-max-n``;
* ``sol.best.iterations`` (Newton steps), ``sol.residual`` and ``sol.converged``;
* one dense Cholesky of an n x n SPD matrix with numpy and with jax (jitted,
  ``block_until_ready``), median over many repeats;
* ratio = warm solve time (best of the warm calls) / numpy Cholesky time (median).

Every (architecture, size) case runs in a child process with a hard wall-clock limit, so a case
that runs away is recorded as "timeout" instead of hanging the benchmark. Once a solve of an
architecture took longer than ``--max-seconds`` (or timed out), the larger sizes of that
architecture are recorded as "skipped".

Timings on a shared machine are noisy: compare ratios within one run.

    python benchmarks/bench_solver.py --sizes 16,64,256,1024 --max-seconds 900
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from _report import write_report

RESULTS = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# one case (runs in the child process)
# --------------------------------------------------------------------------------------------


def _median_time(fn, min_repeats: int, min_total: float, max_repeats: int = 10_000) -> tuple[float, int]:
    """Median wall time of ``fn()`` over at least ``min_repeats`` calls and ``min_total`` seconds."""
    import numpy as np

    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - started < min_total):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), len(times)


def cholesky_times(n: int, seed: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    G = rng.normal(size=(n, n))
    A = G @ G.T / n + np.eye(n)  # well-conditioned SPD
    np_s, np_reps = _median_time(lambda: np.linalg.cholesky(A), min_repeats=20, min_total=0.5)
    chol = jax.jit(jnp.linalg.cholesky)
    Aj = jnp.asarray(A)  # float64 (kernelfield enables x64)
    chol(Aj).block_until_ready()  # compile
    jx_s, jx_reps = _median_time(lambda: chol(Aj).block_until_ready(), min_repeats=20, min_total=0.5)
    return {"numpy_cholesky_s": np_s, "numpy_repeats": np_reps, "jax_cholesky_s": jx_s, "jax_repeats": jx_reps}


def run_case(arch_name: str, n: int, kappa: float, seed: int, repeats: int, repeat_budget: float, auto: bool) -> dict:
    import warnings

    import numpy as np

    import kernelfield as kf

    T = P = int(round(math.sqrt(n)))
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=1.0, seed=seed)
    arch = getattr(kf.Architecture, arch_name)(T)

    def timed_solve(init):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kf.ConvergenceWarning)
            t0 = time.perf_counter()
            sol = kf.solve(arch, task, kappa=kappa, init=init)
            return sol, time.perf_counter() - t0

    sol, cold = timed_solve("prior")  # compile + run
    warm_times = []
    for _ in range(max(repeats, 1)):
        sol, t = timed_solve("prior")
        warm_times.append(t)
        if sum(warm_times) > repeat_budget:
            break  # large sizes: no further repeats
    out = {
        "arch": arch_name, "n": n, "T": T, "P": P, "D": P, "status": "ok",
        "cold_s": cold, "second_call_s": warm_times[0], "warm_s": float(np.median(warm_times)),
        "warm_min_s": float(min(warm_times)), "warm_all_s": warm_times,
        "iterations": int(sol.best.iterations), "residual": float(sol.residual),
        "converged": bool(sol.converged), "S": float(sol.S),
    }
    if auto:  # everything is compiled by now: warm calls, best and median as for the prior start
        auto_times = []
        for _ in range(max(repeats, 1)):
            sol_auto, t_auto = timed_solve("auto")
            auto_times.append(t_auto)
            if sum(auto_times) > repeat_budget:
                break
        out.update({
            "auto_warm_s": float(min(auto_times)), "auto_warm_median_s": float(np.median(auto_times)),
            "auto_all_s": auto_times, "auto_branches": len(sol_auto.branches),
            "auto_iterations": [int(b.iterations) for b in sol_auto.branches],
            "auto_S": float(sol_auto.S), "auto_converged": bool(sol_auto.converged),
            "auto_residual": float(sol_auto.residual),
        })
    out.update(cholesky_times(n, seed))
    # ratio: best warm solve (least disturbed by other load on a shared machine) / median Cholesky
    out["ratio_numpy"] = out["warm_min_s"] / out["numpy_cholesky_s"]
    out["ratio_jax"] = out["warm_min_s"] / out["jax_cholesky_s"]
    out["ratio_numpy_median"] = out["warm_s"] / out["numpy_cholesky_s"]
    if auto:
        out["auto_ratio_numpy"] = out["auto_warm_s"] / out["numpy_cholesky_s"]
        out["auto_ratio_jax"] = out["auto_warm_s"] / out["jax_cholesky_s"]
    out["warm_min_s_per_iteration"] = out["warm_min_s"] / max(out["iterations"], 1)
    return out


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def environment() -> dict:
    import jax
    import numpy as np

    import kernelfield as kf

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "loadavg_at_start": load, "kernelfield": kf.__version__, "jax": jax.__version__, "numpy": np.__version__,
        "jax_devices": [str(d) for d in jax.devices()],
    }


def fmt(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def markdown(rows: list[dict], env: dict, args) -> str:
    lines = [
        "# Solver cost vs one dense Cholesky",
        "",
        f"T = P = sqrt(n), D = P, inputs at t = 0 ~ N(0, 1), targets ±1 at t = T-1, kappa = {args.kappa}, "
        f"default Prior, `kf.solve(..., init=\"prior\")` (tol 1e-6). *cold* = first call (includes one-time set-up); "
        f"*2nd* = the second call (first warm call); *warm med* / *warm best* = median / minimum of up to {args.repeats} warm calls (fewer once they took {args.repeat_budget:.0f} s); *auto* = `init=\"auto\"` (two starts), best of the same number of warm calls. "
        "Cholesky: median of many repeats of one n×n float64 factorisation. "
        "*ratio* = warm best / median Cholesky (the minimum is the estimate least disturbed by other load; "
        "the median ratio is in the JSON); *auto ratio* = auto best / median Cholesky. Iterations are Newton "
        "steps; on the broken start they include the L-BFGS steps of the low-rank stage.",
        "",
        f"Machine: {env['platform']}, {env['cpu_count']} CPUs, load average at start {env['loadavg_at_start']}, "
        f"jax {env['jax']}, numpy {env['numpy']}, {env['date']}. Shared machine: compare ratios, not absolute times.",
        "",
        "| arch | T×P = n | cold s | 2nd s | warm med s | warm best s | iters | residual | conv. | S | auto warm s | auto iters "
        "| auto S | numpy chol ms | jax chol ms | ratio (numpy) | ratio (jax) | auto ratio (numpy) | auto ratio (jax) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['arch']} | {r.get('T', '?')}×{r.get('P', '?')} = {r['n']} "
        if r["status"] != "ok":
            lines.append(head + f"| {r['status']} ({r.get('reason', '')}) |" + " |" * 17)
            continue
        lines.append(
            head
            + f"| {r['cold_s']:.2f} | {r['second_call_s']:.3f} | {r['warm_s']:.3f} | {r['warm_min_s']:.3f} | {r['iterations']} "
            f"| {r['residual']:.1e} | {'yes' if r['converged'] else 'NO'} | {r['S']:.6g} | {fmt(r.get('auto_warm_s'), '.3f')} "
            f"| {'+'.join(map(str, r['auto_iterations'])) if 'auto_iterations' in r else '—'} | {fmt(r.get('auto_S'), '.6g')} "
            f"| {1e3 * r['numpy_cholesky_s']:.4f} "
            f"| {1e3 * r['jax_cholesky_s']:.4f} | {r['ratio_numpy']:.3g} | {r['ratio_jax']:.3g} "
            f"| {fmt(r.get('auto_ratio_numpy'), '.3g')} | {fmt(r.get('auto_ratio_jax'), '.3g')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,64,256,1024", help="comma-separated n = T*P, each a perfect square")
    parser.add_argument("--archs", default="rnn,dnn", help="comma-separated: rnn, dnn")
    parser.add_argument("--kappa", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and the Cholesky test matrix")
    parser.add_argument("--repeats", type=int, default=5, help="warm solves per case (median and best reported)")
    parser.add_argument("--repeat-budget", type=float, default=60.0,
                        help="no further warm repeats once the warm solves of a case took this many seconds")
    parser.add_argument("--no-auto", action="store_true", help="skip the init='auto' (two starts) timing")
    parser.add_argument("--auto-max-n", type=int, default=None,
                        help="time init='auto' only for n up to this size (the broken start is a dense problem)")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="once one solve of an architecture took longer than this, skip its larger sizes")
    parser.add_argument("--hard-timeout", type=float, default=None,
                        help="wall-clock limit of one case (child process; all its solves and Cholesky timings); "
                             "default 4 * max-seconds + 120")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory (default benchmarks/results)")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    parser.add_argument("--_case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    args = parser.parse_args(argv)

    if args._case:
        case = json.loads(args._case)
        print("@@RESULT@@" + json.dumps(run_case(**case)))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for n in sizes:
        if n < 1 or math.isqrt(n) ** 2 != n:
            parser.error(f"--sizes: {n} is not a perfect square (T = P = sqrt(n))")
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    for a in archs:
        if a not in ("rnn", "dnn"):
            parser.error(f"--archs: unknown architecture {a!r}")
    hard = args.hard_timeout if args.hard_timeout is not None else 4 * args.max_seconds + 120
    env = environment()
    rows = []
    for arch in archs:
        over_budget = None
        for n in sorted(sizes):
            T = math.isqrt(n)
            if over_budget is not None:
                rows.append({"arch": arch, "n": n, "T": T, "P": T, "status": "skipped", "reason": over_budget})
                print(f"{arch} n={n}: skipped ({over_budget})", flush=True)
                continue
            case = {"arch_name": arch, "n": n, "kappa": args.kappa, "seed": args.seed, "repeats": args.repeats,
                    "repeat_budget": args.repeat_budget,
                    "auto": not args.no_auto and (args.auto_max_n is None or n <= args.auto_max_n)}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_case", json.dumps(case)]
            print(f"{arch} n={n} ...", flush=True)
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=hard)
            except subprocess.TimeoutExpired:
                rows.append({"arch": arch, "n": n, "T": T, "P": T, "status": "timeout",
                             "reason": f"case exceeded {hard:.0f} s"})
                over_budget = f"n={n} timed out"
                print(f"  timeout after {hard:.0f} s", flush=True)
                continue
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT@@")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                rows.append({"arch": arch, "n": n, "T": T, "P": T, "status": "error", "reason": tail[0][:200]})
                print(f"  error: {tail[0]}", flush=True)
                continue
            row = json.loads(lines[-1][len("@@RESULT@@"):])
            row["case_wall_s"] = time.perf_counter() - t0
            rows.append(row)
            print(f"  cold {row['cold_s']:.2f} s, warm {row['warm_s']:.3f} s, {row['iterations']} iterations, "
                  f"best {row['warm_min_s']:.3f} s, residual {row['residual']:.1e}, ratio {row['ratio_numpy']:.3g}", flush=True)
            slowest = max([row["cold_s"], row["warm_s"], row.get("auto_warm_s") or 0.0])
            if slowest > args.max_seconds:
                over_budget = f"a solve at n={n} took {slowest:.0f} s > --max-seconds {args.max_seconds:.0f}"

    stem = "bench_solver" + (f"_{args.tag}" if args.tag else "")
    payload = {"benchmark": "solver", "args": {k: (str(v) if isinstance(v, Path) else v)
                                               for k, v in vars(args).items() if k != "_case"},
               "environment": env, "rows": rows}
    write_report(args.out, stem, payload, markdown(rows, env, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
