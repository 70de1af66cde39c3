"""Accuracy of the Gaussian closure (issue 14 item 3): closure vs particle solver vs sampled
width-256 networks.

Points: ``--configs`` (phi-arch, default erf and tanh RNN and DNN, ReLU DNN) × ``--shapes``
(T×P) × ``--scales`` (target scales); endpoint task ``kf.tasks.endpoint_patterns`` (D = P,
seed 0), kappa 0.1. At every point the closure (``method="gaussian"``, both starts) and the
particle solver (``init="auto"``, ``--particles`` trajectories, ``--mc-tol``, ``--max-iter`` per
start) are solved; at ``--sampled-scales`` also posterior samples of width-256 networks
(``kf.sample``, ``--chains`` × ``--samples`` after ``--warmup``). Per point, from the dominant
branches: the max entrywise kernel differences closure − particles, closure − sampled and
particles − sampled (up to ``W -> -W``), each with the largest entrywise Monte Carlo standard
error of the difference (particles: ``C_err``; sampled: ``C_sem``; the sampled side also
carries an O(1/N) finite-width bias not in that error); the temporal coherence from each; the
gap ``S - S_G`` with the particle ``S_err``; which branch dominates; the times.

Each point is appended to ``benchmarks/results/closure_accuracy.jsonl`` when done; a rerun skips
the points already there (so the run can be stopped and resumed). ``--table`` prints the
Markdown table from that file.

    nice -n 5 python benchmarks/bench_closure_accuracy.py            # run (resumes)
    python benchmarks/bench_closure_accuracy.py --table              # the table
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import kernelfield as kf
from kernelfield.symmetry import parity_flip

RESULTS = Path(__file__).parent / "results" / "closure_accuracy.jsonl"
KAPPA = 0.1


def max_difference(A, B, A_err, B_err, T: int, P: int) -> tuple[float, float]:
    """``max |A - B|`` over entries, ``B`` taken up to ``W -> -W`` (the parity closer to ``A``),
    and the largest entrywise standard error of the difference."""
    B = min((B, parity_flip(B, T, P)), key=lambda X: np.linalg.norm(A - X))
    err = np.sqrt((0.0 if A_err is None else A_err**2) + (0.0 if B_err is None else B_err**2))
    return float(np.abs(A - B).max()), float(np.max(err))


def timed(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kf.ConvergenceWarning)
        started = time.perf_counter()
        out = fn(*args, **kw)
        return out, time.perf_counter() - started


def point(phi: str, arch_name: str, T: int, P: int, scale: float, args, sampled: bool) -> dict:
    """One row: closure, particles and (if ``sampled``) width-256 samples at one target scale."""
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=scale, seed=0)
    arch = getattr(kf.Architecture, arch_name)(T)
    closure, t_closure = timed(kf.solve, arch, task, phi=phi, kappa=KAPPA, method="gaussian")
    particles, t_particles = timed(kf.solve, arch, task, phi=phi, kappa=KAPPA, method="particles",
                                   num_particles=args.particles, mc_tol=args.mc_tol, max_iter=args.max_iter)
    p = particles.best
    row = {"phi": phi, "arch": arch_name, "T": T, "P": P, "scale": scale,
           "closure": {"branch": closure.best.init, "S": closure.S, "converged": closure.converged,
                       "coherence": kf.temporal_coherence(closure), "seconds": t_closure},
           "particles": {"branch": p.init, "S": p.S, "S_err": p.S_err, "converged": particles.converged,
                         "residual": p.residual, "iterations": p.iterations,
                         "coherence": kf.temporal_coherence(particles), "seconds": t_particles},
           "closure_vs_particles": max_difference(closure.C, particles.C, None, p.C_err, T, P)}
    if sampled:
        samples, t_sampled = timed(kf.sample, arch, task, N=256, phi=phi, kappa=KAPPA, num_samples=args.samples,
                                   num_warmup=args.warmup, num_chains=args.chains, seed=0, progress=False)
        row["sampled"] = {"coherence": kf.temporal_coherence(samples), "seconds": t_sampled,
                          "acceptance": samples.acceptance_rate, "ess": samples.ess}
        row["closure_vs_sampled"] = max_difference(closure.C, samples.C, None, samples.C_sem, T, P)
        row["particles_vs_sampled"] = max_difference(particles.C, samples.C, p.C_err, samples.C_sem, T, P)
    return row


def run(args) -> None:
    done = {(r["phi"], r["arch"], r["T"], r["P"], r["scale"]) for r in load()}
    RESULTS.parent.mkdir(exist_ok=True)
    for config in args.configs.split(","):
        phi, arch_name = config.split("-")
        for shape in args.shapes.split(","):
            T, P = map(int, shape.split("x"))
            for scale in map(float, args.scales.split(",")):
                if (phi, arch_name, T, P, scale) in done:
                    continue
                sampled = scale in set(map(float, args.sampled_scales.split(",")))
                row = point(phi, arch_name, T, P, scale, args, sampled)
                with RESULTS.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(markdown_row(row), flush=True)


def load() -> list[dict]:
    return [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []


def markdown_row(r: dict) -> str:
    c, p, s = r["closure"], r["particles"], r.get("sampled")

    def diff(key):
        return f"{r[key][0]:.3f} ± {r[key][1]:.3f}" if key in r else "–"

    branches = f"{c['branch']} / {p['branch']}" + ("" if p["converged"] else " (not conv.)")
    coherence = f"{c['coherence']:.3f} / {p['coherence']:.3f} / " + (f"{s['coherence']:.3f}" if s else "–")
    return (f"| {r['phi']} {r['arch'].upper()} | {r['T']}×{r['P']} | {r['scale']:g} | {diff('closure_vs_particles')} | "
            f"{diff('closure_vs_sampled')} | {diff('particles_vs_sampled')} | {coherence} | "
            f"{p['S'] - c['S']:.4f} ± {p['S_err']:.4f} | {branches} | {c['seconds']:.1f} / {p['seconds']:.0f} |")


HEADER = ("| network | T×P | y | max abs ΔC closure−particles | closure−sampled | particles−sampled | "
          "coherence closure / particles / sampled | S − S_G | dominant branch closure / particles | "
          "time closure / particles (s) |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="erf-rnn,erf-dnn,tanh-rnn,tanh-dnn,relu-dnn")
    ap.add_argument("--shapes", default="4x2,8x4")
    ap.add_argument("--scales", default="0.1,0.5,1,2")
    ap.add_argument("--sampled-scales", default="0.5,2")
    ap.add_argument("--particles", type=int, default=2048)
    ap.add_argument("--mc-tol", type=float, default=0.02)
    ap.add_argument("--max-iter", type=int, default=3000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--table", action="store_true", help="print the Markdown table of the results file and exit")
    args = ap.parse_args()
    if args.table:
        print(HEADER)
        for r in load():
            print(markdown_row(r))
        return
    print(HEADER)
    run(args)


if __name__ == "__main__":
    main()
