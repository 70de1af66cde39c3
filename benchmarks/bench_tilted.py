"""Cost and Monte Carlo error of the tilted expectations (kernelfield.finite.tilted, THEORY.md §3).

For n in ``--sizes`` (random K with eigenvalues O(1), random symmetric Ct scaled so that
2·||Ct||·||K|| = ``--tilt``) and phi in ``--phis`` this measures the warm time (second call, the
first includes XLA compilation) of ``tilted_moments`` with 64 chains x ``--samples`` samples, and
the relative Monte Carlo error ``||phiphi_err||_F / ||phiphi||_F`` and the largest entrywise
relative error. For ``linear`` the error against the closed form is reported too.

    python benchmarks/bench_tilted.py --sizes 16,64,128
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kernelfield as kf  # noqa: F401  (enables float64)
from kernelfield.finite.tilted import tilted_moments


def problem(n: int, tilt: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    K = A @ A.T / n + 0.5 * np.eye(n)
    B = rng.normal(size=(n, n))
    Ct = (B + B.T) / 2
    Ct *= tilt / (2 * np.abs(np.linalg.eigvalsh(Ct)).max() * np.linalg.eigvalsh(K)[-1])
    return K, Ct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="16,64,128")
    ap.add_argument("--phis", default="linear,erf,tanh")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--tilt", type=float, default=0.5)
    args = ap.parse_args()
    print("| phi | n | warm time (s) | first call (s) | rel. MC error (Frobenius) | max entry rel. error | ESS | error vs exact |")
    print("|---|---|---|---|---|---|---|---|")
    for phi in args.phis.split(","):
        for n in map(int, args.sizes.split(",")):
            K, Ct = problem(n, args.tilt)
            t0 = time.perf_counter()
            tilted_moments(K, Ct, phi, num_samples=args.samples, seed=0)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            m = tilted_moments(K, Ct, phi, num_samples=args.samples, seed=1)
            warm = time.perf_counter() - t0
            rel = np.linalg.norm(m.phiphi_err) / np.linalg.norm(m.phiphi)
            entry = np.max(m.phiphi_err / np.sqrt(np.outer(np.diag(m.phiphi), np.diag(m.phiphi))))
            exact = ""
            if phi == "linear":
                C = np.linalg.inv(np.linalg.inv(K) - 2 * Ct)
                exact = f"{np.linalg.norm(m.phiphi - C) / np.linalg.norm(C):.2e}"
            print(f"| {phi} | {n} | {warm:.2f} | {first:.2f} | {rel:.2e} | {entry:.2e} | {m.ess:.0f} | {exact} |",
                  flush=True)


if __name__ == "__main__":
    main()
