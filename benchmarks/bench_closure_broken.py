"""Where the Gaussian closure's symmetry-broken start spends its time (issue 14 item 7).

erf RNN on the endpoint task (``kf.tasks.endpoint_patterns(P, T, D=P, target_scale=1)``,
T = P = sqrt(n)), kappa 0.1, the solver's own start and support. For each ``--sizes`` n:

1. the prior start (:func:`.closure.closure_branch`): time and Newton steps;
2. the broken start's low-rank stage (:func:`.closure_lowrank.low_rank_stage`) for each stage
   length in ``--stages`` (L-BFGS steps), then Newton's method from its end
   (:func:`.closure.maximise_closure` on the dense layout), each timed, with Newton steps,
   Hessian-vector products (counted around :func:`.newton.steihaug_newton`) and ``S_G``;
3. with ``--profile``, at the end of the shortest stage: the ratio of the actual to the predicted
   decrease of ``F = -S_G`` along one trust-region Newton step (radius 0.25 in the norm of
   ``Sigma``) at fractions 0.01 ... 1 of it, and the relative error of that step's
   Hessian-vector product against central differences of the gradient.

Warm numbers: each size's prior start and the dense layout are first run once to compile. Timings on a shared
machine are noisy: compare within one run. n = 1024 takes minutes per stage length (bound the
Newton phase with ``--max-newton``; the row then says "not converged").

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_closure_broken.py --sizes 256 --stages 20,80,300 --profile
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from _counting import NewtonCounter
from _report import write_report
from threadpoolctl import threadpool_limits

import kernelfield as kf
import kernelfield.theory.closure as closure
from kernelfield.nonlinearities import get_nonlinearity
from kernelfield.theory.closure_lowrank import low_rank_stage
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.lazy import lazy_kernel
from kernelfield.theory.linalg import inner

RESULTS = Path(__file__).resolve().parent / "results"
TOL, MAX_ITER = 1e-6, 5000


def setting(n: int):
    T = P = math.isqrt(n)
    if T * P != n:
        raise ValueError(f"--sizes: n must be a perfect square, got {n}")
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=1.0, seed=0)
    prob = make_problem(kf.Architecture.rnn(T), task, kf.Prior(), 0.1)
    nl = get_nonlinearity("erf")
    Sigma0 = np.asarray(prob.K(lazy_kernel(prob, nl)))
    return prob, nl, Sigma0, closure.closure_support(prob, Sigma0)


def broken_from_stage(prob, nl, start, support, stage: int, counter: NewtonCounter, max_iter: int = MAX_ITER,
                      profile: bool = False) -> dict:
    """The low-rank stage of ``stage`` steps, then at most ``max_iter`` Newton steps from its end
    (and, with ``profile``, :func:`step_profile` at the stage's end)."""
    f = closure.ClosureObjective(prob, nl, start.mask, closure.DEFAULT_ORDER, support)
    t0 = time.perf_counter()
    D, stage_steps = low_rank_stage(f.data, nl, start.V, stage, closure.DEFAULT_ORDER)
    t_stage = time.perf_counter() - t0
    Sigma = np.asarray(f.point(D).Sigma)
    counter.reset()
    t0 = time.perf_counter()
    r = closure.maximise_closure(prob, nl, Sigma, TOL, max_iter, support=support)
    t_newton = time.perf_counter() - t0
    row = {"stage_length": stage, "stage_steps": stage_steps, "stage_s": t_stage, "newton_steps": r.iterations,
           "products": counter.products, "newton_s": t_newton, "total_s": t_stage + t_newton,
           "S": -float(r.point.gamma + r.point.energy), "converged": r.converged, "residual": r.residual}
    if profile:
        row["profile"] = step_profile(f, D, Sigma)
    return row


def step_profile(f, D, Sigma) -> dict:
    """Actual / predicted decrease of ``f`` along one Newton step from ``D`` (``Sigma`` its
    preactivation kernel, the trust region's norm)."""
    F, g = f.value_and_gradient(D)
    hessian_vector = f.hessian_at(D)
    p, length, _ = closure.steihaug_newton(hessian_vector, Sigma, g, 0.25, max_cg=100, eta=0.1)
    Hp = hessian_vector(p)
    ratios = {}
    for s in (0.01, 0.03, 0.1, 0.25, 0.5, 1.0):
        predicted = -(s * inner(g, p) + 0.5 * s * s * inner(p, Hp))
        ratios[s] = float((F - f.value(D + s * p)) / predicted)
    eps = 1e-3
    central = (f.value_and_gradient(D + eps * p)[1] - f.value_and_gradient(D - eps * p)[1]) / (2 * eps)
    return {"step_length": float(length), "ratios": ratios,
            "hvp_relative_error": float(np.linalg.norm(central - Hp) / np.linalg.norm(Hp))}


def run(n: int, stages: list[int], profile: bool, max_newton: int) -> dict:
    prob, nl, Sigma0, support = setting(n)
    with NewtonCounter() as counter, threadpool_limits(limits=1, user_api="blas"):
        closure.closure_branch(prob, nl, Sigma0, TOL, MAX_ITER, None, "prior", support)  # compile
        t0 = time.perf_counter()
        prior = closure.closure_branch(prob, nl, Sigma0, TOL, MAX_ITER, None, "prior", support)
        t_prior = time.perf_counter() - t0
        start = closure.closure_broken_start(prob, nl, prior.Sigma, support=support)
        broken_from_stage(prob, nl, start, support, 2, counter, max_iter=1)  # compile the dense layout
        rows = []
        for stage in stages:
            rows.append(broken_from_stage(prob, nl, start, support, stage, counter, max_newton,
                                          profile=profile and stage == min(stages)))
            print(rows[-1], flush=True)
    return {"n": n, "prior_s": t_prior, "prior_steps": prior.iterations, "prior_S": prior.S, "broken": rows}


def markdown(results: list[dict]) -> str:
    lines = ["| n | stage length | stage | Newton phase (steps / products) | broken start | prior start | S_G broken |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        for row in res["broken"]:
            note = "" if row["converged"] else f"(not converged, residual {row['residual']:.1e})"
            lines.append(f"| {res['n']} | {row['stage_length']} | {row['stage_s']:.2f} s | {row['newton_s']:.2f} s "
                         f"({row['newton_steps']} / {row['products']}) | {row['total_s']:.2f} s | "
                         f"{res['prior_s']:.2f} s ({res['prior_steps']} steps) | {row['S']:.9f} {note} |")
    for res in results:
        for row in res["broken"]:
            if "profile" in row:
                p = row["profile"]
                ratios = " / ".join(f"{v:.4g}" for v in p["ratios"].values())
                fractions = " / ".join(str(s) for s in p["ratios"])
                lines += ["", f"n = {res['n']}, after a {row['stage_length']}-step stage: actual / predicted decrease "
                          f"along a Newton step of length {p['step_length']:.3g} at fractions {fractions}: {ratios}; "
                          f"Hessian-vector product against central differences: {p['hvp_relative_error']:.1e} "
                          "relative."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256", help="comma-separated n = T*P, each a perfect square")
    parser.add_argument("--stages", default="20,80,300", help="comma-separated low-rank stage lengths")
    parser.add_argument("--profile", action="store_true", help="also the step-ratio profile (module docstring)")
    parser.add_argument("--max-newton", type=int, default=MAX_ITER, help="Newton steps after the stage, at most")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    stages = [int(s) for s in args.stages.split(",")]
    results = [run(int(n), stages, args.profile, args.max_newton) for n in args.sizes.split(",")]
    write_report(args.out, "closure_broken", {"results": results}, markdown(results))


if __name__ == "__main__":
    main()
