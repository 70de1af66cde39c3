"""Numbers a refactor must not change: write them once, check them after.

    python benchmarks/regression_snapshot.py --write snapshot.npz   # before
    python benchmarks/regression_snapshot.py --check snapshot.npz   # after: max differences

Covers the exact linear solver (every branch's C and S, RNN / DNN / tied_every(2), endpoint and
sequential tasks), predictions, the lazy kernels of every phi, stability, the critical signal and
outlier eigenvalues, a small seeded particle solve, HMC samples and Langevin training.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import kernelfield as kf


def snapshot() -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    endpoint = kf.tasks.endpoint_patterns(P=3, T=4, D=4, target_scale=1.0, seed=0)
    sequential = kf.tasks.integration(P=3, T=4, D=4, seed=0)
    archs = {"rnn": kf.Architecture.rnn(4), "dnn": kf.Architecture.dnn(4), "tied2": kf.Architecture.tied_every(4, 2)}
    for tname, task in (("endpoint", endpoint), ("sequential", sequential)):
        for aname, arch in archs.items():
            sol = kf.solve(arch, task, prior=kf.Prior(g=1.0), phi="linear", kappa=0.1)
            key = f"solve/{tname}/{aname}"
            out[key + "/C"] = np.asarray(sol.C)
            out[key + "/S"] = np.array([b.S for b in sol.branches])
            out[key + "/pred_mean"] = np.asarray(sol.predict(N=256).mean)
            out[key + "/coherence"] = np.array(kf.temporal_coherence(sol))
    for phi in ("linear", "erf", "tanh", "relu"):
        out[f"prior_kernel/{phi}"] = np.asarray(kf.prior_kernel(archs["rnn"], endpoint, kf.Prior(g=1.2, sigma_b=0.3), phi))
    sol = kf.solve(archs["rnn"], endpoint, kappa=0.1)
    out["stability/eigenvalues"] = np.asarray(kf.stability(sol).eigenvalues)
    out["outlier"] = np.sort(np.abs(kf.outlier_eigenvalues(sol)))
    out["critical_signal"] = np.array(kf.critical_signal(archs["rnn"], endpoint, kappa=0.1).value)
    small = kf.tasks.endpoint_patterns(P=2, T=3, D=2, target_scale=1.0, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        psol = kf.solve(kf.Architecture.rnn(3), small, phi="erf", kappa=0.1, method="particles", seed=0)
    out["particles/C"] = np.asarray(psol.C)
    out["particles/S"] = np.array(psol.S)
    smp = kf.sample(kf.Architecture.rnn(3), small, N=32, kappa=0.1, num_samples=50, num_warmup=50, num_chains=2,
                    seed=0, progress=False)
    out["sample/C_mean"] = np.asarray(smp.C_mean)
    out["sample/f_mean"] = np.asarray(smp.f_mean)
    run = kf.train(kf.Architecture.rnn(3), small, N=16, num_networks=2, num_steps=400, seed=0, progress=False)
    out["train/C_mean"] = np.asarray(run.C_mean)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write")
    group.add_argument("--check")
    args = parser.parse_args()
    now = snapshot()
    if args.write:
        np.savez(args.write, **now)
        print(f"wrote {len(now)} arrays to {args.write}")
        return
    before = np.load(args.check)
    worst = 0.0
    for key in sorted(set(before.files) | set(now)):
        if key not in now or key not in before.files:
            print(f"{key}: missing on one side")
            worst = np.inf
            continue
        a, b = np.asarray(before[key]), np.asarray(now[key])
        diff = float(np.max(np.abs(a - b))) if a.shape == b.shape else np.inf
        worst = max(worst, diff)
        print(f"{key:40s} max |diff| {diff:.3e}")
    print(f"worst {worst:.3e}")


if __name__ == "__main__":
    main()
