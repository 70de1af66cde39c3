"""Issue 17 candidate 2, measured as a prototype: a two-level particle solver with common random
numbers and Anderson mixing on the self-consistency map, started after ``--flow`` iterations of
the standard flow (the mixing is a local accelerator: from the raw broken start it diverged).

Case (as bench_particle_diagnostic.py): erf RNN, endpoint task ``kf.tasks.endpoint_patterns(P, T,
D=P, target 1)``, kappa 0.1, the symmetry-broken start (particles from ``N(0, K(broken_start))``).

Inner level: at frozen fields ``K = K(C)``, ``Ct = Ct(C, Σ)`` (:func:`.particles.fields`) every
particle takes ``--inner`` MALA steps of size ``--step`` (whitened by ``chol Σ``), warm-started
from the previous population, with the same random numbers at every outer iteration (common
random numbers); the moments averaged over the last ``--average`` steps are the map
``G(C, Σ) = (<φφᵀ>, <hhᵀ>)`` of the tilted law at those fields. Outer level: Anderson (Pulay)
mixing of ``x = (C, Σ)`` on the residual ``f = G(x) - x`` (memory ``--memory``, Tikhonov-regularised
least squares, restarted where the mixed ``Σ`` is not positive definite or the residual grew by
more than 2x). Everything stays exact in the mean-field limit: the fixed point of ``G`` is the
saddle point (the frozen-field law with the fields of its own moments).

Reported per outer iteration: the MALA iterations spent so far, the relative residual
``‖G(x) - x‖/‖G(x)‖``, its Monte Carlo floor (the same residual between two inner runs with
different random numbers at the same ``x``, measured once at the end), the amplitude
``A = vᵀC_{T-1,T-1}v`` and, with ``--reference``, the distance to the standard solver's
converged broken branch (``kf.solve(..., method="particles", init="broken")``, same M).

    python benchmarks/bench_two_level.py --T 8 --P 8 --reference
    python benchmarks/bench_two_level.py --T 16 --P 4
    python benchmarks/bench_two_level.py --T 16 --P 4 --particles 8192 --fixed-start --inner 60 --average 30 \
        --outer 36 --ramp 8:16384,16:32768,24:65536

``--ramp k:M,...`` is the sample-size ramp: at outer iteration ``k`` the population grows to ``M``
particles (the current population duplicated; the copies decorrelate under their own random
numbers), the Anderson history restarts, and the stage that ends there gets the solver's
independent check and ``S`` (so ``S`` is reported against ``1/M``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import kernelfield as kf
from kernelfield.nonlinearities import get_nonlinearity
from kernelfield.symmetry import parity_flip
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.lazy import lazy_kernel
from kernelfield.theory.particles import (FlowArrays, ParticleSettings, _finish, _initial_population, _moments, _run,
                                         _window, fields)
from kernelfield.theory.solver import broken_start


@partial(jax.jit, static_argnames=("fn", "length", "average", "P"))
def inner(arrays: FlowArrays, key, H, C, Sig, step, fn, length: int, average: int, P: int):
    """``length`` MALA steps of every particle at the fields of ``(C, Σ)``; returns the particles,
    the moments averaged over the last ``average`` steps and the mean acceptance."""
    K, Ct = fields(C, Sig, arrays, P)
    n = C.shape[0]
    L = jnp.linalg.cholesky(Sig + 1e-12 * jnp.trace(Sig) / n * jnp.eye(n))
    B = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(K), L, lower=True)

    def logdensity(z):
        p = fn(L @ z)
        return -0.5 * jnp.sum((B @ z) ** 2) + p @ Ct @ p

    kernel = blackjax.mala.build_kernel()
    Z = jax.scipy.linalg.solve_triangular(L, H.T, lower=True).T
    states = jax.vmap(lambda z: blackjax.mala.init(z, logdensity))(Z)

    def one(states, key):
        states, info = jax.vmap(lambda k, s: kernel(k, s, logdensity, step))(jax.random.split(key, Z.shape[0]), states)
        Cm, Sm = _moments(states.position @ L.T, fn, arrays.free, True)
        return states, (Cm, Sm, jnp.mean(info.acceptance_rate))

    states, (Cs, Ss, acc) = jax.lax.scan(one, states, jax.random.split(key, length))
    return states.position @ L.T, jnp.mean(Cs[-average:], axis=0), jnp.mean(Ss[-average:], axis=0), jnp.mean(acc)


def anderson(xs: list[np.ndarray], fs: list[np.ndarray], beta: float = 1.0, reg: float = 1e-8) -> np.ndarray:
    """Anderson (Pulay) mixing: ``x + βf - (ΔX + βΔF)γ`` with ``γ`` minimising ``‖f - ΔF γ‖``
    (Tikhonov ``reg`` relative to ``ΔFᵀΔF``'s trace); plain ``x + βf`` with one point."""
    x, f = xs[-1], fs[-1]
    if len(xs) < 2:
        return x + beta * f
    dX = np.stack([xs[i + 1] - xs[i] for i in range(len(xs) - 1)], axis=1)
    dF = np.stack([fs[i + 1] - fs[i] for i in range(len(fs) - 1)], axis=1)
    gram = dF.T @ dF
    gamma = np.linalg.solve(gram + reg * np.trace(gram) * np.eye(len(gram)), dF.T @ f)
    return x + beta * f - (dX + beta * dF) @ gamma


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--P", type=int, default=8)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--inner", type=int, default=40)
    parser.add_argument("--average", type=int, default=20)
    parser.add_argument("--outer", type=int, default=40)
    parser.add_argument("--memory", type=int, default=5)
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--beta", type=float, default=0.3, help="Anderson damping (1: the full map step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flow", type=int, default=300, help="iterations of the standard flow first")
    parser.add_argument("--reference", action="store_true")
    parser.add_argument("--ramp", default="", help="sample-size ramp: outer:M pairs, e.g. 8:16384,16:32768")
    parser.add_argument("--fixed-start", action="store_true",
                        help="start every inner run from the same population (a deterministic map G)")
    args = parser.parse_args()
    T, P = args.T, args.P
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=1.0)
    arch = kf.Architecture.rnn(T)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    nl = get_nonlinearity("erf")
    n = prob.n
    last = np.arange((T - 1) * P, T * P)
    reference = None
    if args.reference:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = kf.solve(arch, task, phi="erf", kappa=0.1, method="particles", init="broken",
                           num_particles=args.particles, seed=args.seed)
        reference = ref.best
        print(f"reference (standard flow, broken start): {reference.iterations} iterations, converged "
              f"{reference.converged}, residual {reference.residual:.3g}, S {reference.S:.4f} ± {reference.S_err:.4f}, "
              f"{time.perf_counter() - started:.0f} s")
    arrays = FlowArrays.of(prob, prob.block_mask())
    K0 = np.asarray(prob.K(broken_start(prob, lazy_kernel(prob, nl))))
    settings = ParticleSettings(num_particles=args.particles, max_iter=max(args.flow, 1), seed=args.seed)
    key, H = _initial_population(K0, settings)
    if args.flow:  # the standard flow first (its own step control), as the two-level start
        started = time.perf_counter()
        advance = partial(_window, arrays, fn=nl.fn, zero_mean=True, length=settings.window, P=P)
        H, state = _run(advance, key, H, settings, T, P, "broken")
        print(f"standard flow: {state.iterations} iterations (step {state.step_size:.3g}, phase {state.phase}), "
              f"{time.perf_counter() - started:.0f} s")
    C, Sig = (np.asarray(m) for m in _moments(jnp.asarray(H), nl.fn, jnp.asarray(arrays.free), True))
    key = jax.random.PRNGKey(args.seed + 11)  # the common random numbers of every inner run
    run = partial(inner, arrays, fn=nl.fn, length=args.inner, average=args.average, P=P)
    pack = lambda C, S: np.concatenate([C.ravel(), S.ravel()])  # noqa: E731
    unpack = lambda x: (0.5 * (x[: n * n].reshape(n, n) + x[: n * n].reshape(n, n).T),  # noqa: E731
                        0.5 * (x[n * n:].reshape(n, n) + x[n * n:].reshape(n, n).T))
    x = pack(C, Sig)
    xs, fs = [], []
    started = time.perf_counter()
    previous = np.inf
    H_last = H
    ramp = {int(k): int(m) for k, m in (pair.split(":") for pair in args.ramp.split(",") if pair)}

    def finish(H, x, M, iterations):
        """The solver's own end at the moments of one more inner run from ``x``: fields, the
        independent HMC check, log Z and S."""
        C, Sig = unpack(x)
        _, Cf, Sf, acc = run(key, jnp.asarray(H), jnp.asarray(C), jnp.asarray(Sig), args.step)
        Cf, Sf = np.asarray(Cf), np.asarray(Sf)
        stage = dataclasses.replace(settings, num_particles=M)
        return _finish(arrays, nl, Cf, np.zeros_like(Cf), Sf, np.zeros(n), np.asarray(H), stage, True, iterations,
                       float(acc), P)

    print(" outer  MALA its  residual  A=vᵀC_last v  tr C   accept  restart  dist to reference")
    for k in range(args.outer):
        if k in ramp:  # the stage at this M ends: its S, then the population grows
            M = H.shape[0]
            stage = finish(H, x, M, args.flow + k * args.inner)
            print(f"stage end, M = {M}: S {stage.S:.4f} ± {stage.S_err:.4f}, check residuals "
                  f"{stage.residual_forward:.4f} / {stage.residual_backward:.4f} (error {stage.residual_error:.4f}), "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
            copies = -(-ramp[k] // M)  # the latest inner run's population, duplicated
            H = np.concatenate([np.asarray(H_last)] * copies)[: ramp[k]]
            xs, fs, previous = [], [], np.inf
        C, Sig = unpack(x)
        H_next, Cg, Sg, acc = run(key, jnp.asarray(H), jnp.asarray(C), jnp.asarray(Sig), args.step)
        H_last = H_next
        if not args.fixed_start:  # warm start; with --fixed-start every inner run starts from the same H
            H = H_next
        g = pack(np.asarray(Cg), np.asarray(Sg))
        f = g - x
        residual = float(np.linalg.norm(f) / np.linalg.norm(g))
        restart = residual > 2 * previous
        if restart:
            xs, fs = [], []
        previous = residual
        xs, fs = (xs + [x])[-args.memory:], (fs + [f])[-args.memory:]
        x_new = anderson(xs, fs, beta=args.beta)
        try:
            np.linalg.cholesky(unpack(x_new)[1])
        except np.linalg.LinAlgError:
            x_new, xs, fs, restart = g, [], [], True
        Cg = np.asarray(Cg)
        v = np.linalg.eigh(Cg[np.ix_(last, last)])[1][:, -1]
        A = float(v @ Cg[np.ix_(last, last)] @ v)
        dist = "" if reference is None else f"{np.linalg.norm(Cg - _aligned(reference.C, Cg, T, P)) / np.linalg.norm(reference.C):.4f}"
        print(f"{k:5d} {args.flow + (k + 1) * args.inner:9d}  {residual:.4f}   {A:10.4f}  {np.trace(Cg):6.3f}  {float(acc):.3f}  "
              f"{'yes' if restart else '':7s}  {dist}", flush=True)
        x = x_new
    C, Sig = unpack(x)
    _, C1, _, _ = run(key, jnp.asarray(H), jnp.asarray(C), jnp.asarray(Sig), args.step)
    _, C2, _, _ = run(jax.random.PRNGKey(args.seed + 12), jnp.asarray(H), jnp.asarray(C), jnp.asarray(Sig), args.step)
    floor = float(np.linalg.norm(np.asarray(C1) - np.asarray(C2)) / np.linalg.norm(np.asarray(C1)) / np.sqrt(2))
    print(f"Monte Carlo floor of the C residual (two inner runs, different random numbers): {floor:.4f}; "
          f"{time.perf_counter() - started:.0f} s for {args.outer} outer iterations")
    # the solver's own end: fields at the final moments, the independent HMC check, log Z and S
    result = finish(H, x, H.shape[0], args.flow + args.outer * args.inner)
    print(f"two-level end (M = {H.shape[0]}): S {result.S:.4f} ± {result.S_err:.4f}, independent check residuals "
          f"{result.residual_forward:.4f} / {result.residual_backward:.4f} (check error {result.residual_error:.4f})")
    if reference is not None:
        print(f"reference: S {reference.S:.4f} ± {reference.S_err:.4f}; A_ref = "
              f"{float(v @ reference.C[np.ix_(last, last)] @ v):.4f} along the same v, tr C_ref {np.trace(reference.C):.3f}")


def _aligned(C_ref, C, T, P):
    """``C_ref`` or its ``W -> -W`` image, whichever is closer to ``C``."""
    flipped = parity_flip(C_ref, T, P)
    return C_ref if np.linalg.norm(C_ref - C) <= np.linalg.norm(flipped - C) else flipped


if __name__ == "__main__":
    main()
