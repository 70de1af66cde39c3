"""Issue 17 step 1: the particle solver's slow state diagnosed at frozen fields.

Case: erf RNN, endpoint task ``kf.tasks.endpoint_patterns(P, T, D=P, target 1)``, kappa 0.1, the
symmetry-broken start (``broken_start`` of the lazy kernel). Phase 1 runs the solver's own flow
and step control (``_run``) for ``--flow`` iterations. Phase 2 freezes the fields ``K = K(C)``
and ``Ct`` at the moments ``(C, Σ)`` of the last flow window and runs MALA of every particle at
those fields (the flow's whitening ``L = chol Σ`` kept fixed) for ``--frozen`` iterations at the
flow's last step. Measured:

(i)  the rank-one amplitude of the late-time kernel. ``v`` is the leading eigenvector of the
     last-time block ``C_{T-1,T-1}``; each particle's amplitude is ``a_i = vᵀ h_i(T-1)``; the
     collective observable is ``A = mean_i (vᵀ φ(h_i(T-1)))²`` (= ``vᵀ C_{T-1,T-1} v``, the
     rank-one amplitude). Reported: the integrated autocorrelation time (Sokal) of ``A`` at
     frozen fields and of one particle's ``a_i`` (the autocorrelation averaged over particles),
     and for comparison the flow's ``vᵀ C v`` over its last windows (its drift).
(ii) the mode-switching rate: switches of ``a_i`` between the modes per particle and iteration
     (with hysteresis, :func:`mode_switches`), the fraction in the ``+`` mode and the kurtosis
     of ``a`` (bimodality).
(iii) conditioning: eigenvalue spread of ``K``, of the whitened prior precision ``Lᵀ K⁻¹ L``
     (MALA's stiff directions are its top eigenvalues: the step is stable for
     ``step·λ_max ≲ 2``), and the acceptance at frozen fields for a ladder of steps.

    python benchmarks/bench_particle_diagnostic.py --T 8 --P 8 --flow 600 --frozen 600
    python benchmarks/bench_particle_diagnostic.py --T 16 --P 4 --flow 600 --frozen 600
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import kernelfield as kf
from kernelfield.nonlinearities import get_nonlinearity
from kernelfield.theory.kernels import make_problem
from kernelfield.theory.lazy import lazy_kernel
from kernelfield.theory.particle_control import integrated_time
from kernelfield.theory.particles import FlowArrays, ParticleSettings, _initial_population, _run, _window, fields
from kernelfield.theory.solver import broken_start


def frozen_logdensity(fn, K, Ct, L):
    """``log N(Lz; 0, K) + φ(Lz)ᵀ Ct φ(Lz)`` in the flow's whitened coordinates (up to a constant)."""
    B = jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(K), L, lower=True)

    def logdensity(z):
        p = fn(L @ z)
        return -0.5 * jnp.sum((B @ z) ** 2) + p @ Ct @ p

    return logdensity


@partial(jax.jit, static_argnames=("fn", "length"))
def frozen_chain(key, Z, K, Ct, L, v, last, step, fn, length: int):
    """``length`` MALA steps of every particle at frozen fields; per iteration the amplitudes
    ``a_i = vᵀ h_i(T-1)``, ``A = mean (vᵀ φ(h_i(T-1)))²`` and the mean acceptance."""
    logdensity = frozen_logdensity(fn, K, Ct, L)
    kernel = blackjax.mala.build_kernel()
    states = jax.vmap(lambda z: blackjax.mala.init(z, logdensity))(Z)

    def one(states, key):
        states, info = jax.vmap(lambda k, s: kernel(k, s, logdensity, step))(jax.random.split(key, Z.shape[0]), states)
        h_last = (states.position @ L.T)[:, last]
        return states, (h_last @ v, jnp.mean((fn(h_last) @ v) ** 2), jnp.mean(info.acceptance_rate))

    states, (a, A, acc) = jax.lax.scan(one, states, jax.random.split(key, length))
    return states.position, a, A, acc


def mode_switches(a: np.ndarray) -> tuple[float, np.ndarray]:
    """Mode switches per particle and iteration, with hysteresis: a particle is in the ``+`` mode
    once ``a > s/2`` and in the ``-`` mode once ``a < -s/2`` (``s`` the scatter of ``a``), and
    switches when it reaches the other threshold; and the fraction in the ``+`` mode per iteration."""
    threshold = 0.5 * a.std()
    mode = np.sign(a[0])
    modes = []
    for row in a:
        mode = np.where(row > threshold, 1.0, np.where(row < -threshold, -1.0, mode))
        modes.append(mode)
    modes = np.stack(modes)
    return float(np.mean(modes[1:] != modes[:-1])), np.mean(modes > 0, axis=1)


def pooled_particle_time(a: np.ndarray) -> float:
    """Integrated autocorrelation time of one particle's amplitude, the autocorrelation averaged
    over particles (Sokal window on the pooled autocorrelation)."""
    return float(np.median(integrated_time(a[:, :256])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=8)
    parser.add_argument("--P", type=int, default=8)
    parser.add_argument("--particles", type=int, default=4096)
    parser.add_argument("--flow", type=int, default=600)
    parser.add_argument("--frozen", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    T, P = args.T, args.P
    started = time.perf_counter()
    task = kf.tasks.endpoint_patterns(P=P, T=T, D=P, target_scale=1.0)
    prob = make_problem(kf.Architecture.rnn(T), task, kf.Prior(), 0.1)
    nl = get_nonlinearity("erf")
    K0 = np.asarray(prob.K(broken_start(prob, lazy_kernel(prob, nl))))
    settings = ParticleSettings(num_particles=args.particles, max_iter=args.flow, seed=args.seed)
    arrays = FlowArrays.of(prob, prob.block_mask())
    key, H = _initial_population(K0, settings)
    advance = partial(_window, arrays, fn=nl.fn, zero_mean=True, length=settings.window, P=P)
    H, state = _run(advance, key, H, settings, T, P, "broken")
    C, Sigma = state.last_finite[-1][0], state.last_finite[-1][1]
    last = np.arange((T - 1) * P, T * P)
    v = np.linalg.eigh(C[np.ix_(last, last)])[1][:, -1]
    flow_A = [float(v @ c[np.ix_(last, last)] @ v) for c in (state.burn_C + state.batch_C)]
    traces = np.array([h[-1] for h in state.history])  # tr C_{T-1,T-1} per window of the whole run
    print(f"T = {T}, P = {P}, M = {args.particles}: flow {state.iterations} iterations, final step "
          f"{state.step_size:.4g}, phase {state.phase}, {time.perf_counter() - started:.0f} s")
    print(f"  flow: tr C_last per window (every 5th): {np.round(traces[::5], 3)}")
    print(f"  flow: A = vᵀC_last v over the current burn-in/averaging windows (last 10): {np.round(flow_A[-10:], 3)}")

    K, Ct = (jnp.asarray(x) for x in fields(jnp.asarray(C), jnp.asarray(Sigma), arrays, P))
    Sig = 0.5 * (Sigma + Sigma.T)
    L = np.linalg.cholesky(Sig + 1e-12 * np.trace(Sig) / prob.n * np.eye(prob.n))
    Z = np.linalg.solve(L, np.asarray(H).T).T
    key = jax.random.PRNGKey(args.seed + 7)
    step = state.step_size
    _, a, A, acc = frozen_chain(key, Z, K, Ct, jnp.asarray(L), jnp.asarray(v), jnp.asarray(last), step, nl.fn,
                                args.frozen)
    a, A, acc = np.asarray(a), np.asarray(A), np.asarray(acc)
    burn = len(A) // 5
    tau_A = float(integrated_time(A[burn:, None])[0])
    tau_a = pooled_particle_time(a[burn:])
    switch, plus = mode_switches(a[burn:])
    kurtosis = float(np.mean(a[burn:] ** 4) / np.mean(a[burn:] ** 2) ** 2)
    print(f"  frozen (step {step:.4g}, {args.frozen} iterations): acceptance {acc[burn:].mean():.3f}; "
          f"A {A[burn:].mean():.3f} ± sd {A[burn:].std():.3f}, first/last fifth {A[:burn].mean():.3f} / "
          f"{A[-burn:].mean():.3f}; τ_int(A) = {tau_A:.1f} iterations, τ_int(a_i) = {tau_a:.1f} iterations "
          f"(median over 256 particles)")
    print(f"  modes: switches {switch:.2e} per particle and iteration ({switch / step:.2e} per Langevin "
          f"time); fraction in + mode first/last {plus[0]:.3f} / {plus[-1]:.3f}; kurtosis of a {kurtosis:.2f} "
          f"(3: Gaussian, 1: two sharp modes), sd of a {a.std():.2f}")

    Kn = np.asarray(K)
    eig_K = np.linalg.eigvalsh(Kn)
    W = L.T @ np.linalg.solve(Kn, L)
    eig_W = np.linalg.eigvalsh(0.5 * (W + W.T))
    print(f"  K: eigenvalues {eig_K[0]:.3g} … {eig_K[-1]:.3g} (condition {eig_K[-1] / eig_K[0]:.3g}); whitened "
          f"prior precision LᵀK⁻¹L: {eig_W[0]:.3g} … {eig_W[-1]:.3g} (top 3 {np.round(eig_W[-3:], 2)}); "
          f"step·λ_max = {step * eig_W[-1]:.3g}")
    ladder = []
    for s in (0.0125, 0.025, 0.05, 0.1, 0.2):
        _, _, _, acc_s = frozen_chain(key, Z, K, Ct, jnp.asarray(L), jnp.asarray(v), jnp.asarray(last), s, nl.fn, 40)
        ladder.append(f"{s}: {np.asarray(acc_s)[10:].mean():.3f}")
    print(f"  acceptance at frozen fields by step: {', '.join(ladder)}")
    print(f"  total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
