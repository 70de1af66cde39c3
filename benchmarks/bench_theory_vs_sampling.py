"""Theory solve time against sampling time at equal kernel accuracy.

Small linear endpoint task (T = 3, P = 3, D = 4, inputs at t = 0 ~ N(0, 1), targets +-1 at
t = T-1, kappa = 0.1, default Prior), for ``Architecture.rnn`` and ``Architecture.dnn``:

* theory: ``kf.solve(arch, task, kappa=0.1)`` -- first call (compile + run) and warm calls;
  it reaches stationarity residual < 1e-6 (``tol``), i.e. the N = infinity kernel exactly;
* sampling: ``kf.sample(arch, task, N=N, kappa=0.1, num_samples=S, num_chains=4, seed=0,
  progress=False)`` for N in ``--widths`` and S in ``--num-samples``; ``samples.seconds`` (first
  call, compilation included) and a warm re-run with identical arguments; ``kf.compare(sol,
  samples)`` gives the relative kernel error and its sampling error bar.

ratio = sampling time / theory solve time (warm / warm and first / first).

    python benchmarks/bench_theory_vs_sampling.py            # full grid
    python benchmarks/bench_theory_vs_sampling.py --quick    # N = 64, S = 250 only
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import kernelfield as kf
from _report import write_report

RESULTS = Path(__file__).resolve().parent / "results"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def time_solve(arch, task, kappa, repeats):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kf.ConvergenceWarning)
        t0 = time.perf_counter()
        sol = kf.solve(arch, task, kappa=kappa)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(max(repeats, 1)):
            t0 = time.perf_counter()
            sol = kf.solve(arch, task, kappa=kappa)
            warm.append(time.perf_counter() - t0)
    return sol, cold, warm


def time_sample(arch, task, kappa, N, S, args):
    kwargs = dict(N=N, kappa=kappa, num_samples=S, num_chains=args.num_chains, num_warmup=args.num_warmup,
                  seed=args.seed, progress=False)
    samples = kf.sample(arch, task, **kwargs)
    cold = samples.seconds
    warm = None
    if not args.no_warm_rerun:
        t0 = time.perf_counter()
        samples = kf.sample(arch, task, **kwargs)  # same arguments: compiled, identical result
        warm = time.perf_counter() - t0
    return samples, cold, warm


HEADER = """# Theory solve vs finite-width sampling at equal kernel accuracy

Task: linear {archs}, T = {T}, P = {P}, D = {D}, inputs at t = 0 ~ N(0, 1), targets ±1 at t = T-1,
kappa = {kappa}, default Prior. Sampler: BlackJAX HMC, {chains} chains, {warmup} warm-up steps per chain,
`num_samples` kept per chain, seed {seed}.

**What "equal accuracy" means here.** The theory is the N → ∞ limit: `kf.solve` returns the N = ∞
trained kernel to a stationarity residual < 1e-6, i.e. essentially exactly. The sampler estimates the
kernel of a *finite* network of width N; it approaches the N = ∞ kernel only as N → ∞ (an O(1/N) bias)
and as the number of samples grows (O(1/sqrt(N · samples)) Monte-Carlo noise, `error_bar`). So the
sampler never reaches the theory's accuracy at fixed cost; what we can report is the time the sampler
needs to get within X of the theory kernel (X = its measured relative Frobenius error
`kf.compare(sol, samples).error`, bias and noise together) against the time the theory needs for
residual < 1e-6. A single run's measured error is itself noisy: where it is below its error bar the
run only shows that the sampler agrees with the theory to within its noise (`--criterion error+bar`
asks for error + error bar <= X instead). *ratio* = sampling time / solve time (warm / warm; *cold ratio*: first call / first
call, JIT compilation included on both sides). Shared machine: absolute times are noisy, ratios less so.
"""


def markdown(res: dict, args) -> str:
    out = [HEADER.format(archs=" / ".join(args.archs.split(",")), T=args.T, P=args.P, D=args.D, kappa=args.kappa,
                         chains=args.num_chains, warmup=args.num_warmup, seed=args.seed)]
    env = res["environment"]
    out.append(f"Machine: {env['platform']}, {env['cpu_count']} CPUs, load average at start {env['loadavg_at_start']}, "
               f"jax {env['jax']}, blackjax {env['blackjax']}, {env['date']}.\n")
    out.append("## Theory\n")
    out.append("| arch | first call s | warm s | iterations | residual | converged | S |")
    out.append("|---|---|---|---|---|---|---|")
    for a, th in res["theory"].items():
        out.append(f"| {a} | {th['cold_s']:.2f} | {th['warm_s']:.4f} | {th['iterations']} | {th['residual']:.1e} "
                   f"| {'yes' if th['converged'] else 'NO'} | {th['S']:.4f} |")
    out.append("\n## Sampling\n")
    out.append("| arch | N | samples/chain | first call s | warm s | kernel error | ± error bar | accept | ESS "
               "| divergent | ratio (warm) | cold ratio |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in res["sampling"]:
        th = res["theory"][r["arch"]]
        warm = "—" if r["warm_s"] is None else f"{r['warm_s']:.2f}"
        ratio = "—" if r["ratio_warm"] is None else f"{r['ratio_warm']:.3g}"
        out.append(f"| {r['arch']} | {r['N']} | {r['num_samples']} | {r['cold_s']:.2f} | {warm} "
                   f"| {100 * r['error']:.2f}% | {100 * r['error_bar']:.2f}% | {r['acceptance_rate']:.2f} "
                   f"| {r['ess']:.0f} | {r['num_divergent']} | {ratio} | {r['ratio_cold']:.3g} |")
    out.append(f"\n## Time to reach a kernel error X (fastest run of the grid above; criterion: {args.criterion} <= X)\n")
    out.append("| arch | X | fastest sampler run within X | its sampling time s | theory time s (residual < 1e-6) "
               "| ratio |")
    out.append("|---|---|---|---|---|---|")
    for row in res["equal_accuracy"]:
        if row["N"] is None:
            out.append(f"| {row['arch']} | {100 * row['target']:.0f}% | not reached in this grid | — "
                       f"| {row['theory_s']:.4f} | — |")
        else:
            out.append(f"| {row['arch']} | {100 * row['target']:.0f}% | N = {row['N']}, {row['num_samples']} samples "
                       f"(error {100 * row['error']:.1f}%) | {row['sampling_s']:.2f} | {row['theory_s']:.4f} "
                       f"| {row['ratio']:.3g} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="rnn,dnn", help="comma-separated: rnn, dnn")
    parser.add_argument("--widths", default="64,256", help="comma-separated widths N")
    parser.add_argument("--num-samples", default="250,1000", help="comma-separated num_samples (per chain)")
    parser.add_argument("--quick", action="store_true", help="reduced grid: --widths 64 --num-samples 250")
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-warmup", type=int, default=500, help="warm-up (adaptation) steps per chain")
    parser.add_argument("--no-warm-rerun", action="store_true", help="do not re-run each sampling call warm")
    parser.add_argument("--T", type=int, default=3)
    parser.add_argument("--P", type=int, default=3)
    parser.add_argument("--D", type=int, default=4)
    parser.add_argument("--kappa", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (the task uses --task-seed)")
    parser.add_argument("--task-seed", type=int, default=0)
    parser.add_argument("--solve-repeats", type=int, default=5, help="warm solves (median reported)")
    parser.add_argument("--targets", default="0.1,0.05,0.02,0.01", help="kernel-error levels X for the summary")
    parser.add_argument("--criterion", choices=("error", "error+bar"), default="error",
                        help="a run is 'within X' when its measured error <= X, or (conservative) error + error bar <= X")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory (default benchmarks/results)")
    parser.add_argument("--tag", default="", help="suffix of the output file names")
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.num_samples = "64", "250"
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    for a in archs:
        if a not in ("rnn", "dnn"):
            parser.error(f"--archs: unknown architecture {a!r}")
    widths, sample_counts, targets = _ints(args.widths), _ints(args.num_samples), _floats(args.targets)

    import blackjax
    import jax

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    res = {
        "benchmark": "theory_vs_sampling",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_at_start": load,
            "kernelfield": kf.__version__, "jax": jax.__version__, "blackjax": blackjax.__version__,
        },
        "theory": {}, "sampling": [], "equal_accuracy": [],
    }
    task = kf.tasks.endpoint_patterns(P=args.P, T=args.T, D=args.D, target_scale=1.0, seed=args.task_seed)
    for a in archs:
        arch = getattr(kf.Architecture, a)(args.T)
        sol, cold, warm = time_solve(arch, task, args.kappa, args.solve_repeats)
        th = {"cold_s": cold, "warm_s": float(np.median(warm)), "warm_all_s": warm, "iterations": sol.best.iterations,
              "residual": float(sol.residual), "converged": bool(sol.converged), "S": float(sol.S),
              "branches": len(sol.branches)}
        res["theory"][a] = th
        print(f"{a} theory: first {cold:.2f} s, warm {th['warm_s']:.4f} s, residual {th['residual']:.1e}", flush=True)
        for N in widths:
            for S in sample_counts:
                samples, s_cold, s_warm = time_sample(arch, task, args.kappa, N, S, args)
                cmp = kf.compare(sol, samples)
                row = {
                    "arch": a, "N": N, "num_samples": S, "num_chains": args.num_chains, "num_warmup": args.num_warmup,
                    "cold_s": s_cold, "warm_s": s_warm, "error": cmp.error, "error_bar": cmp.error_bar,
                    "prediction_error": cmp.prediction_error, "parity": cmp.parity,
                    "acceptance_rate": samples.acceptance_rate, "ess": samples.ess,
                    "num_divergent": samples.num_divergent,
                    "ratio_warm": None if s_warm is None else s_warm / th["warm_s"],
                    "ratio_cold": s_cold / th["cold_s"],
                }
                res["sampling"].append(row)
                print(f"  N={N} S={S}: first {s_cold:.2f} s, warm {s_warm if s_warm is None else round(s_warm, 2)} s, "
                      f"error {cmp.error:.4f} ± {cmp.error_bar:.4f}", flush=True)
        for X in targets:
            level = (lambda r: r["error"]) if args.criterion == "error" else (lambda r: r["error"] + r["error_bar"])
            within = [r for r in res["sampling"] if r["arch"] == a and level(r) <= X]
            key = lambda r: r["warm_s"] if r["warm_s"] is not None else r["cold_s"]  # noqa: E731
            best = min(within, key=key) if within else None
            theory_s = th["warm_s"] if best is None or best["warm_s"] is not None else th["cold_s"]
            res["equal_accuracy"].append({
                "arch": a, "target": X, "theory_s": theory_s,
                "N": best and best["N"], "num_samples": best and best["num_samples"],
                "error": best and best["error"], "sampling_s": best and key(best),
                "ratio": best and key(best) / theory_s,
            })

    stem = "bench_theory_vs_sampling" + (f"_{args.tag}" if args.tag else "")
    write_report(args.out, stem, res, markdown(res, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
