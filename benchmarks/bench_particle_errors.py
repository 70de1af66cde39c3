"""Calibration of the particle solver's error bars (issue 17, "Calibrated error bars").

Solves one small problem (tanh DNN, endpoint task T = 2, P = 4, D = 4, target 1, kappa 0.1 by
default) with several seeds and standardises every pairwise difference by the reported errors:
``z = (C1 - C2) / sqrt(err1² + err2²)`` over the distinct estimated entries of ``C`` (upper
triangle where the error is nonzero) and ``(S1 - S2) / sqrt(S_err1² + S_err2²)``. Calibrated
errors give an RMS of ``z`` near 1 (it scatters by roughly ±0.15 with 8 seeds: the pairs share
seeds, and the errors are themselves estimates).

    python benchmarks/bench_particle_errors.py --seeds 8 [--particles 4096] [--mc-tol 0.01]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

import kernelfield as kf


def standardised_differences(values, errors, mask=None):
    """``(v_i - v_j) / sqrt(e_i² + e_j²)`` over all seed pairs ``i < j`` (and the entries in ``mask``)."""
    z = []
    for i, j in itertools.combinations(range(len(values)), 2):
        d = (np.asarray(values[i]) - np.asarray(values[j])) / np.sqrt(np.asarray(errors[i]) ** 2 + np.asarray(errors[j]) ** 2)
        z.append(d[mask] if mask is not None else np.atleast_1d(d))
    return np.concatenate(z)


def run(seeds, arch_name, T, P, D, phi, scale, particles, mc_tol):
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=D, target_scale=scale)
    arch = getattr(kf.Architecture, arch_name)(T)
    rows = []
    for seed in seeds:
        started = time.perf_counter()
        events = []
        sol = kf.solve(arch, task, phi=phi, kappa=0.1, method="particles", init="prior", seed=seed,
                       num_particles=particles, mc_tol=mc_tol, progress=events.append)
        steps = [e.info["step"] for e in events]
        b = sol.best
        rows.append(dict(seed=seed, C=b.C, C_err=b.C_err, S=b.S, S_err=b.S_err, iterations=b.iterations,
                         converged=b.converged, mc_error=b.mc_error, seconds=time.perf_counter() - started,
                         steps=steps))
        print(f"seed {seed}: {rows[-1]['seconds']:.1f} s, {b.iterations} iterations, converged {b.converged}, "
              f"mc_error {b.mc_error:.4f}, S = {b.S:.4f} ± {b.S_err:.4f}, tr C = {np.trace(b.C):.4f}, "
              f"steps (per window) {' '.join(f'{x:.3g}' for x in steps)}", flush=True)
    return rows


def report(rows):
    C = [r["C"] for r in rows]
    err = [r["C_err"] for r in rows]
    mask = np.triu(np.all(np.stack(err) > 0, axis=0))
    zC = standardised_differences(C, err, mask)
    zS = standardised_differences([r["S"] for r in rows], [r["S_err"] for r in rows])
    spread = np.std(np.stack(C), axis=0, ddof=1)[mask]
    mean_err = np.sqrt(np.mean(np.stack(err) ** 2, axis=0))[mask]
    print(f"{len(rows)} seeds, {mask.sum()} distinct entries, {len(zC)} standardised differences")
    print(f"C: RMS z = {np.sqrt(np.mean(zC**2)):.2f}, max |z| = {np.abs(zC).max():.2f}, "
          f"seed-to-seed std / reported C_err (RMS over entries) = {np.sqrt(np.mean((spread / mean_err) ** 2)):.2f}")
    print(f"S: RMS z = {np.sqrt(np.mean(zS**2)):.2f}, max |z| = {np.abs(zS).max():.2f}, "
          f"std of S = {np.std([r['S'] for r in rows], ddof=1):.4f}, mean S_err = {np.mean([r['S_err'] for r in rows]):.4f}")
    print(f"time per seed {np.mean([r['seconds'] for r in rows]):.1f} s, iterations "
          f"{[r['iterations'] for r in rows]}, converged {sum(r['converged'] for r in rows)}/{len(rows)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--arch", default="dnn", choices=["dnn", "rnn"])
    parser.add_argument("--T", type=int, default=2)
    parser.add_argument("--P", type=int, default=4)
    parser.add_argument("--D", type=int, default=4)
    parser.add_argument("--phi", default="tanh")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--particles", type=int, default=None)
    parser.add_argument("--mc-tol", type=float, default=0.01)
    args = parser.parse_args()
    rows = run(range(args.seeds), args.arch, args.T, args.P, args.D, args.phi, args.scale, args.particles, args.mc_tol)
    report(rows)


if __name__ == "__main__":
    main()
