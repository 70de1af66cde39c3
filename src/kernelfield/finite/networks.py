"""The finite-width network of THEORY.md §1 for any sharing pattern, as pure jax functions.

``h_a(0) = U_0 x_a(0) + b_0``, ``h_a(t) = W_t phi(h_a(t-1)) + U_t x_a(t) + b_t``,
``f_a(t) = v_t · phi(h_a(t)) / N``.

Parameters are one pytree ``{"W": (n_W, N, N), "U": (n_U, N, D), "b": (n_b, N), "v": (n_v, N)}``
with one slice per weight group; step ``t`` uses the slice at the position of its label among
the sorted unique labels of that family (for ``W`` only the labels of ``t >= 1`` count, since
``W_groups[0]`` is ignored). The sharing pattern enters only through these gathers. Samplers work
on the *standardised* parameters ``z`` (all entries standard normal under the prior, §5) and
:func:`scale` maps them to natural units: ``W = g/√N z_W``, ``U = σ_u/√D z_U``, ``b = σ_b z_b``,
``v = σ_v z_v``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..nonlinearities import Nonlinearity, get_nonlinearity
from ..spec import FAMILIES, Architecture, Prior

__all__ = [
    "group_index",
    "init_standardised",
    "scale",
    "preactivations",
    "features",
    "outputs",
    "readout",
    "empirical_kernel",
    "log_posterior",
]


def group_index(arch: Architecture, family: str) -> np.ndarray:
    """Index of each step's weight slice for ``family``: shape ``(T,)``, or ``(T-1,)`` for ``W``
    (steps ``t >= 1``)."""
    if family not in FAMILIES:
        raise ValueError(f"family: must be one of {FAMILIES}, got {family!r}")
    labels = np.asarray(getattr(arch, f"{family}_groups"), dtype=int)
    if family == "W":
        labels = labels[1:]
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _num_groups(arch: Architecture, family: str) -> int:
    idx = group_index(arch, family)
    return int(idx.max()) + 1 if idx.size else 0


def init_standardised(key, arch: Architecture, N: int, D: int) -> dict:
    """Standardised parameters drawn from the prior: every entry ``~ N(0, 1)``."""
    shapes = {"W": (N, N), "U": (N, D), "b": (N,), "v": (N,)}
    keys = jax.random.split(key, len(FAMILIES))
    return {
        fam: jax.random.normal(k, (_num_groups(arch, fam), *shapes[fam]))
        for fam, k in zip(FAMILIES, keys)
    }


def scale(params_std: dict, prior: Prior, N: int, D: int) -> dict:
    """Natural units: ``W = g/√N z_W, U = σ_u/√D z_U, b = σ_b z_b, v = σ_v z_v`` (§1 priors)."""
    factors = {"W": prior.g / np.sqrt(N), "U": prior.sigma_u / np.sqrt(D), "b": prior.sigma_b, "v": prior.sigma_v}
    return {fam: factors[fam] * params_std[fam] for fam in FAMILIES}


def _phi_fn(phi):
    return phi.fn if isinstance(phi, Nonlinearity) else get_nonlinearity(phi).fn


def preactivations(params: dict, arch: Architecture, inputs, phi="linear"):
    """``h`` of shape ``(T, P, N)`` for ``inputs`` ``(P, T, D)`` and natural-unit ``params``."""
    fn = _phi_fn(phi)
    params = jax.tree.map(jnp.asarray, params)
    x = jnp.swapaxes(jnp.asarray(inputs), 0, 1)  # (T, P, D)
    U = params["U"][group_index(arch, "U")]  # (T, N, D)
    b = params["b"][group_index(arch, "b")]  # (T, N)
    drive = jnp.einsum("tpd,tnd->tpn", x, U) + b[:, None, :]
    if arch.T == 1:  # no recurrent step (and no W to index)
        return drive

    def step(h_prev, xs):
        w_idx, drive_t = xs
        h = fn(h_prev) @ params["W"][w_idx].T + drive_t
        return h, h

    _, later = jax.lax.scan(step, drive[0], (jnp.asarray(group_index(arch, "W")), drive[1:]), unroll=8)
    return jnp.concatenate([drive[:1], later], axis=0)


def features(params: dict, arch: Architecture, inputs, phi="linear"):
    """``phi(h)``, shape ``(T, P, N)``."""
    return _phi_fn(phi)(preactivations(params, arch, inputs, phi))


def readout(params: dict, arch: Architecture, phi_h):
    """``f_a(t) = v_t · phi_h[t, a] / N`` from given features ``(T, P, N)``; shape ``(P, T)``."""
    v = params["v"][group_index(arch, "v")]  # (T, N)
    return jnp.einsum("tpn,tn->pt", phi_h, v) / phi_h.shape[-1]


def outputs(params: dict, arch: Architecture, inputs, phi="linear"):
    """``f_a(t) = v_t · phi(h_a(t)) / N`` (muP readout), shape ``(P, T)``."""
    return readout(params, arch, features(params, arch, inputs, phi))


def empirical_kernel(phi_h):
    """``C = Φᵀ Φ / N`` of shape ``(T·P, T·P)``, time-major index ``t·P + a`` (§3)."""
    T, P, N = phi_h.shape
    Phi = phi_h.reshape(T * P, N)
    return Phi @ Phi.T / N


def log_posterior(params_std: dict, arch: Architecture, inputs, targets, prior: Prior, phi, kappa: float):
    """Unnormalised log posterior of §2 in standardised coordinates:
    ``-|z|²/2 - (N / 2κ) Σ_{(a,t) ∈ S} (f_a(t) - y_a(t))²``; ``NaN`` targets are unsupervised."""
    N, D = params_std["U"].shape[1:]
    f = outputs(scale(params_std, prior, N, D), arch, inputs, phi)
    targets = jnp.asarray(targets)
    supervised = ~jnp.isnan(targets)
    residual = jnp.where(supervised, f - jnp.where(supervised, targets, 0.0), 0.0)
    prior_term = sum(jnp.sum(z**2) for z in jax.tree.leaves(params_std))
    return -0.5 * prior_term - N / (2.0 * kappa) * jnp.sum(residual**2)
