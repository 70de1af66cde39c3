"""Registry of single-neuron nonlinearities ``phi``.

Every nonlinearity can be used by the finite-width networks (:mod:`kernelfield.finite.networks`), the
lazy kernel and the feature-learning solver (linear exactly, any other by particles).
New nonlinearities plug in with :func:`register`. Gaussian expectations
(:mod:`kernelfield.gaussian`) use the optional closed forms ``expect_phiphi`` / ``expect_dphi``
where given and Gauss–Hermite quadrature of ``fn`` otherwise, so only ``fn`` is required.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

__all__ = ["Nonlinearity", "register", "get_nonlinearity", "available"]


@dataclass(frozen=True)
class Nonlinearity:
    """A pointwise nonlinearity.

    name: registry key; fn: the function ``phi(h)`` (jax-traceable); odd: ``phi(-h) = -phi(h)``
    (then the symmetric, time-uncorrelated solution exists for endpoint tasks).

    Optional closed forms for ``(h_1, h_2) ~ N(0, [[k11, k12], [k12, k22]])``, elementwise on
    broadcastable arrays (``None``: 2-D / 1-D Gauss–Hermite quadrature of ``fn``):
    expect_phiphi: ``(k11, k22, k12) -> E[phi(h_1) phi(h_2)]``;
    expect_dphi: ``(v) -> E[phi'(h)]`` for ``h ~ N(0, v)``, which gives
    ``E[h_1 phi(h_2)] = k12 E[phi'(h_2)]`` (Stein / Price).
    """

    name: str
    fn: Callable
    odd: bool
    expect_phiphi: Callable | None = None
    expect_dphi: Callable | None = None


_REGISTRY: dict[str, Nonlinearity] = {}


def register(phi: Nonlinearity) -> Nonlinearity:
    """Add ``phi`` to the registry (replacing an entry of the same name)."""
    _REGISTRY[phi.name] = phi
    return phi


def available() -> list[str]:
    """Names of all registered nonlinearities."""
    return sorted(_REGISTRY)


def get_nonlinearity(phi: str | Nonlinearity) -> Nonlinearity:
    """Look ``phi`` up by name; raises ``ValueError`` naming the allowed values."""
    if isinstance(phi, Nonlinearity):
        return phi
    if not isinstance(phi, str) or phi not in _REGISTRY:
        raise ValueError(f"phi: unknown nonlinearity {phi!r}; allowed: {', '.join(available())}")
    return _REGISTRY[phi]


def _erf_phiphi(k11, k22, k12):
    """Arcsine kernel: ``(2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))``."""
    r = 2.0 * k12 / jnp.sqrt((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22))
    return (2.0 / np.pi) * jnp.arcsin(jnp.clip(r, -1.0, 1.0))


def _erf_dphi(v):
    """``E[erf'(h)] = (2/sqrt(pi)) / sqrt(1 + 2v)``."""
    return (2.0 / np.sqrt(np.pi)) / jnp.sqrt(1.0 + 2.0 * v)


def _relu_phiphi(k11, k22, k12):
    """Arc-cosine kernel of degree 1, ``sqrt(k11 k22)/(2 pi) (sin θ + (pi - θ) cos θ)``, written
    as ``(s + (pi - θ) k12) / (2 pi)`` with ``s = sqrt(k11 k22 - k12²)``, ``θ = atan2(s, k12)``:
    no division (zero variance gives 0) and accurate at perfect correlation."""
    s = jnp.sqrt(jnp.maximum(k11 * k22 - k12**2, 0.0))
    theta = jnp.arctan2(s, k12)
    return (s + (np.pi - theta) * k12) / (2.0 * np.pi)


register(Nonlinearity("linear", lambda h: h, odd=True,
                      expect_phiphi=lambda k11, k22, k12: k12, expect_dphi=lambda v: jnp.ones_like(v)))
register(Nonlinearity("erf", erf, odd=True, expect_phiphi=_erf_phiphi, expect_dphi=_erf_dphi))
register(Nonlinearity("tanh", jnp.tanh, odd=True))  # no closed form: quadrature
register(Nonlinearity("relu", lambda h: jnp.maximum(h, 0.0), odd=False,
                      expect_phiphi=_relu_phiphi, expect_dphi=lambda v: jnp.full_like(v, 0.5)))
