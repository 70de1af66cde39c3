"""Expectations under the tilted measure of one neuron's trajectory (THEORY.md §3):

    q(h) ∝ N(h; 0, K) · exp(φ(h)ᵀ Ct φ(h)),   h ∈ Rⁿ,  n = T·P,

``<φ φᵀ>_q``, ``<h hᵀ>_q`` and ``log Z = log E_{N(0,K)} exp(φᵀ Ct φ)``, with Monte Carlo errors.

Sampler: many parallel chains of BlackJAX's dynamic (jittered) HMC with step size and trajectory
length adapted across the ensemble by ChEES, in whitened coordinates ``h = L z`` (``L = chol K``),
where the untilted measure is a standard normal. Errors are standard errors of the mean across
the independent chains. ``log Z`` by thermodynamic integration:
``log Z = ∫₀¹ <φᵀ Ct φ>_{q_β} dβ`` (``q_β``: tilt ``β Ct``) with Gauss–Legendre nodes in ``β``.
Chains can be warm-started from the positions of a previous call (``init``), which is what a
solver iterating on slowly changing ``(K, Ct)`` does.

Singular ``K`` (THEORY.md §3, rank-deficient prior covariances): given an orthonormal ``basis``
``Q`` ``(n, r)`` of its range, ``q`` lives on that support, ``h = Q L_r z`` with
``L_r = chol(QᵀKQ)`` and ``z ∈ Rʳ``, and ``log Z`` is taken relative to ``N(0, K)`` there.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.diagnostics import effective_sample_size

from ..nonlinearities import get_nonlinearity
from ..validation import integer

__all__ = ["TiltedMoments", "support_factor", "tilted_moments"]


@dataclass(frozen=True)
class TiltedMoments:
    """Moments of ``q``. ``*_err``: standard errors across chains (same shapes); log_Z, log_Z_err:
    ``nan`` unless requested; ess: smallest effective sample size of the monitored summaries
    (``φᵀ Ct φ`` and ``|z|²``); positions: ``(num_chains, n)`` final states ``h`` for warm starts."""

    phiphi: np.ndarray
    phiphi_err: np.ndarray
    hh: np.ndarray
    hh_err: np.ndarray
    log_Z: float
    log_Z_err: float
    ess: float
    acceptance_rate: float
    num_chains: int
    num_samples: int
    positions: np.ndarray


def support_factor(K, basis=None) -> np.ndarray:
    """``L`` with ``h = L z``, ``z ~ N(0, I)`` distributed as ``N(0, K)``: ``chol K`` ``(n, n)``, or
    on the support of a singular ``K`` with orthonormal ``basis`` ``Q`` ``(n, r)``, ``Q chol(QᵀKQ)``
    ``(n, r)``."""
    K = 0.5 * (K + K.T)
    return np.linalg.cholesky(K) if basis is None else basis @ np.linalg.cholesky(basis.T @ K @ basis)


def _check(K, Ct, nl, basis=None) -> tuple[np.ndarray, np.ndarray]:
    """``K`` and ``Ct`` checked and symmetrised; with a ``basis`` ``Q`` of the support, ``K`` is
    checked there (``QᵀKQ`` positive definite)."""
    K = np.asarray(K, dtype=np.float64)
    Ct = np.asarray(Ct, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"K: expected a non-empty square (n, n) matrix, got shape {K.shape}")
    if Ct.shape != K.shape:
        raise ValueError(f"Ct: expected shape {K.shape} like K, got {Ct.shape}")
    for name, M in (("K", K), ("Ct", Ct)):
        if not np.all(np.isfinite(M)):
            raise ValueError(f"{name}: contains NaN or inf")
        if not np.allclose(M, M.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(M).max())):
            raise ValueError(f"{name}: must be symmetric")
    K_r, Ct_r = K, Ct  # on the support where a basis is given
    if basis is not None:
        Q = np.asarray(basis, dtype=np.float64)
        if Q.ndim != 2 or Q.shape[0] != K.shape[0] or not np.allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-8):
            raise ValueError(f"basis: expected an orthonormal ({K.shape[0]}, r) basis of the support, got shape {Q.shape}")
        K_r, Ct_r = Q.T @ K @ Q, Q.T @ Ct @ Q
    eig_K = np.linalg.eigvalsh(K_r)
    if eig_K[0] <= 0:
        where = "" if basis is None else " on the support"
        raise ValueError(f"K: must be positive definite{where} (smallest eigenvalue {eig_K[0]:.3g})")
    if nl.name == "linear":  # q is Gaussian with covariance (K⁻¹ - 2Ct)⁻¹ (on the support)
        margin = np.linalg.eigvalsh(np.linalg.inv(K_r) - 2 * Ct_r)[0]
        if margin <= 0:
            raise ValueError(f"Ct: K⁻¹ - 2Ct is not positive definite (smallest eigenvalue {margin:.3g}); "
                             "the tilted measure is not normalisable")
    elif nl.name not in ("erf", "tanh"):  # unbounded phi with |phi(h)| <= |h|: a sufficient condition
        if 2 * max(np.linalg.eigvalsh(Ct)[-1], 0.0) * eig_K[-1] >= 1:
            warnings.warn(f"Ct: 2·λ_max(Ct)·||K|| >= 1, so normalisability of the tilted measure is not "
                          f"guaranteed for unbounded phi {nl.name!r}; non-finite samples raise an error",
                          RuntimeWarning, stacklevel=3)
    return 0.5 * (K + K.T), 0.5 * (Ct + Ct.T)


@partial(jax.jit, static_argnames=("fn", "num_chains", "num_warmup", "num_samples"))
def _run(key, z0, L, Ct, beta, fn, num_chains: int, num_warmup: int, num_samples: int):
    """ChEES warm-up, then ``num_samples`` dynamic-HMC steps of all chains; sums of the moments
    per chain and the per-step summaries."""

    def tilt(z):
        p = fn(L @ z)
        return p @ Ct @ p

    def logdensity(z):
        return -0.5 * jnp.sum(z**2) + beta * tilt(z)

    key_warm, key_sample = jax.random.split(key)
    warmup = blackjax.chees_adaptation(logdensity, num_chains)
    (states, params), _ = warmup.run(key_warm, z0, 0.5, optax.adam(0.05), num_warmup)
    kernel = blackjax.dynamic_hmc(logdensity, **params).step

    def one(carry, key):
        states, sums = carry
        states, info = jax.vmap(kernel)(jax.random.split(key, num_chains), states)
        h = states.position @ L.T
        p = fn(h)
        sums = (sums[0] + jnp.einsum("ci,cj->cij", p, p), sums[1] + jnp.einsum("ci,cj->cij", h, h))
        summary = jnp.stack([jax.vmap(tilt)(states.position), jnp.sum(states.position**2, axis=1)], axis=1)
        return (states, sums), (summary, info.acceptance_rate)

    n = L.shape[0]
    zeros = jnp.zeros((num_chains, n, n))
    (states, sums), (summaries, rate) = jax.lax.scan(one, (states, (zeros, zeros)),
                                                     jax.random.split(key_sample, num_samples))
    # summaries: (num_chains, num_samples, 2)
    return (states.position @ L.T, sums[0] / num_samples, sums[1] / num_samples, jnp.swapaxes(summaries, 0, 1),
            jnp.mean(rate))


def _mean_and_error(per_chain):
    m = per_chain.mean(axis=0)
    return m, per_chain.std(axis=0, ddof=1) / np.sqrt(per_chain.shape[0])


def tilted_moments(K, Ct, phi="linear", num_chains: int = 64, num_samples: int = 500, num_warmup: int = 300,
                   seed: int = 0, init=None, log_Z: bool = False, num_temperatures: int = 6,
                   basis=None) -> TiltedMoments:
    """``<φφᵀ>_q``, ``<hhᵀ>_q`` (and with ``log_Z=True`` ``log Z``) for the tilted Gaussian ``q``.

    basis: for a singular ``K``, an orthonormal ``(n, r)`` basis of its range; ``q`` lives there
    (module docstring). ``None``: ``K`` positive definite.
    init: ``(num_chains, n)`` starting trajectories ``h`` (e.g. ``positions`` of a previous call);
    default: draws from ``N(0, K)``. ``log Z`` uses ``num_temperatures`` Gauss–Legendre nodes in
    ``β ∈ (0, 1)``, each a separate sampling run of the same size (its error is the Monte Carlo
    error; the quadrature error is ``O(‖∂⁽²ᵏ⁾_β‖)`` and is negligible for smooth tilts).
    """
    nl = get_nonlinearity(phi)
    K, Ct = _check(K, Ct, nl, basis)
    for name, value, minimum in (("num_chains", num_chains, 2), ("num_samples", num_samples, 2),
                                 ("num_warmup", num_warmup, 1), ("seed", seed, 0),
                                 ("num_temperatures", num_temperatures, 1)):
        integer(name, value, minimum)
    n = K.shape[0]
    Q = None if basis is None else np.asarray(basis, dtype=np.float64)
    L = support_factor(K, Q)
    r = L.shape[1]
    key = jax.random.PRNGKey(seed)
    key_init, key_run, key_logz = jax.random.split(key, 3)
    if init is None:
        z0 = jax.random.normal(key_init, (num_chains, r))
    else:
        init = np.asarray(init, dtype=np.float64)
        if init.shape != (num_chains, n) or not np.all(np.isfinite(init)):
            raise ValueError(f"init: expected finite starting points of shape ({num_chains}, {n}), got {init.shape}")
        z0 = jnp.asarray(np.linalg.solve(L, init.T).T if Q is None else np.linalg.solve(Q.T @ L, Q.T @ init.T).T)
    run = partial(_run, L=jnp.asarray(L), Ct=jnp.asarray(Ct), fn=nl.fn, num_chains=num_chains,
                  num_warmup=num_warmup, num_samples=num_samples)
    positions, phiphi, hh, summaries, rate = run(key_run, z0, beta=1.0)
    summaries = np.asarray(summaries)
    ess = float(min(effective_sample_size(summaries[..., i], chain_axis=0, sample_axis=1) for i in range(2)))
    if not np.all(np.isfinite(np.asarray(phiphi))):
        raise ValueError("Ct: the chains diverged (non-finite moments): the tilted measure is not normalisable")
    phiphi, phiphi_err = _mean_and_error(np.asarray(phiphi))
    hh, hh_err = _mean_and_error(np.asarray(hh))
    value = error = float("nan")
    if log_Z:
        nodes, weights = np.polynomial.legendre.leggauss(num_temperatures)
        betas, weights = 0.5 * (nodes + 1.0), 0.5 * weights
        value, variance = 0.0, 0.0
        for beta, w, k in zip(betas, weights, jax.random.split(key_logz, num_temperatures)):
            _, _, _, s, _ = run(k, z0, beta=float(beta))
            m, e = _mean_and_error(np.asarray(s[..., 0]).mean(axis=1))  # per-chain means of φᵀCtφ
            value, variance = value + w * m, variance + (w * e) ** 2
        value, error = float(value), float(np.sqrt(variance))
    return TiltedMoments(phiphi=0.5 * (phiphi + phiphi.T), phiphi_err=phiphi_err, hh=0.5 * (hh + hh.T),
                         hh_err=hh_err, log_Z=value, log_Z_err=error, ess=ess, acceptance_rate=float(rate),
                         num_chains=num_chains, num_samples=num_samples, positions=np.asarray(positions))
